#![allow(clippy::type_complexity)] // the case tables

use super::*;

const ALICE: &str = "alice0001@chat.example";
const BOB: &str = "bob000001@chat.example";

fn outgoing(rcpts: &[&str]) -> Envelope {
    Envelope {
        direction: Direction::Outgoing { login: ALICE.into() },
        mail_from: ALICE.into(),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
    }
}

fn incoming(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope { direction: Direction::Incoming, mail_from: from.into(), rcpts: rcpts.iter().map(|r| r.to_string()).collect() }
}

fn encrypted() -> Body {
    Body::Encrypted(ArmorSummary { has_version_header: false, key_packets: 1 })
}

fn cleartext() -> Body {
    Body::NotEncrypted { why: "not multipart/encrypted".into() }
}

const SECURE_JOIN: &str = "From: <alice0001@chat.example>\r\nSecure-Join: vc-request\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSecure-Join: vc-request\r\n--b--\r\n";

const ASM: &str = "From: <alice0001@chat.example>\r\nSubject: Autocrypt Setup Message\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsetup\r\n--b--\r\n";

const DSN: &str = "From: Mail Delivery System <MAILER-DAEMON@mx.other.example>\r\nAuto-Submitted: auto-replied\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n";

const MDN: &str = "From: <carol@other.example>\r\nAuto-Submitted: auto-replied\r\n\
Content-Type: multipart/report; report-type=disposition-notification; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nread\r\n--b--\r\n";

const PLAIN: &str = "From: <alice0001@chat.example>\r\nSubject: hi\r\n\r\nhello\r\n";

fn run(envelope: &Envelope, header_from: Option<&str>, body: &Body, raw: Option<&str>, enforcing: &[&str]) -> Decision {
    let enforcing: Vec<String> = enforcing.iter().map(|s| s.to_string()).collect();
    let passthrough = Passthrough { senders: vec!["robot0001@chat.example".into()], recipients: vec!["echo@chat.example".into(), "@public.example".into()] };
    decide(
        envelope,
        MessageFacts { header_from, body, cleartext: raw.map(str::as_bytes) },
        &passthrough,
        &|rcpt| enforcing.iter().any(|e| e == rcpt),
    )
}

fn accepted(reason: AcceptReason) -> Decision {
    Decision::Accept { reason, reset_sender: false }
}

fn outcome(decision: &Decision) -> String {
    match decision {
        Decision::Accept { reason, reset_sender } => format!("accept {}{}", reason.name(), if *reset_sender { " reset-sender" } else { "" }),
        Decision::Reject { reply, reason } => format!("reject {} ({reason})", reply.code),
    }
}

