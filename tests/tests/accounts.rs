//! Accounts end to end: real Dovecot asks chatmail-auth (dict passdb and
//! userdb) for every IMAP login and, through Dovecot's SASL, for every SMTP
//! submission login; the first login of a valid new address creates the
//! account.
//!
//! Dovecot delays the answers to failed logins per client IP (2 s, then
//! more), so tests that fail logins do it from their own loopback addresses
//! (127.0.0.N), in parallel where there are several.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use chatmail_testrelay::mail::encrypted;
use chatmail_testrelay::{token, Account, Relay, RelayOptions, MAIL_USER};

fn start_with(params: &[(&str, &str)]) -> Relay {
    let options = RelayOptions { params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..RelayOptions::default() };
    Relay::start(options).unwrap_or_else(|e| panic!("relay did not start: {e}"))
}

fn fresh(relay: &Relay) -> Account {
    Account { addr: format!("{}@{}", token(9), relay.domain), password: token(12) }
}

/// Status of an IMAP login (`OK`, `NO`, `BAD`, or `closed` when the server
/// hangs up, as it does on a 10 KB command line) from `source`.
fn imap_login_status(relay: &Relay, source: Ipv4Addr, user: &str, password: &str) -> String {
    let mut imap = relay.imap_from(Some(source)).expect("connect");
    let Ok(reply) = imap.login(user, password) else { return "closed".into() };
    if reply.status == "OK" {
        imap.logout();
    }
    reply.status
}

fn mail_uid() -> u32 {
    nix::unistd::User::from_name(MAIL_USER).expect("lookup").expect("vmail exists").uid.as_raw()
}

#[test]
fn first_login_creates_the_account_in_chatmail_layout() {
    let relay = start_with(&[]);
    let alice = fresh(&relay);
    let dir = relay.config.mailboxes_dir.join(&alice.addr);
    assert!(!dir.exists());
    relay.imap_login(&alice).expect("first IMAP login creates the account").logout();

    let stored = std::fs::read_to_string(dir.join("password")).expect("password file");
    assert!(stored.starts_with("{SHA512-CRYPT}$6$"), "{stored}");
    assert!(!stored.contains(&alice.password));
    assert!(dir.join("enforceE2EEincoming").exists(), "marker written at creation");
    assert_eq!(std::fs::metadata(&dir).expect("dir").uid(), mail_uid(), "account belongs to the mail user");

    // The same password works for submission (Postfix SASL through Dovecot).
    let smtp = relay.submission_session(&alice).expect("submission login");
    smtp.quit();

    // A first login over SMTP creates an account as well, and the userdb
    // then finds both for delivery.
    let bob = fresh(&relay);
    relay.submission_session(&bob).expect("first login over submission").quit();
    relay.submit(&bob, &[&alice.addr], &encrypted(&bob.addr, &alice.addr, "hello alice")).expect("submit");
    relay.wait_for_message(&alice, "hello alice", Duration::from_secs(20)).expect("delivered to the new account");

    let log = std::fs::read_to_string(relay.log_dir.join("auth.log")).expect("auth log");
    assert_eq!(log.matches("result=created").count(), 2, "{log}");
    assert!(!log.contains(&alice.password) && !log.contains(&bob.password), "passwords never logged");
}

#[test]
fn wrong_password_never_overwrites_and_cache_does_not_mix_passwords() {
    // Dovecot's auth cache is on in the relay's config; its key includes
    // the password, so a cached success never answers for another password.
    let relay = start_with(&[]);
    let alice = relay.new_account().expect("alice");
    let stored = std::fs::read_to_string(relay.config.mailboxes_dir.join(&alice.addr).join("password")).expect("stored");
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 0, 11), &alice.addr, &alice.password), "OK");
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 0, 12), &alice.addr, "wrong-password-1"), "NO");
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 0, 11), &alice.addr, &alice.password), "OK");
    let after = std::fs::read_to_string(relay.config.mailboxes_dir.join(&alice.addr).join("password")).expect("stored");
    assert_eq!(stored, after, "a wrong password never changes the account");
    let log = std::fs::read_to_string(relay.log_dir.join("auth.log")).expect("auth log");
    assert!(log.contains("result=wrong-password"), "{log}");
}

