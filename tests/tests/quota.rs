//! Quota in the harness's real Dovecot: max_mailbox_size from chatmail.ini
//! limits IMAP APPEND and LMTP delivery, and clients see their usage.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use chatmail_testrelay::{Account, ImapClient, Relay, RelayOptions};

fn start_with(params: &[(&str, &str)]) -> Relay {
    let options = RelayOptions { params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..RelayOptions::default() };
    Relay::start(options).unwrap_or_else(|e| panic!("relay did not start: {e}"))
}

fn message(to: &str, subject: &str, size: usize) -> String {
    let mut text = format!("From: <sender@other.example>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\n");
    while text.len() < size {
        text.push_str("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n");
    }
    text
}

/// APPENDs `text` to INBOX (LITERAL+); returns the tagged status and text.
fn append(imap: &mut ImapClient, text: &str) -> (String, String) {
    let reply = imap.command(&format!("APPEND INBOX {{{}+}}\r\n{text}", text.len())).expect("append");
    (reply.status, reply.text)
}

fn stored_messages(relay: &Relay, account: &Account) -> usize {
    let maildir = relay.config.mailboxes_dir.join(&account.addr);
    ["new", "cur"].iter().map(|d| std::fs::read_dir(maildir.join(d)).map_or(0, |e| e.count())).sum()
}

#[test]
fn getquotaroot_shows_usage_and_limit() {
    let relay = start_with(&[]);
    let alice = relay.new_account().expect("alice");
    let mut imap = relay.imap_login(&alice).expect("login");
    assert_eq!(append(&mut imap, &message(&alice.addr, "some mail", 20_000)).0, "OK");
    let reply = imap.command("GETQUOTAROOT INBOX").expect("getquotaroot").ok().expect("OK");
    let quota = reply.untagged.iter().find(|l| l.starts_with("* QUOTA ")).expect("QUOTA line").clone();
    // STORAGE in KiB: about 20 used of 100 MB (102400 KiB), the default max_mailbox_size.
    let numbers: Vec<u64> = quota
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect();
    let (used, limit) = (numbers[numbers.len() - 2], numbers[numbers.len() - 1]);
    assert_eq!(limit, 102_400, "{quota}");
    assert!((19..=21).contains(&used), "{quota}");
    imap.logout();
}

#[test]
fn append_over_quota_gets_overquota() {
    let relay = start_with(&[("max_mailbox_size", "100K"), ("max_message_size", "60000")]);
    let alice = relay.new_account().expect("alice");
    let mut imap = relay.imap_login(&alice).expect("login");
    assert_eq!(append(&mut imap, &message(&alice.addr, "first", 45_000)).0, "OK");
    assert_eq!(append(&mut imap, &message(&alice.addr, "second", 45_000)).0, "OK");
    let (status, text) = append(&mut imap, &message(&alice.addr, "third", 45_000));
    assert_eq!(status, "NO", "{text}");
    assert!(text.contains("[OVERQUOTA]"), "{text}");
    // A single message over max_message_size is refused too, as too large
    // rather than over quota (RFC 5530's [LIMIT]).
    let (status, text) = append(&mut imap, &message(&alice.addr, "huge", 70_000));
    assert_eq!(status, "NO", "{text}");
    assert!(text.contains("[LIMIT]"), "{text}");
    imap.logout();
    assert_eq!(stored_messages(&relay, &alice), 2);
}

/// One LMTP delivery straight to Dovecot's socket: the reply to the data.
fn lmtp_deliver(relay: &Relay, to: &str, text: &str) -> String {
    let socket = relay.run_dir.join("dovecot/run/lmtp");
    let stream = UnixStream::connect(&socket).expect("connect to LMTP");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = || {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            let done = line.as_bytes().get(3) == Some(&b' ');
            last = line.trim_end().to_owned();
            if done || line.is_empty() {
                return last;
            }
        }
    };
    assert!(reply().starts_with("220"));
    for command in ["LHLO test.example".to_owned(), "MAIL FROM:<sender@other.example>".into(), format!("RCPT TO:<{to}>")] {
        writer.write_all(format!("{command}\r\n").as_bytes()).expect("write");
        let answer = reply();
        assert!(answer.starts_with('2'), "{command}: {answer}");
    }
    writer.write_all(b"DATA\r\n").expect("write");
    assert!(reply().starts_with("354"));
    writer.write_all(text.as_bytes()).expect("write");
    writer.write_all(b"\r\n.\r\n").expect("write");
    let answer = reply();
    let _ = writer.write_all(b"QUIT\r\n");
    answer
}

#[test]
fn lmtp_delivery_over_quota_gets_552_and_stores_nothing() {
    let relay = start_with(&[("max_mailbox_size", "100K"), ("max_message_size", "60000")]);
    let bob = relay.new_account().expect("bob");
    for subject in ["one", "two"] {
        let answer = lmtp_deliver(&relay, &bob.addr, &message(&bob.addr, subject, 45_000));
        assert!(answer.starts_with("250"), "{answer}");
    }
    let answer = lmtp_deliver(&relay, &bob.addr, &message(&bob.addr, "three", 45_000));
    assert!(answer.starts_with("552 5.2.2"), "{answer}");
    assert!(answer.contains("Mailbox full"), "{answer}");
    // A message larger than the whole remaining quota is refused for good too.
    let answer = lmtp_deliver(&relay, &bob.addr, &message(&bob.addr, "huge", 70_000));
    assert!(answer.starts_with("552 5.2.2"), "{answer}");
    assert_eq!(stored_messages(&relay, &bob), 2);
}
