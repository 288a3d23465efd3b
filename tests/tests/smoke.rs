//! End-to-end smoke tests through a real Postfix and a real Dovecot. Each
//! test starts its own relay on free ports; on failure the relay prints the
//! servers' logs as it is dropped.

use std::time::Duration;

use chatmail_testrelay::{eventually, Relay, RelayOptions, Security, SmtpClient};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

fn start() -> Relay {
    Relay::start(RelayOptions::default()).unwrap_or_else(|e| panic!("relay did not start: {e}"))
}

/// Mail must be encrypted to pass the relay's milter.
fn message(from: &str, to: &str, subject: &str) -> String {
    chatmail_testrelay::mail::encrypted(from, to, subject)
}

#[test]
fn imap_login_over_starttls_announces_xchatmail() {
    let relay = start();
    let account = relay.new_account().expect("account");
    let mut imap = chatmail_testrelay::ImapClient::connect(relay.ports.imap, Security::Plain, &relay.cert_der).expect("connect");
    // (Dovecot treats loopback connections as secure and would accept a
    // plaintext login here, so refusing it cannot be tested on 127.0.0.1.)
    imap.starttls().expect("starttls");
    imap.login(&account.addr, &account.password).expect("login").ok().expect("login accepted");
    let caps = imap.capabilities().expect("capabilities");
    assert!(caps.iter().any(|c| c == "XCHATMAIL"), "no XCHATMAIL in {caps:?}");
    imap.command("SELECT INBOX").expect("select").ok().expect("INBOX exists");
    imap.logout();
}

#[test]
fn imap_implicit_tls_login() {
    let relay = start();
    let account = relay.new_account().expect("account");
    let mut imap = chatmail_testrelay::ImapClient::connect(relay.ports.imaps, Security::Implicit, &relay.cert_der).expect("connect");
    imap.login(&account.addr, &account.password).expect("login").ok().expect("login accepted");
    imap.logout();
}

// Dovecot delays answers to repeated failures from one IP (2 s, 4 s, ...),
// per instance: each failing login gets its own relay to keep tests quick.
#[test]
fn wrong_password_fails_on_imap() {
    let relay = start();
    let account = relay.new_account().expect("account");
    let mut imap = chatmail_testrelay::ImapClient::connect(relay.ports.imap, Security::Plain, &relay.cert_der).expect("connect");
    imap.starttls().expect("starttls");
    let reply = imap.login(&account.addr, "not-the-password").expect("response");
    assert_eq!(reply.status, "NO", "{reply:?}");
    assert!(reply.text.contains("[AUTHENTICATIONFAILED]"), "{reply:?}");
}

#[test]
fn wrong_password_fails_on_submission() {
    let relay = start();
    let account = relay.new_account().expect("account");
    let mut smtp = relay.smtp(relay.ports.submission).expect("connect");
    smtp.ehlo("client.test").expect("ehlo");
    smtp.starttls().expect("starttls");
    smtp.ehlo("client.test").expect("ehlo");
    let reply = smtp.auth_plain(&account.addr, "not-the-password").expect("reply");
    assert_eq!(reply.code, 535, "{}", reply.text());
}

#[test]
fn submission_delivers_to_the_recipients_inbox() {
    let relay = start();
    let alice = relay.new_account().expect("alice");
    let bob = relay.new_account().expect("bob");
    relay.submit(&alice, &[&bob.addr], &message(&alice.addr, &bob.addr, "via-587")).expect("submit");
    let got = relay.wait_for_message(&bob, "Subject: via-587", DELIVERY_TIMEOUT).expect("delivered");
    assert!(got.contains(&format!("From: <{}>", alice.addr)), "{got}");
}

#[test]
fn implicit_tls_submission_delivers() {
    let relay = start();
    let alice = relay.new_account().expect("alice");
    let bob = relay.new_account().expect("bob");
    let mut smtp = relay.smtp(relay.ports.smtps).expect("connect");
    assert!(smtp.is_tls());
    smtp.ehlo("client.test").expect("ehlo").expect(250).expect("250");
    smtp.auth_plain(&alice.addr, &alice.password).expect("auth").expect(235).expect("235");
    smtp.send_mail(&alice.addr, &[&bob.addr], &message(&alice.addr, &bob.addr, "via-465")).expect("send");
    smtp.quit();
    relay.wait_for_message(&bob, "Subject: via-465", DELIVERY_TIMEOUT).expect("delivered");
}

