use super::*;
use crate::test_support::base64;


/// PKESK + SEIPD, as an encrypted message's packets look.
fn packets(seipd_len: usize) -> Vec<u8> {
    let mut data = vec![0xc1, 60];
    data.extend_from_slice(&[3; 60]);
    let mut body = vec![0xaa; seipd_len];
    body[0] = 1;
    data.push(0xd2);
    data.push(0xff);
    data.extend_from_slice(&(seipd_len as u32).to_be_bytes());
    data.extend_from_slice(&body);
    data
}

fn armor(headers: &[&str], data: &[u8], checksum: bool) -> String {
    let mut text = String::from("-----BEGIN PGP MESSAGE-----\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    let encoded = base64(data);
    for line in encoded.as_bytes().chunks(76) {
        text.push_str(std::str::from_utf8(line).expect("ascii"));
        text.push_str("\r\n");
    }
    if checksum {
        text.push_str("=njUN\r\n");
    }
    text.push_str("-----END PGP MESSAGE-----\r\n");
    text
}

fn check(text: &str) -> Result<ArmorSummary, ArmorProblem> {
    let mut checker = ArmorChecker::new();
    for line in text.split('\n') {
        checker.line(line.as_bytes())?;
    }
    checker.finish()
}

#[test]
fn accepted_armor() {
    for len in [1, 2, 3, 4, 5, 100, 1000, 10_000] {
        let text = armor(&[], &packets(len), false);
        assert_eq!(check(&text), Ok(ArmorSummary { has_version_header: false, key_packets: 1 }), "seipd {len}");
        let text = armor(&[], &packets(len), true);
        assert!(check(&text).is_ok(), "with checksum, seipd {len}");
    }
    let text = armor(&["Version: Test 1.0", "Comment: hello"], &packets(50), false);
    assert_eq!(check(&text), Ok(ArmorSummary { has_version_header: true, key_packets: 1 }));
    // Blank lines around the armor are fine.
    let text = format!("\r\n{}\r\n\r\n", armor(&[], &packets(50), false));
    assert!(check(&text).is_ok());
}

#[test]
fn refused_armor() {
    let good = armor(&[], &packets(100), false);
    let cases: Vec<(&str, String, ArmorProblem)> = vec![
        ("empty", String::new(), ArmorProblem::NoBegin),
        ("plain text", "hello\r\n".into(), ArmorProblem::NoBegin),
        ("text before", format!("hi\r\n{good}"), ArmorProblem::NoBegin),
        ("public key block", good.replace("PGP MESSAGE", "PGP PUBLIC KEY BLOCK"), ArmorProblem::NoBegin),
        ("no blank line after BEGIN", good.replacen("-----\r\n\r\n", "-----\r\n", 1), ArmorProblem::BadHeader),
        ("no END", good.replace("-----END PGP MESSAGE-----\r\n", ""), ArmorProblem::NoEnd),
        ("text after END", format!("{good}P.S. hi\r\n"), ArmorProblem::DataAfterEnd),
        ("bad character", good.replacen("\r\n\r\n", "\r\n\r\n!", 1), ArmorProblem::BadBase64),
        ("bad checksum", good.replace("-----END", "=abc\r\n-----END"), ArmorProblem::BadChecksum),
        (
            "literal packet inside",
            armor(&[], &[0xcb, 3, b'b', 0, 0], false),
            ArmorProblem::Packets(PacketProblem::ForbiddenPacket { tag: 11, offset: 0 }),
        ),
        ("truncated data", armor(&[], &packets(100)[..80], false), ArmorProblem::Packets(PacketProblem::Truncated)),
        ("garbage bytes", armor(&[], b"\x00\x01\x02", false), ArmorProblem::Packets(PacketProblem::NotAPacket { offset: 0 })),
    ];
    for (name, text, want) in cases {
        assert_eq!(check(&text), Err(want), "{name}");
    }
}

#[test]
fn base64_decoder_matches_encoder_for_all_tails() {
    for len in 0..40 {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let encoded = base64(&data);
        // Feed in odd-sized pieces to cross group boundaries.
        let mut decoder = Base64Decoder::default();
        let mut got = Vec::new();
        for piece in encoded.as_bytes().chunks(3) {
            let mut out = [0u8; 16];
            let n = decoder.decode(piece, &mut out).expect("valid");
            got.extend_from_slice(&out[..n]);
        }
        decoder.finish().expect("complete");
        assert_eq!(got, data, "len {len}");
    }
    for bad in ["A", "AB", "A===", "AB=C", "ABC==", "AB==AB==", "AB=", "====", "AB*D"] {
        let mut decoder = Base64Decoder::default();
        let mut out = [0u8; 16];
        let result = decoder.decode(bad.as_bytes(), &mut out).and_then(|_| decoder.finish());
        assert!(result.is_err(), "{bad:?} should be refused");
    }
}
