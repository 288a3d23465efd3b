//! DKIM in the milter, through real Postfix: two relays of different
//! domains sign for and verify each other (keys in the harness's test DNS,
//! transport maps instead of MX records), bounces are signed, and incoming
//! mail without a valid aligned signature gets the reply chatmail gives.

use std::process::Command;
use std::time::Duration;

use chatmail_testrelay::dkim::{sign, sign_with, Signing};
use chatmail_testrelay::mail::{cleartext, encrypted};
use chatmail_testrelay::{test_dns, Relay, RelayOptions, SmtpReply};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn milter_binary() -> std::path::PathBuf {
    chatmail_testrelay::sibling_binary("chatmail-milter", "CHATMAIL_MILTER").expect("chatmail-milter binary")
}

fn start(domain: &str, params: &[(&str, &str)]) -> Relay {
    let options = RelayOptions {
        mail_domain: domain.into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..RelayOptions::default()
    };
    Relay::start(options).unwrap_or_else(|e| panic!("relay {domain} did not start: {e}"))
}

fn milter_log(relay: &Relay) -> String {
    std::fs::read_to_string(relay.log_dir.join("milter.log")).unwrap_or_default()
}

fn wait_for_log(relay: &Relay, needle: &str) -> String {
    chatmail_testrelay::eventually(&format!("{needle:?} in the milter log of {}", relay.domain), DELIVERY_TIMEOUT, || {
        Some(milter_log(relay)).filter(|log| log.contains(needle))
    })
}

/// The DKIM-Signature headers of a fetched message, unfolded.
fn signatures(message: &str) -> Vec<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default().replace("\r\n\t", " ").replace("\r\n ", " ");
    head.lines().filter(|l| l.to_ascii_lowercase().starts_with("dkim-signature:")).map(str::to_owned).collect()
}

#[test]
fn two_relays_sign_and_verify_each_others_mail() {
    // relay-a also signs with Ed25519: a key made by the operator command,
    // its record published as `dkim-record` prints it.
    let keys = tempfile::tempdir().expect("tempdir");
    let ed_key = keys.path().join("ed25519.private");
    let ini = keys.path().join("keygen.ini");
    std::fs::write(&ini, format!("[params]\nmail_domain = relay-a.test\ndkim_ed25519_key_file = {}\n", ed_key.display())).expect("ini");
    let out = Command::new(milter_binary()).args(["dkim-keygen", "--ed25519", "--config"]).arg(&ini).output().expect("keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record = String::from_utf8_lossy(&out.stdout).into_owned();
    let (name, value) = record.trim().split_once(". 3600 IN TXT ").expect("zone line");
    test_dns().expect("dns").set_txt(name, value.trim_matches('"'));

    let ed_key_path = ed_key.display().to_string();
    let a = start("relay-a.test", &[("dkim_ed25519_key_file", &ed_key_path), ("dkim_ed25519_selector", "ed25519")]);
    let b = start("relay-b.test", &[]);
    a.route_to(&b).expect("route a→b");
    b.route_to(&a).expect("route b→a");
    let alice = a.new_account().expect("alice");
    let bob = b.new_account().expect("bob");

    a.submit(&alice, &[&bob.addr], &encrypted(&alice.addr, &bob.addr, "a-to-b")).expect("submit a→b");
    let got = b.wait_for_message(&bob, "a-to-b", DELIVERY_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.logs(), b.logs()));
    let sigs = signatures(&got);
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert!(sigs.iter().any(|s| s.contains("a=rsa-sha256") && s.contains("d=relay-a.test") && s.contains("s=opendkim")), "{sigs:?}");
    assert!(sigs.iter().any(|s| s.contains("a=ed25519-sha256") && s.contains("s=ed25519")), "{sigs:?}");
    assert!(sigs[0].contains("c=relaxed/simple"), "{sigs:?}");
    // Over-signed: From appears in h= once more than in the message.
    let h = sigs[0].split("h=").nth(1).expect("h=").split(';').next().expect("h list").to_ascii_lowercase();
    assert_eq!(h.split(':').filter(|n| n.trim() == "from").count(), 2, "{h}");
    assert!(milter_log(&a).contains("direction=outgoing") && milter_log(&a).contains("reason=encrypted+signed"), "{}", milter_log(&a));
    wait_for_log(&b, "reason=encrypted+dkim-pass:relay-a.test");

    b.submit(&bob, &[&alice.addr], &encrypted(&bob.addr, &alice.addr, "b-to-a")).expect("submit b→a");
    a.wait_for_message(&alice, "b-to-a", DELIVERY_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.logs(), b.logs()));
    wait_for_log(&a, "reason=encrypted+dkim-pass:relay-b.test");

    // A bounce Postfix makes (no such mailbox at relay-b) is signed by
    // relay-b through non_smtpd_milters, so relay-a accepts it as a DSN.
    a.submit(&alice, &["nobody123@relay-b.test"], &encrypted(&alice.addr, "nobody123@relay-b.test", "to-nobody")).expect("submit");
    wait_for_log(&b, "direction=local");
    let bounce = a.wait_for_message(&alice, "Undelivered Mail", DELIVERY_TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", b.logs()));
    let bounce_sigs = signatures(&bounce);
    assert!(bounce_sigs.iter().any(|s| s.contains("d=relay-b.test")), "{bounce_sigs:?}\n{bounce}");
    wait_for_log(&a, "reason=dsn+dkim-pass:relay-b.test");
    assert!(milter_log(&b).contains("reason=local+signed"), "{}", milter_log(&b));
}

