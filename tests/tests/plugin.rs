//! The chatmail Dovecot plugin in the harness's real Dovecot: it loads in
//! both imap and lmtp, and records logins.

use std::fs::{File, FileTimes};
use std::process::Command;
use std::time::{Duration, SystemTime};

use std::net::Ipv4Addr;

use chatmail_testrelay::{ImapClient, ImapResponse};
use chatmail_testrelay::mail::encrypted;
use chatmail_testrelay::{Account, AccountBackend, Relay, RelayOptions};

fn start() -> Relay {
    Relay::start(RelayOptions::default()).unwrap_or_else(|e| panic!("relay did not start: {e}"))
}

/// What `doveconf -c <the relay's dovecot.conf> ARGS` prints.
fn doveconf(relay: &Relay, args: &[&str]) -> String {
    let conf = relay.run_dir.join("dovecot").join("dovecot.conf");
    let out = Command::new("doveconf").arg("-c").arg(&conf).args(args).output().expect("doveconf");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn plugin_loads_in_imap_and_lmtp() {
    let relay = start();
    let release = chatmail_config::wiring::DovecotRelease::installed().expect("Dovecot's version");
    for protocol in ["imap", "lmtp"] {
        // 2.3: a word list per protocol; 2.4: a boolean list ("chatmail =
        // yes"; `-h` refuses those), global, which protocol blocks add to.
        let plugins = match release {
            chatmail_config::wiring::DovecotRelease::V2_4 => doveconf(&relay, &["mail_plugins"]),
            chatmail_config::wiring::DovecotRelease::V2_3 => doveconf(&relay, &["-h", "-f", &format!("protocol={protocol}"), "mail_plugins"]),
        };
        assert!(plugins.split_whitespace().any(|p| p == "chatmail"), "{protocol}: mail_plugins = {plugins:?}");
    }
    // It really is loaded: an IMAP session and an LMTP delivery work, and
    // Dovecot complains about nothing (a wrong ABI version would show here).
    let alice = relay.new_account().expect("alice");
    let bob = relay.new_account().expect("bob");
    relay.submit(&alice, &[&bob.addr], &encrypted(&alice.addr, &bob.addr, "through lmtp")).expect("submit");
    relay.wait_for_message(&bob, "through lmtp", Duration::from_secs(20)).expect("delivered");
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    for bad in ["Module is for different ABI version", "chatmail: internal error", "Error:"] {
        assert!(!log.contains(bad), "{bad:?} in the Dovecot log:\n{log}");
    }
}

fn set_mtime(path: &std::path::Path, when: SystemTime) {
    File::options().write(true).open(path).expect("open").set_times(FileTimes::new().set_modified(when)).expect("set mtime");
}

fn mtime(path: &std::path::Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).expect("mtime")
}

#[test]
fn logins_answered_by_the_auth_cache_are_recorded_but_deliveries_are_not() {
    let relay = start();
    let alice = relay.new_account().expect("alice");
    let bob = relay.new_account().expect("bob");
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let alice_password = relay.config.mailboxes_dir.join(&alice.addr).join("password");
    let bob_password = relay.config.mailboxes_dir.join(&bob.addr).join("password");
    set_mtime(&alice_password, long_ago);
    set_mtime(&bob_password, long_ago);

    // Alice's second login comes from Dovecot's auth cache (chatmail-auth
    // is not asked); the plugin records it, with day granularity.
    relay.imap_login(&alice).expect("login").logout();
    let today = chatmail_config::layout::day_start(SystemTime::now());
    assert_eq!(mtime(&alice_password), today);

    // Mail delivered to Bob is not Bob logging in.
    relay.submit(&alice, &[&bob.addr], &encrypted(&alice.addr, &bob.addr, "not a login")).expect("submit");
    relay.wait_for_empty_queue(Duration::from_secs(20)).expect("delivered");
    assert_eq!(mtime(&bob_password), long_ago);
}

#[test]
fn without_the_plugin_cached_logins_go_unrecorded() {
    // The counterpart of the test above: it shows that the second login
    // really is answered by the auth cache, so the plugin is what records it.
    let relay = Relay::start(RelayOptions { dovecot_plugin: false, ..RelayOptions::default() }).expect("relay");
    let alice = relay.new_account().expect("alice");
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let password = relay.config.mailboxes_dir.join(&alice.addr).join("password");
    set_mtime(&password, long_ago);
    relay.imap_login(&alice).expect("login").logout();
    assert_eq!(mtime(&password), long_ago);
}


/// Opens ten IMAP sessions of `alice` from different client addresses (the
/// limit is per account, not per address), then tries an eleventh.
fn ten_sessions_and_an_eleventh(relay: &Relay, alice: &Account) -> (Vec<ImapClient>, Result<ImapResponse, chatmail_testrelay::Error>) {
    let sessions: Vec<_> = (0..10u8)
        .map(|i| {
            let mut imap = relay.imap_from(Some(Ipv4Addr::new(127, 0, 6, i + 1))).expect("connect");
            imap.login(&alice.addr, &alice.password).expect("login").ok().expect("session accepted");
            imap
        })
        .collect();
    let mut eleventh = relay.imap_from(Some(Ipv4Addr::new(127, 0, 6, 100))).expect("connect");
    let refused = eleventh.login(&alice.addr, &alice.password);
    (sessions, refused)
}

/// kill -9 of one session's process frees its slot at once: a new login
/// succeeds.
fn killed_session_frees_its_slot(relay: &Relay, alice: &Account) {
    let pids = relay.imap_session_pids(&alice.addr);
    let victim = *pids.iter().find(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()).expect("a live imap process");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    chatmail_testrelay::eventually("a free slot after kill -9", Duration::from_secs(10), || {
        let mut imap = relay.imap_from(Some(Ipv4Addr::new(127, 0, 6, 101))).expect("connect");
        imap.login(&alice.addr, &alice.password).ok().filter(|r| r.status == "OK")
    });
}

