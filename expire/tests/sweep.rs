//! The real `chatmail-expire` binary on a fake mailboxes tree: a dry run
//! changes nothing and reports what `--remove` then deletes, exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use chatmail_config::retention::LARGE_MAIL_BYTES;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const LARGE: u64 = LARGE_MAIL_BYTES + 1;

struct Tree {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    config: PathBuf,
    /// metrics_dir, outside the swept tree.
    metrics: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().to_path_buf();
        let root = base.join("mailboxes");
        fs::create_dir(&root).expect("mailboxes");
        fs::create_dir(base.join("outside")).expect("outside");
        let config = base.join("chatmail.ini");
        // Defaults: delete_mails_after 40, delete_large_after 7, delete_inactive_users_after 90.
        let metrics = tempfile::tempdir().expect("metrics dir");
        let ini = format!("[params]\nmail_domain = x.test\nmailboxes_dir = {}\nmetrics_dir = {}\n", root.display(), metrics.path().display());
        fs::write(&config, ini).expect("config");
        Tree { _dir: dir, base, root, config, metrics }
    }

    /// A file of `size` bytes (sparse when large), last modified `age` ago.
    fn file(&self, rel: &str, size: u64, age: u64) -> PathBuf {
        let path = self.base.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        let file = File::create(&path).expect("create");
        if size > 4096 {
            file.set_len(size).expect("set_len");
        } else {
            std::io::Write::write_all(&mut &file, &vec![b'x'; size as usize]).expect("write");
        }
        set_mtime(&path, age);
        path
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let path = self.base.join(rel);
        fs::create_dir_all(&path).expect("dir");
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_chatmail-expire")).arg("--config").arg(&self.config).args(args).output().expect("run chatmail-expire");
        eprintln!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Every path below the base directory (symlinks not followed) with
    /// its type, size and mtime.
    fn snapshot(&self) -> BTreeMap<String, (char, u64, i64)> {
        let mut all = BTreeMap::new();
        walk(&self.base, &self.base, &mut all);
        all
    }
}

fn walk(base: &Path, dir: &Path, all: &mut BTreeMap<String, (char, u64, i64)>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let meta = fs::symlink_metadata(entry.path()).expect("lstat");
        let kind = if meta.is_symlink() { 'l' } else if meta.is_dir() { 'd' } else { 'f' };
        let rel = entry.path().strip_prefix(base).expect("below base").to_string_lossy().into_owned();
        all.insert(rel, (kind, if kind == 'f' { meta.len() } else { 0 }, meta.mtime()));
        if kind == 'd' {
            walk(base, &entry.path(), all);
        }
    }
}

fn set_mtime(path: &Path, age: u64) {
    let when = SystemTime::now() - Duration::from_secs(age);
    File::open(path).expect("open").set_times(FileTimes::new().set_modified(when)).expect("set mtime");
}

