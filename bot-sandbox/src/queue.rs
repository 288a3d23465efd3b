//! Taking jobs from the spool (format in `chatmail_config::spool`).
//!
//! ```text
//! new/      jobs waiting, taken in name order (names sort by creation)
//! cur/      jobs being run
//! parked/   jobs that crashed their worker too often, with NAME.reason
//! ```
//!
//! A job is moved `new/ → cur/` when taken and deleted only after it ran or
//! was rejected, so nothing is lost when the daemon stops or dies. A job
//! found in `cur/` at start was being run when the daemon went away: it
//! goes back to `new/` with one more attempt counted in its name
//! (`NAME+N`). After [`MAX_ATTEMPTS`] it is parked.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chatmail_config::spool::Job;

/// Attempts before a job is parked.
pub const MAX_ATTEMPTS: u32 = 3;

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    pub dir: PathBuf,
}

/// A job taken from the spool.
#[derive(Debug)]
pub struct Taken {
    pub path: PathBuf,
    /// The job's name without the attempt count.
    pub name: String,
    /// Earlier attempts that did not finish.
    pub attempts: u32,
}

/// Splits `NAME+N` into the name and N.
fn split_attempts(file_name: &str) -> (String, u32) {
    match file_name.rsplit_once('+') {
        Some((name, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => (name.to_owned(), n.parse().unwrap_or(u32::MAX)),
        _ => (file_name.to_owned(), 0),
    }
}

fn with_attempts(name: &str, attempts: u32) -> String {
    if attempts == 0 {
        name.to_owned()
    } else {
        format!("{name}+{attempts}")
    }
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| context(e, "syncing", dir))
}

impl Spool {
    pub fn new(dir: PathBuf) -> Spool {
        Spool { dir }
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates the directories (mode from the umask).
    pub fn prepare(&self) -> io::Result<()> {
        for sub in ["tmp", "new", "cur", "parked"] {
            let dir = self.sub(sub);
            fs::create_dir_all(&dir).map_err(|e| context(e, "creating", &dir))?;
        }
        Ok(())
    }

    /// Puts jobs left in `cur/` by an earlier run back into `new/`, one
    /// attempt more (parking those out of attempts). Returns how many.
    pub fn recover(&self) -> io::Result<usize> {
        let cur = self.sub("cur");
        let mut count = 0;
        for entry in fs::read_dir(&cur).map_err(|e| context(e, "reading", &cur))? {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let (name, attempts) = split_attempts(&file_name);
            let taken = Taken { path: entry.path(), name, attempts };
            self.retry(taken, "the daemon stopped while the job was running")?;
            count += 1;
        }
        Ok(count)
    }

    /// Names of waiting jobs, oldest first.
    pub fn waiting(&self) -> io::Result<Vec<String>> {
        let new = self.sub("new");
        let mut names: Vec<String> = fs::read_dir(&new)
            .map_err(|e| context(e, "reading", &new))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Moves the waiting job `file_name` to `cur/`. `None` if it is gone
    /// (taken by someone else).
    pub fn take(&self, file_name: &str) -> io::Result<Option<Taken>> {
        let from = self.sub("new").join(file_name);
        let to = self.sub("cur").join(file_name);
        match fs::rename(&from, &to) {
            Ok(()) => {
                let (name, attempts) = split_attempts(file_name);
                Ok(Some(Taken { path: to, name, attempts }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(context(e, "taking", &from)),
        }
    }

    /// Reads a taken job.
    pub fn read(&self, taken: &Taken) -> io::Result<Result<Job, String>> {
        let text = fs::read_to_string(&taken.path).map_err(|e| context(e, "reading", &taken.path))?;
        Ok(Job::parse(&text).map_err(|e| e.to_string()))
    }

    /// The job ran or was refused: it is gone.
    pub fn finish(&self, taken: Taken) -> io::Result<()> {
        fs::remove_file(&taken.path).map_err(|e| context(e, "removing", &taken.path))
    }

    /// Puts a job back (the daemon is stopping before running it): no
    /// attempt is counted.
    pub fn put_back(&self, taken: Taken) -> io::Result<()> {
        let to = self.sub("new").join(with_attempts(&taken.name, taken.attempts));
        fs::rename(&taken.path, &to).map_err(|e| context(e, "putting back", &taken.path))
    }

    /// The job's run crashed: back to `new/` with one more attempt, or
    /// parked with `reason` once it had [`MAX_ATTEMPTS`]. Returns whether
    /// it was parked.
    pub fn retry(&self, taken: Taken, reason: &str) -> io::Result<bool> {
        let attempts = taken.attempts.saturating_add(1);
        if attempts >= MAX_ATTEMPTS {
            let parked = self.sub("parked");
            let to = parked.join(&taken.name);
            fs::rename(&taken.path, &to).map_err(|e| context(e, "parking", &taken.path))?;
            let reason_file = parked.join(format!("{}.reason", taken.name));
            fs::write(&reason_file, format!("attempts: {attempts}\nreason: {reason}\n")).map_err(|e| context(e, "writing", &reason_file))?;
            sync_dir(&parked)?;
            return Ok(true);
        }
        let to = self.sub("new").join(with_attempts(&taken.name, attempts));
        fs::rename(&taken.path, &to).map_err(|e| context(e, "retrying", &taken.path))?;
        sync_dir(&self.sub("new"))?;
        Ok(false)
    }

    /// Parked jobs and their reasons.
    pub fn parked(&self) -> io::Result<Vec<(String, String)>> {
        let parked = self.sub("parked");
        let mut found = Vec::new();
        for entry in fs::read_dir(&parked).map_err(|e| context(e, "reading", &parked))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(job) = name.strip_suffix(".reason") {
                let reason = fs::read_to_string(parked.join(&name)).unwrap_or_default();
                found.push((job.to_owned(), reason));
            }
        }
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatmail_config::spool::{write_job, JobKind};

    fn job(uid: u32) -> Job {
        Job { kind: JobKind::Deliver, account: "bot@chat.example".into(), mailbox: "INBOX".into(), uidvalidity: Some(1), uid: Some(uid), expunged: vec![], created: 1 }
    }

    #[test]
    fn attempt_names() {
        for (file, name, n) in [("a.job", "a.job", 0), ("a.job+2", "a.job", 2), ("a.job+", "a.job+", 0), ("a.job+x", "a.job+x", 0)] {
            assert_eq!(split_attempts(file), (name.to_owned(), n), "{file}");
        }
        assert_eq!(with_attempts("a.job", 0), "a.job");
        assert_eq!(with_attempts("a.job", 3), "a.job+3");
    }

    #[test]
    fn jobs_flow_and_survive_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path().to_path_buf());
        spool.prepare().expect("prepare");
        write_job(dir.path(), &job(1)).expect("job 1");
        write_job(dir.path(), &job(2)).expect("job 2");
        let names = spool.waiting().expect("waiting");
        assert_eq!(names.len(), 2);
        let first = spool.take(&names[0]).expect("take").expect("there");
        assert_eq!(spool.read(&first).expect("read"), Ok(job(1)), "oldest first");
        assert!(spool.take(&names[0]).expect("take again").is_none());
        spool.finish(first).expect("finish");
        // The second is being run when the daemon dies: found in cur/ at
        // the next start, it comes back with one attempt counted.
        let second = spool.take(&names[1]).expect("take").expect("there");
        drop(second);
        assert_eq!(spool.recover().expect("recover"), 1);
        let waiting = spool.waiting().expect("waiting");
        assert_eq!(waiting, vec![format!("{}+1", names[1])]);
        // Crashing twice more parks it with its reason.
        let again = spool.take(&waiting[0]).expect("take").expect("there");
        assert_eq!(again.attempts, 1);
        assert!(!spool.retry(again, "worker crashed").expect("retry"));
        let last = spool.take(&spool.waiting().expect("waiting")[0]).expect("take").expect("there");
        assert!(spool.retry(last, "worker crashed: signal 11").expect("retry"), "parked");
        assert!(spool.waiting().expect("waiting").is_empty());
        let parked = spool.parked().expect("parked");
        assert_eq!(parked.len(), 1);
        assert!(parked[0].1.contains("attempts: 3") && parked[0].1.contains("signal 11"), "{parked:?}");
    }
}
