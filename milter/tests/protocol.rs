//! The milter over the milter protocol (indymilter-test plays Postfix):
//! every decision and the limits. (The tempfail path Postfix takes when the
//! milter is unreachable is tested end to end in tests/tests/milter.rs.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chatmail_config::metrics::Registry;
use chatmail_milter::{DkimSettings, KeySource, MailOrigin, MilterSettings, Passthrough, Rate, RatingRules};
use chatmail_testrelay::dkim::TEST_KEY_PEM;
use indymilter_test::{EomAction, EomActions, MacroStage, Status, TestConnection};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ALICE: &str = "alice0001@chat.example";
const BOB: &str = "bob000001@chat.example";

/// Signing with the harness's test key, keys of others from the harness's
/// test DNS (where `chatmail_testrelay::dkim::sign` publishes them).
fn dkim_settings(dir: &Path) -> DkimSettings {
    let key = dir.join("dkim.private");
    std::fs::write(&key, TEST_KEY_PEM).expect("key");
    let signers = chatmail_milter::load_signers("chat.example", KeySource { path: &key, selector: "opendkim" }, None).expect("signers");
    let dns = chatmail_testrelay::test_dns().expect("test dns");
    chatmail_testrelay::dkim::publish(dns, "opendkim", "chat.example");
    DkimSettings {
        signers: Box::leak(Box::new(signers)),
        authenticator: chatmail_milter::authenticator(&[dns.addr()], Duration::from_secs(2)).expect("resolver"),
    }
}

fn settings(mailboxes: &Path) -> MilterSettings {
    MilterSettings {
        origin: MailOrigin::Smtp,
        mail_domain: "chat.example".into(),
        dkim: Some(dkim_settings(mailboxes)),
        max_message_size: 100_000,
        max_recipients: 3,
        mailboxes_dir: mailboxes.to_path_buf(),
        passthrough: Passthrough::default(),
        rating: RatingRules {
            full: Rate { per_minute: 1, burst: 2 },
            reduced: Rate { per_minute: 1, burst: 1 },
            new_account_ms: 0,
            cleartext_penalty_ms: 0,
        },
        metrics: Arc::new(Registry::new(chatmail_milter::METRICS)),
    }
}

struct Milter {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics: Arc<Registry>,
    _mailboxes: tempfile::TempDir,
}

impl Milter {
    async fn start() -> Milter {
        let mailboxes = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(mailboxes.path().join(BOB)).expect("mailbox");
        std::fs::write(mailboxes.path().join(BOB).join("enforceE2EEincoming"), "").expect("marker");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = settings(mailboxes.path());
        let metrics = Arc::clone(&settings.metrics);
        let task = tokio::spawn(chatmail_milter::run(listener, settings, async {
            let _ = stopped.await;
        }));
        Milter { addr, stop: Some(stop), task, metrics, _mailboxes: mailboxes }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("join").expect("milter ran");
    }
}

fn encrypted_body() -> String {
    // PKESK + SEIPD, base64 of: c1 02 03 03 d2 03 01 aa bb
    "--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--B\r\n\
     Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n\
     wQIDA9IDAaq7\r\n-----END PGP MESSAGE-----\r\n\r\n--B--\r\n"
        .into()
}

const ENCRYPTED_CT: &str = "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"B\"";

async fn connect(milter: &Milter) -> TestConnection {
    // The milter has no connect or helo callbacks, so those stages are
    // negotiated away and the conversation starts at MAIL.
    TestConnection::open(milter.addr).await.expect("open")
}

/// Runs one message; `login` makes it outgoing. Returns the first
/// non-Continue status and whether EOM reset the envelope sender to `<>`.
/// Incoming messages get a valid DKIM signature of their From domain.
async fn message(
    conn: &mut TestConnection,
    login: Option<&str>,
    from: &str,
    rcpts: &[&str],
    headers: &[(&str, &str)],
    body: &str,
) -> (Status, bool) {
    let signature = match login {
        Some(_) => None,
        None => sign(headers, body),
    };
    let mut all: Vec<(&str, &str)> = Vec::new();
    if let Some(value) = &signature {
        all.push(("DKIM-Signature", value.as_str()));
    }
    all.extend_from_slice(headers);
    let (status, actions) = message_actions(conn, login, from, rcpts, &all, body).await;
    (status, actions.has_change_sender("<>", indymilter_test::any()))
}

