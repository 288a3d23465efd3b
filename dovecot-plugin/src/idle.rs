//! The instant IDLE wake-up's decisions (the shim's `chatmail-idle.c` does
//! the watching): whether an IMAP session gets it, which changes wake the
//! session and when, and what to tell the operator when the plugin's own
//! watch cannot be set up.
//!
//! Stock Dovecot tells an IDLE-ing client about a change only 500 ms after
//! it saw it; chatmail relays patch that delay out of their Dovecot. The
//! plugin watches the same paths itself and wakes the session at once, with
//! Dovecot's delayed wake-up and periodic poll left as the safety net.

use std::time::Duration;

use chatmail_config::Config;

/// The wake-up policy of one process's IMAP sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub enabled: bool,
    /// Least time between two wake-ups of one mailbox.
    pub min_interval: Duration,
}

impl Policy {
    /// The policy chatmail.ini asks for. Without a usable chatmail.ini the
    /// wake-up stays on with no minimum interval: it only makes Dovecot's own
    /// notification come sooner, so it needs no setting to be safe.
    pub fn from_config(config: Option<&Config>) -> Policy {
        match config {
            Some(c) => Policy {
                enabled: c.instant_idle,
                min_interval: Duration::from_millis(u64::from(c.instant_idle_min_interval)),
            },
            None => Policy { enabled: true, min_interval: Duration::ZERO },
        }
    }
}

/// Where in a watched mailbox a change happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// maildir `new/`, where deliveries arrive.
    New,
    /// maildir `cur/`.
    Cur,
    /// maildir's control directory (only the uidlist lock's release is seen there).
    Control,
    /// Another watched path (a dbox index log), whose changes cannot be told apart.
    Other,
}

/// What happened there (one inotify event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new name: a hard link (COPY) or a file made in place.
    Created,
    /// A file renamed into the directory.
    MovedIn,
    /// A file renamed out of the directory.
    MovedOut,
    Removed,
    Modified,
    /// The watched path itself went away.
    WatchGone,
    /// The kernel's event queue overflowed: events were lost.
    Overflow,
    /// maildir's uidlist lock was released: whoever held it (a delivery,
    /// a sync) has recorded its mail in the uidlist and the index.
    LockReleased,
}

/// One inotify event; `cookie` pairs the two halves of a rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub place: Place,
    pub change: Change,
    pub cookie: u32,
}

/// Whether to wake the session now for events read together. `pending`
/// (kept per mailbox) says that mail arrived and the session was not told
/// yet; `lock_held`, whether maildir's uidlist lock exists right now.
///
/// A delivery renames its mail into `new/` while it holds the uidlist lock
/// and records it in the uidlist and the index only afterwards; a session
/// that syncs in between may see nothing new (Dovecot's 500 ms delay hides
/// this race). So an arrival wakes the session once the lock is free: at
/// once if it already is, else at the lock's release (`LockReleased`).
/// Should a lock outstay its welcome, Dovecot's own delayed wake-up, which
/// the plugin never cancels, still tells the session.
pub fn wake_now(events: &[Event], pending: &mut bool, lock_held: bool) -> bool {
    if announces_arrival(events) {
        *pending = true;
    }
    if *pending && !lock_held {
        *pending = false;
        return true;
    }
    false
}

/// Whether events read together announce a message that IDLE should hear
/// of now. That is mail arriving: a file moved into `new/` or `cur/` from
/// outside the mailbox (a delivery renames it from `tmp/`) or a new name
/// there (COPY links it). A rename inside the mailbox (a session's sync
/// moving mail from `new/` to `cur/`, a flag change within `cur/`), an
/// expunge or a modification is left to Dovecot's own wake-up, 500 ms later:
/// waking every IDLE session of the account for each of them would make
/// every sync set off more syncs (each of the account's sessions moving
/// or flagging mail wakes the others), all contending for the mailbox's
/// locks with the deliveries. Lost events, a vanished directory or a path
/// whose changes cannot be told apart always wake.
pub fn announces_arrival(events: &[Event]) -> bool {
    let renamed_within = |cookie: u32| {
        events.iter().any(|e| e.change == Change::MovedOut && e.cookie == cookie && matches!(e.place, Place::New | Place::Cur))
    };
    events.iter().any(|e| match (e.place, e.change) {
        (_, Change::Overflow | Change::WatchGone) | (Place::Other, _) => true,
        (Place::Control, _) => false,
        (_, Change::Created) => true,
        (_, Change::MovedIn) => !renamed_within(e.cookie),
        (_, Change::MovedOut | Change::Removed | Change::Modified | Change::LockReleased) => false,
    })
}