#[test]
fn outgoing_decisions() {
    let with_version = Body::Encrypted(ArmorSummary { has_version_header: true, key_packets: 1 });
    let mut forged_envelope = outgoing(&[BOB]);
    forged_envelope.mail_from = "mallory01@chat.example".into();
    let mut robot = outgoing(&[BOB]);
    robot.direction = Direction::Outgoing { login: "robot0001@chat.example".into() };
    robot.mail_from = "robot0001@chat.example".into();
    let cases: Vec<(&str, Envelope, Option<&str>, Body, Option<String>, &str)> = vec![
        ("encrypted", outgoing(&[BOB]), Some(ALICE), encrypted(), None, "accept encrypted"),
        ("encrypted, From in other case", outgoing(&[BOB]), Some("Alice0001@Chat.Example"), encrypted(), None, "accept encrypted"),
        ("armor with Version header", outgoing(&[BOB]), Some(ALICE), with_version, None, "reject 523 (armor-has-version-header)"),
        ("cleartext", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(PLAIN.into()), "reject 523 (cleartext: not multipart/encrypted)"),
        ("cleartext too big to keep", outgoing(&[BOB]), Some(ALICE), cleartext(), None, "reject 523 (cleartext: not multipart/encrypted)"),
        ("forged From header", outgoing(&[BOB]), Some("mallory01@chat.example"), encrypted(), None, "reject 553 (from-header-mismatch)"),
        ("no From header", outgoing(&[BOB]), None, encrypted(), None, "reject 553 (from-header-mismatch)"),
        ("forged envelope sender", forged_envelope, Some(ALICE), encrypted(), None, "reject 553 (envelope-sender-mismatch)"),
        ("secure-join request", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(SECURE_JOIN.into()), "accept securejoin"),
        ("vg-request", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(SECURE_JOIN.replace("vc-request", "vg-request")), "accept securejoin"),
        ("secure-join with wrong text", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(SECURE_JOIN.replace("\r\nSecure-Join: vc-request\r\n--b", "\r\nhello\r\n--b")), "reject 523 (cleartext: not multipart/encrypted)"),
        ("secure-join with two parts", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(SECURE_JOIN.replace("--b--", "--b\r\nContent-Type: text/plain\r\n\r\nmore\r\n--b--")), "reject 523 (cleartext: not multipart/encrypted)"),
        ("secure-join vc-auth (carries secrets)", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(SECURE_JOIN.replace("vc-request", "vc-auth-required")), "reject 523 (cleartext: not multipart/encrypted)"),
        ("secure-join not multipart", outgoing(&[BOB]), Some(ALICE), cleartext(), Some("From: <alice0001@chat.example>\r\nSecure-Join: vc-request\r\n\r\nSecure-Join: vc-request\r\n".into()), "reject 523 (cleartext: not multipart/encrypted)"),
        ("autocrypt setup message to self", outgoing(&[ALICE]), Some(ALICE), cleartext(), Some(ASM.into()), "accept autocrypt-setup-message"),
        ("autocrypt setup message to another", outgoing(&[BOB]), Some(ALICE), cleartext(), Some(ASM.into()), "reject 523 (cleartext: not multipart/encrypted)"),
        ("autocrypt setup message to self and another", outgoing(&[ALICE, BOB]), Some(ALICE), cleartext(), Some(ASM.into()), "reject 523 (cleartext: not multipart/encrypted)"),
        ("passthrough recipient", outgoing(&["echo@chat.example"]), Some(ALICE), cleartext(), Some(PLAIN.into()), "accept passthrough-recipients"),
        ("passthrough domain", outgoing(&["x@public.example"]), Some(ALICE), cleartext(), Some(PLAIN.into()), "accept passthrough-recipients"),
        ("passthrough and normal recipient", outgoing(&["echo@chat.example", BOB]), Some(ALICE), cleartext(), Some(PLAIN.into()), "reject 523 (cleartext: not multipart/encrypted)"),
        ("passthrough sender", robot, Some("robot0001@chat.example"), cleartext(), Some(PLAIN.into()), "accept passthrough-sender"),
    ];
    for (name, envelope, from, body, raw, want) in cases {
        assert_eq!(outcome(&run(&envelope, from, &body, raw.as_deref(), &[])), want, "{name}");
    }
}