#[test]
fn policy_refuses_bad_names_passwords_and_reserved_names() {
    // Lengths that would let "postmaster" through, so reserved names are
    // refused for being reserved.
    let relay = start_with(&[("username_min_length", "3"), ("username_max_length", "12")]);
    let domain = relay.domain.clone();
    let long_name = format!("{}@{domain}", "a".repeat(10_000));
    let cases: Vec<(String, String)> = vec![
        (format!("goodname1@{domain}"), "short".into()),
        (format!("postmaster@{domain}"), token(12)),
        (format!("mailer-daemon@{domain}"), token(12)),
        (format!("abc..def@{domain}"), token(12)),
        (format!("abc\"def@{domain}"), token(12)),
        (format!("abc\\def@{domain}"), token(12)),
        (format!("../../etc@{domain}"), token(12)),
        (format!("thirteen-char@{domain}"), token(12)),
        ("goodname2@other.example".into(), token(12)),
        (long_name, token(12)),
    ];
    std::thread::scope(|scope| {
        for (i, (user, password)) in cases.iter().enumerate() {
            let relay = &relay;
            scope.spawn(move || {
                let source = Ipv4Addr::new(127, 0, 1, i as u8 + 1);
                let status = imap_login_status(relay, source, user, password);
                assert_ne!(status, "OK", "{user:?} with {password:?} must not log in");
            });
        }
    });
    let made: Vec<_> = std::fs::read_dir(&relay.config.mailboxes_dir).expect("list").flatten().map(|e| e.file_name()).collect();
    assert!(made.is_empty(), "nothing created: {made:?}");
    assert!(!relay.run_dir.join("etc").exists() && !std::path::Path::new("/etc/password").exists());
}

#[test]
fn nocreate_file_stops_new_accounts_but_not_logins() {
    let relay = start_with(&[]);
    let alice = relay.new_account().expect("alice");
    relay.set_nocreate(true).expect("nocreate on");
    let bob = fresh(&relay);
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 2, 1), &bob.addr, &bob.password), "NO");
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 2, 2), &alice.addr, &alice.password), "OK");
    relay.set_nocreate(false).expect("nocreate off");
    // Refusals are not cached: the same login works at once.
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 2, 3), &bob.addr, &bob.password), "OK");
    let log = std::fs::read_to_string(relay.log_dir.join("auth.log")).expect("auth log");
    assert!(log.contains("reason=nocreate-file"), "{log}");
}

#[test]
fn new_accounts_per_ip_are_limited() {
    let relay = start_with(&[("new_accounts_per_ip_per_hour", "2")]);
    let busy = Ipv4Addr::new(127, 0, 3, 1);
    let first = fresh(&relay);
    for account in [&first, &fresh(&relay)] {
        assert_eq!(imap_login_status(&relay, busy, &account.addr, &account.password), "OK");
    }
    let third = fresh(&relay);
    assert_eq!(imap_login_status(&relay, busy, &third.addr, &third.password), "NO");
    // Existing accounts still log in from there; other addresses still create.
    assert_eq!(imap_login_status(&relay, busy, &first.addr, &first.password), "OK");
    assert_eq!(imap_login_status(&relay, Ipv4Addr::new(127, 0, 3, 2), &third.addr, &third.password), "OK");
    let log = std::fs::read_to_string(relay.log_dir.join("auth.log")).expect("auth log");
    assert!(log.contains("ip=127.0.3.1 result=refused reason=ip-limit"), "{log}");
}

#[test]
fn ten_parallel_first_logins_make_one_account() {
    let relay = start_with(&[]);
    let racer = fresh(&relay);
    let statuses: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let relay = &relay;
                let racer = &racer;
                scope.spawn(move || imap_login_status(relay, Ipv4Addr::new(127, 0, 4, i + 1), &racer.addr, &racer.password))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(statuses.iter().all(|s| s == "OK"), "{statuses:?}");
    let log = std::fs::read_to_string(relay.log_dir.join("auth.log")).expect("auth log");
    assert_eq!(log.matches("result=created").count(), 1, "{log}");
}

#[test]
fn new_gives_credentials_that_log_in() {
    let relay = start_with(&[("new_accounts_per_ip_per_hour", "3")]);
    let source = Ipv4Addr::new(127, 0, 5, 1);
    let (status, body) = relay.post_new(Some(source)).expect("POST /new");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let account = Account {
        addr: json["email"].as_str().expect("email").to_owned(),
        password: json["password"].as_str().expect("password").to_owned(),
    };
    assert!(account.addr.ends_with(&format!("@{}", relay.domain)), "{body}");
    assert!(!relay.config.mailboxes_dir.join(&account.addr).exists(), "/new writes nothing");
    // Delta Chat logs in with them next, which creates the account.
    assert_eq!(imap_login_status(&relay, source, &account.addr, &account.password), "OK");
    relay.submission_session(&account).expect("submission with the same password").quit();
    // /new is limited per IP as well.
    let statuses: Vec<u16> = (0..3).map(|_| relay.post_new(Some(source)).expect("POST /new").0).collect();
    assert_eq!(statuses, [200, 200, 429]);
}
