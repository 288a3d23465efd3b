//! Golden tests over real messages: every message Delta Chat core sent
//! through the relay (milter/tests/fixtures/deltachat/, captured with
//! scripts/capture-deltachat-fixtures.py) passes the encrypted-message
//! check, and hostile variants made from them fail it for the right reason;
//! the rPGP-made corpus (milter/tests/fixtures/pgp/, made by
//! milter/fixture-gen) gets the verdicts its manifest `expect.txt` lists.

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

/// What `expect.txt` says about one fixture.
#[derive(Debug)]
enum Expected {
    Pass { keys: u32, version_header: bool },
    Fail(String),
}

/// Parses `NAME | EXPECTATION | DESCRIPTION` lines; `#` lines are comments.
fn manifest(text: &str) -> Vec<(String, Expected)> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut columns = line.splitn(3, " | ");
        let (Some(name), Some(expectation)) = (columns.next(), columns.next()) else {
            panic!("expect.txt line {}: not NAME | EXPECTATION | DESCRIPTION", n + 1);
        };
        let expected = if let Some(error) = expectation.strip_prefix("fail: ") {
            assert!(!error.trim().is_empty(), "expect.txt line {}: empty error text", n + 1);
            Expected::Fail(error.trim().to_owned())
        } else {
            let fields: Vec<&str> = expectation.split_whitespace().collect();
            let (keys, version) = match fields.as_slice() {
                ["pass", keys, version] => (keys.strip_prefix("keys="), version.strip_prefix("version=")),
                _ => (None, None),
            };
            let keys = keys.and_then(|k| k.parse().ok());
            let version_header = match version {
                Some("yes") => Some(true),
                Some("no") => Some(false),
                _ => None,
            };
            let (Some(keys), Some(version_header)) = (keys, version_header) else {
                panic!("expect.txt line {}: bad expectation {expectation:?}", n + 1);
            };
            Expected::Pass { keys, version_header }
        };
        entries.push((name.trim().to_owned(), expected));
    }
    entries
}

#[test]
fn rpgp_corpus_matches_manifest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pgp");
    let text = std::fs::read_to_string(dir.join("expect.txt")).expect("read expect.txt");
    let entries = manifest(&text);
    let on_disk: Vec<String> =
        fixtures("pgp").iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    let listed: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    let unlisted: Vec<&String> = on_disk.iter().filter(|f| !listed.contains(&f.as_str())).collect();
    let missing: Vec<&&str> = listed.iter().filter(|name| !on_disk.iter().any(|f| f == *name)).collect();
    assert!(unlisted.is_empty(), "fixtures not in expect.txt: {unlisted:?}");
    assert!(missing.is_empty(), "expect.txt lists missing files: {missing:?}");
    let mut seen = std::collections::HashSet::new();
    for name in &listed {
        assert!(seen.insert(*name), "expect.txt lists {name} twice");
    }
    assert!(entries.len() >= 30, "rPGP corpus too small: {}", entries.len());
    assert!(entries.iter().any(|(_, e)| matches!(e, Expected::Fail(_))), "no refused fixture");

    let mut wrong = Vec::new();
    for (name, expected) in &entries {
        let raw = std::fs::read(dir.join(name)).expect("read fixture");
        match (expected, check_message(&raw)) {
            (Expected::Pass { keys, version_header }, Ok(summary)) => {
                if summary.key_packets != *keys || summary.has_version_header != *version_header {
                    wrong.push(format!(
                        "{name}: passed with keys={} version={}, want keys={keys} version={version_header}",
                        summary.key_packets, summary.has_version_header
                    ));
                }
            }
            (Expected::Pass { .. }, Err(problem)) => wrong.push(format!("{name}: refused ({problem}), want pass")),
            (Expected::Fail(want), Ok(_)) => wrong.push(format!("{name}: accepted, want refusal containing {want:?}")),
            (Expected::Fail(want), Err(problem)) => {
                let message = problem.to_string();
                if !message.contains(want.as_str()) {
                    wrong.push(format!("{name}: refused with {message:?}, want {want:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} fixtures got the wrong verdict:\n{}", wrong.len(), entries.len(), wrong.join("\n"));
}
