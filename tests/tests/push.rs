//! IMAP METADATA and push notifications through the harness's real Dovecot
//! and chatmail-metadata: Delta Chat's device tokens are stored per account
//! in chatmail's `metadata.json`, only through the account's own session;
//! server metadata answers; a delivery makes one POST of each token to the
//! notification service (a local HTTPS stub here), with chatmail's
//! outcomes (410 forgets, 500 retries), across daemon restarts, coalesced
//! under a flood, and never for mail the account sent itself.

use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_testrelay::mail::encrypted;
use chatmail_testrelay::{eventually, Account, ImapClient, PushStub, Relay, RelayOptions};

const WAIT: Duration = Duration::from_secs(20);

fn relay_with(params: &[(&str, &str)]) -> Relay {
    let options = RelayOptions { params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..RelayOptions::default() };
    Relay::start(options).unwrap_or_else(|e| panic!("relay did not start: {e}"))
}

/// A relay whose notifications go to a new stub.
fn relay_with_stub(dir: &Path) -> (Relay, PushStub) {
    let stub = PushStub::start_in(dir).expect("push stub");
    let url = stub.url();
    let ca = stub.ca_file.display().to_string();
    let relay = relay_with(&[("push_notification_url", url.as_str()), ("push_notification_ca_file", ca.as_str())]);
    (relay, stub)
}

/// SETMETADATA of `value` (sent as a non-synchronizing literal, as Delta
/// Chat does) on INBOX's `key`.
fn set_metadata(imap: &mut ImapClient, key: &str, value: &[u8]) -> chatmail_testrelay::ImapResponse {
    let value = String::from_utf8_lossy(value);
    imap.command(&format!("SETMETADATA INBOX ({key} {{{}+}}\r\n{value})", value.len())).expect("setmetadata")
}

/// The value of `key` on `mailbox` (`None`: NIL).
fn get_metadata(imap: &mut ImapClient, mailbox: &str, key: &str) -> Option<String> {
    let response = imap.command(&format!("GETMETADATA \"{mailbox}\" ({key})")).expect("getmetadata").ok().expect("GETMETADATA OK");
    let line = response.untagged.iter().find(|l| l.starts_with("* METADATA ")).unwrap_or_else(|| panic!("no METADATA in {:?}", response.untagged));
    let rest = line.split_once(&format!("{key} ")).unwrap_or_else(|| panic!("{key} missing in {line:?}")).1;
    let rest = rest.strip_suffix(')').expect("closing parenthesis");
    if rest == "NIL" {
        return None;
    }
    // A quoted string, or a literal the client inlined after its {N}.
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').expect("closing quote").to_owned(),
        None => rest.split_once("}\r\n").expect("literal").1.to_owned(),
    })
}

fn metadata_file(relay: &Relay, account: &Account) -> String {
    std::fs::read_to_string(relay.config.mailboxes_dir.join(&account.addr).join("metadata.json")).unwrap_or_default()
}

fn register(relay: &Relay, account: &Account, token: &str) {
    let mut imap = relay.imap_login(account).expect("login");
    set_metadata(&mut imap, "/private/devicetoken", token.as_bytes()).ok().expect("token stored");
    imap.logout();
}

/// Delivers an encrypted mail from `from` to `to` through Postfix and waits
/// until it is in `to`'s INBOX.
fn deliver(relay: &Relay, from: &Account, to: &Account, subject: &str) {
    relay.submit(from, &[&to.addr], &encrypted(&from.addr, &to.addr, subject)).expect("submitted");
    relay.wait_for_message(to, subject, WAIT).expect("delivered");
}