#[test]
fn submission_requires_login() {
    let relay = start();
    let bob = relay.new_account().expect("bob");
    let mut smtp = relay.smtp(relay.ports.submission).expect("connect");
    smtp.ehlo("client.test").expect("ehlo");
    smtp.starttls().expect("starttls");
    smtp.ehlo("client.test").expect("ehlo");
    let reply = smtp.command("MAIL FROM:<someone@other.example>").expect("reply");
    let reply = if reply.code == 250 { smtp.command(&format!("RCPT TO:<{}>", bob.addr)).expect("reply") } else { reply };
    assert!((500..600).contains(&reply.code), "unauthenticated submission accepted: {}", reply.text());
}

#[test]
fn mail_from_other_servers_arrives_over_port_25() {
    let relay = start();
    let bob = relay.new_account().expect("bob");
    let reply = relay
        .deliver_incoming("carol@other.example", &[&bob.addr], &message("carol@other.example", &bob.addr, "via-25"))
        .expect("incoming SMTP");
    assert_eq!(reply.code, 250, "{}", reply.text());
    relay.wait_for_message(&bob, "Subject: via-25", DELIVERY_TIMEOUT).expect("delivered");
}

#[test]
fn port_25_requires_tls() {
    let relay = start();
    let bob = relay.new_account().expect("bob");
    let mut smtp = SmtpClient::connect(relay.ports.smtp, Security::Plain, &relay.cert_der).expect("connect");
    smtp.ehlo("mx.other.example").expect("ehlo");
    let reply = smtp.command("MAIL FROM:<carol@other.example>").expect("reply");
    let reply = if reply.code == 250 { smtp.command(&format!("RCPT TO:<{}>", bob.addr)).expect("reply") } else { reply };
    assert_eq!(reply.code, 530, "{}", reply.text());
}

#[test]
fn no_relaying_to_foreign_domains() {
    let relay = start();
    let mut smtp = SmtpClient::connect(relay.ports.smtp, Security::Plain, &relay.cert_der).expect("connect");
    smtp.ehlo("mx.other.example").expect("ehlo");
    smtp.starttls().expect("starttls");
    smtp.ehlo("mx.other.example").expect("ehlo");
    smtp.command("MAIL FROM:<carol@other.example>").expect("reply").expect(250).expect("250");
    let reply = smtp.command("RCPT TO:<dave@foreign.example>").expect("reply");
    assert_eq!(reply.code, 554, "{}", reply.text());
    assert!(reply.text().contains("Relay access denied"), "{}", reply.text());
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn stopping_leaves_no_process_behind() {
    let relay = start();
    let run_dir = relay.run_dir.display().to_string();
    assert!(!processes_mentioning(&run_dir).is_empty(), "no server process found while running");
    drop(relay);
    // Dovecot's and Postfix's children exit right after their masters.
    eventually("the relay's processes to end", Duration::from_secs(5), || processes_mentioning(&run_dir).is_empty().then_some(()));
}

#[test]
fn relays_run_side_by_side() {
    let one = start();
    let two = start();
    assert_ne!(one.ports, two.ports);
    let a = one.new_account().expect("account");
    let b = two.new_account().expect("account");
    one.imap_login(&a).expect("login one").logout();
    two.imap_login(&b).expect("login two").logout();
}

#[test]
fn killed_harness_leaves_no_process_behind() {
    // The harness binary (as `make run` starts it), killed with SIGKILL so it
    // cannot clean up: the servers must still go away.
    let run_dir = tempfile::Builder::new().prefix("chatmail-kill-").tempdir_in("/tmp").expect("temp dir");
    std::fs::set_permissions(run_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut harness = std::process::Command::new(env!("CARGO_BIN_EXE_chatmail-local-relay"))
        .env("CHATMAIL_RUN_DIR", run_dir.path())
        .env("CHATMAIL_TEST_ACCOUNTS", "0")
        .envs(["SMTP", "SUBMISSION", "SMTPS", "IMAP", "IMAPS"].map(|p| (format!("CHATMAIL_{p}_PORT"), "0")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start harness");
    let ready = run_dir.path().join("relay.json");
    eventually("the harness to be ready", Duration::from_secs(60), || {
        assert!(harness.try_wait().expect("wait").is_none(), "harness exited early");
        ready.exists().then_some(())
    });
    let needle = run_dir.path().display().to_string();
    assert!(processes_mentioning(&needle).len() >= 2, "servers not found: {:?}", processes_mentioning(&needle));
    harness.kill().expect("SIGKILL");
    harness.wait().expect("reap");
    eventually("the servers to end after the harness died", Duration::from_secs(10), || {
        processes_mentioning(&needle).is_empty().then_some(())
    });
}
