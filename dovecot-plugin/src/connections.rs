//! At most `max_user_connections` concurrent IMAP sessions per account,
//! across all client addresses and processes (Dovecot's own
//! `mail_max_userip_connections` counts per user *and IP*).
//!
//! Each session holds an exclusive `flock` on one slot file
//! `{home}/chatmail-connections/{n}`, n < max. The kernel releases the lock
//! when the process ends, however it ends, so a crashed or killed session
//! never leaves a stale count behind. A login that finds every slot locked
//! is refused.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Directory of slot files in the account's home.
pub const SLOTS_DIR: &str = "chatmail-connections";

/// Whether sessions of this service count against the limit.
pub fn counts(service: &str) -> bool {
    matches!(service, "imap" | "pop3")
}

/// What trying the slots found.
#[derive(Debug)]
pub enum Acquired {
    Slot(Flock<File>),
    AllBusy,
}

/// Tries slots 0..max in order and locks the first free one.
pub fn acquire(home: &Path, max: u32) -> io::Result<Acquired> {
    let dir = home.join(SLOTS_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        _ => {}
    }
    for slot in 0..max {
        let path = dir.join(slot.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Acquired::Slot(lock)),
            Err((_, Errno::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(io::Error::other(format!("flock {}: {e}", path.display()))),
        }
    }
    Ok(Acquired::AllBusy)
}

/// Slots held by this process, by the mail user they belong to (its
/// address in memory, which is unique while the user lives).
static HELD: Mutex<Option<HashMap<usize, Flock<File>>>> = Mutex::new(None);

pub fn hold(user: usize, slot: Flock<File>) {
    if let Ok(mut held) = HELD.lock() {
        held.get_or_insert_with(HashMap::new).insert(user, slot);
    }
}

/// Frees the user's slot (its session ends).
pub fn release(user: usize) {
    if let Ok(mut held) = HELD.lock() {
        if let Some(map) = held.as_mut() {
            map.remove(&user);
        }
    }
}

/// Releases the user's slot when dropped.
#[derive(Debug)]
pub struct ReleaseOnDrop(pub usize);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        release(self.0);
    }
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
        let first = acquire(home.path(), 2).expect("acquire");
        let second = acquire(home.path(), 2).expect("acquire");
        assert!(matches!(first, Acquired::Slot(_)) && matches!(second, Acquired::Slot(_)));
        assert!(matches!(acquire(home.path(), 2).expect("acquire"), Acquired::AllBusy));
        drop(first);
        assert!(matches!(acquire(home.path(), 2).expect("acquire"), Acquired::Slot(_)));
    }

    #[test]
    fn a_slot_of_a_killed_process_is_free_at_once() {
        let home = tempfile::tempdir().expect("tempdir");
        let path = home.path().join(SLOTS_DIR);
        fs::create_dir_all(&path).expect("dir");
        // Another process locks slot 0 and holds it: one process (the
        // shell becomes sleep), so killing it releases the lock.
        let script = format!("exec 9>'{}' && flock --exclusive 9 && exec sleep 30", path.join("0").display());
        let mut holder = std::process::Command::new("sh").args(["-c", &script]).spawn().expect("sh");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !matches!(acquire(home.path(), 1).expect("acquire"), Acquired::AllBusy) {
            assert!(std::time::Instant::now() < deadline, "holder never locked");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        holder.kill().expect("kill -9");
        holder.wait().expect("reap");
        assert!(matches!(acquire(home.path(), 1).expect("acquire"), Acquired::Slot(_)));
    }
}