#[test]
fn incoming_decisions() {
    let carol = "carol@other.example";
    let cases: Vec<(&str, Envelope, Option<&str>, Body, Option<String>, &[&str], &str)> = vec![
        ("encrypted", incoming(carol, &[BOB]), Some(carol), encrypted(), None, &[BOB], "accept encrypted"),
        ("encrypted with Version header", incoming(carol, &[BOB]), Some(carol), Body::Encrypted(ArmorSummary { has_version_header: true, key_packets: 2 }), None, &[BOB], "accept encrypted"),
        ("encrypted, From differs", incoming(carol, &[BOB]), Some("ceo@bank.example"), encrypted(), None, &[BOB], "accept encrypted reset-sender"),
        ("null sender", incoming("", &[BOB]), Some(carol), encrypted(), None, &[BOB], "accept encrypted"),
        ("cleartext to enforcing recipient", incoming(carol, &[BOB]), Some(carol), cleartext(), Some(PLAIN.into()), &[BOB], "reject 523 (cleartext to 1 enforcing recipient(s): not multipart/encrypted)"),
        ("cleartext to recipient without marker", incoming(carol, &[BOB]), Some(carol), cleartext(), Some(PLAIN.into()), &[], "accept cleartext-allowed-by-recipients"),
        ("cleartext, one of two enforcing", incoming(carol, &[BOB, ALICE]), Some(carol), cleartext(), Some(PLAIN.into()), &[BOB], "reject 523 (cleartext to 1 enforcing recipient(s): not multipart/encrypted)"),
        ("cleartext to passthrough recipient", incoming(carol, &["echo@chat.example"]), Some(carol), cleartext(), Some(PLAIN.into()), &["echo@chat.example"], "accept cleartext-allowed-by-recipients"),
        ("DSN", incoming("", &[BOB]), Some("mailer-daemon@mx.other.example"), cleartext(), Some(DSN.into()), &[BOB], "accept dsn"),
        ("DSN without Auto-Submitted", incoming("", &[BOB]), Some("mailer-daemon@mx.other.example"), cleartext(), Some(DSN.replace("Auto-Submitted: auto-replied\r\n", "")), &[BOB], "reject 523 (cleartext to 1 enforcing recipient(s): not multipart/encrypted)"),
        ("DSN from a person", incoming("", &[BOB]), Some(carol), cleartext(), Some(DSN.into()), &[BOB], "reject 523 (cleartext to 1 enforcing recipient(s): not multipart/encrypted)"),
        ("MDN is not a DSN", incoming(carol, &[BOB]), Some("mailer-daemon@other.example"), cleartext(), Some(MDN.into()), &[BOB], "reject 523 (cleartext to 1 enforcing recipient(s): not multipart/encrypted)"),
        ("secure-join from another relay", incoming(carol, &[BOB]), Some(carol), cleartext(), Some(SECURE_JOIN.into()), &[BOB], "accept securejoin"),
    ];
    for (name, envelope, from, body, raw, enforcing, want) in cases {
        assert_eq!(outcome(&run(&envelope, from, &body, raw.as_deref(), enforcing)), want, "{name}");
    }
}

#[test]
fn local_mail_is_accepted_unchecked() {
    // A bounce Postfix made: cleartext, null sender, to anyone.
    let bounce = Envelope { direction: Direction::Local, mail_from: String::new(), rcpts: vec!["carol@other.example".into()] };
    assert_eq!(outcome(&run(&bounce, Some("mailer-daemon@chat.example"), &cleartext(), Some(DSN), &[])), "accept local");
    let forged = Envelope { direction: Direction::Local, mail_from: "root@chat.example".into(), rcpts: vec![BOB.into()] };
    assert_eq!(outcome(&run(&forged, Some("someone@else.example"), &cleartext(), None, &[BOB])), "accept local");
}

#[test]
fn from_addresses() {
    assert_eq!(from_address("  <Alice0001@Chat.Example>").as_deref(), Some("alice0001@chat.example"));
    assert_eq!(from_address("user@[192.0.2.1]").as_deref(), Some("user@[192.0.2.1]"));
    assert_eq!(from_address("<Alice0001@Chat.Example>").as_deref(), Some("alice0001@chat.example"));
    assert_eq!(from_address("Alice <alice0001@chat.example>").as_deref(), Some("alice0001@chat.example"));
    assert_eq!(from_address("\"Mallory <alice0001@chat.example>\" <mallory@evil.example>").as_deref(), Some("mallory@evil.example"));
    assert_eq!(from_address("a@x.example, b@y.example"), None);
    assert_eq!(from_address("nobody"), None);
    assert_eq!(from_address(""), None);
}

#[test]
fn accept_reason_names_are_distinct() {
    let _ = accepted(AcceptReason::Encrypted);
    let reasons = [
        AcceptReason::Encrypted,
        AcceptReason::SecureJoin,
        AcceptReason::AutocryptSetupMessage,
        AcceptReason::DeliveryStatusNotification,
        AcceptReason::PassthroughSender,
        AcceptReason::PassthroughRecipients,
        AcceptReason::NoRecipientEnforcesEncryption,
        AcceptReason::Local,
    ];
    let names: std::collections::BTreeSet<&str> = reasons.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), reasons.len());
}