/// The DKIM-Signature value (folded with bare LF, as Postfix passes
/// header values) for a message of `headers` and `body` from the domain of
/// its From header; `None` without a From address.
fn sign(headers: &[(&str, &str)], body: &str) -> Option<String> {
    let from = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("From"))?.1;
    let domain = from.trim_end_matches('>').rsplit_once('@')?.1.to_owned();
    let raw = raw_message(headers, body);
    let signed = chatmail_testrelay::dkim::sign(&raw, &domain).expect("sign");
    let header = signed.strip_suffix(&raw).expect("signature on top");
    Some(header.trim_start_matches("DKIM-Signature:").trim_start().trim_end_matches("\r\n").replace("\r\n", "\n"))
}

fn raw_message(headers: &[(&str, &str)], body: &str) -> String {
    let mut raw: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    raw.push_str("\r\n");
    raw.push_str(body);
    raw
}

/// Runs one message as given; returns the first non-Continue status and
/// the end-of-message actions.
async fn message_actions(
    conn: &mut TestConnection,
    login: Option<&str>,
    from: &str,
    rcpts: &[&str],
    headers: &[(&str, &str)],
    body: &str,
) -> (Status, EomActions) {
    if let Some(login) = login {
        conn.macros(MacroStage::Mail, [("{auth_authen}", login)]).await.expect("macros");
    }
    let status = conn.mail([format!("<{from}>")]).await.expect("mail");
    if status != Status::Continue {
        return (status, EomActions { actions: Vec::new() });
    }
    // Recipients, headers and body are negotiated as no-reply stages; the
    // end-of-headers stage is negotiated away.
    for rcpt in rcpts {
        assert_eq!(conn.rcpt([format!("<{rcpt}>")]).await.expect("rcpt"), Status::Noreply);
    }
    for (name, value) in headers {
        assert_eq!(conn.header(*name, *value).await.expect("header"), Status::Noreply);
    }
    assert!(conn.eoh().await.is_err(), "end of headers is not negotiated");
    assert_eq!(conn.body(body.as_bytes().to_vec()).await.expect("body"), Status::Noreply);
    conn.macros(MacroStage::Eom, [("i", "QUEUEID1")]).await.expect("macros");
    let (actions, status) = conn.eom().await.expect("eom");
    (status, actions)
}

fn reject_text(status: &Status) -> String {
    match status {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => m.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn outgoing_encrypted_passes_and_cleartext_gets_523() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    let from = format!("<{ALICE}>");
    let headers = [("From", from.as_str()), ("Content-Type", ENCRYPTED_CT)];
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &encrypted_body()).await;
    assert_eq!(status, Status::Continue);

    let headers = [("From", from.as_str()), ("Content-Type", "text/plain")];
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, "hello\r\n").await;
    assert_eq!(reject_text(&status), "523 Encryption Needed: Invalid Unencrypted Mail");
    conn.close().await.expect("close");
    milter.shutdown().await;
}

