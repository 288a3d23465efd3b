//! Session slots: at most `max_user_connections` concurrent IMAP sessions
//! per account, across all client addresses and processes (Dovecot's own
//! `mail_max_userip_connections` counts per user *and IP*).
//!
//! Each session holds a write lock on one slot file
//! `{home}/chatmail-connections/{n}`, n < max. The locks are open file
//! description locks (`F_OFD_SETLK`): the kernel drops one when the last
//! descriptor of its open file goes away, however the process ends, so a
//! crashed or killed session never leaves a stale count behind. And unlike
//! `flock`, they can be *tested* without being taken (`F_OFD_GETLK`), so
//! chatmail-auth can refuse a login over the limit, with a reason the client
//! sees, without ever getting in the way of a session taking a slot.
//!
//! The Dovecot plugin takes slots (and refuses a session that finds none:
//! the backstop for two logins racing past the check); chatmail-auth
//! checks at login.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

/// Directory of slot files in the account's home.
pub const SLOTS_DIR: &str = "chatmail-connections";

/// Whether sessions of this Dovecot service count against the limit.
pub fn counts(service: &str) -> bool {
    matches!(service, "imap" | "pop3")
}

/// The slot directory of the account whose home is `home`.
pub fn slots_dir(home: &Path) -> PathBuf {
    home.join(SLOTS_DIR)
}

/// A session's slot: the lock lives as long as this value (or the process).
#[derive(Debug)]
pub struct Slot {
    _file: File,
    pub number: u32,
}

/// What trying the slots found.
#[derive(Debug)]
pub enum Acquired {
    Slot(Slot),
    AllBusy,
}

/// A write lock on the whole file.
fn whole_file_write_lock() -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero is a valid
    // value (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    lock
}

fn context(path: &Path, e: impl std::fmt::Display, kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, format!("{}: {e}", path.display()))
}

/// Tries slots 0..max in order and locks the first free one. Creates the
/// slot directory (mode 0700) and files (0600) as needed.
pub fn acquire(home: &Path, max: u32) -> io::Result<Acquired> {
    let dir = slots_dir(home);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(context(&dir, &e, e.kind())),
        _ => {}
    }
    for number in 0..max {
        let path = dir.join(number.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| context(&path, &e, e.kind()))?;
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&whole_file_write_lock())) {
            Ok(_) => return Ok(Acquired::Slot(Slot { _file: file, number })),
            Err(Errno::EAGAIN | Errno::EACCES) => continue,
            Err(e) => return Err(context(&path, format!("locking: {e}"), io::ErrorKind::Other)),
        }
    }
    Ok(Acquired::AllBusy)
}

/// Whether all `max` slots are held by sessions, found without taking any
/// lock. A missing directory or slot file is a free slot. Reads only, so
/// it works for any process that may read the account's home.
pub fn all_busy(home: &Path, max: u32) -> io::Result<bool> {
    let dir = slots_dir(home);
    for number in 0..max {
        let path = dir.join(number.to_string());
        // Testing needs no write access (only taking a write lock does).
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(context(&path, &e, e.kind())),
        };
        let mut probe = whole_file_write_lock();
        fcntl(&file, FcntlArg::F_OFD_GETLK(&mut probe))
            .map_err(|e| context(&path, format!("testing the lock: {e}"), io::ErrorKind::Other))?;
        if probe.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services() {
        for (service, want) in [("imap", true), ("pop3", true), ("lmtp", false), ("doveadm", false), ("", false)] {
            assert_eq!(counts(service), want, "{service}");
        }
    }

    #[test]
    fn slots_fill_up_and_free_when_dropped() {
        let home = tempfile::tempdir().expect("tempdir");
        assert!(!all_busy(home.path(), 2).expect("probe"), "no directory yet: free");
        let first = acquire(home.path(), 2).expect("acquire");
        assert!(!all_busy(home.path(), 2).expect("probe"));
        let second = acquire(home.path(), 2).expect("acquire");
        assert!(matches!(&first, Acquired::Slot(s) if s.number == 0));
        assert!(matches!(&second, Acquired::Slot(s) if s.number == 1));
        assert!(all_busy(home.path(), 2).expect("probe"));
        assert!(matches!(acquire(home.path(), 2).expect("acquire"), Acquired::AllBusy));
        // Probing takes nothing: the slots stay as they were.
        assert!(all_busy(home.path(), 2).expect("probe"));
        drop(first);
        assert!(!all_busy(home.path(), 2).expect("probe"));
        let again = acquire(home.path(), 2).expect("acquire");
        assert!(matches!(&again, Acquired::Slot(s) if s.number == 0));
        // A lower limit than slots on disk counts only the first `max`.
        assert!(all_busy(home.path(), 1).expect("probe"));
        assert!(!all_busy(home.path(), 3).expect("probe"));
        // No slots at all: always busy (max_user_connections = 0 is
        // refused by the config; this is the arithmetic).
        assert!(all_busy(home.path(), 0).expect("probe"));
    }

    #[test]
    fn a_slot_of_a_killed_process_is_free_at_once() {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = slots_dir(home.path());
        fs::create_dir_all(&dir).expect("dir");
        // Another process takes an OFD lock on slot 0 and holds it.
        // Python's fcntl module knows F_OFD_SETLK; struct flock on
        // x86_64/aarch64 Linux is (short, short, long, long, int).
        let script = format!(
            "import fcntl, os, struct, time\n\
             fd = os.open('{}', os.O_RDWR | os.O_CREAT, 0o600)\n\
             fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))\n\
             time.sleep(30)\n",
            dir.join("0").display()
        );
        let mut holder = std::process::Command::new("python3").args(["-c", &script]).spawn().expect("python3");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !all_busy(home.path(), 1).expect("probe") {
            assert!(std::time::Instant::now() < deadline, "holder never locked");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(matches!(acquire(home.path(), 1).expect("acquire"), Acquired::AllBusy));
        holder.kill().expect("kill -9");
        holder.wait().expect("reap");
        assert!(!all_busy(home.path(), 1).expect("probe"));
        assert!(matches!(acquire(home.path(), 1).expect("acquire"), Acquired::Slot(_)));
    }
}