/// After how long to wake a session for a change, given the time since its
/// last wake-up (`None`: it was never woken). Zero: now. The first change
/// after a quiet spell always wakes at once; within the minimum interval
/// the wake-up waits for the interval's end and then covers every change
/// made meanwhile, so a flood costs one sync per interval.
pub fn wake_delay(min_interval: Duration, since_last: Option<Duration>) -> Duration {
    match since_last {
        Some(elapsed) if elapsed < min_interval => min_interval - elapsed,
        _ => Duration::ZERO,
    }
}

/// Which step of setting up or using the plugin's watch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Creating the inotify instance.
    Init,
    /// Adding a watch for a path.
    Watch,
    /// Reading the instance's events.
    Read,
}

/// The log line for a failed watch: what failed, that the session falls
/// back to Dovecot's delayed wake-up, and the kernel limit to raise when
/// one was reached.
pub fn failure_message(username: &str, what: Failure, path: &str, error: &std::io::Error) -> String {
    let step = match what {
        Failure::Init => "creating an inotify instance".to_owned(),
        Failure::Watch => format!("watching {path}"),
        Failure::Read => "reading inotify events".to_owned(),
    };
    let hint = match (what, error.raw_os_error()) {
        (Failure::Init, Some(EMFILE)) => {
            "; the limit of inotify instances per user is reached: raise the sysctl fs.inotify.max_user_instances"
        }
        (Failure::Watch, Some(ENOSPC)) => {
            "; the limit of inotify watches per user is reached: raise the sysctl fs.inotify.max_user_watches"
        }
        _ => "",
    };
    format!(
        "instant IDLE wake-up off for a session of {username}: {step}: {error}{hint}; \
         the session gets Dovecot's wake-up (500 ms later) (logged once per process)"
    )
}