#[test]
fn the_eleventh_session_is_refused_with_a_reason_and_a_killed_one_frees_its_slot() {
    let relay = start();
    let alice = relay.new_account().expect("alice");
    let (sessions, refused) = ten_sessions_and_an_eleventh(&relay, &alice);
    // chatmail-auth refuses the login itself, so the client learns why.
    let refused = refused.expect("an answer to LOGIN");
    assert_eq!(refused.status, "NO", "{refused:?}");
    assert_eq!(
        refused.text, "[UNAVAILABLE] Maximum number of sessions for this account exceeded (max_user_connections=10)",
        "{refused:?}"
    );
    let auth_log = std::fs::read_to_string(relay.log_dir.join("auth.log")).expect("auth log");
    assert!(
        auth_log.contains(&format!("op=sessions user={} service=imap result=refused reason=max-user-connections max=10", alice.addr)),
        "{auth_log}"
    );
    // The ten sessions are unaffected.
    for mut imap in sessions.into_iter().take(2) {
        imap.command("NOOP").expect("noop").ok().expect("session still works");
    }
    // The eleventh never reached the plugin (no session was started).
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    assert!(!log.contains("sessions already (max_user_connections)"), "{log}");
    assert!(!log.contains("Panic") && !log.contains("killed with signal"), "{log}");
    killed_session_frees_its_slot(&relay, &alice);
}

/// Without chatmail-auth's check (a static passdb, or two logins racing
/// past it), the plugin itself refuses the session that finds no slot; the
/// client then only sees Dovecot's generic failure.
#[test]
fn without_the_login_check_the_plugin_refuses_the_eleventh_session() {
    let relay = Relay::start(RelayOptions { accounts: AccountBackend::PasswdFile, ..RelayOptions::default() })
        .unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let alice = relay.add_account("alicesess", "password-alice").expect("alice");
    let (sessions, refused) = ten_sessions_and_an_eleventh(&relay, &alice);
    // Dovecot ends the session ("Logged in, but initialization failed" and
    // a BYE, or just the close); its log says why.
    assert!(refused.as_ref().map_or(true, |r| r.status != "OK" || r.text.contains("initialization failed")), "{refused:?}");
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    assert!(log.contains(&format!("{} has 10 sessions already (max_user_connections); session refused", alice.addr)), "{log}");
    assert!(!log.contains("Panic") && !log.contains("killed with signal"), "{log}");
    killed_session_frees_its_slot(&relay, &alice);
    drop(sessions);
}

fn spool_jobs(relay: &Relay) -> Vec<chatmail_config::spool::Job> {
    let new = relay.config.bot_spool_dir.join("new");
    let mut names: Vec<_> = std::fs::read_dir(&new).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    names.iter().map(|p| chatmail_config::spool::Job::parse(&std::fs::read_to_string(p).expect("job")).expect("valid job")).collect()
}

#[test]
fn deliveries_to_bot_accounts_and_bot_packages_leave_spool_jobs() {
    use chatmail_config::spool::JobKind;
    let mut relay = start();
    // The jobs are looked at here, not run.
    relay.stop_bots();
    let bot = relay.new_account().expect("bot account");
    let person = relay.new_account().expect("person");
    std::fs::write(relay.config.mailboxes_dir.join(&bot.addr).join(chatmail_config::spool::BOT_MARKER), "").expect("bot marker");

    let text = encrypted(&person.addr, &bot.addr, "for the bot");
    assert!(relay.lmtp_deliver(&bot.addr, &text).expect("lmtp").starts_with("250"));
    let text = encrypted(&bot.addr, &person.addr, "for the person");
    assert!(relay.lmtp_deliver(&person.addr, &text).expect("lmtp").starts_with("250"));
    let jobs = spool_jobs(&relay);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!((jobs[0].kind, jobs[0].account.as_str(), jobs[0].mailbox.as_str()), (JobKind::Deliver, bot.addr.as_str(), "INBOX"));
    // The job names the mail by UID, which IMAP finds.
    let uid = jobs[0].uid.expect("uid assigned");
    let mut imap = relay.imap_login(&bot).expect("login");
    imap.command("SELECT INBOX").expect("select").ok().expect("OK");
    let fetched = imap.command(&format!("UID FETCH {uid} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")).expect("fetch");
    assert!(fetched.untagged.iter().any(|l| l.contains("for the bot")), "{fetched:?}");
    imap.logout();

    // Storing a package in the install folder (any account) asks for an install.
    let mut imap = relay.imap_login(&person).expect("login");
    imap.command("CREATE DeltaBot").expect("create").ok().expect("created");
    let package = "From: <x@y.example>\r\nSubject: bot\r\n\r\npackage\r\n";
    let reply = imap.command(&format!("APPEND DeltaBot {{{}+}}\r\n{package}", package.len())).expect("append");
    assert_eq!(reply.status, "OK", "{}", reply.text);
    imap.logout();
    let jobs = spool_jobs(&relay);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let install = &jobs[1];
    assert_eq!((install.kind, install.account.as_str(), install.mailbox.as_str()), (JobKind::Install, person.addr.as_str(), "DeltaBot"));
    assert!(install.uid.is_some() && install.uidvalidity.is_some(), "{install:?}");
    assert_eq!(std::fs::read_dir(relay.config.bot_spool_dir.join("tmp")).expect("tmp").count(), 0);
}