fn incoming(relay: &Relay, to: &str, message: &str) -> SmtpReply {
    relay.deliver_incoming_unsigned("carol@other.test", &[to], message).expect("incoming SMTP")
}

#[test]
fn incoming_mail_needs_a_valid_aligned_signature() {
    let relay = start("relay-c.test", &[("dns_timeout", "1")]);
    let bob = relay.new_account().expect("bob");
    let carol = "carol@other.test";
    let message = |subject: &str| encrypted(carol, &bob.addr, subject);

    let reply = incoming(&relay, &bob.addr, &sign(&message("good"), "other.test").expect("sign"));
    assert_eq!(reply.code, 250, "{}", reply.text());
    // A large message reaches the milter in many body chunks, hashed as they come.
    let large = chatmail_testrelay::mail::encrypted_sized(carol, &bob.addr, "large", 600_000);
    let reply = incoming(&relay, &bob.addr, &sign(&large, "other.test").expect("sign"));
    assert_eq!(reply.code, 250, "{}", reply.text());
    let tampered_large = sign(&large, "other.test").expect("sign").replacen("-----END PGP MESSAGE-----", "\r\n-----END PGP MESSAGE-----", 1);
    assert_eq!(incoming(&relay, &bob.addr, &tampered_large).text(), "554 5.7.1 No valid DKIM signature found");

    let reply = incoming(&relay, &bob.addr, &message("unsigned"));
    assert_eq!(reply.text(), "554 5.7.1 No DKIM signature found");

    let tampered = sign(&message("tampered"), "other.test").expect("sign").replacen("-----END PGP MESSAGE-----", "\r\n-----END PGP MESSAGE-----", 1);
    assert_eq!(incoming(&relay, &bob.addr, &tampered).text(), "554 5.7.1 No valid DKIM signature found");

    // Validly signed, but by another domain than From's.
    let wrong_domain = sign(&message("wrong-domain"), "mailinglist.test").expect("sign");
    assert_eq!(incoming(&relay, &bob.addr, &wrong_domain).text(), "554 5.7.1 No valid DKIM signature found");

    let expired = sign_with(&message("expired"), "other.test", Signing::Expired).expect("sign");
    assert_eq!(incoming(&relay, &bob.addr, &expired).text(), "554 5.7.1 No valid DKIM signature found");

    // No key published at all.
    let unpublished = sign(&encrypted("dan@nokey.test", &bob.addr, "nokey"), "nokey.test").expect("sign");
    test_dns().expect("dns").remove("opendkim._domainkey.nokey.test");
    assert_eq!(incoming(&relay, &bob.addr, &unpublished).text(), "554 5.7.1 No valid DKIM signature found");

    // The DNS server does not answer: tempfail, so the sender retries.
    let slow = sign(&encrypted("eve@slow.test", &bob.addr, "slow"), "slow.test").expect("sign");
    test_dns().expect("dns").make_silent("opendkim._domainkey.slow.test");
    let reply = incoming(&relay, &bob.addr, &slow);
    assert!(reply.text().starts_with("451 4.7.5 "), "{}", reply.text());

    // A domain-literal From has no domain to sign for: exempt.
    let literal = encrypted("frank@[192.0.2.7]", &bob.addr, "literal");
    let reply = incoming(&relay, &bob.addr, &literal);
    assert_eq!(reply.code, 250, "{}", reply.text());

    // Encryption is checked first: unsigned cleartext gets 523, not 554.
    let reply = incoming(&relay, &bob.addr, &cleartext(carol, &bob.addr, "plain"));
    assert_eq!(reply.text(), "523 Encryption Needed: Invalid Unencrypted Mail");

    let log = milter_log(&relay);
    for reason in ["reason=dkim-missing", "reason=dkim-invalid:from=other.test", "decision=tempfail reason=dkim-dns-failure", "dkim-exempt-domain-literal"] {
        assert!(log.contains(reason), "{reason} not logged:\n{log}");
    }
    relay.wait_for_message(&bob, "good", DELIVERY_TIMEOUT).expect("the good one arrived");
}

#[test]
fn key_lookups_are_cached() {
    let relay = start("relay-d.test", &[]);
    let bob = relay.new_account().expect("bob");
    let before = test_dns().expect("dns").queries("opendkim._domainkey.cached.test");
    for n in 0..3 {
        let signed = sign(&encrypted("gina@cached.test", &bob.addr, &format!("cached-{n}")), "cached.test").expect("sign");
        let reply = incoming(&relay, &bob.addr, &signed);
        assert_eq!(reply.code, 250, "{}", reply.text());
    }
    let asked = test_dns().expect("dns").queries("opendkim._domainkey.cached.test") - before;
    assert_eq!(asked, 1, "three messages, one DNS question (TTL 60 s)");
}

#[test]
fn check_command_compares_the_published_record() {
    let relay = start("relay-e.test", &[]);
    let check = || Command::new(milter_binary()).arg("dkim-check").arg("--config").arg(&relay.config_path).output().expect("dkim-check");
    let out = check();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: opendkim._domainkey.relay-e.test matches"));

    test_dns().expect("dns").set_txt("opendkim._domainkey.relay-e.test", "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong");
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MISMATCH: TXT opendkim._domainkey.relay-e.test: p= holds a different public key"), "{stdout}");
    assert!(stdout.contains("publish: opendkim._domainkey.relay-e.test. 3600 IN TXT ("), "{stdout}");

    test_dns().expect("dns").remove("opendkim._domainkey.relay-e.test");
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH: "), "{}", String::from_utf8_lossy(&out.stdout));
}