#[tokio::test]
async fn outgoing_mail_is_signed_and_the_signature_verifies() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    let from = format!("Alice <{ALICE}>");
    let to = format!("<{BOB}>");
    let headers = [
        ("From", from.as_str()),
        ("To", to.as_str()),
        ("Subject", "[...]"),
        ("Date", "Mon, 23 Nov 2026 08:00:00 +0000"),
        ("Message-ID", "<m1@chat.example>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", ENCRYPTED_CT),
    ];
    let body = encrypted_body();
    let (status, actions) = message_actions(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &body).await;
    assert_eq!(status, Status::Continue);
    let inserted: Vec<(i32, String, String)> = actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::InsertHeader { index, name, value } => {
                Some((*index, name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(inserted.len(), 1, "{inserted:?}");
    let (index, name, value) = &inserted[0];
    assert_eq!((*index, name.as_str()), (0, "DKIM-Signature"));
    assert!(value.starts_with(" v=1; a=rsa-sha256; s=opendkim; d=chat.example;"), "{value}");
    // As Postfix would pass the message on: the header on top (its leading
    // space kept, folds back to CRLF), then the message as it came.
    let mut delivered = format!("DKIM-Signature:{}\r\n", value.replace('\n', "\r\n"));
    delivered.push_str(&raw_message(&headers, &body));
    let verifier = chatmail_milter::authenticator(&[chatmail_testrelay::test_dns().expect("dns").addr()], Duration::from_secs(2)).expect("resolver");
    let checks = chatmail_milter::check_signatures(&verifier, delivered.as_bytes()).await;
    assert_eq!(chatmail_milter::judge(Some("chat.example"), &checks), chatmail_milter::DkimVerdict::Pass { domain: "chat.example".into() });
    // A changed Subject breaks it.
    let tampered = delivered.replace("Subject: [...]", "Subject: changed");
    let checks = chatmail_milter::check_signatures(&verifier, tampered.as_bytes()).await;
    assert!(matches!(chatmail_milter::judge(Some("chat.example"), &checks), chatmail_milter::DkimVerdict::Invalid { .. }), "{checks:?}");
    // So does a second From added on the way (From is over-signed).
    let added = delivered.replace("From: Alice", "From: <mallory@chat.example>\r\nFrom: Alice");
    let checks = chatmail_milter::check_signatures(&verifier, added.as_bytes()).await;
    assert!(matches!(chatmail_milter::judge(Some("chat.example"), &checks), chatmail_milter::DkimVerdict::Invalid { .. }), "{checks:?}");
    milter.shutdown().await;
}

#[tokio::test]
async fn incoming_without_signature_is_refused_after_the_encryption_check() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    let headers = [("From", "<carol@other.example>"), ("Content-Type", ENCRYPTED_CT)];
    let (status, _) = message_actions(&mut conn, None, "carol@other.example", &[BOB], &headers, &encrypted_body()).await;
    assert_eq!(reject_text(&status), "554 5.7.1 No DKIM signature found");
    // Unencrypted and unsigned to an enforcing mailbox: the encryption reply.
    let headers = [("From", "<carol@other.example>"), ("Content-Type", "text/plain")];
    let (status, _) = message_actions(&mut conn, None, "carol@other.example", &[BOB], &headers, "hi\r\n").await;
    assert_eq!(reject_text(&status), "523 Encryption Needed: Invalid Unencrypted Mail");
    milter.shutdown().await;
}

#[tokio::test]
async fn forged_from_is_refused() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    let headers = [("From", "<ceo@bank.example>"), ("Content-Type", ENCRYPTED_CT)];
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &encrypted_body()).await;
    assert!(reject_text(&status).starts_with("553 5.7.1 From header does not match"), "{status:?}");
    // Two From headers are as bad as a wrong one.
    let from = format!("<{ALICE}>");
    let headers = [("From", from.as_str()), ("From", from.as_str()), ("Content-Type", ENCRYPTED_CT)];
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &encrypted_body()).await;
    assert!(reject_text(&status).starts_with("553"), "{status:?}");
    milter.shutdown().await;
}

#[tokio::test]
async fn burst_then_450_at_mail_from() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    let from = format!("<{ALICE}>");
    let headers = [("From", from.as_str()), ("Content-Type", ENCRYPTED_CT)];
    for _ in 0..2 {
        let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &encrypted_body()).await;
        assert_eq!(status, Status::Continue);
    }
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &encrypted_body()).await;
    assert_eq!(reject_text(&status), format!("450 4.7.1 : Too much mail from {ALICE}"));
    milter.shutdown().await;
}

#[tokio::test]
async fn incoming_decisions() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    // Cleartext to the enforcing mailbox: 523.
    let headers = [("From", "<carol@other.example>"), ("Content-Type", "text/plain")];
    let (status, _) = message(&mut conn, None, "carol@other.example", &[BOB], &headers, "hi\r\n").await;
    assert_eq!(reject_text(&status), "523 Encryption Needed: Invalid Unencrypted Mail");
    // Cleartext to a mailbox without the marker passes.
    let (status, reset) = message(&mut conn, None, "carol@other.example", &[ALICE], &headers, "hi\r\n").await;
    assert_eq!((status, reset), (Status::Continue, false));
    // Encrypted with a From other than the envelope sender: sender reset to <>.
    let headers = [("From", "<ceo@bank.example>"), ("Content-Type", ENCRYPTED_CT)];
    let (status, reset) = message(&mut conn, None, "carol@other.example", &[BOB], &headers, &encrypted_body()).await;
    assert_eq!((status, reset), (Status::Continue, true));
    milter.shutdown().await;
}

