//! Golden tests over captured real messages: every message Delta Chat core
//! sent through the relay (milter/tests/fixtures/deltachat/, captured with
//! scripts/capture-deltachat-fixtures.py) passes the encrypted-message
//! check, and hostile variants made from them fail it for the right reason.

use std::path::{Path, PathBuf};

use chatmail_milter::check_message;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
}

#[test]
fn delta_chat_messages_pass() {
    let files = fixtures("deltachat");
    assert!(files.len() >= 10, "fixture corpus missing");
    for path in files {
        let raw = std::fs::read(&path).expect("read");
        let summary = check_message(&raw).unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        assert!(!summary.has_version_header, "{}: Delta Chat writes no Version header", path.display());
        assert!(summary.key_packets >= 1, "{}", path.display());
    }
}

/// The first captured message, with LF line ends.
fn sample() -> String {
    let path = &fixtures("deltachat")[0];
    String::from_utf8(std::fs::read(path).expect("read")).expect("ASCII fixture").replace("\r\n", "\n")
}

fn boundary(message: &str) -> String {
    let start = message.find("boundary=\"").expect("boundary") + "boundary=\"".len();
    let end = message[start..].find('"').expect("quote") + start;
    message[start..end].to_owned()
}

fn armor_lines(message: &str) -> Vec<String> {
    let begin = message.find("-----BEGIN PGP MESSAGE-----\n\n").expect("begin") + "-----BEGIN PGP MESSAGE-----\n\n".len();
    let end = message.find("-----END PGP MESSAGE-----").expect("end");
    message[begin..end].lines().map(str::to_owned).collect()
}

#[test]
fn hostile_variants_fail() {
    let good = sample();
    let b = boundary(&good);
    let lines = armor_lines(&good);
    let first_data_line = lines[0].clone();
    let cases: Vec<(&str, String, &str)> = vec![
        ("second part removed", {
            let cut = good.find(&format!("--{b}\nContent-Type: application/octet-stream")).expect("part 2");
            format!("{}--{b}--\n", &good[..cut])
        }, "missing part or closing MIME boundary"),
        ("closing boundary missing", good.replace(&format!("--{b}--"), ""), "missing part or closing MIME boundary"),
        ("fake armor text", good.replace(&first_data_line, "VGhpcyBpcyBqdXN0IHRleHQsIG5vdCBPcGVuUEdQ"), "OpenPGP"),
        ("literal packet instead", good.replacen(&first_data_line, "ywhiAAAAAABoaQ==", 1), "tag 11"),
        ("compressed packet instead", good.replacen(&first_data_line, "yAMBYWI=", 1), "tag 8"),
        ("armor truncated", {
            let last = lines.iter().rev().find(|l| !l.starts_with('=') && !l.is_empty()).expect("data line").clone();
            good.replace(&format!("{last}\n"), "")
        }, "OpenPGP data ends early"),
        ("8-bit junk in armor", good.replacen(&first_data_line, &format!("{}\u{e9}\u{ff}", &first_data_line[..10]), 1), "invalid base64"),
        ("version part says 2", good.replace("Version: 1", "Version: 2"), "first part"),
        ("data part is text/plain", good.replace("Content-Type: application/octet-stream", "Content-Type: text/plain"), "second part"),
        ("data part in base64", good.replacen("Content-Transfer-Encoding: 7bit\n\n-----BEGIN", "Content-Transfer-Encoding: base64\n\n-----BEGIN", 1), "second part"),
        ("third part", good.replace(&format!("--{b}--"), &format!("--{b}\nContent-Type: text/plain\n\nhello\n--{b}--")), "more than two parts"),
        ("not multipart/encrypted", good.replacen("multipart/encrypted", "multipart/mixed", 1), "not multipart/encrypted"),
        ("no content type", good.replacen("Content-Type: multipart/encrypted", "X-Content-Type: multipart/encrypted", 1), "not multipart/encrypted"),
        ("huge part headers", good.replacen("Content-Type: application/pgp-encrypted", &format!("X-Junk: {}\nContent-Type: application/pgp-encrypted", "j".repeat(20_000)), 1), "part headers"),
        ("text after the armor", good.replace("-----END PGP MESSAGE-----\n", "-----END PGP MESSAGE-----\nP.S. unencrypted\n"), "after the armor"),
    ];
    for (name, text, want) in cases {
        let got = check_message(text.as_bytes());
        match got {
            Ok(_) => panic!("{name}: accepted"),
            Err(problem) => {
                let message = problem.to_string();
                assert!(message.contains(want), "{name}: got {message:?}, want {want:?}");
            }
        }
    }
    // The sample itself still passes after the newline normalisation.
    assert!(check_message(good.as_bytes()).is_ok());
}
