//! Accounts on disk, in chatmail relay's layout, so an existing relay's
//! mailboxes can be used in place:
//!
//! ```text
//! {mailboxes_dir}/{addr}/password             {SHA512-CRYPT}$6$… (mtime = last login, day granularity)
//! {mailboxes_dir}/{addr}/enforceE2EEincoming  marker: incoming cleartext is refused
//! {mailboxes_dir}/{addr}/…                    the maildir (Dovecot's)
//! ```
//!
//! Creation is atomic: the password file appears by `link(2)` of a complete
//! temporary file, which fails if it already exists, so of many parallel
//! first logins exactly one creates the account and the others see it.
//! Callers pass addresses the policy has checked (a single safe path name).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub use chatmail_config::layout::{ENFORCE_E2EE_MARKER, PASSWORD_FILE};

/// Account directories: the owner (the mail user) has everything; its group
/// may look in (the milter checks the marker as a member of the group).
const DIR_MODE: u32 = 0o750;
const FILE_MODE: u32 = 0o640;

/// What `create` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// Someone else created it first (or it existed); its stored password.
    Existed(String),
}

/// The mailboxes directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn account_dir(&self, addr: &str) -> PathBuf {
        self.root.join(addr)
    }

    /// The stored password of `addr`, or `None` if there is no account.
    pub fn read_password(&self, addr: &str) -> io::Result<Option<String>> {
        let path = self.account_dir(addr).join(PASSWORD_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }

    /// The stored hash of `addr`'s bot submission token, if its bot daemon
    /// wrote one.
    pub fn read_bot_token(&self, addr: &str) -> io::Result<Option<String>> {
        let path = self.account_dir(addr).join(chatmail_config::spool::BOT_SUBMIT_TOKEN);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }

    /// Creates the account `addr` with the password hash `stored`, unless it
    /// exists; the marker file is written before the account becomes visible.
    pub fn create(&self, addr: &str, stored: &str) -> io::Result<CreateOutcome> {
        let mut dirs = DirBuilder::new();
        dirs.mode(DIR_MODE).recursive(true);
        dirs.create(&self.root).map_err(|e| context(e, "creating", &self.root))?;
        let dir = self.account_dir(addr);
        match DirBuilder::new().mode(DIR_MODE).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(context(e, "creating", &dir)),
        }
        let marker = dir.join(ENFORCE_E2EE_MARKER);
        OpenOptions::new().write(true).create(true).truncate(false).mode(FILE_MODE).open(&marker).map_err(|e| context(e, "creating", &marker))?;

        let temp = dir.join(format!(
            "{PASSWORD_FILE}.tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&temp)?;
            file.write_all(stored.as_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(context(e, "writing", &temp));
        }
        let password = dir.join(PASSWORD_FILE);
        let linked = fs::hard_link(&temp, &password);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                // Make the new name durable before anyone relies on it.
                File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| context(e, "syncing", &dir))?;
                Ok(CreateOutcome::Created)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.read_password(addr)? {
                Some(existing) => Ok(CreateOutcome::Existed(existing)),
                None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{} vanished while creating", password.display()))),
            },
            Err(e) => Err(context(e, "linking", &password)),
        }
    }

    /// Records a login at `now` (see `chatmail_config::layout::record_login`:
    /// the password file's mtime, day granularity).
    pub fn record_login(&self, addr: &str, now: SystemTime) -> io::Result<()> {
        chatmail_config::layout::record_login(&self.account_dir(addr), now)
    }

    /// Last login day of `addr` (the password file's mtime).
    pub fn last_login(&self, addr: &str) -> io::Result<SystemTime> {
        fs::metadata(self.account_dir(addr).join(PASSWORD_FILE)).and_then(|m| m.modified())
    }

    /// Whether `addr` has an account (a password file); asked for every
    /// delivery, so it only looks, without reading the file.
    pub fn exists(&self, addr: &str) -> io::Result<bool> {
        let path = self.account_dir(addr).join(PASSWORD_FILE);
        match fs::metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, UNIX_EPOCH};

    const DAY: u64 = 86_400;

    #[test]
    fn create_then_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("mail/chat.example"));
        assert_eq!(store.read_password("a@chat.example").expect("read"), None);
        assert_eq!(store.create("a@chat.example", "{SHA512-CRYPT}$6$x$y").expect("create"), CreateOutcome::Created);
        assert_eq!(store.read_password("a@chat.example").expect("read").as_deref(), Some("{SHA512-CRYPT}$6$x$y"));
        assert!(store.account_dir("a@chat.example").join(ENFORCE_E2EE_MARKER).exists());
        // A second creation never overwrites.
        assert_eq!(
            store.create("a@chat.example", "{SHA512-CRYPT}$6$other$z").expect("create"),
            CreateOutcome::Existed("{SHA512-CRYPT}$6$x$y".into())
        );
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(store.account_dir("a@chat.example"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn existing_maildir_without_password_gets_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        fs::create_dir_all(dir.path().join("a@chat.example/cur")).expect("maildir");
        assert_eq!(store.create("a@chat.example", "h").expect("create"), CreateOutcome::Created);
    }

    #[test]
    fn parallel_creation_makes_one_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::new(dir.path()));
        let barrier = Arc::new(Barrier::new(10));
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.create("race@chat.example", &format!("hash-{i}")).expect("create")
                })
            })
            .collect();
        let outcomes: Vec<CreateOutcome> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        let created = outcomes.iter().filter(|o| **o == CreateOutcome::Created).count();
        assert_eq!(created, 1, "{outcomes:?}");
        let winner = store.read_password("race@chat.example").expect("read").expect("exists");
        for outcome in outcomes {
            if let CreateOutcome::Existed(seen) = outcome {
                assert_eq!(seen, winner);
            }
        }
    }

    #[test]
    fn last_login_has_day_granularity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        store.create("a@chat.example", "h").expect("create");
        let noon = UNIX_EPOCH + Duration::from_secs(20_000 * DAY + 43_200);
        store.record_login("a@chat.example", noon).expect("record");
        assert_eq!(store.last_login("a@chat.example").expect("mtime"), UNIX_EPOCH + Duration::from_secs(20_000 * DAY));
        // Later the same day: unchanged; next day: moves on.
        store.record_login("a@chat.example", noon + Duration::from_secs(3600)).expect("record");
        assert_eq!(store.last_login("a@chat.example").expect("mtime"), UNIX_EPOCH + Duration::from_secs(20_000 * DAY));
        store.record_login("a@chat.example", noon + Duration::from_secs(DAY)).expect("record");
        assert_eq!(store.last_login("a@chat.example").expect("mtime"), UNIX_EPOCH + Duration::from_secs(20_001 * DAY));
    }
}
