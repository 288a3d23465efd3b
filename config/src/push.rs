//! The push spool: how the Dovecot plugin tells chatmail-metadata that an
//! account received mail, and where chatmail-metadata keeps its queue of
//! notifications.
//!
//! ```text
//! {push_spool_dir}/tmp/        files being written
//! {push_spool_dir}/arrived/    one file per account that received mail (name: the address)
//! {push_spool_dir}/queue/      one file per device token to notify (chatmail-metadata's)
//! {push_spool_dir}/nudge       chatmail-metadata's unix datagram socket (optional)
//! ```
//!
//! An arrival is an empty file `arrived/{addr}`, created by the delivery
//! that finds none there: a burst of deliveries to one account costs one
//! `open` each after the first and leaves one file, so it becomes one
//! notification per device, not one per mail. It is not synced to disk:
//! that would cost every delivery a journal commit (~1 ms, measured), and
//! it outlives any daemon's restart as it is; only a power loss within the
//! moments before chatmail-metadata takes it can lose it (the app then
//! sees the mail when it next opens). chatmail-metadata's queue entries
//! are synced.
//! chatmail-metadata claims it (renames it into `tmp/`), turns it into
//! queue entries (one per token of the account) and only then removes it,
//! so a restart of either side loses nothing, and a delivery after the
//! claim makes a new arrival.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Directory of arrival files.
pub const ARRIVED_DIR: &str = "arrived";
/// Directory of chatmail-metadata's queue entries.
pub const QUEUE_DIR: &str = "queue";
/// Directory for files being written.
pub const TMP_DIR: &str = "tmp";
/// chatmail-metadata's datagram socket.
pub const NUDGE_SOCKET: &str = "nudge";

/// Whether `account` can name a file in `arrived/`: an address as Dovecot
/// hands it over, never a path.
pub fn valid_account_name(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= 255
        && !account.starts_with('.')
        && account.contains('@')
        && !account.bytes().any(|b| b == b'/' || b.is_ascii_control() || b == b' ')
}

/// The arrival file of `account`.
pub fn arrival_path(spool_dir: &Path, account: &str) -> PathBuf {
    spool_dir.join(ARRIVED_DIR).join(account)
}

/// Records that `account` received mail (nothing to do while an arrival
/// of it is pending), then nudges chatmail-metadata.
pub fn record_arrival(spool_dir: &Path, account: &str) -> io::Result<()> {
    if !valid_account_name(account) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{account:?} cannot name an arrival file")));
    }
    let dir = spool_dir.join(ARRIVED_DIR);
    let path = dir.join(account);
    let context = |e: io::Error, what: &str, path: &Path| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    match OpenOptions::new().write(true).create_new(true).mode(0o640).open(&path) {
        Ok(_) => {}
        // Pending: the notification it makes covers this mail too.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir).map_err(|e| context(e, "creating", &dir))?;
            return record_arrival(spool_dir, account);
        }
        Err(e) => return Err(context(e, "creating", &path)),
    }
    nudge(spool_dir);
    Ok(())
}

/// Tells chatmail-metadata there is work, if it listens; best effort, never blocks.
pub fn nudge(spool_dir: &Path) {
    if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = socket.set_nonblocking(true);
        let _ = socket.send_to(b"!", spool_dir.join(NUDGE_SOCKET));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for good in ["a@b.example", "x.y@c.example", "a+b@c"] {
            assert!(valid_account_name(good), "{good}");
        }
        for bad in ["", "noat", "../x@y", "a/b@c", ".hidden@x", "a b@c", "a\n@b", &format!("{}@x", "a".repeat(300))] {
            assert!(!valid_account_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn arrivals_coalesce_per_account() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        record_arrival(&dir, "a@x.example").expect("first");
        record_arrival(&dir, "a@x.example").expect("second");
        record_arrival(&dir, "b@x.example").expect("other");
        let mut names: Vec<String> = fs::read_dir(dir.join(ARRIVED_DIR)).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["a@x.example", "b@x.example"]);
        // Claimed by the daemon: the next delivery makes a new arrival.
        fs::create_dir_all(dir.join(TMP_DIR)).expect("tmp");
        fs::rename(arrival_path(&dir, "a@x.example"), dir.join(TMP_DIR).join("claimed.a@x.example")).expect("claim");
        record_arrival(&dir, "a@x.example").expect("after the claim");
        assert!(arrival_path(&dir, "a@x.example").exists());
        assert!(record_arrival(&dir, "../evil@x").is_err());
    }
}