/// The `key=value` fields of the summary line.
fn summary(output: &Output) -> BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("chatmail-expire: summary ")).expect("summary line");
    line.split_whitespace().filter_map(|f| f.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn counts(output: &Output) -> Vec<(String, String)> {
    summary(output).into_iter().filter(|(k, _)| k != "seconds" && k != "mode").collect()
}

fn expect(summary: &BTreeMap<String, String>, table: &[(&str, u64)]) {
    for (key, want) in table {
        assert_eq!(summary.get(*key).map(String::as_str), Some(want.to_string().as_str()), "{key} in {summary:?}");
    }
}

/// Builds the scenario; returns the paths (relative to the base) that
/// `--remove` must delete.
fn build(tree: &Tree) -> BTreeSet<String> {
    let mut gone = BTreeSet::new();
    let mut deleted = |p: PathBuf| {
        gone.insert(p.strip_prefix(&tree.base).expect("below base").to_string_lossy().into_owned());
    };

    // Outside mailboxes_dir: must survive whatever points at it.
    let victim = tree.file("outside/victim", 100, 100 * DAY);
    tree.file("outside/evil-folder/cur/old", 100, 100 * DAY);
    tree.file("outside/mallory/password", 10, 200 * DAY);
    tree.file("outside/mallory/cur/old", 100, 100 * DAY);

    // alice: active, mail of every kind in INBOX and two folders.
    let a = "mailboxes/alice@x.test";
    tree.file(&format!("{a}/password"), 10, DAY);
    tree.file(&format!("{a}/enforceE2EEincoming"), 0, 100 * DAY);
    tree.file(&format!("{a}/dovecot-uidlist"), 50, 100 * DAY);
    tree.file(&format!("{a}/dovecot.index.log"), 50, 100 * DAY);
    deleted(tree.file(&format!("{a}/maildirsize"), 20, 100 * DAY));
    deleted(tree.file(&format!("{a}/cur/old41:2,S"), 1000, 41 * DAY));
    tree.file(&format!("{a}/cur/young39:2,S"), 1000, 39 * DAY);
    deleted(tree.file(&format!("{a}/new/old50"), 500, 50 * DAY));
    deleted(tree.file(&format!("{a}/cur/large8:2,"), LARGE, 8 * DAY));
    tree.file(&format!("{a}/cur/large6:2,"), LARGE, 6 * DAY);
    tree.file(&format!("{a}/cur/exactly200k8:2,"), LARGE_MAIL_BYTES, 8 * DAY);
    tree.file(&format!("{a}/cur/subdir/old"), 100, 100 * DAY);
    deleted(tree.file(&format!("{a}/.Sent/cur/old45:2,S"), 700, 45 * DAY));
    tree.file(&format!("{a}/.Sent/new/young"), 700, DAY);
    tree.file(&format!("{a}/.Sent/dovecot-uidlist"), 50, 100 * DAY);
    deleted(tree.file(&format!("{a}/.Trash/cur/old60:2,ST"), 300, 60 * DAY));
    tree.dir(&format!("{a}/.Trash/new"));
    deleted(tree.file(&format!("{a}/tmp/stale"), 100, 2 * DAY));
    tree.file(&format!("{a}/tmp/fresh"), 100, HOUR);
    symlink(&victim, tree.base.join(format!("{a}/cur/link-out"))).expect("symlink");
    symlink(tree.base.join("outside/evil-folder"), tree.base.join(format!("{a}/.Evil"))).expect("symlink");

    // bob: inactive (last login 91 days ago), removed with everything.
    let b = "mailboxes/bob@x.test";
    deleted(tree.file(&format!("{b}/password"), 10, 91 * DAY));
    deleted(tree.file(&format!("{b}/cur/young"), 300, DAY));
    deleted(tree.file(&format!("{b}/cur/old"), 400, 50 * DAY));
    deleted(tree.dir(&format!("{b}/new")));
    deleted(tree.dir(&format!("{b}/cur")));
    deleted(tree.base.join(b));

    // carol: 89 days since the last login, stays.
    tree.file("mailboxes/carol@x.test/password", 10, 89 * DAY);
    tree.file("mailboxes/carol@x.test/cur/young", 300, 2 * DAY);

    // dave: leftover (no password, no mail, two days untouched).
    let d = "mailboxes/dave@x.test";
    for rel in ["dovecot.index.log", "dovecot-uidlist", ".Sent/dovecot-uidlist"] {
        deleted(tree.file(&format!("{d}/{rel}"), 30, 5 * DAY));
    }
    for rel in ["cur", "new", "tmp", ".Sent/cur", ".Sent"] {
        deleted(tree.dir(&format!("{d}/{rel}")));
    }
    deleted(tree.base.join(d));
    set_mtime(&tree.base.join(d), 2 * DAY);

    // erin: like dave, but touched an hour ago: stays.
    tree.file("mailboxes/erin@x.test/dovecot-uidlist", 30, HOUR);
    tree.dir("mailboxes/erin@x.test/cur");

    // frank: no password but young mail: stays.
    tree.file("mailboxes/frank@x.test/cur/young", 300, DAY);
    set_mtime(&tree.base.join("mailboxes/frank@x.test"), 10 * DAY);

    // gina: no password, only expired mail: the mail goes, then the leftover.
    let g = "mailboxes/gina@x.test";
    deleted(tree.file(&format!("{g}/cur/old41"), 1000, 41 * DAY));
    deleted(tree.file(&format!("{g}/dovecot-uidlist"), 30, 41 * DAY));
    deleted(tree.dir(&format!("{g}/cur")));
    deleted(tree.base.join(g));
    set_mtime(&tree.base.join(g), 3 * DAY);

    // Not accounts: a symlinked "account", a directory and files without an address.
    symlink(tree.base.join("outside/mallory"), tree.root.join("mallory@x.test")).expect("symlink");
    tree.file("mailboxes/lost+found/cur/old", 100, 100 * DAY);
    tree.file("mailboxes/README", 100, 100 * DAY);
    tree.file("mailboxes/zed@x.test", 100, 100 * DAY);
    gone
}

const EXPECTED: &[(&str, u64)] = &[
    ("accounts", 7),
    ("messages", 6),
    ("message_bytes", 1000 + 500 + LARGE + 700 + 300 + 1000),
    ("tmp_files", 1),
    ("tmp_bytes", 100),
    ("accounts_removed", 3),
    ("inactive", 1),
    ("leftover", 2),
    // bob: 3 files, 710 bytes; dave: 3 files, 90 bytes; gina (after her mail): 1 file, 30 bytes.
    ("account_files", 7),
    ("account_bytes", 710 + 90 + 30),
    ("skipped", 4),
    ("errors", 0),
];

#[test]
fn dry_run_changes_nothing_and_remove_deletes_exactly_that() {
    let tree = Tree::new();
    let gone = build(&tree);
    let before = tree.snapshot();

    let dry = tree.run(&[]);
    assert_eq!(dry.status.code(), Some(0));
    assert_eq!(tree.snapshot(), before, "a dry run changed the tree");
    let dry_summary = summary(&dry);
    assert_eq!(dry_summary["mode"], "dry-run");
    expect(&dry_summary, EXPECTED);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(stdout.contains("dry run: nothing was deleted"), "{stdout}");
    let bob_line = stdout.lines().find(|l| l.contains("bob@x.test")).expect("bob's line");
    assert!(bob_line.starts_with("chatmail-expire: would remove account bob@x.test reason=inactive last_login="), "{bob_line}");
    assert!(bob_line.ends_with(" files=3 bytes=710"), "{bob_line}");
    assert!(stdout.contains("would remove account dave@x.test reason=leftover last_login=none files=3 bytes=90"), "{stdout}");
    assert!(stdout.contains("would remove account gina@x.test reason=leftover last_login=none files=1 bytes=30"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.contains(" account ")).count(), 3, "{stdout}");

    // Verbose: every expired file by name, and the skipped entries.
    let verbose = tree.run(&["--verbose"]);
    assert_eq!(tree.snapshot(), before, "a verbose dry run changed the tree");
    let stdout = String::from_utf8_lossy(&verbose.stdout);
    let files: BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("chatmail-expire: would delete "))
        .filter_map(|l| l.split_whitespace().nth(usize::from(l.starts_with("tmp file")) + 1))
        .map(|p| Path::new(p).strip_prefix(&tree.base).expect("below base").to_string_lossy().into_owned())
        .collect();
    let expected_files: BTreeSet<String> = gone
        .iter()
        .filter(|p| (p.contains("/cur/") || p.contains("/new/") || p.contains("/tmp/")) && p.starts_with("mailboxes/alice") || p.starts_with("mailboxes/gina@x.test/cur/"))
        .cloned()
        .collect();
    assert_eq!(files, expected_files);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("chatmail-expire: skipped ")).count(), 4, "{stdout}");
    assert_eq!(counts(&verbose), counts(&dry));
    let metrics_file = tree.metrics.path().join("chatmail-expire.prom");
    assert!(!metrics_file.exists(), "a dry run wrote metrics");

    let removed = tree.run(&["--remove"]);
    assert_eq!(removed.status.code(), Some(0));
    let remove_summary = summary(&removed);
    assert_eq!(remove_summary["mode"], "remove");
    assert_eq!(counts(&removed), counts(&dry), "the dry run reported something else");
    let stdout = String::from_utf8_lossy(&removed.stdout);
    assert!(stdout.contains("removed account dave@x.test reason=leftover"), "{stdout}");
    assert!(!stdout.contains("dry run"), "{stdout}");

    let after = tree.snapshot();
    let before_paths: BTreeSet<String> = before.keys().cloned().collect();
    let after_paths: BTreeSet<String> = after.keys().cloned().collect();
    let actually_gone: BTreeSet<String> = before_paths.difference(&after_paths).cloned().collect();
    assert_eq!(actually_gone, gone, "deleted paths");
    assert!(after_paths.is_subset(&before_paths), "new paths appeared");
    // What stayed is untouched (directories lose entries, so only files and links).
    for (path, state) in &after {
        if state.0 != 'd' {
            assert_eq!(before[path], *state, "{path} changed");
        }
    }

    // The gauges describe the store as the sweep left it.
    let metrics = fs::read_to_string(&metrics_file).expect("metrics after --remove");
    let is_message = |path: &str| {
        let parts: Vec<&str> = path.split('/').collect();
        parts.len() >= 4 && parts[0] == "mailboxes" && parts[1].contains('@') && matches!(parts[parts.len() - 2], "cur" | "new")
    };
    let stored = after.iter().filter(|(p, s)| s.0 == 'f' && is_message(p)).count();
    for line in [
        "chatmail_accounts 4\n".to_owned(),
        format!("chatmail_mailbox_messages {stored}\n"),
        format!("chatmail_expire_removed_messages {}\n", remove_summary["messages"]),
        "chatmail_expire_removed_accounts{reason=\"inactive\"} 1\n".to_owned(),
        "chatmail_expire_errors 0\n".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // A second sweep finds nothing more.
    let again = tree.run(&["--remove"]);
    assert_eq!(again.status.code(), Some(0));
    expect(&summary(&again), &[("accounts", 4), ("messages", 0), ("tmp_files", 0), ("accounts_removed", 0), ("skipped", 4), ("errors", 0)]);
    assert_eq!(tree.snapshot().keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
}

#[test]
fn parallel_sweep_does_the_same() {
    let tree = Tree::new();
    let gone = build(&tree);
    let before: BTreeSet<String> = tree.snapshot().into_keys().collect();
    let removed = tree.run(&["--remove", "--jobs", "3"]);
    assert_eq!(removed.status.code(), Some(0));
    expect(&summary(&removed), EXPECTED);
    let after: BTreeSet<String> = tree.snapshot().into_keys().collect();
    assert_eq!(before.difference(&after).cloned().collect::<BTreeSet<_>>(), gone);
}

/// Makes a file immutable (root, a file system with attributes) for the
/// guard's lifetime; `None` where that is not possible.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").arg(path).output().is_ok_and(|o| o.status.success());
        ok.then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_file_that_cannot_be_deleted_is_an_error_and_the_sweep_goes_on() {
    let tree = Tree::new();
    tree.file("mailboxes/alice@x.test/password", 10, DAY);
    let stuck = tree.file("mailboxes/alice@x.test/cur/a-stuck", 100, 50 * DAY);
    let other = tree.file("mailboxes/alice@x.test/cur/b-other", 100, 50 * DAY);
    tree.file("mailboxes/bob@x.test/password", 10, DAY);
    let bobs = tree.file("mailboxes/bob@x.test/new/old", 100, 50 * DAY);
    let Some(_guard) = Immutable::set(&stuck) else {
        eprintln!("skipped: chattr +i does not work here");
        return;
    };
    let output = tree.run(&["--remove"]);
    assert_eq!(output.status.code(), Some(1));
    expect(&summary(&output), &[("accounts", 2), ("messages", 2), ("errors", 1)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chatmail-expire: error: deleting ") && stderr.contains("a-stuck"), "{stderr}");
    assert!(stuck.exists() && !other.exists() && !bobs.exists());
}

#[test]
fn exit_codes_for_arguments_configuration_and_a_missing_store() {
    let tree = Tree::new();
    assert_eq!(tree.run(&["--bogus"]).status.code(), Some(2));
    assert_eq!(tree.run(&["--jobs", "0"]).status.code(), Some(2));

    let help = Command::new(env!("CARGO_BIN_EXE_chatmail-expire")).arg("--help").output().expect("help");
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for part in ["SYNOPSIS", "--remove", "delete_inactive_users_after", "EXIT STATUS"] {
        assert!(text.contains(part), "{part} missing in --help");
    }

    let missing = Command::new(env!("CARGO_BIN_EXE_chatmail-expire")).args(["--config", "/nonexistent/chatmail.ini"]).output().expect("run");
    assert_eq!(missing.status.code(), Some(2));
    fs::write(&tree.config, "[params]\nmail_domain = x.test\ndelete_mails_after = -3\n").expect("config");
    assert_eq!(tree.run(&[]).status.code(), Some(2));

    // No mailboxes_dir yet (a fresh relay): nothing to do.
    fs::write(&tree.config, format!("[params]\nmail_domain = x.test\nmailboxes_dir = {}/none\n", tree.base.display())).expect("config");
    let fresh = tree.run(&["--remove"]);
    assert_eq!(fresh.status.code(), Some(0));
    expect(&summary(&fresh), &[("accounts", 0), ("errors", 0)]);

    // mailboxes_dir is not a directory: an error.
    tree.file("plain", 1, 0);
    fs::write(&tree.config, format!("[params]\nmail_domain = x.test\nmailboxes_dir = {}/plain\n", tree.base.display())).expect("config");
    assert_eq!(tree.run(&["--remove"]).status.code(), Some(1));
}
