//! The walk over mailboxes_dir: lists, stats and deletes; every decision is
//! [`Policy`]'s.
//!
//! Directories are read one at a time as they are walked (nothing collects
//! all paths), each file is looked at through its directory entry (`d_type`,
//! then `statx` relative to the directory, never following symlinks), and
//! only real directories are entered: a symlink anywhere in the tree is
//! neither followed nor deleted, so the sweep never leaves mailboxes_dir.
//! Errors on single files are reported and counted; the sweep goes on.

use std::fs::{self, DirEntry, FileType};
use std::io;
use std::ops::AddAssign;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::policy::{is_account_name, is_folder_name, AccountFate, LastLogin, Policy};
use chatmail_config::layout::PASSWORD_FILE;

/// Dovecot's maildir quota file (quota backend `maildir`); stale once
/// message files are gone behind Dovecot's back, and recalculated by Dovecot
/// when missing, so it goes whenever mail of the account was deleted.
pub const MAILDIRSIZE: &str = "maildirsize";
/// Deeper trees than this inside an account are not Dovecot's: counting
/// stops there (removal itself is `remove_dir_all`'s and has no limit).
const MAX_COUNT_DEPTH: usize = 32;

/// What the sweep found, counted (dry run: what `--remove` would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Account directories looked at.
    pub accounts: u64,
    /// Expired message files in `cur/` and `new/`, and their bytes.
    pub messages: u64,
    pub message_bytes: u64,
    /// Abandoned files in `tmp/`, and their bytes.
    pub tmp_files: u64,
    pub tmp_bytes: u64,
    /// Accounts removed as a whole, by reason.
    pub inactive_accounts: u64,
    pub leftover_accounts: u64,
    /// Files and bytes inside the removed accounts (after their expired
    /// mail, which is counted above).
    pub account_files: u64,
    pub account_bytes: u64,
    /// Entries of mailboxes_dir that are not account directories.
    pub skipped: u64,
    pub errors: u64,
    /// Messages in `cur/` and `new/` that stay, and their bytes: the
    /// relay's stored mail after the sweep.
    pub kept_messages: u64,
    pub kept_bytes: u64,
    /// Accounts that stay, by the age of their last login: within a day,
    /// within a week, within 30 days (each includes the shorter ones).
    pub logged_in_1d: u64,
    pub logged_in_7d: u64,
    pub logged_in_30d: u64,
}

impl AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.accounts += o.accounts;
        self.messages += o.messages;
        self.message_bytes += o.message_bytes;
        self.tmp_files += o.tmp_files;
        self.tmp_bytes += o.tmp_bytes;
        self.inactive_accounts += o.inactive_accounts;
        self.leftover_accounts += o.leftover_accounts;
        self.account_files += o.account_files;
        self.account_bytes += o.account_bytes;
        self.skipped += o.skipped;
        self.errors += o.errors;
        self.kept_messages += o.kept_messages;
        self.kept_bytes += o.kept_bytes;
        self.logged_in_1d += o.logged_in_1d;
        self.logged_in_7d += o.logged_in_7d;
        self.logged_in_30d += o.logged_in_30d;
    }
}

/// Kinds of single files the sweep deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A message in `cur/` or `new/`.
    Message,
    /// An abandoned delivery in `tmp/`.
    Tmp,
}