#[tokio::test]
async fn failing_marker_lookup_tempfails() {
    let milter = Milter::start().await;
    // A mailbox "directory" that is a file: the marker cannot be looked up.
    let broken = "broken001@chat.example";
    std::fs::write(milter._mailboxes.path().join(broken), "").expect("file");
    let mut conn = connect(&milter).await;
    let headers = [("From", "<carol@other.example>"), ("Content-Type", "text/plain")];
    let (status, _) = message(&mut conn, None, "carol@other.example", &[broken], &headers, "hi\r\n").await;
    assert!(reject_text(&status).starts_with("451 4.3.0"), "{status:?}");
    milter.shutdown().await;
}

#[tokio::test]
async fn recipient_and_size_limits() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    // Recipient limit (3): Postfix stops the fourth RCPT itself
    // (smtpd_recipient_limit); should one get through, the message is refused.
    let (status, _) = message(&mut conn, None, "carol@other.example", &[BOB, BOB, BOB, BOB], &[], "hi\r\n").await;
    assert!(reject_text(&status).starts_with("550 5.5.3"), "{status:?}");
    conn.abort().await.expect("abort");
    // Size limit (100 000 bytes): refused at the end, nothing kept meanwhile.
    let from = format!("<{ALICE}>");
    let headers = [("From", from.as_str()), ("Content-Type", ENCRYPTED_CT)];
    let big = "x".repeat(150_000);
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &big).await;
    assert!(reject_text(&status).starts_with("552 5.3.4"), "{status:?}");
    conn.abort().await.expect("abort");
    // The connection stays usable after refusals.
    let headers = [("From", from.as_str()), ("Content-Type", ENCRYPTED_CT)];
    let (status, _) = message(&mut conn, Some(ALICE), ALICE, &[BOB], &headers, &encrypted_body()).await;
    assert_eq!(status, Status::Continue);
    milter.shutdown().await;
}

#[tokio::test]
async fn decisions_are_counted_by_direction_decision_and_reason() {
    let milter = Milter::start().await;
    let mut conn = connect(&milter).await;
    let from = format!("<{ALICE}>");
    let encrypted = [("From", from.as_str()), ("Content-Type", ENCRYPTED_CT)];
    let cleartext = [("From", from.as_str()), ("Content-Type", "text/plain")];
    message(&mut conn, Some(ALICE), ALICE, &[BOB], &encrypted, &encrypted_body()).await;
    message(&mut conn, Some(ALICE), ALICE, &[BOB], &cleartext, "hello\r\n").await;
    // The burst of two is used up: refused at MAIL.
    message(&mut conn, Some(ALICE), ALICE, &[BOB], &encrypted, &encrypted_body()).await;
    conn.close().await.expect("close");
    let mut conn = connect(&milter).await;
    let carol = [("From", "<carol@other.example>"), ("Content-Type", "text/plain")];
    message(&mut conn, None, "carol@other.example", &[BOB], &carol, "hi\r\n").await;
    conn.close().await.expect("close");

    let count = |labels: &[&str]| milter.metrics.get("chatmail_milter_messages_total", labels).unwrap_or(0.0);
    assert_eq!(count(&["outgoing", "accept", "encrypted"]), 1.0);
    assert_eq!(count(&["outgoing", "reject", "cleartext"]), 1.0);
    assert_eq!(count(&["outgoing", "ratelimit", "established"]), 1.0, "{}", milter.metrics.render());
    assert_eq!(count(&["incoming", "reject", "cleartext"]), 1.0);
    let text = milter.metrics.render();
    assert!(text.contains("# TYPE chatmail_milter_messages_total counter"), "{text}");
    assert!(text.contains("chatmail_milter_messages_total{direction=\"outgoing\",decision=\"accept\",reason=\"encrypted\"} 1"), "{text}");
    milter.shutdown().await;
}
