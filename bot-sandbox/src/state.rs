//! The daemon's files about each bot, under `{bot_state_dir}/bots/{account}/`:
//!
//! ```text
//! bot.toml        the metadata as installed
//! module.bin      the compiled module (wasmer artifact)
//! installed.json  which package (UID) is installed, when, its size
//! usage.json      the runs of the last day (for the limits)
//! errors.log      the last problems, newest last
//! disabled        present while the operator has disabled the bot
//! outbox/         the bots' outputs, one file per run (turned into mail
//!                 by the Delta Chat layer)
//! ```
//!
//! While a bot is installed, the marker file `chatmail-bot` in the
//! account's home tells the Dovecot plugin to spool deliveries for it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::RunRecord;
use crate::metadata::{self, Metadata};

/// How many outputs `outbox/` keeps per bot.
pub const OUTBOX_KEPT: usize = 100;

/// How many lines `errors.log` keeps.
const ERRORS_KEPT: usize = 20;

/// What is installed for an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// UID of the package mail in the install folder.
    pub uid: u32,
    /// Unix seconds.
    pub installed_at: u64,
    /// Bytes of `bot.wasm`; 0 for a JavaScript bot.
    pub wasm_bytes: u64,
    /// Bytes of `bot.js` for a JavaScript bot (run by the relay's engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_bytes: Option<u64>,
}

/// A bot as the daemon knows it.
#[derive(Debug, Clone)]
pub struct Bot {
    pub account: String,
    pub dir: PathBuf,
    pub installed: Installed,
    pub metadata: Metadata,
    pub disabled: bool,
}

impl Bot {
    /// The compiled module of a WebAssembly bot.
    pub fn artifact(&self) -> PathBuf {
        self.dir.join("module.bin")
    }

    /// The script of a JavaScript bot.
    pub fn script_path(&self) -> PathBuf {
        self.dir.join("bot.js")
    }

    pub fn is_script(&self) -> bool {
        self.installed.script_bytes.is_some()
    }
}

