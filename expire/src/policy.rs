//! What the sweep deletes, decided from file facts and the clock alone (no
//! I/O here): expired message files, stale `tmp/` files, inactive accounts and
//! empty leftover account directories.

use chatmail_config::retention::Expiry;
use chatmail_config::Config;

pub const DAY_SECS: i64 = 86_400;
/// Files in a maildir's `tmp/` older than this are abandoned deliveries
/// (Dovecot's own cleanup uses the same age).
pub const TMP_MAX_AGE_SECS: i64 = 36 * 3600;
/// An account directory without a password file must be this old (by its
/// mtime) before it counts as a leftover: a directory that is just being
/// created has no password file yet either.
pub const LEFTOVER_MIN_AGE_SECS: i64 = DAY_SECS;

/// The account's last login, from its `password` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastLogin {
    /// The password file's mtime (Unix seconds).
    At(i64),
    /// There is no password file.
    Missing,
    /// Something named `password` that is not a regular file, or a file
    /// that could not be looked at: the account is left alone.
    Unknown,
}

/// What happens to an account as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountFate {
    Keep,
    /// Last login longer ago than `delete_inactive_users_after` days.
    Inactive,
    /// No password file, no mail, and untouched for a day.
    Leftover,
}

impl AccountFate {
    pub fn reason(self) -> &'static str {
        match self {
            AccountFate::Keep => "keep",
            AccountFate::Inactive => "inactive",
            AccountFate::Leftover => "leftover",
        }
    }
}

/// The retention rules and the moment they are applied at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub expiry: Expiry,
    pub delete_inactive_users_after_days: u32,
    /// Unix seconds.
    pub now: i64,
}

impl Policy {
    pub fn from_config(config: &Config, now: i64) -> Policy {
        Policy {
            expiry: Expiry { delete_mails_after_days: config.delete_mails_after, delete_large_after_days: config.delete_large_after },
            delete_inactive_users_after_days: config.delete_inactive_users_after,
            now,
        }
    }

    /// A message file in `cur/` or `new/` with this mtime (its received
    /// date) and size is past its retention.
    pub fn message_expired(&self, mtime: i64, size: u64) -> bool {
        self.expiry.is_expired(mtime, size, self.now)
    }

    /// A file in `tmp/` with this mtime is an abandoned delivery.
    pub fn tmp_expired(&self, mtime: i64) -> bool {
        self.now.saturating_sub(mtime) > TMP_MAX_AGE_SECS
    }

    /// Decided before looking at the mail: an account whose last login is
    /// too long ago goes, whatever it holds.
    pub fn inactive(&self, last_login: LastLogin) -> bool {
        match last_login {
            LastLogin::At(t) => self.now.saturating_sub(t) > i64::from(self.delete_inactive_users_after_days) * DAY_SECS,
            LastLogin::Missing | LastLogin::Unknown => false,
        }
    }

    /// Decided after the mail was swept: `files_left` counts the files that
    /// remain in the account's `cur/`, `new/` and `tmp/` folders (expired
    /// mail being deleted does not count), `dir_mtime` is the account
    /// directory's own mtime.
    pub fn leftover(&self, last_login: LastLogin, dir_mtime: i64, files_left: u64) -> bool {
        last_login == LastLogin::Missing && files_left == 0 && self.now.saturating_sub(dir_mtime) > LEFTOVER_MIN_AGE_SECS
    }

    /// Both account decisions in one, for callers that know everything.
    pub fn account_fate(&self, last_login: LastLogin, dir_mtime: i64, files_left: u64) -> AccountFate {
        if self.inactive(last_login) {
            AccountFate::Inactive
        } else if self.leftover(last_login, dir_mtime, files_left) {
            AccountFate::Leftover
        } else {
            AccountFate::Keep
        }
    }
}

/// Whether a name in mailboxes_dir names an account (an address): anything
/// else (`lost+found`, dot files) is not the sweep's business.
pub fn is_account_name(name: &str) -> bool {
    !name.starts_with('.') && name.contains('@') && !name.contains('/')
}

