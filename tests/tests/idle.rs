//! The plugin's instant IDLE wake-up in the harness's real Dovecot: an
//! IDLE-ing session hears of new mail at once (stock Dovecot waits 500 ms
//! after it saw the change), in order, also after hibernation; the watch
//! comes and goes with IDLE and leaks nothing; when the kernel's inotify
//! limit is reached, or with `instant_idle = false`, Dovecot behaves as it
//! always does.
//!
//! Times are measured from Dovecot's LMTP answer to the untagged `EXISTS`.
//! They are compared with a wide margin only to tell the two mechanisms
//! apart (Dovecot's fixed 500 ms timer against an immediate wake-up); the
//! benchmark (`chatmail-bench-plugin idle`) measures speed.

use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_testrelay::mail::encrypted;
use chatmail_testrelay::{eventually, Account, ImapClient, Relay, RelayOptions};

/// Below this, a wake-up cannot have come from Dovecot's 500 ms timer.
const CLEARLY_INSTANT: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(10);

/// One test at a time: one of them uses up the mail user's inotify
/// instances, which the others' IDLE sessions need.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(options: RelayOptions) -> (Relay, std::sync::MutexGuard<'static, ()>) {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    (Relay::start(options).unwrap_or_else(|e| panic!("relay did not start: {e}")), turn)
}



/// Logs `account` in, selects INBOX and returns the session with the pid
/// of its imap process.
fn session(relay: &Relay, account: &Account) -> (ImapClient, i32) {
    let before = relay.imap_session_pids(&account.addr).len();
    let mut imap = relay.imap_login(account).expect("login");
    imap.command("SELECT INBOX").expect("select").ok().expect("selected");
    let pid = eventually("the session's login line", WAIT, || relay.imap_session_pids(&account.addr).get(before).copied());
    (imap, pid)
}

/// A session as [`session`] after one IDLE and DONE (Dovecot makes its own
/// inotify instance at the first IDLE and keeps it), with the number of
/// inotify instances its process holds when it does not IDLE.
fn rested_session(relay: &Relay, account: &Account) -> (ImapClient, i32, usize) {
    let (mut imap, pid) = session(relay, account);
    imap.idle().expect("idle");
    imap.idle_done().expect("done").ok().expect("idle completed");
    let resting = inotify_instances(pid);
    (imap, pid, resting)
}

/// inotify instances the process holds (`anon_inode:inotify` descriptors).
fn inotify_instances(pid: i32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap_or_else(|e| panic!("fds of {pid}: {e}"));
    fds.flatten().filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("anon_inode:inotify"))).count()
}

/// The relay's Dovecot processes running `program` (children of its master).
fn children(relay: &Relay, program: &str) -> Vec<i32> {
    let master_pid = std::fs::read_to_string(relay.run_dir.join("dovecot").join("run").join("master.pid")).expect("master.pid");
    let master_pid = master_pid.trim();
    let procs = std::fs::read_dir("/proc").expect("/proc");
    procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "PID (COMM) STATE PPID ..."; COMM may hold spaces.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some((head, tail)) = stat.rsplit_once(") ") else { return false };
            let comm = head.split_once(" (").map_or("", |(_, c)| c);
            comm == program && tail.split(' ').nth(1) == Some(master_pid)
        })
        .collect()
}