/// The code of an install: what [`Registry::install`] keeps.
#[derive(Debug)]
pub enum InstalledCode<'a> {
    /// A WebAssembly bot's compiled module.
    Artifact(&'a [u8]),
    /// A JavaScript bot's script.
    Script(&'a str),
}

/// All bots' files.
#[derive(Debug, Clone)]
pub struct Registry {
    pub dir: PathBuf,
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` via a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(context(e, "writing", &tmp));
    }
    fs::rename(&tmp, path).map_err(|e| context(e, "renaming", &tmp))
}

/// Whether `account` is fit to be a directory name (it comes from spool
/// jobs, which only the plugin writes; checked all the same).
pub fn valid_account(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= 320
        && account.contains('@')
        && !account.starts_with('.')
        && account.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
}

impl Registry {
    pub fn new(dir: PathBuf) -> Registry {
        Registry { dir }
    }

    fn bots_dir(&self) -> PathBuf {
        self.dir.join("bots")
    }

    pub fn bot_dir(&self, account: &str) -> io::Result<PathBuf> {
        if !valid_account(account) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not an account name: {account:?}")));
        }
        Ok(self.bots_dir().join(account))
    }

    /// Stores a newly compiled bot (code first, the record last, so a
    /// half-written install is never taken for a bot): a WebAssembly bot's
    /// compiled module, or a JavaScript bot's script.
    pub fn install(&self, account: &str, installed: &Installed, toml_text: &str, code: &InstalledCode<'_>) -> io::Result<()> {
        let dir = self.bot_dir(account)?;
        fs::create_dir_all(dir.join("outbox")).map_err(|e| context(e, "creating", &dir))?;
        let (keep, drop) = match code {
            InstalledCode::Artifact(artifact) => {
                write_atomically(&dir.join("module.bin"), artifact, 0o600)?;
                ("module.bin", "bot.js")
            }
            InstalledCode::Script(script) => {
                write_atomically(&dir.join("bot.js"), script.as_bytes(), 0o600)?;
                ("bot.js", "module.bin")
            }
        };
        // What the other kind of bot left behind (a bot rewritten in JavaScript).
        debug_assert_ne!(keep, drop);
        match fs::remove_file(dir.join(drop)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(context(e, "removing", &dir.join(drop))),
            _ => {}
        }
        write_atomically(&dir.join("bot.toml"), toml_text.as_bytes(), 0o600)?;
        let record = serde_json::to_vec_pretty(installed).map_err(io::Error::other)?;
        write_atomically(&dir.join("installed.json"), &record, 0o600)
    }

    /// Forgets the installed bot (usage and errors stay for the operator).
    pub fn uninstall(&self, account: &str) -> io::Result<()> {
        let dir = self.bot_dir(account)?;
        for name in ["installed.json", "module.bin", "bot.js", "bot.toml"] {
            match fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(context(e, "removing", &dir.join(name))),
                _ => {}
            }
        }
        Ok(())
    }

    /// The installed bot of `account`, if any.
    pub fn load(&self, account: &str) -> io::Result<Option<Bot>> {
        let dir = self.bot_dir(account)?;
        let record = match fs::read(dir.join("installed.json")) {
            Ok(record) => record,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(context(e, "reading", &dir.join("installed.json"))),
        };
        let installed: Installed = serde_json::from_slice(&record)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", dir.join("installed.json").display())))?;
        let toml_text = fs::read_to_string(dir.join("bot.toml")).map_err(|e| context(e, "reading", &dir.join("bot.toml")))?;
        let metadata = metadata::parse(&toml_text)
            .map_err(|p| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {}", dir.join("bot.toml").display(), p.join("; "))))?;
        let disabled = dir.join("disabled").exists();
        Ok(Some(Bot { account: account.to_owned(), dir, installed, metadata, disabled }))
    }

    /// Every account with a bot directory, sorted.
    pub fn accounts(&self) -> io::Result<Vec<String>> {
        let dir = self.bots_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(context(e, "reading", &dir)),
        };
        let mut accounts: Vec<String> =
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|a| valid_account(a)).collect();
        accounts.sort();
        Ok(accounts)
    }

    /// Sets or clears the operator's `disabled` switch.
    pub fn set_disabled(&self, account: &str, disabled: bool) -> io::Result<()> {
        let dir = self.bot_dir(account)?;
        if !dir.exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no bot for {account}")));
        }
        let marker = dir.join("disabled");
        if disabled {
            fs::write(&marker, b"disabled by the operator\n").map_err(|e| context(e, "writing", &marker))
        } else {
            match fs::remove_file(&marker) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context(e, "removing", &marker)),
                _ => Ok(()),
            }
        }
    }

    pub fn history(&self, account: &str) -> io::Result<Vec<RunRecord>> {
        let path = self.bot_dir(account)?.join("usage.json");
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }

    pub fn save_history(&self, account: &str, history: &[RunRecord]) -> io::Result<()> {
        let dir = self.bot_dir(account)?;
        fs::create_dir_all(&dir).map_err(|e| context(e, "creating", &dir))?;
        let bytes = serde_json::to_vec(history).map_err(io::Error::other)?;
        write_atomically(&dir.join("usage.json"), &bytes, 0o600)
    }

    /// Appends a problem line, keeping the last [`ERRORS_KEPT`].
    pub fn record_error(&self, account: &str, now: u64, line: &str) -> io::Result<()> {
        let dir = self.bot_dir(account)?;
        fs::create_dir_all(&dir).map_err(|e| context(e, "creating", &dir))?;
        let path = dir.join("errors.log");
        let mut lines: Vec<String> = fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_owned).collect();
        lines.push(format!("{now} {}", line.replace('\n', " ")));
        let keep = lines.len().saturating_sub(ERRORS_KEPT);
        let text = lines[keep..].join("\n") + "\n";
        write_atomically(&path, text.as_bytes(), 0o600)
    }

    pub fn errors(&self, account: &str) -> io::Result<Vec<String>> {
        let path = self.bot_dir(account)?.join("errors.log");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }

    /// The files of the bot's storage (`storage/`), as many as fit in
    /// `quota` (a new package may have lowered it; the rest stay on disk
    /// until the bot rewrites its storage).
    pub fn load_storage(&self, account: &str, quota: u64) -> io::Result<BTreeMap<String, Vec<u8>>> {
        let dir = self.bot_dir(account)?.join("storage");
        let mut files = BTreeMap::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(context(e, "reading", &dir)),
        };
        let mut names: Vec<String> = entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let mut used = 0u64;
        for name in names.into_iter().filter(|n| crate::storage::valid_name(n)).take(crate::storage::MAX_FILES) {
            let path = dir.join(&name);
            let data = fs::read(&path).map_err(|e| context(e, "reading", &path))?;
            if used + data.len() as u64 > quota {
                continue;
            }
            used += data.len() as u64;
            files.insert(name, data);
        }
        Ok(files)
    }

    /// Replaces the bot's storage with `files`: written into a new
    /// directory, which then takes the old one's place.
    pub fn save_storage(&self, account: &str, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
        let dir = self.bot_dir(account)?;
        let (current, new, old) = (dir.join("storage"), dir.join("storage.new"), dir.join("storage.old"));
        for stale in [&new, &old] {
            match fs::remove_dir_all(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(context(e, "removing", stale)),
                _ => {}
            }
        }
        fs::create_dir_all(&new).map_err(|e| context(e, "creating", &new))?;
        for (name, data) in files {
            if !crate::storage::valid_name(name) {
                continue;
            }
            // A fresh directory: it becomes visible only by the rename below.
            let path = new.join(name);
            fs::write(&path, data).map_err(|e| context(e, "writing", &path))?;
        }
        if current.exists() {
            fs::rename(&current, &old).map_err(|e| context(e, "renaming", &current))?;
        }
        fs::rename(&new, &current).map_err(|e| context(e, "renaming", &new))?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    }

    /// Where the bot's outgoing mail waits that the relay tempfailed.
    pub fn outgoing_queue_dir(&self, account: &str) -> io::Result<PathBuf> {
        Ok(self.bot_dir(account)?.join("queue"))
    }

    /// The names of the bot's queued outgoing mail, oldest first (names
    /// start with the queueing time); none if there is no queue.
    pub fn queued_outgoing(&self, account: &str) -> io::Result<Vec<String>> {
        let dir = self.outgoing_queue_dir(account)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(context(e, "reading", &dir)),
        };
        let mut names: Vec<String> = entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".tmp")).collect();
        names.sort();
        Ok(names)
    }

    /// Counts a mail the gate kept from the bot, by reason (`gate.json`).
    pub fn count_refusal(&self, account: &str, reason: &str) -> io::Result<()> {
        let path = self.bot_dir(account)?.join("gate.json");
        let mut counts = self.refusals(account)?;
        *counts.entry(reason.to_owned()).or_insert(0) += 1;
        write_atomically(&path, &serde_json::to_vec(&counts).map_err(io::Error::other)?, 0o600)
    }

    /// The gate's refusals so far, by reason.
    pub fn refusals(&self, account: &str) -> io::Result<BTreeMap<String, u64>> {
        let path = self.bot_dir(account)?.join("gate.json");
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(context(e, "reading", &path)),
        }
    }

    /// Stores a run's output as `outbox/{job}.out`, keeping the newest
    /// [`OUTBOX_KEPT`] (until something sends them, the outbox must not
    /// grow without bound).
    pub fn store_output(&self, account: &str, job: &str, output: &[u8]) -> io::Result<PathBuf> {
        let dir = self.bot_dir(account)?.join("outbox");
        fs::create_dir_all(&dir).map_err(|e| context(e, "creating", &dir))?;
        let path = dir.join(format!("{job}.out"));
        write_atomically(&path, output, 0o600)?;
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| context(e, "reading", &dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".out"))
            .collect();
        if names.len() > OUTBOX_KEPT {
            // Job names sort by creation time.
            names.sort();
            for old in &names[..names.len() - OUTBOX_KEPT] {
                let _ = fs::remove_file(dir.join(old));
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for (name, ok) in [("bot@chat.example", true), ("../x@y", false), ("a/b@c", false), ("", false), ("nobody", false), (".hidden@x", false)] {
            assert_eq!(valid_account(name), ok, "{name}");
        }
    }

    #[test]
    fn install_load_disable_uninstall() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::new(dir.path().to_path_buf());
        let account = "bot@chat.example";
        assert!(registry.load(account).expect("load").is_none());
        let installed = Installed { uid: 3, installed_at: 10, wasm_bytes: 100, script_bytes: None };
        registry.install(account, &installed, "name = \"echo\"\nauthor = \"a@b.c\"\n", &InstalledCode::Artifact(b"artifact")).expect("install");
        let bot = registry.load(account).expect("load").expect("installed");
        assert_eq!((&bot.installed, bot.metadata.name.as_str(), bot.disabled), (&installed, "echo", false));
        assert_eq!(fs::read(bot.artifact()).expect("artifact"), b"artifact");
        assert!(!bot.is_script());
        // Rewritten in JavaScript: the script replaces the module.
        let as_script = Installed { uid: 4, installed_at: 11, wasm_bytes: 0, script_bytes: Some(9) };
        registry.install(account, &as_script, "name = \"echo\"\nauthor = \"a@b.c\"\n", &InstalledCode::Script("chatmail;")).expect("install js");
        let bot = registry.load(account).expect("load").expect("installed");
        assert!(bot.is_script() && !bot.artifact().exists());
        assert_eq!(fs::read_to_string(bot.script_path()).expect("script"), "chatmail;");
        registry.install(account, &installed, "name = \"echo\"\nauthor = \"a@b.c\"\n", &InstalledCode::Artifact(b"artifact")).expect("install");
        assert!(!bot.script_path().exists());
        registry.set_disabled(account, true).expect("disable");
        assert!(registry.load(account).expect("load").expect("installed").disabled);
        registry.set_disabled(account, false).expect("enable");
        assert!(!registry.load(account).expect("load").expect("installed").disabled);
        for i in 0..25 {
            registry.record_error(account, i, &format!("problem {i}\nsecond line")).expect("error");
        }
        let errors = registry.errors(account).expect("errors");
        assert_eq!(errors.len(), ERRORS_KEPT);
        assert_eq!(errors.last().map(String::as_str), Some("24 problem 24 second line"));
        assert_eq!(registry.accounts().expect("accounts"), vec![account.to_owned()]);
        for i in 0..(OUTBOX_KEPT + 5) {
            registry.store_output(account, &format!("{i:05}.job"), b"out").expect("output");
        }
        let outbox: Vec<_> = fs::read_dir(dir.path().join("bots").join(account).join("outbox")).expect("outbox").collect();
        assert_eq!(outbox.len(), OUTBOX_KEPT);
        assert!(!dir.path().join("bots").join(account).join("outbox/00004.job.out").exists(), "oldest go first");
        registry.uninstall(account).expect("uninstall");
        assert!(registry.load(account).expect("load").is_none());
        assert!(registry.set_disabled("other@chat.example", true).is_err());
    }
}
