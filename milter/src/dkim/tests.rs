use super::*;

fn pass(d: &str) -> SignatureCheck {
    SignatureCheck { domain: Some(d.into()), outcome: CheckOutcome::Pass }
}

fn invalid(d: &str) -> SignatureCheck {
    SignatureCheck { domain: Some(d.into()), outcome: CheckOutcome::Invalid { why: "body hash mismatch".into() } }
}

fn dns(d: &str) -> SignatureCheck {
    SignatureCheck { domain: Some(d.into()), outcome: CheckOutcome::DnsFailure { why: "timeout".into() } }
}

fn unparsed() -> SignatureCheck {
    SignatureCheck { domain: None, outcome: CheckOutcome::Invalid { why: "parse error".into() } }
}

#[derive(Debug, PartialEq)]
enum Want {
    Pass,
    Exempt,
    Missing,
    Invalid,
    TempFail,
}

#[test]
fn verdicts() {
    let cases: Vec<(&str, Option<&str>, Vec<SignatureCheck>, Want)> = vec![
        ("aligned pass", Some("a.example"), vec![pass("a.example")], Want::Pass),
        ("alignment ignores case", Some("A.Example"), vec![pass("a.example")], Want::Pass),
        ("no signature", Some("a.example"), vec![], Want::Missing),
        ("no signature, no From", None, vec![], Want::Missing),
        ("domain literal needs none", Some("[192.0.2.1]"), vec![], Want::Exempt),
        ("domain literal, any signature", Some("[192.0.2.1]"), vec![invalid("x.example")], Want::Exempt),
        ("valid but other domain", Some("a.example"), vec![pass("b.example")], Want::Invalid),
        ("parent domain is not strict alignment", Some("mail.a.example"), vec![pass("a.example")], Want::Invalid),
        ("subdomain is not strict alignment", Some("a.example"), vec![pass("mail.a.example")], Want::Invalid),
        ("tampered", Some("a.example"), vec![invalid("a.example")], Want::Invalid),
        ("one good of two", Some("a.example"), vec![invalid("a.example"), pass("a.example")], Want::Pass),
        ("third-party pass plus aligned bad", Some("a.example"), vec![pass("list.example"), invalid("a.example")], Want::Invalid),
        ("unparsable signature only", Some("a.example"), vec![unparsed()], Want::Invalid),
        ("no single From", None, vec![pass("a.example")], Want::Invalid),
        ("aligned key lookup failed", Some("a.example"), vec![dns("a.example")], Want::TempFail),
        ("aligned lookup failed, other bad", Some("a.example"), vec![invalid("a.example"), dns("a.example")], Want::TempFail),
        ("aligned pass beats a failed lookup", Some("a.example"), vec![dns("a.example"), pass("a.example")], Want::Pass),
        ("failed lookup of another domain does not matter", Some("a.example"), vec![dns("b.example")], Want::Invalid),
    ];
    for (name, from, checks, want) in cases {
        let got = match judge(from, &checks) {
            DkimVerdict::Pass { .. } => Want::Pass,
            DkimVerdict::Exempt => Want::Exempt,
            DkimVerdict::Missing => Want::Missing,
            DkimVerdict::Invalid { .. } => Want::Invalid,
            DkimVerdict::TempFail { .. } => Want::TempFail,
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn replies_are_the_ones_chatmail_uses() {
    let missing = DkimVerdict::Missing.reply().expect("refused");
    assert_eq!((missing.code, missing.xcode, missing.text.as_str()), ("554", Some("5.7.1"), "No DKIM signature found"));
    let invalid = DkimVerdict::Invalid { details: String::new() }.reply().expect("refused");
    assert_eq!((invalid.code, invalid.xcode, invalid.text.as_str()), ("554", Some("5.7.1"), "No valid DKIM signature found"));
    let temp = DkimVerdict::TempFail { details: String::new() }.reply().expect("tempfailed");
    assert!(temp.code.starts_with('4') && temp.xcode.is_some_and(|x| x.starts_with('4')), "{temp:?}");
    assert_eq!(DkimVerdict::Pass { domain: "a.example".into() }.reply(), None);
    assert_eq!(DkimVerdict::Exempt.reply(), None);
}

#[test]
fn log_names_have_no_spaces() {
    let verdict = judge(Some("a.example"), &[invalid("b.example"), unparsed()]);
    let name = verdict.log_name();
    assert!(!name.contains(' '), "{name}");
    assert!(name.starts_with("dkim-invalid:from=a.example:d=b.example:body_hash_mismatch,d=?:parse_error"), "{name}");
}

#[test]
fn every_signed_header_is_listed_twice() {
    let list = oversigned_headers();
    assert_eq!(list.len(), 2 * SIGNED_HEADERS.len());
    for header in SIGNED_HEADERS {
        assert_eq!(list.iter().filter(|h| *h == header).count(), 2, "{header}");
    }
}