#[test]
fn capabilities_tokens_and_server_metadata() {
    let relay = relay_with(&[("max_recipients_per_message", "77")]);
    let (a, b) = (relay.new_account().expect("a"), relay.new_account().expect("b"));
    let mut imap = relay.imap_login(&a).expect("login");
    let capabilities = imap.capabilities().expect("capabilities");
    for wanted in ["METADATA", "XDELTAPUSH", "XCHATMAIL"] {
        assert!(capabilities.iter().any(|c| c == wanted), "{wanted} missing in {capabilities:?}");
    }
    assert_eq!(get_metadata(&mut imap, "INBOX", "/private/devicetoken"), None);
    // Two devices of one account.
    set_metadata(&mut imap, "/private/devicetoken", b"openpgp:first-device").ok().expect("first token");
    let mut second = relay.imap_login(&a).expect("second device");
    set_metadata(&mut second, "/private/devicetoken", b"openpgp:second device   ").ok().expect("second token");
    second.logout();
    assert_eq!(get_metadata(&mut imap, "INBOX", "/private/devicetoken").as_deref(), Some("openpgp:first-device openpgp:second device   "));
    let file = metadata_file(&relay, &a);
    let parsed: serde_json::Value = serde_json::from_str(&file).expect("chatmail's JSON");
    let tokens = parsed["devicetoken"].as_object().expect("token map");
    assert_eq!(tokens.len(), 2, "{file}");
    assert!(tokens.values().all(serde_json::Value::is_u64), "{file}");

    // Refused cleanly, and nothing changes.
    let too_long = vec![b'x'; 8 * 1024 + 1];
    for (key, value) in [
        ("/private/devicetoken", too_long.as_slice()),
        ("/private/devicetoken", b"two\r\nlines".as_slice()),
        ("/private/other", b"v".as_slice()),
        ("/shared/devicetoken", b"v".as_slice()),
    ] {
        let response = set_metadata(&mut imap, key, value);
        assert_eq!(response.status, "NO", "{key} {}: {response:?}", value.len());
    }
    let response = imap.command("SETMETADATA \"\" (/shared/vendor/deltachat/turn \"x\")").expect("server set");
    assert_ne!(response.status, "OK", "{response:?}");
    assert_eq!(metadata_file(&relay, &a), file);
    // The session still works after the refusals.
    imap.command("NOOP").expect("noop").ok().expect("noop ok");

    // Server metadata Delta Chat reads; unset keys are NIL, not errors.
    assert_eq!(get_metadata(&mut imap, "", "/shared/vendor/deltachat/maxsmtprecipients").as_deref(), Some("77"));
    assert_eq!(get_metadata(&mut imap, "", "/shared/vendor/deltachat/irohrelay"), None);
    assert_eq!(get_metadata(&mut imap, "", "/shared/vendor/deltachat/turn"), None);
    assert_eq!(get_metadata(&mut imap, "", "/shared/vendor/deltachat/nonesuch"), None);
    imap.logout();

    // Another account sees none of a's tokens.
    let mut other = relay.imap_login(&b).expect("b login");
    assert_eq!(get_metadata(&mut other, "INBOX", "/private/devicetoken"), None);
    other.logout();
    assert!(metadata_file(&relay, &b).is_empty());
}

#[test]
fn iroh_relay_and_turn_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("turn-secret");
    std::fs::write(&secret_file, "0123456789abcdef0123456789abcdef\n").expect("secret");
    let secret_path = secret_file.display().to_string();
    let relay = relay_with(&[
        ("iroh_relay", "https://iroh.chatmail.test"),
        ("turn_server", "127.0.0.1:3478"),
        ("turn_secret_file", secret_path.as_str()),
    ]);
    let a = relay.new_account().expect("a");
    let mut imap = relay.imap_login(&a).expect("login");
    assert_eq!(get_metadata(&mut imap, "", "/shared/vendor/deltachat/irohrelay").as_deref(), Some("https://iroh.chatmail.test"));
    let turn = get_metadata(&mut imap, "", "/shared/vendor/deltachat/turn").expect("turn value");
    let parts: Vec<&str> = turn.split(':').collect();
    assert_eq!(parts.len(), 4, "{turn}");
    assert_eq!(&parts[..2], ["127.0.0.1", "3478"]);
    let expiry: u64 = parts[2].parse().expect("user name is the expiry time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    assert!(expiry > now + 4 * 86_400 && expiry <= now + 5 * 86_400 + 3600, "{expiry} vs {now}");
    let (user, password) = chatmail_accounts::turn_credentials(b"0123456789abcdef0123456789abcdef", expiry - 5 * 86_400);
    assert_eq!((parts[2], parts[3]), (user.as_str(), password.as_str()));
    imap.logout();
}

#[test]
fn a_delivery_posts_each_token_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (relay, stub) = relay_with_stub(dir.path());
    let (a, b) = (relay.new_account().expect("a"), relay.new_account().expect("b"));
    register(&relay, &a, "openpgp:device-one");
    register(&relay, &a, "openpgp:device-two");

    // Mail a sent itself (e.g. Delta Chat's copy for its other devices)
    // notifies nobody: the arrival would be written before Dovecot's 250.
    deliver(&relay, &a, &a, "to myself");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(stub.received().is_empty(), "self-sent mail made POSTs: {:?}", stub.received());

    deliver(&relay, &b, &a, "from b");
    let received = stub.wait_for(2, WAIT).expect("two POSTs");
    let mut bodies: Vec<&str> = received.iter().map(|r| r.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["openpgp:device-one", "openpgp:device-two"]);
    assert!(received.iter().all(|r| r.path == "/notify"));
    // b has no token: nothing for b.
    deliver(&relay, &a, &b, "to b");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stub.received().len(), 2, "{:?}", stub.received());
    let log = std::fs::read_to_string(relay.log_dir.join("metadata.log")).expect("log");
    assert_eq!(log.matches("op=push").count(), 2, "{log}");
    assert!(log.contains("result=sent status=200"), "{log}");
    assert!(!log.contains("device-one"), "a token in the log: {log}");
}