/// What happened, as it happens (the caller prints it).
#[derive(Debug)]
pub enum Event<'a> {
    /// An expired file, deleted (or to be deleted in a dry run).
    File { path: &'a Path, kind: FileKind, size: u64, mtime: i64 },
    /// An account removed as a whole (or to be removed).
    Account { addr: &'a str, fate: AccountFate, last_login: LastLogin, files: u64, bytes: u64 },
    /// An entry of mailboxes_dir that is not an account directory.
    Skipped { path: &'a Path, why: &'static str },
    /// Something failed; counted in `errors`, and the sweep goes on.
    Error { path: &'a Path, doing: &'static str, error: &'a io::Error },
}

/// Receives the events; shared by the worker threads.
pub trait Sink: Sync {
    fn event(&self, event: Event<'_>);
    /// Whether `Event::File` is wanted (one per deleted file: many).
    fn wants_files(&self) -> bool {
        false
    }
}

/// One sweep over `root` (mailboxes_dir).
#[derive(Debug, Clone)]
pub struct Sweep {
    pub root: PathBuf,
    pub policy: Policy,
    /// Delete; otherwise only count and report.
    pub remove: bool,
    /// Worker threads, each taking the next account directory (1 = none).
    pub jobs: usize,
}

/// What became of one mail file, with its size.
enum FileFate {
    Expired(u64),
    Kept(u64),
}
use FileFate::{Expired, Kept};

/// Counts of one account, while it is being swept.
#[derive(Default)]
struct Scan {
    totals: Totals,
    /// Files that stay in the account's cur/, new/ and tmp/ folders.
    left: u64,
}

impl Sweep {
    /// Sweeps every account under `root`. Fails only if `root` itself
    /// cannot be read; everything below is counted in `Totals::errors`.
    pub fn run(&self, sink: &dyn Sink) -> io::Result<Totals> {
        let entries = Mutex::new(fs::read_dir(&self.root)?);
        let worker = || {
            let mut totals = Totals::default();
            loop {
                // One directory entry at a time: the listing streams.
                let next = match entries.lock() {
                    Ok(mut guard) => guard.next(),
                    Err(poisoned) => poisoned.into_inner().next(),
                };
                match next {
                    None => break,
                    Some(Ok(entry)) => totals += self.top_entry(&entry, sink),
                    Some(Err(e)) => {
                        sink.event(Event::Error { path: &self.root, doing: "listing", error: &e });
                        totals.errors += 1;
                        break;
                    }
                }
            }
            totals
        };
        let jobs = self.jobs.max(1);
        if jobs == 1 {
            return Ok(worker());
        }
        let mut totals = Totals::default();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..jobs).map(|_| scope.spawn(worker)).collect();
            for handle in handles {
                match handle.join() {
                    Ok(t) => totals += t,
                    Err(payload) => std::panic::resume_unwind(payload),
                }
            }
        });
        Ok(totals)
    }

    fn top_entry(&self, entry: &DirEntry, sink: &dyn Sink) -> Totals {
        let mut totals = Totals::default();
        let path = entry.path();
        let name = entry.file_name();
        let Some(addr) = name.to_str().filter(|n| is_account_name(n)) else {
            sink.event(Event::Skipped { path: &path, why: "not an address" });
            totals.skipped += 1;
            return totals;
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => totals += self.account(addr, &path, sink),
            Ok(t) => {
                let why = if t.is_symlink() { "a symlink (not followed)" } else { "not a directory" };
                sink.event(Event::Skipped { path: &path, why });
                totals.skipped += 1;
            }
            Err(e) => error(sink, &mut totals, &path, "reading the type of", &e),
        }
        totals
    }

    fn account(&self, addr: &str, dir: &Path, sink: &dyn Sink) -> Totals {
        let mut scan = Scan::default();
        scan.totals.accounts = 1;
        let password = dir.join(PASSWORD_FILE);
        let last_login = match fs::symlink_metadata(&password) {
            Ok(m) if m.file_type().is_file() => LastLogin::At(m.mtime()),
            Ok(_) => LastLogin::Unknown,
            Err(e) if e.kind() == io::ErrorKind::NotFound => LastLogin::Missing,
            Err(e) => {
                error(sink, &mut scan.totals, &password, "reading", &e);
                LastLogin::Unknown
            }
        };
        if self.policy.inactive(last_login) {
            self.remove_account(addr, dir, AccountFate::Inactive, last_login, &mut scan, sink);
            return scan.totals;
        }
        if let LastLogin::At(at) = last_login {
            let age = self.policy.now.saturating_sub(at);
            scan.totals.logged_in_1d += u64::from(age <= 86_400);
            scan.totals.logged_in_7d += u64::from(age <= 7 * 86_400);
            scan.totals.logged_in_30d += u64::from(age <= 30 * 86_400);
        }

        self.maildir(dir, true, &mut scan, sink);
        if self.remove && scan.totals.messages > 0 {
            let quota_file = dir.join(MAILDIRSIZE);
            match fs::symlink_metadata(&quota_file) {
                Ok(m) if m.file_type().is_file() => {
                    if let Err(e) = fs::remove_file(&quota_file) {
                        if e.kind() != io::ErrorKind::NotFound {
                            error(sink, &mut scan.totals, &quota_file, "deleting", &e);
                        }
                    }
                }
                _ => {}
            }
        }

        if last_login == LastLogin::Missing && scan.left == 0 {
            match fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_dir() => {
                    if self.policy.leftover(last_login, m.mtime(), scan.left) {
                        self.remove_account(addr, dir, AccountFate::Leftover, last_login, &mut scan, sink);
                    }
                }
                Ok(_) => {}
                Err(e) => error(sink, &mut scan.totals, dir, "reading", &e),
            }
        }
        scan.totals
    }

    /// A maildir folder: INBOX (the account directory, whose `.Name`
    /// subdirectories are the other folders) or one of those.
    fn maildir(&self, dir: &Path, inbox: bool, scan: &mut Scan, sink: &dyn Sink) {
        let listed = for_each_entry(dir, sink, |entry| {
            let name = entry.file_name();
            let kind = match name.as_encoded_bytes() {
                b"cur" | b"new" => Some(FileKind::Message),
                b"tmp" => Some(FileKind::Tmp),
                _ => None,
            };
            let folder = inbox && name.to_str().is_some_and(is_folder_name);
            if kind.is_none() && !folder {
                return;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => match kind {
                    Some(kind) => self.mail_files(&entry.path(), kind, scan, sink),
                    None => self.maildir(&entry.path(), false, scan, sink),
                },
                // A symlink (or anything else) where a folder should be: not followed.
                Ok(_) => {}
                Err(e) => {
                    error(sink, &mut scan.totals, &entry.path(), "reading the type of", &e);
                    scan.left += 1;
                }
            }
        });
        if !listed {
            scan.totals.errors += 1;
            scan.left += 1;
        }
    }

    /// The files of one `cur/`, `new/` or `tmp/` directory.
    fn mail_files(&self, dir: &Path, kind: FileKind, scan: &mut Scan, sink: &dyn Sink) {
        let listed = for_each_entry(dir, sink, |entry| {
            match self.mail_file(&entry, kind, sink) {
                Ok(Some(Expired(size))) => {
                    let (count, bytes) = match kind {
                        FileKind::Message => (&mut scan.totals.messages, &mut scan.totals.message_bytes),
                        FileKind::Tmp => (&mut scan.totals.tmp_files, &mut scan.totals.tmp_bytes),
                    };
                    *count += 1;
                    *bytes += size;
                }
                Ok(None) => scan.left += 1,
                Ok(Some(Kept(size))) if kind == FileKind::Message => {
                    scan.left += 1;
                    scan.totals.kept_messages += 1;
                    scan.totals.kept_bytes += size;
                }
                Ok(Some(Kept(_))) => scan.left += 1,
                // Gone meanwhile (Dovecot moved it from new/ to cur/, or expunged it).
                Err((_, e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err((doing, e)) => {
                    error(sink, &mut scan.totals, &entry.path(), doing, &e);
                    scan.left += 1;
                }
            }
        });
        if !listed {
            scan.totals.errors += 1;
            scan.left += 1;
        }
    }

    /// Deletes one file if it is expired: `Expired(size)` if so, `Kept(size)`
    /// if it stays, `None` if it is not a regular file.
    fn mail_file(&self, entry: &DirEntry, kind: FileKind, sink: &dyn Sink) -> Result<Option<FileFate>, (&'static str, io::Error)> {
        let file_type: FileType = entry.file_type().map_err(|e| ("reading the type of", e))?;
        if !file_type.is_file() {
            return Ok(None);
        }
        let meta = entry.metadata().map_err(|e| ("reading", e))?;
        let (mtime, size) = (meta.mtime(), meta.len());
        let expired = match kind {
            FileKind::Message => self.policy.message_expired(mtime, size),
            FileKind::Tmp => self.policy.tmp_expired(mtime),
        };
        if !expired {
            return Ok(Some(Kept(size)));
        }
        let path = (self.remove || sink.wants_files()).then(|| entry.path());
        if let Some(path) = &path {
            if self.remove {
                fs::remove_file(path).map_err(|e| ("deleting", e))?;
            }
            if sink.wants_files() {
                sink.event(Event::File { path, kind, size, mtime });
            }
        }
        Ok(Some(Expired(size)))
    }

    fn remove_account(&self, addr: &str, dir: &Path, fate: AccountFate, last_login: LastLogin, scan: &mut Scan, sink: &dyn Sink) {
        let mut counted = Count::default();
        count_tree(dir, 0, &mut counted, sink);
        scan.totals.errors += counted.errors;
        let (mut files, mut bytes) = (counted.files, counted.bytes);
        if !self.remove {
            // A dry run still sees the expired mail it counted above.
            files = files.saturating_sub(scan.totals.messages + scan.totals.tmp_files);
            bytes = bytes.saturating_sub(scan.totals.message_bytes + scan.totals.tmp_bytes);
        }
        if self.remove {
            if let Err(e) = fs::remove_dir_all(dir) {
                error(sink, &mut scan.totals, dir, "removing", &e);
                return;
            }
        }
        match fate {
            AccountFate::Inactive => scan.totals.inactive_accounts += 1,
            AccountFate::Leftover => scan.totals.leftover_accounts += 1,
            AccountFate::Keep => {}
        }
        scan.totals.account_files += files;
        scan.totals.account_bytes += bytes;
        sink.event(Event::Account { addr, fate, last_login, files, bytes });
    }
}

#[derive(Default)]
struct Count {
    files: u64,
    bytes: u64,
    errors: u64,
}

/// Files (anything but directories) and bytes (of regular files) below
/// `dir`, entering real directories only.
fn count_tree(dir: &Path, depth: usize, count: &mut Count, sink: &dyn Sink) {
    let listed = for_each_entry(dir, sink, |entry| {
        let Ok(file_type) = entry.file_type() else { return };
        if file_type.is_dir() {
            if depth < MAX_COUNT_DEPTH {
                count_tree(&entry.path(), depth + 1, count, sink);
            }
            return;
        }
        count.files += 1;
        if file_type.is_file() {
            count.bytes += entry.metadata().map_or(0, |m| m.len());
        }
    });
    if !listed {
        count.errors += 1;
    }
}

/// Calls `each` for every entry of `dir`, streaming. A listing error is
/// reported to `sink` (counting it is the caller's) and ends the listing:
/// returns false then, the directory was not seen whole.
fn for_each_entry(dir: &Path, sink: &dyn Sink, mut each: impl FnMut(DirEntry)) -> bool {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            sink.event(Event::Error { path: dir, doing: "listing", error: &e });
            return false;
        }
    };
    for entry in entries {
        match entry {
            Ok(entry) => each(entry),
            Err(e) => {
                sink.event(Event::Error { path: dir, doing: "listing", error: &e });
                return false;
            }
        }
    }
    true
}

fn error(sink: &dyn Sink, totals: &mut Totals, path: &Path, doing: &'static str, e: &io::Error) {
    sink.event(Event::Error { path, doing, error: e });
    totals.errors += 1;
}
