use super::*;
use crate::test_support::base64;


fn armored() -> String {
    let mut data = vec![0xc1, 10];
    data.extend_from_slice(&[3; 10]);
    data.extend_from_slice(&[0xd2, 5, 1, 2, 3, 4, 5]);
    format!("-----BEGIN PGP MESSAGE-----\r\n\r\n{}\r\n-----END PGP MESSAGE-----\r\n", base64(&data))
}

const CT: &str = "multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"XYZ\"";

/// A Delta Chat-shaped encrypted body with boundary XYZ.
fn body() -> String {
    format!(
        "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
         --XYZ\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\
         \r\n\
         Version: 1\r\n\
         \r\n\
         --XYZ\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\";\r\n\
         \r\n\
         {}\r\n\
         --XYZ--\r\n",
        armored()
    )
}

fn check(content_type: &str, body: &str) -> Result<ArmorSummary, MimeProblem> {
    let ct = parse_content_type(content_type).ok_or(MimeProblem::NotMultipartEncrypted)?;
    let mut checker = EncryptedBodyChecker::new(&ct)?;
    for line in body.split("\r\n") {
        checker.line(line.as_bytes())?;
    }
    checker.finish()
}

#[test]
fn content_type_parsing() {
    let ct = parse_content_type(CT).expect("parses");
    assert_eq!(ct.mime_type, "multipart/encrypted");
    assert_eq!(ct.param("protocol"), Some("application/pgp-encrypted"));
    assert_eq!(ct.param("boundary"), Some("XYZ"));
    let ct = parse_content_type("Text/Plain; Charset=utf-8; format=flowed").expect("parses");
    assert_eq!(ct.mime_type, "text/plain");
    assert_eq!(ct.params, vec![("charset".into(), "utf-8".into()), ("format".into(), "flowed".into())]);
    let ct = parse_content_type(r#"multipart/mixed; boundary="a \"b\"; c""#).expect("parses");
    assert_eq!(ct.param("boundary"), Some(r#"a "b"; c"#));
    for bad in ["", "text", "/plain", "text/", "te xt/plain", "multipart/mixed; boundary=\"unterminated"] {
        assert_eq!(parse_content_type(bad), None, "{bad:?}");
    }
}

#[test]
fn accepted_bodies() {
    assert!(check(CT, &body()).is_ok());
    // Epilogue text, transport padding, unquoted parameters.
    let padded = body().replace("--XYZ--\r\n", "--XYZ--  \r\nepilogue\r\n").replacen("--XYZ\r\n", "--XYZ \t\r\n", 1);
    assert!(check("multipart/encrypted; boundary=XYZ; protocol=application/pgp-encrypted", &padded).is_ok());
    // Explicit 7bit encoding.
    let seven = body().replace("Content-Description: OpenPGP", "Content-Transfer-Encoding: 7bit\r\nContent-Description: OpenPGP");
    assert!(check(CT, &seven).is_ok());
}

#[test]
fn refused_bodies() {
    let good = body();
    let cases: Vec<(&str, &str, String, MimeProblem)> = vec![
        ("plain text", "text/plain", "hello".into(), MimeProblem::NotMultipartEncrypted),
        ("multipart/mixed", "multipart/mixed; boundary=XYZ", good.clone(), MimeProblem::NotMultipartEncrypted),
        ("no protocol", "multipart/encrypted; boundary=XYZ", good.clone(), MimeProblem::WrongProtocol),
        ("no boundary", "multipart/encrypted; protocol=\"application/pgp-encrypted\"", good.clone(), MimeProblem::BadBoundary),
        ("boundary not found", CT, good.replace("XYZ", "ABC"), MimeProblem::Unterminated),
        ("only the first part", CT, good.split("--XYZ\r\nContent-Type: application/octet").next().expect("part").to_owned() + "--XYZ--\r\n", MimeProblem::Unterminated),
        ("first part only, then end", CT, "--XYZ\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--XYZ--\r\n".into(), MimeProblem::Unterminated),
        ("missing closing boundary", CT, good.replace("--XYZ--\r\n", ""), MimeProblem::Unterminated),
        ("wrong version", CT, good.replace("Version: 1", "Version: 2"), MimeProblem::BadVersionPart),
        ("first part text/plain", CT, good.replacen("application/pgp-encrypted\r\n", "text/plain\r\n", 1), MimeProblem::BadVersionPart),
        ("second part text/plain", CT, good.replace("application/octet-stream; name", "text/plain; name"), MimeProblem::BadDataPart),
        ("base64 second part", CT, good.replace("Content-Description: OpenPGP", "Content-Transfer-Encoding: base64\r\nContent-Description: OpenPGP"), MimeProblem::BadDataPart),
        ("third part", CT, good.replace("--XYZ--", "--XYZ\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XYZ--"), MimeProblem::ExtraPart),
        ("nested multipart as second part", CT, good.replace("application/octet-stream; name=\"encrypted.asc\"", "multipart/mixed; boundary=\"inner\""), MimeProblem::BadDataPart),
        ("cleartext in the data part", CT, good.replace(&armored(), "hello, this is not encrypted\r\n"), MimeProblem::Armor(ArmorProblem::NoBegin)),
        ("header without colon", CT, good.replace("Content-Description: OpenPGP encrypted message", "garbage"), MimeProblem::BadPartHeaders),
    ];
    for (name, ct, body, want) in cases {
        assert_eq!(check(ct, &body), Err(want), "{name}");
    }
}

#[test]
fn extra_part_after_data_is_refused() {
    // A delimiter right after the armor's END line starts a third part.
    let body = body().replace("--XYZ--", "--XYZ\r\n\r\n--XYZ--");
    assert_eq!(check(CT, &body), Err(MimeProblem::ExtraPart));
}

#[test]
fn huge_part_headers_are_refused_without_growing() {
    let ct = parse_content_type(CT).expect("parses");
    let mut checker = EncryptedBodyChecker::new(&ct).expect("checker");
    checker.line(b"--XYZ").expect("delimiter");
    let long = vec![b'X'; 1000];
    let mut refused = false;
    for _ in 0..100 {
        if checker.line(&[b"X-Junk: ".as_slice(), &long].concat()).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "100 kB of part headers accepted");
}