/// Whether a name inside an account directory is a Maildir++ folder
/// (`.Sent`, `.DeltaChat`, `.a.b`); the account directory itself is INBOX.
pub fn is_folder_name(name: &str) -> bool {
    name.len() > 1 && name.starts_with('.') && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatmail_config::retention::LARGE_MAIL_BYTES;

    const NOW: i64 = 1_800_000_000;
    const HOUR: i64 = 3600;

    fn policy() -> Policy {
        Policy {
            expiry: Expiry { delete_mails_after_days: 40, delete_large_after_days: 7 },
            delete_inactive_users_after_days: 90,
            now: NOW,
        }
    }

    #[test]
    fn messages() {
        let large = LARGE_MAIL_BYTES + 1;
        let table = [
            // (age in seconds, size, expired)
            (0, 100, false),
            (39 * DAY_SECS, 100, false),
            (40 * DAY_SECS, 100, false),
            (40 * DAY_SECS + 1, 100, true),
            (400 * DAY_SECS, 0, true),
            (7 * DAY_SECS, large, false),
            (7 * DAY_SECS + 1, large, true),
            (7 * DAY_SECS + 1, LARGE_MAIL_BYTES, false),
            (39 * DAY_SECS, LARGE_MAIL_BYTES, false),
            (39 * DAY_SECS, u64::MAX, true),
            // From the future (clock skew, a client's odd INTERNALDATE): kept.
            (-DAY_SECS, large, false),
        ];
        for (age, size, want) in table {
            assert_eq!(policy().message_expired(NOW - age, size), want, "age {age} size {size}");
        }
        // Extreme mtimes do not overflow.
        assert!(policy().message_expired(i64::MIN, 1));
        assert!(!policy().message_expired(i64::MAX, 1));
    }

    #[test]
    fn tmp_files() {
        let table = [(0, false), (35 * HOUR, false), (36 * HOUR, false), (36 * HOUR + 1, true), (-HOUR, false)];
        for (age, want) in table {
            assert_eq!(policy().tmp_expired(NOW - age), want, "age {age}");
        }
    }

    #[test]
    fn accounts() {
        use AccountFate::*;
        use LastLogin::*;
        let old_dir = NOW - 2 * DAY_SECS;
        let young_dir = NOW - HOUR;
        let table = [
            // (last login, account dir mtime, files left, fate)
            (At(NOW), old_dir, 5, Keep),
            (At(NOW - 90 * DAY_SECS), old_dir, 5, Keep),
            (At(NOW - 90 * DAY_SECS - 1), old_dir, 5, Inactive),
            (At(NOW - 400 * DAY_SECS), young_dir, 0, Inactive),
            // With a password file an empty account is an account.
            (At(NOW - DAY_SECS), old_dir, 0, Keep),
            (Missing, old_dir, 0, Leftover),
            (Missing, NOW - DAY_SECS, 0, Keep),
            (Missing, NOW - DAY_SECS - 1, 0, Leftover),
            (Missing, young_dir, 0, Keep),
            (Missing, old_dir, 1, Keep),
            // Unknown state: never removed.
            (Unknown, old_dir, 0, Keep),
            (Unknown, NOW - 400 * DAY_SECS, 0, Keep),
        ];
        for (login, dir, left, want) in table {
            assert_eq!(policy().account_fate(login, dir, left), want, "{login:?} dir {dir} left {left}");
        }
    }

    #[test]
    fn names() {
        for (name, account) in [("a@b.c", true), ("lost+found", false), (".hidden@b.c", false), ("x@y", true), ("", false)] {
            assert_eq!(is_account_name(name), account, "{name:?}");
        }
        for (name, folder) in [(".Sent", true), (".a.b", true), (".", false), ("..", false), ("cur", false), ("dovecot.index", false)] {
            assert_eq!(is_folder_name(name), folder, "{name:?}");
        }
    }
}