// errno values (Linux; every architecture Debian ships uses these).
const EMFILE: i32 = 24;
const ENOSPC: i32 = 28;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_delays() {
        let ms = Duration::from_millis;
        // (min interval, since last wake-up, expected delay)
        let cases = [
            (ms(0), None, ms(0)),
            (ms(0), Some(ms(0)), ms(0)),
            (ms(0), Some(ms(5)), ms(0)),
            (ms(100), None, ms(0)),
            (ms(100), Some(ms(0)), ms(100)),
            (ms(100), Some(ms(30)), ms(70)),
            (ms(100), Some(ms(99)), ms(1)),
            (ms(100), Some(ms(100)), ms(0)),
            (ms(100), Some(ms(5000)), ms(0)),
            (ms(100), Some(Duration::MAX), ms(0)),
        ];
        for (min_interval, since_last, expected) in cases {
            assert_eq!(wake_delay(min_interval, since_last), expected, "min {min_interval:?}, since {since_last:?}");
        }
    }

    #[test]
    fn which_events_wake() {
        use Change::*;
        use Place::*;
        let ev = |place, change, cookie| Event { place, change, cookie };
        // (events read together, whether they wake the session now)
        let cases: Vec<(&str, Vec<Event>, bool)> = vec![
            ("delivery: tmp/ renamed into new/", vec![ev(New, MovedIn, 7)], true),
            ("APPEND with flags: tmp/ renamed into cur/", vec![ev(Cur, MovedIn, 7)], true),
            ("COPY: a hard link in cur/", vec![ev(Cur, Created, 0)], true),
            ("a session's sync moves new/ to cur/", vec![ev(New, MovedOut, 9), ev(Cur, MovedIn, 9)], false),
            ("a flag change renames within cur/", vec![ev(Cur, MovedOut, 3), ev(Cur, MovedIn, 3)], false),
            ("an expunge", vec![ev(Cur, Removed, 0)], false),
            ("a modified file", vec![ev(Cur, Modified, 0)], false),
            (
                "a delivery among a sync's renames",
                vec![ev(New, MovedOut, 9), ev(Cur, MovedIn, 9), ev(New, MovedIn, 10)],
                true,
            ),
            ("a rename whose other half came in an earlier read", vec![ev(Cur, MovedIn, 5)], true),
            ("a rename out of new/ alone", vec![ev(New, MovedOut, 5)], false),
            ("lost events", vec![ev(Other, Overflow, 0)], true),
            ("lost events on a maildir", vec![ev(New, Overflow, 0)], true),
            ("the directory vanished", vec![ev(Cur, WatchGone, 0)], true),
            ("a dbox index log changed", vec![ev(Other, Modified, 0)], true),
            ("nothing", vec![], false),
            ("the uidlist lock released", vec![ev(Control, LockReleased, 0)], false),
        ];
        for (what, events, expected) in cases {
            assert_eq!(announces_arrival(&events), expected, "{what}");
        }
    }

    #[test]
    fn an_arrival_wakes_once_the_uidlist_lock_is_free() {
        let arrival = [Event { place: Place::New, change: Change::MovedIn, cookie: 1 }];
        let released = [Event { place: Place::Control, change: Change::LockReleased, cookie: 0 }];
        let flags = [Event { place: Place::Cur, change: Change::MovedOut, cookie: 2 }, Event { place: Place::Cur, change: Change::MovedIn, cookie: 2 }];
        // (what, events, pending before, lock held, wake, pending after)
        type Case<'a> = (&'a str, &'a [Event], bool, bool, bool, bool);
        let cases: [Case<'_>; 7] = [
            ("arrival, lock free", &arrival, false, false, true, false),
            ("arrival while the delivery holds the lock", &arrival, false, true, false, true),
            ("the delivery released the lock", &released, true, false, true, false),
            ("another lock release, nothing pending", &released, false, false, false, false),
            ("a release, but the lock is taken again", &released, true, true, false, true),
            ("a flag change while an arrival waits", &flags, true, false, true, false),
            ("a flag change alone", &flags, false, false, false, false),
        ];
        for (what, events, pending_before, lock_held, wake, pending_after) in cases {
            let mut pending = pending_before;
            assert_eq!(wake_now(events, &mut pending, lock_held), wake, "{what}: wake");
            assert_eq!(pending, pending_after, "{what}: pending");
        }
    }

    #[test]
    fn policy_from_config() {
        assert_eq!(Policy::from_config(None), Policy { enabled: true, min_interval: Duration::ZERO });
        let parse = |extra: &str| {
            let text = format!("[params]\nmail_domain = example.org\n{extra}");
            Config::parse(&text, std::path::Path::new("chatmail.ini")).expect("valid").config
        };
        let config = parse("");
        assert_eq!(Policy::from_config(Some(&config)), Policy { enabled: true, min_interval: Duration::ZERO });
        let config = parse("instant_idle = false\ninstant_idle_min_interval = 250\n");
        assert_eq!(Policy::from_config(Some(&config)), Policy { enabled: false, min_interval: Duration::from_millis(250) });
    }

    #[test]
    fn failure_messages_name_the_limit_to_raise() {
        let emfile = std::io::Error::from_raw_os_error(EMFILE);
        let enospc = std::io::Error::from_raw_os_error(ENOSPC);
        let enoent = std::io::Error::from_raw_os_error(2);
        let init = failure_message("a@b", Failure::Init, "", &emfile);
        assert!(init.contains("raise the sysctl fs.inotify.max_user_instances"), "{init}");
        assert!(init.starts_with("instant IDLE wake-up off for a session of a@b: creating an inotify instance: "), "{init}");
        let watch = failure_message("a@b", Failure::Watch, "/m/a@b/new", &enospc);
        assert!(watch.contains("watching /m/a@b/new: ") && watch.contains("fs.inotify.max_user_watches"), "{watch}");
        let gone = failure_message("a@b", Failure::Watch, "/m/a@b/cur", &enoent);
        assert!(!gone.contains("sysctl") && gone.contains("Dovecot's wake-up"), "{gone}");
        let read = failure_message("a@b", Failure::Read, "", &std::io::Error::from_raw_os_error(5));
        assert!(read.contains("reading inotify events") && !read.contains("sysctl"), "{read}");
    }
}