#[test]
fn gone_tokens_are_forgotten_and_failures_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (relay, stub) = relay_with_stub(dir.path());
    let (a, b) = (relay.new_account().expect("a"), relay.new_account().expect("b"));
    register(&relay, &a, "openpgp:flaky");

    // 500, then the retry 8 s later succeeds.
    stub.queue_statuses(&[500]);
    deliver(&relay, &b, &a, "first");
    let received = stub.wait_for(2, WAIT).expect("a retry");
    assert_eq!((received[0].status, received[1].status), (500, 200));
    assert_eq!(received[1].body, "openpgp:flaky");
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_secs(7) && gap < Duration::from_secs(12), "retried after {gap:?}");

    // 410: the service no longer knows the token; the account forgets it.
    stub.queue_statuses(&[410]);
    deliver(&relay, &b, &a, "second");
    stub.wait_for(3, WAIT).expect("third POST");
    eventually("the gone token forgotten", WAIT, || (!metadata_file(&relay, &a).contains("openpgp:flaky")).then_some(()));
    deliver(&relay, &b, &a, "third");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stub.received().len(), 3, "{:?}", stub.received());
    let log = std::fs::read_to_string(relay.log_dir.join("metadata.log")).expect("log");
    for result in ["result=retry status=500", "result=sent status=200", "result=gone status=410"] {
        assert!(log.contains(result), "{result} missing: {log}");
    }
}

#[test]
fn notifications_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut relay, stub) = relay_with_stub(dir.path());
    let (a, b) = (relay.new_account().expect("a"), relay.new_account().expect("b"));
    register(&relay, &a, "openpgp:patient");

    // Delivered while chatmail-metadata is down: the arrival waits on disk.
    relay.stop_metadata();
    deliver(&relay, &b, &a, "while down");
    assert!(relay.config.push_spool_dir.join("arrived").join(&a.addr).exists(), "no arrival recorded");
    relay.start_metadata().expect("restart");
    let received = stub.wait_for(1, WAIT).expect("POST after restart");
    assert_eq!(received[0].body, "openpgp:patient");

    // A notification waiting for its retry is kept across a restart.
    stub.queue_statuses(&[503]);
    deliver(&relay, &b, &a, "retry pending");
    stub.wait_for(2, WAIT).expect("failed POST");
    let queue = relay.config.push_spool_dir.join("queue");
    let queued = |queue: &Path| -> Vec<String> {
        std::fs::read_dir(queue).map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect()).unwrap_or_default()
    };
    eventually("one queued retry", WAIT, || {
        let entries = queued(&queue);
        (entries.len() == 1 && entries[0].contains("attempts: 1")).then_some(())
    });
    relay.stop_metadata();
    // What an operator sees meanwhile.
    let binary = chatmail_testrelay::sibling_binary("chatmail-metadata", "CHATMAIL_METADATA").expect("binary");
    let status = std::process::Command::new(binary).arg("--config").arg(&relay.config_path).arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    for line in ["queued notifications: 1", "retrying: 1", "accounts waiting to be queued: 0"] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
    }
    relay.start_metadata().expect("restart");
    let received = stub.wait_for(3, WAIT).expect("the retry after the restart");
    assert_eq!((received[2].status, received[2].body.as_str()), (200, "openpgp:patient"));
    eventually("an empty queue", WAIT, || queued(&queue).is_empty().then_some(()));
}

#[test]
fn a_flood_of_mail_is_not_a_flood_of_posts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (relay, stub) = relay_with_stub(dir.path());
    let (a, b) = (relay.new_account().expect("a"), relay.new_account().expect("b"));
    register(&relay, &a, "openpgp:busy");
    stub.set_delay(Duration::from_millis(300));
    let mut last_delivered = Instant::now();
    for i in 0..30 {
        let reply = relay.lmtp_deliver(&a.addr, &encrypted(&b.addr, &a.addr, &format!("flood {i}"))).expect("lmtp");
        assert!(reply.starts_with("250"), "{reply}");
        last_delivered = Instant::now();
    }
    stub.wait_for(1, WAIT).expect("a POST");
    std::thread::sleep(Duration::from_secs(2));
    let received = stub.received();
    assert!(received.len() <= 3, "{} POSTs for 30 mails", received.len());
    // The last POST started after the last delivery: the device hears of it.
    assert!(received.last().expect("post").at + Duration::from_millis(50) >= last_delivered, "last mail not covered");
}

#[test]
fn an_untrusted_certificate_gets_no_token() {
    // The stub's certificate is not the one the relay trusts: the relay
    // must not hand it the token, and keeps the notification for a retry.
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = PushStub::start_in(&dir.path().join("stub")).expect("push stub");
    let other = PushStub::start_in(&dir.path().join("other")).expect("another certificate");
    let url = stub.url();
    let ca = other.ca_file.display().to_string();
    let relay = relay_with(&[("push_notification_url", url.as_str()), ("push_notification_ca_file", ca.as_str())]);
    let (a, b) = (relay.new_account().expect("a"), relay.new_account().expect("b"));
    register(&relay, &a, "openpgp:secret-token");
    deliver(&relay, &b, &a, "to an impostor");
    let log = eventually("a push attempt in the log", WAIT, || {
        Some(std::fs::read_to_string(relay.log_dir.join("metadata.log")).unwrap_or_default()).filter(|log| log.contains("op=push"))
    });
    assert!(log.contains("result=retry status=none") && log.contains("certificate"), "{log}");
    assert!(stub.received().is_empty(), "the token went to an untrusted server");
}
