//! The bot spool: jobs the Dovecot plugin writes for the bot daemon.
//!
//! ```text
//! {bot_spool_dir}/tmp/   jobs being written
//! {bot_spool_dir}/new/   complete jobs, one file each, taken in name order
//! {bot_spool_dir}/nudge  the daemon's unix datagram socket (optional)
//! ```
//!
//! A job file is written to `tmp/`, synced, and renamed into `new/` (and the
//! directory synced), so the daemon only ever sees complete, durable jobs.
//! Names sort by creation time: `{unix_nanos:020}.{pid}.{counter}.job`.
//! The content is `key: value` lines (a header block, readable by people):
//!
//! ```text
//! kind: deliver
//! account: alice@chat.example
//! mailbox: INBOX
//! uidvalidity: 1700000000
//! uid: 42
//! created: 1700000000
//! ```
//!
//! `deliver` = a mail arrived in the INBOX of an account that has a bot
//! installed (marker file `chatmail-bot` in its home, written by the bot
//! daemon); `install` = a mail was saved into the account's bot install
//! folder (or mails were expunged there: the folder may now be empty);
//! `tick` = a bot's schedule is due (written by the daemon itself). The
//! plugin has Dovecot assign UIDs for saves, so `uid` and `uidvalidity`
//! name the mail; they are absent only if Dovecot could not, and for
//! expunges and ticks.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Marker file in an account's home: a bot is installed for it.
pub const BOT_MARKER: &str = "chatmail-bot";

/// File in a bot account's home: the password hash of the token the bot
/// daemon submits the bot's mail with (written by the daemon at install,
/// accepted by chatmail-auth from loopback clients only).
pub const BOT_SUBMIT_TOKEN: &str = "chatmail-bot-submit";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Deliver,
    Install,
    /// A scheduled run (written by the bot daemon itself).
    Tick,
}

impl JobKind {
    fn name(self) -> &'static str {
        match self {
            JobKind::Deliver => "deliver",
            JobKind::Install => "install",
            JobKind::Tick => "tick",
        }
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    pub account: String,
    pub mailbox: String,
    pub uidvalidity: Option<u32>,
    pub uid: Option<u32>,
    /// UIDs expunged from the install folder (an `install` job made by an
    /// expunge: the files may still be there when the daemon looks).
    pub expunged: Vec<u32>,
    /// Unix seconds.
    pub created: u64,
}

/// A job file that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

/// A value fit for one header line: no line breaks.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

impl Job {
    pub fn to_text(&self) -> String {
        let mut text = format!("kind: {}\naccount: {}\nmailbox: {}\n", self.kind.name(), one_line(&self.account), one_line(&self.mailbox));
        if let Some(v) = self.uidvalidity {
            text.push_str(&format!("uidvalidity: {v}\n"));
        }
        if let Some(uid) = self.uid {
            text.push_str(&format!("uid: {uid}\n"));
        }
        if !self.expunged.is_empty() {
            let list: Vec<String> = self.expunged.iter().map(u32::to_string).collect();
            text.push_str(&format!("expunged: {}\n", list.join(",")));
        }
        text.push_str(&format!("created: {}\n", self.created));
        text
    }

    pub fn parse(text: &str) -> Result<Job, JobError> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once(": ").ok_or_else(|| JobError(format!("line without ': ': {line:?}")))?;
            if fields.insert(key, value).is_some() {
                return Err(JobError(format!("{key} given twice")));
            }
        }
        let need = |key: &str| fields.get(key).copied().ok_or_else(|| JobError(format!("{key} missing")));
        let number = |key: &str| -> Result<Option<u64>, JobError> {
            fields.get(key).map(|v| v.parse().map_err(|_| JobError(format!("{key} is not a number: {v:?}")))).transpose()
        };
        let narrow = |key: &str| -> Result<Option<u32>, JobError> {
            number(key)?.map(|n| u32::try_from(n).map_err(|_| JobError(format!("{key} too large")))).transpose()
        };
        let kind = match need("kind")? {
            "deliver" => JobKind::Deliver,
            "install" => JobKind::Install,
            "tick" => JobKind::Tick,
            other => return Err(JobError(format!("unknown kind {other:?}"))),
        };
        Ok(Job {
            kind,
            account: need("account")?.to_owned(),
            mailbox: need("mailbox")?.to_owned(),
            uidvalidity: narrow("uidvalidity")?,
            uid: narrow("uid")?,
            expunged: match fields.get("expunged") {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|_| JobError(format!("expunged is not a list of numbers: {list:?}"))))
                    .collect::<Result<_, _>>()?,
            },
            created: number("created")?.ok_or_else(|| JobError("created missing".into()))?,
        })
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The file name of a job created at `now` by process `pid`.
pub fn job_file_name(now: SystemTime, pid: u32, counter: u64) -> String {
    let nanos = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:020}.{pid}.{counter}.job")
}

