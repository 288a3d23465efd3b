//! Quota in the harness's real Dovecot: max_mailbox_size from chatmail.ini
//! limits IMAP APPEND and LMTP delivery, and clients see their usage.

use std::time::Duration;

use chatmail_testrelay::mail::imap_date;
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

fn lmtp_deliver(relay: &Relay, to: &str, text: &str) -> String {
    relay.lmtp_deliver(to, text).expect("LMTP delivery")
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


/// APPENDs `text` with a received date `secs_ago` seconds ago.
fn append_dated(imap: &mut ImapClient, text: &str, secs_ago: u64) {
    let reply = imap.command(&format!("APPEND INBOX \"{}\" {{{}+}}\r\n{text}", imap_date(secs_ago), text.len())).expect("append");
    assert_eq!(reply.status, "OK", "{}", reply.text);
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn subjects(relay: &Relay, account: &Account) -> Vec<String> {
    let mut imap = relay.imap_login(account).expect("login");
    imap.command("SELECT INBOX").expect("select").ok().expect("OK");
    let reply = imap.command("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").expect("fetch");
    imap.logout();
    let mut found: Vec<String> = reply
        .untagged
        .iter()
        .flat_map(|l| l.lines())
        .filter_map(|l| l.strip_prefix("Subject: "))
        .map(str::to_owned)
        .collect();
    found.sort();
    found
}

fn plugin_log(relay: &Relay) -> String {
    std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log")
}

#[test]
fn past_75_percent_the_oldest_mail_goes_down_to_70_percent() {
    // 100 KiB quota: cleanup above 76 800 bytes, down to 71 680.
    let relay = start_with(&[("max_mailbox_size", "100K"), ("max_message_size", "60000")]);
    let alice = relay.new_account().expect("alice");
    let mut imap = relay.imap_login(&alice).expect("login");
    for (i, hours) in [(1, 75), (2, 74), (3, 73), (4, 72)] {
        append_dated(&mut imap, &message(&alice.addr, &format!("old {i}"), 15_000), hours * HOUR);
    }
    append_dated(&mut imap, &message(&alice.addr, "young imap", 10_000), HOUR);
    imap.logout();
    // About 70 000 bytes: below the threshold, nothing removed.
    assert_eq!(subjects(&relay, &alice).len(), 5);

    // A delivery takes usage to ~80 000 bytes; when it is done, the oldest
    // mail goes, and only that one.
    let answer = lmtp_deliver(&relay, &alice.addr, &message(&alice.addr, "young lmtp", 10_000));
    assert!(answer.starts_with("250"), "{answer}");
    assert_eq!(subjects(&relay, &alice), ["old 2", "old 3", "old 4", "young imap", "young lmtp"]);
    assert!(plugin_log(&relay).contains("expunged 0 expired and 1 oldest mails"), "{}", plugin_log(&relay));
}

#[test]
fn mail_younger_than_a_day_is_never_removed_and_then_the_limit_bites() {
    let relay = start_with(&[("max_mailbox_size", "100K"), ("max_message_size", "60000")]);
    let bob = relay.new_account().expect("bob");
    for i in 0..5 {
        let answer = lmtp_deliver(&relay, &bob.addr, &message(&bob.addr, &format!("young {i}"), 16_000));
        assert!(answer.starts_with("250"), "{answer}");
    }
    assert_eq!(subjects(&relay, &bob).len(), 5);
    assert!(plugin_log(&relay).contains("all mail is younger than 24 hours"), "{}", plugin_log(&relay));
    let answer = lmtp_deliver(&relay, &bob.addr, &message(&bob.addr, "one too many", 30_000));
    assert!(answer.starts_with("552 5.2.2"), "{answer}");
}

#[test]
fn old_and_old_large_mail_expire() {
    // Defaults: delete_mails_after 40 days, delete_large_after 7 days.
    let relay = start_with(&[]);
    let carol = relay.new_account().expect("carol");
    let mut imap = relay.imap_login(&carol).expect("login");
    append_dated(&mut imap, &message(&carol.addr, "41 days", 1_000), 41 * DAY);
    append_dated(&mut imap, &message(&carol.addr, "39 days", 1_000), 39 * DAY);
    append_dated(&mut imap, &message(&carol.addr, "8 days large", 250_000), 8 * DAY);
    append_dated(&mut imap, &message(&carol.addr, "6 days large", 250_000), 6 * DAY);
    // The first session of the account already ran expiry (and stamped it),
    // so this logout does not: expiry runs at most hourly per account.
    imap.logout();
    assert_eq!(subjects(&relay, &carol).len(), 4);
    let stamp = relay.config.mailboxes_dir.join(&carol.addr).join("chatmail-expiry");
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * HOUR);
    std::fs::File::options()
        .write(true)
        .open(&stamp)
        .expect("stamp exists")
        .set_times(std::fs::FileTimes::new().set_modified(two_hours_ago))
        .expect("age the stamp");
    relay.imap_login(&carol).expect("login").logout();
    assert_eq!(subjects(&relay, &carol), ["39 days", "6 days large"]);
    assert!(plugin_log(&relay).contains("expunged 2 expired and 0 oldest mails"), "{}", plugin_log(&relay));
}

#[test]
fn an_account_can_have_its_own_quota() {
    let relay = start_with(&[]);
    let alice = relay.add_account("alicequot", "password-alice").expect("alice");
    std::fs::write(relay.config.mailboxes_dir.join(&alice.addr).join("max_mailbox_size"), "1M\n").expect("override");
    let mut imap = relay.imap_login(&alice).expect("login");
    let reply = imap.command("GETQUOTAROOT INBOX").expect("getquotaroot").ok().expect("OK");
    let quota = reply.untagged.iter().find(|l| l.starts_with("* QUOTA ")).expect("QUOTA line").clone();
    assert!(quota.ends_with(" 1024)"), "{quota}");
    imap.logout();
}

/// STORAGE used (KiB) from GETQUOTAROOT.
fn storage_used(relay: &Relay, account: &Account) -> u64 {
    let mut imap = relay.imap_login(account).expect("login");
    imap.command("SELECT INBOX").expect("select").ok().expect("OK");
    let reply = imap.command("GETQUOTAROOT INBOX").expect("getquotaroot").ok().expect("OK");
    imap.logout();
    let quota = reply.untagged.iter().find(|l| l.starts_with("* QUOTA ")).expect("QUOTA line").clone();
    let numbers: Vec<u64> = quota.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    numbers[numbers.len() - 2]
}

#[test]
fn usage_follows_mail_removed_behind_dovecots_back() {
    // What the daily sweep does: delete message files directly. Dovecot
    // notices at its next sync and the quota usage follows.
    let relay = start_with(&[]);
    let alice = relay.new_account().expect("alice");
    let mut imap = relay.imap_login(&alice).expect("login");
    for i in 0..3 {
        assert_eq!(append(&mut imap, &message(&alice.addr, &format!("mail {i}"), 30_000)).0, "OK");
    }
    imap.logout();
    let before = storage_used(&relay, &alice);
    assert!((85..=95).contains(&before), "{before}");
    let cur = relay.config.mailboxes_dir.join(&alice.addr).join("cur");
    let victim = std::fs::read_dir(&cur).expect("cur").flatten().next().expect("a message file").path();
    std::fs::remove_file(&victim).expect("remove");
    let after = storage_used(&relay, &alice);
    assert!((55..=65).contains(&after), "{before} -> {after}");
}