/// Waits until the relay's only IMAP session is hibernated: no imap process
/// left, imap-hibernate running.
fn wait_for_hibernation(relay: &Relay) {
    eventually("the session to hibernate", WAIT, || {
        (children(relay, "imap").is_empty() && !children(relay, "imap-hibernate").is_empty()).then_some(())
    });
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The count of the next `* N EXISTS` during IDLE.
fn next_exists(imap: &mut ImapClient) -> u32 {
    imap.idle_wait_exists(WAIT).expect("an EXISTS response during IDLE")
}

/// Delivers one message over LMTP and returns how long after Dovecot's
/// answer the IDLE-ing session was told, checking it is message `expected`.
fn deliver_and_time(relay: &Relay, imap: &mut ImapClient, to: &Account, subject: &str, expected: u32) -> Duration {
    let reply = relay.lmtp_deliver(&to.addr, &encrypted("sender@other.example", &to.addr, subject)).expect("lmtp");
    let delivered = Instant::now();
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(next_exists(imap), expected, "after delivering {subject:?}");
    delivered.elapsed()
}

/// Subjects of the selected mailbox's messages, in sequence order.
fn subjects(imap: &mut ImapClient) -> Vec<String> {
    let fetched = imap.command("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").expect("fetch").ok().expect("fetched");
    fetched
        .untagged
        .iter()
        .filter_map(|l| l.split("Subject: ").nth(1).map(|s| s.lines().next().unwrap_or("").trim().to_owned()))
        .collect()
}

#[test]
fn new_mail_wakes_an_idle_session_at_once_and_in_order() {
    let (relay, _turn) = start(RelayOptions::default());
    let alice = relay.new_account().expect("alice");
    let bob = relay.new_account().expect("bob");
    let (mut imap, pid, resting) = rested_session(&relay, &alice);

    imap.idle().expect("idle");
    // The plugin's own inotify instance exists while the session IDLEs.
    eventually("the plugin's watch", WAIT, || (inotify_instances(pid) == resting + 1).then_some(()));

    let mut times = Vec::new();
    for n in 1..=5 {
        times.push(deliver_and_time(&relay, &mut imap, &alice, &format!("single {n}"), n));
    }
    let fastest = times.iter().min().copied().unwrap_or_default();
    assert!(fastest < CLEARLY_INSTANT, "no wake-up came before Dovecot's own timer could have fired: {times:?}");

    // A burst: every message is announced, the count only grows.
    for n in 1..=5 {
        let reply = relay.lmtp_deliver(&alice.addr, &encrypted("sender@other.example", &alice.addr, &format!("burst {n}"))).expect("lmtp");
        assert!(reply.starts_with("250"), "{reply}");
    }
    let mut seen = 5;
    while seen < 10 {
        let exists = next_exists(&mut imap);
        assert!(exists > seen, "EXISTS went from {seen} to {exists}");
        seen = exists;
    }
    assert_eq!(seen, 10);

    // Through the whole relay (submission, milter, Postfix, LMTP) too.
    relay.submit(&bob, &[&alice.addr], &encrypted(&bob.addr, &alice.addr, "from bob")).expect("submit");
    assert_eq!(next_exists(&mut imap), 11);

    let done = imap.idle_done().expect("done");
    assert_eq!(done.status, "OK", "{done:?}");
    let expected: Vec<String> =
        (1..=5).map(|n| format!("single {n}")).chain((1..=5).map(|n| format!("burst {n}"))).chain(["from bob".to_owned()]).collect();
    assert_eq!(subjects(&mut imap), expected);
    assert_eq!(inotify_instances(pid), resting, "the watch ends with IDLE");
    imap.logout();
}

#[test]
fn idle_cycles_and_a_disconnect_during_idle_leak_no_watch() {
    let (relay, _turn) = start(RelayOptions::default());
    let alice = relay.new_account().expect("alice");
    let (mut imap, pid, resting) = rested_session(&relay, &alice);
    for cycle in 1..=30u32 {
        imap.idle().expect("idle");
        if cycle % 10 == 0 {
            eventually("the plugin's watch", WAIT, || (inotify_instances(pid) == resting + 1).then_some(()));
            let reply = relay.lmtp_deliver(&alice.addr, &encrypted("sender@other.example", &alice.addr, &format!("cycle {cycle}"))).expect("lmtp");
            assert!(reply.starts_with("250"), "{reply}");
            assert_eq!(next_exists(&mut imap), cycle / 10);
        }
        imap.idle_done().expect("done").ok().expect("idle completed");
        assert_eq!(inotify_instances(pid), resting, "after IDLE cycle {cycle}");
    }
    imap.logout();

    // A client that vanishes in the middle of IDLE.
    let (mut imap, pid) = session(&relay, &alice);
    imap.idle().expect("idle");
    eventually("the plugin's watch", WAIT, || (inotify_instances(pid) >= 2).then_some(()));
    drop(imap);
    eventually("the session's process to end", WAIT, || (!alive(pid)).then_some(()));
    // Dovecot reports every io and timeout still registered when a process's
    // ioloop ends ("I/O leak: …", "Timeout leak: …").
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    for bad in ["leak", "Panic", "Error:", "chatmail: internal error", "instant IDLE wake-up off"] {
        assert!(!log.contains(bad), "{bad:?} in the Dovecot log:\n{log}");
    }
}

#[test]
fn a_hibernated_session_is_woken_by_new_mail() {
    let (relay, _turn) = start(RelayOptions { imap_hibernate_timeout: 1, ..RelayOptions::default() });
    let alice = relay.new_account().expect("alice");
    let (mut imap, _) = session(&relay, &alice);
    imap.idle().expect("idle");
    let mut times = Vec::new();
    for n in 1..=3 {
        // Hibernation ends the session's imap process; the connection lives
        // on in imap-hibernate, which watches the mailbox. The new mail
        // brings it back into a new imap process, which hibernates again.
        wait_for_hibernation(&relay);
        times.push(deliver_and_time(&relay, &mut imap, &alice, &format!("while hibernated {n}"), n));
        assert_eq!(children(&relay, "imap").len(), 1, "woken up into an imap process");
    }
    let fastest = times.iter().min().copied().unwrap_or_default();
    assert!(fastest < CLEARLY_INSTANT, "no wake-up came before a 500 ms timer could have fired: {times:?}");
    let done = imap.idle_done().expect("done");
    assert_eq!(done.status, "OK", "{done:?}");
    assert_eq!(subjects(&mut imap).len(), 3);
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    assert!(!log.contains("Panic") && !log.contains("Error:"), "{log}");
}

#[test]
fn with_instant_idle_off_dovecot_wakes_the_session_after_its_own_delay() {
    let (relay, _turn) = start(RelayOptions { params: vec![("instant_idle".into(), "false".into())], ..RelayOptions::default() });
    let alice = relay.new_account().expect("alice");
    let (mut imap, pid, resting) = rested_session(&relay, &alice);
    imap.idle().expect("idle");
    let mut times = Vec::new();
    for n in 1..=3 {
        times.push(deliver_and_time(&relay, &mut imap, &alice, &format!("slow {n}"), n));
    }
    assert_eq!(inotify_instances(pid), resting, "no watch of the plugin's own");
    let fastest = times.iter().min().copied().unwrap_or_default();
    assert!(fastest >= CLEARLY_INSTANT, "Dovecot's own wake-up waits 500 ms: {times:?}");
    imap.idle_done().expect("done").ok().expect("idle completed");
    imap.logout();
}

/// Processes of the mail user that hold inotify instances until dropped.
struct InotifyHogs(Vec<std::process::Child>);

impl InotifyHogs {
    /// Starts processes of `uid` that each take inotify instances until the
    /// kernel refuses one, until a new one gets none: then the user's limit
    /// (fs.inotify.max_user_instances) is reached, not just a process's
    /// descriptor limit.
    fn exhaust(uid: u32, gid: u32) -> InotifyHogs {
        use std::os::unix::process::CommandExt;
        let mut hogs = InotifyHogs(Vec::new());
        for _ in 0..300 {
            let mut command = std::process::Command::new("sleep");
            command.arg("600").uid(uid).gid(gid).stdin(std::process::Stdio::null());
            // SAFETY: runs in the forked child before exec and only makes
            // system calls (async-signal-safe); the descriptors are left
            // open without close-on-exec, so `sleep` keeps them.
            unsafe {
                command.pre_exec(|| {
                    while libc::inotify_init1(0) >= 0 {}
                    Ok(())
                });
            }
            let hog = command.spawn().expect("spawning an inotify hog");
            let pid = i32::try_from(hog.id()).expect("pid");
            hogs.0.push(hog);
            // It has exec'd once its command line is sleep's.
            eventually("the hog to start", WAIT, || {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok().filter(|c| c.starts_with("sleep")).map(|_| ())
            });
            if inotify_instances(pid) == 0 {
                return hogs;
            }
        }
        panic!("the mail user's inotify instances could not be used up");
    }
}

impl Drop for InotifyHogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

#[test]
fn when_no_inotify_instance_is_left_idle_falls_back_to_dovecots_wake_up() {
    let (relay, _turn) = start(RelayOptions::default());
    let alice = relay.new_account().expect("alice");
    let (mut imap, pid, resting) = rested_session(&relay, &alice);
    let owner = nix::unistd::User::from_name(chatmail_testrelay::MAIL_USER).expect("lookup").expect("mail user");
    let hogs = InotifyHogs::exhaust(owner.uid.as_raw(), owner.gid.as_raw());

    let mut times = Vec::new();
    for n in 1..=2 {
        imap.idle().expect("IDLE still works");
        times.push(deliver_and_time(&relay, &mut imap, &alice, &format!("without a watch {n}"), n));
        imap.idle_done().expect("done").ok().expect("idle completed");
    }
    assert_eq!(inotify_instances(pid), resting);
    let fastest = times.iter().min().copied().unwrap_or_default();
    assert!(fastest >= CLEARLY_INSTANT, "Dovecot's own wake-up waits 500 ms: {times:?}");
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    let warnings: Vec<_> = log.lines().filter(|l| l.contains("instant IDLE wake-up off")).collect();
    assert_eq!(warnings.len(), 1, "logged once per process: {warnings:#?}");
    assert!(
        warnings[0].contains(&format!("Warning: chatmail: instant IDLE wake-up off for a session of {}: creating an inotify instance: ", alice.addr))
            && warnings[0].contains("raise the sysctl fs.inotify.max_user_instances"),
        "{}",
        warnings[0]
    );

    // With instances free again, the next IDLE has its watch.
    drop(hogs);
    imap.idle().expect("idle");
    eventually("the plugin's watch", WAIT, || (inotify_instances(pid) == resting + 1).then_some(()));
    deliver_and_time(&relay, &mut imap, &alice, "with a watch again", 3);
    imap.idle_done().expect("done").ok().expect("idle completed");
    imap.logout();
}

/// A hibernated session holds no session slot (its imap process is gone), so
/// another session may take the last one meanwhile; waking up must not end
/// the hibernated session then.
#[test]
fn a_session_woken_from_hibernation_is_not_refused_for_the_connection_limit() {
    let (relay, _turn) = start(RelayOptions {
        imap_hibernate_timeout: 1,
        params: vec![("max_user_connections".into(), "1".into())],
        ..RelayOptions::default()
    });
    let alice = relay.new_account().expect("alice");
    // The session that made the account has said goodbye, but its process
    // may hold the only slot a few moments more.
    eventually("the first session's process to end", WAIT, || children(&relay, "imap").is_empty().then_some(()));
    let (mut sleeper, _) = session(&relay, &alice);
    sleeper.idle().expect("idle");
    wait_for_hibernation(&relay);
    // The only slot is free again: a second device logs in and takes it.
    let (mut other, _) = session(&relay, &alice);
    let reply = relay.lmtp_deliver(&alice.addr, &encrypted("sender@other.example", &alice.addr, "wake up")).expect("lmtp");
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(next_exists(&mut sleeper), 1, "the woken session lives on");
    sleeper.idle_done().expect("done").ok().expect("idle completed");
    assert_eq!(subjects(&mut sleeper), ["wake up"]);
    other.command("NOOP").expect("noop").ok().expect("the other session too");
    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    assert!(log.contains("a session back from hibernation continues without a slot"), "{log}");
}

/// Reads untagged responses during IDLE until one satisfies `wanted`, and
/// returns it.
fn idle_until(imap: &mut ImapClient, wanted: impl Fn(&str) -> bool) -> String {
    loop {
        let line = imap.idle_wait(WAIT).expect("an untagged response during IDLE");
        if wanted(&line) {
            return line;
        }
    }
}

/// What other sessions of the account do reaches an IDLE-ing one too: mail
/// copied into INBOX at once (it arrives), flag changes and expunges through
/// Dovecot's own wake-up (the plugin leaves renames within the mailbox to it,
/// so that sessions' syncs do not set each other off).
#[test]
fn changes_by_another_session_reach_an_idle_session() {
    let (relay, _turn) = start(RelayOptions::default());
    let alice = relay.new_account().expect("alice");
    let (mut other, _) = session(&relay, &alice);
    other.command("CREATE Archive").expect("create").ok().expect("created");
    let message = encrypted("sender@other.example", &alice.addr, "archived");
    other.command(&format!("APPEND Archive {{{}+}}\r\n{message}", message.len())).expect("append").ok().expect("appended");
    let (mut idle, _) = session(&relay, &alice);
    idle.idle().expect("idle");

    let mut copies = Vec::new();
    for n in 1..=3u32 {
        let start = Instant::now();
        other.command("SELECT Archive").expect("select").ok().expect("selected");
        other.command("COPY 1 INBOX").expect("copy").ok().expect("copied");
        idle_until(&mut idle, |l| l == format!("* {n} EXISTS"));
        copies.push(start.elapsed());
    }
    let fastest = copies.iter().min().copied().unwrap_or_default();
    assert!(fastest < CLEARLY_INSTANT, "a copy into INBOX is new mail for the IDLE session: {copies:?}");

    other.command("SELECT INBOX").expect("select").ok().expect("selected");
    other.command("STORE 1 +FLAGS (\\Seen)").expect("store").ok().expect("stored");
    let line = idle_until(&mut idle, |l| l.starts_with("* 1 FETCH"));
    assert!(line.contains("\\Seen"), "{line}");
    other.command("STORE 2 +FLAGS (\\Deleted)").expect("store").ok().expect("stored");
    other.command("EXPUNGE").expect("expunge").ok().expect("expunged");
    idle_until(&mut idle, |l| l == "* 2 EXPUNGE");
    idle.idle_done().expect("done").ok().expect("idle completed");
    assert_eq!(subjects(&mut idle), ["archived", "archived"]);
}
