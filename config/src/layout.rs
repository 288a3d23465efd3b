//! The on-disk account layout, chatmail relay's, shared by the components
//! that create accounts (chatmail-auth), check markers (the milter) and
//! record logins (chatmail-auth and the Dovecot plugin):
//!
//! ```text
//! {mailboxes_dir}/{addr}/password             {SHA512-CRYPT}$6$…; its mtime is the last login day
//! {mailboxes_dir}/{addr}/enforceE2EEincoming  marker: incoming cleartext is refused
//! {mailboxes_dir}/{addr}/max_mailbox_size     optional: this account's quota (operator's override)
//! {mailboxes_dir}/{addr}/metadata.json        the account's push device tokens (chatmail-metadata)
//! {mailboxes_dir}/{addr}/…                    the maildir, which is also the account's home
//! ```

use std::fs::{self, FileTimes, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File holding the password hash; its mtime records the last login.
pub const PASSWORD_FILE: &str = "password";
/// Marker file: incoming cleartext mail to this account is refused.
pub const ENFORCE_E2EE_MARKER: &str = "enforceE2EEincoming";
/// The account's Delta Chat push device tokens, in chatmail's form
/// (`{"devicetoken": {TOKEN: unix time of its last SET}}`).
pub const METADATA_FILE: &str = "metadata.json";
/// Optional file: this account's quota instead of `max_mailbox_size`, in
/// chatmail.ini's size syntax (`500M`, `1G`; a plain number means megabytes).
pub const QUOTA_OVERRIDE_FILE: &str = "max_mailbox_size";

/// The account's own quota in bytes, if its home has a valid override file.
/// `Err` names the problem of a file that exists but cannot be used.
pub fn quota_override(home: &Path) -> Result<Option<u64>, String> {
    let path = home.join(QUOTA_OVERRIDE_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => crate::parse_size(text.trim(), crate::BareNumber::Megabytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

const DAY_SECS: u64 = 86_400;

/// Midnight (UTC) of the day `now` falls in: the granularity of last-login
/// records (chatmail's rule; finer would tell more about users than expiry needs).
pub fn day_start(now: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / DAY_SECS * DAY_SECS))
}

/// Records a login at `now` for the account whose home is `home`: the
/// password file's mtime becomes the start of the day, written at most once
/// a day. The account must exist (its password file).
pub fn record_login(home: &Path, now: SystemTime) -> io::Result<()> {
    let path = home.join(PASSWORD_FILE);
    let context = |e: io::Error, what: &str| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    let day = day_start(now);
    let current = fs::metadata(&path).and_then(|m| m.modified()).map_err(|e| context(e, "reading"))?;
    if current == day {
        return Ok(());
    }
    let file = OpenOptions::new().write(true).open(&path).map_err(|e| context(e, "opening"))?;
    file.set_times(FileTimes::new().set_modified(day)).map_err(|e| context(e, "setting mtime of"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_overrides() {
        let dir = std::env::temp_dir().join(format!("chatmail-quota-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        assert_eq!(quota_override(&dir), Ok(None));
        for (text, want) in [("500M\n", Ok(Some(500 << 20))), ("2", Ok(Some(2 << 20))), ("1G", Ok(Some(1 << 30)))] {
            fs::write(dir.join(QUOTA_OVERRIDE_FILE), text).expect("write");
            assert_eq!(quota_override(&dir), want, "{text:?}");
        }
        fs::write(dir.join(QUOTA_OVERRIDE_FILE), "lots").expect("write");
        assert!(quota_override(&dir).is_err());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn day_granularity() {
        let dir = std::env::temp_dir().join(format!("chatmail-layout-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        fs::write(dir.join(PASSWORD_FILE), "h").expect("password");
        let noon = UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECS + 43_200);
        let mtime = || fs::metadata(dir.join(PASSWORD_FILE)).and_then(|m| m.modified()).expect("mtime");
        record_login(&dir, noon).expect("record");
        assert_eq!(mtime(), UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECS));
        record_login(&dir, noon + Duration::from_secs(3_600)).expect("record");
        assert_eq!(mtime(), UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECS));
        record_login(&dir, noon + Duration::from_secs(DAY_SECS)).expect("record");
        assert_eq!(mtime(), UNIX_EPOCH + Duration::from_secs(20_001 * DAY_SECS));
        assert!(record_login(&dir.join("missing"), noon).is_err());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