/// Writes `job` into the spool atomically and durably; returns its path in `new/`.
pub fn write_job(spool_dir: &Path, job: &Job) -> io::Result<PathBuf> {
    let name = job_file_name(SystemTime::now(), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let done = spool_dir.join("new").join(&name);
    crate::files::write_atomically(&spool_dir.join("tmp"), &done, job.to_text().as_bytes(), 0o640)?;
    Ok(done)
}

/// Tells the daemon there is work, if it listens; best effort, never blocks.
pub fn nudge(spool_dir: &Path) {
    if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = socket.set_nonblocking(true);
        let _ = socket.send_to(b"!", spool_dir.join("nudge"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn sample() -> Job {
        Job {
            kind: JobKind::Deliver,
            account: "alice@chat.example".into(),
            mailbox: "INBOX".into(),
            uidvalidity: Some(1_700_000_000),
            uid: Some(42),
            expunged: Vec::new(),
            created: 1_700_000_001,
        }
    }

    #[test]
    fn ticks_round_trip_without_mailbox_and_uid() {
        let tick = Job { kind: JobKind::Tick, account: "bot@chat.example".into(), mailbox: String::new(), uidvalidity: None, uid: None, expunged: vec![], created: 5 };
        assert_eq!(Job::parse(&tick.to_text()), Ok(tick.clone()));
        let expunge = Job { kind: JobKind::Install, mailbox: "DeltaBot".into(), expunged: vec![3, 7], ..tick.clone() };
        assert!(expunge.to_text().contains("expunged: 3,7\n"));
        assert_eq!(Job::parse(&expunge.to_text()), Ok(expunge));
        assert_eq!(Job::parse(&tick.to_text()), Ok(tick));
    }

    #[test]
    fn round_trip() {
        for job in [sample(), Job { uid: None, uidvalidity: None, kind: JobKind::Install, mailbox: "DeltaBot".into(), ..sample() }] {
            assert_eq!(Job::parse(&job.to_text()), Ok(job.clone()), "{}", job.to_text());
        }
        // Line breaks cannot forge fields.
        let sneaky = Job { mailbox: "INBOX\nkind: install".into(), ..sample() };
        assert_eq!(Job::parse(&sneaky.to_text()).map(|j| j.kind), Ok(JobKind::Deliver));
    }

    #[test]
    fn bad_jobs() {
        for (text, want) in [
            ("", "kind missing"),
            ("kind: deliver\naccount: a\nmailbox: INBOX\n", "created missing"),
            ("kind: run\naccount: a\nmailbox: b\ncreated: 1\n", "unknown kind"),
            ("kind: deliver\nkind: install\n", "given twice"),
            ("kind: deliver\naccount: a\nmailbox: b\nuid: x\ncreated: 1\n", "uid is not a number"),
            ("kind: deliver\naccount: a\nmailbox: b\nuid: 99999999999\ncreated: 1\n", "uid too large"),
            ("garbage", "without"),
        ] {
            let err = Job::parse(text).expect_err(text);
            assert!(err.0.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn names_sort_by_time() {
        let early = job_file_name(UNIX_EPOCH + std::time::Duration::from_secs(9), 1, 0);
        let late = job_file_name(UNIX_EPOCH + std::time::Duration::from_secs(10), 1, 0);
        assert!(early < late, "{early} {late}");
    }

    #[test]
    fn written_jobs_are_complete_and_in_new() {
        let dir = std::env::temp_dir().join(format!("chatmail-spool-test-{}", std::process::id()));
        let path = write_job(&dir, &sample()).expect("write");
        assert!(path.starts_with(dir.join("new")));
        assert_eq!(Job::parse(&fs::read_to_string(&path).expect("read")), Ok(sample()));
        assert_eq!(fs::read_dir(dir.join("tmp")).expect("tmp").count(), 0);
        nudge(&dir); // nobody listens: no error, no wait
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
