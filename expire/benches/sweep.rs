//! Sweep speed: `chatmail-expire` against `find … -mtime +N -delete` (what
//! chatmail relays ran from cron) on identical copies of a mail store, in
//! the same run.
//!
//! `cargo bench -p chatmail-expire --bench sweep`
//!
//! Builds BENCH_ACCOUNTS accounts (default 10 000) with BENCH_FILES message
//! files each (default 100) in INBOX's cur/, small (0.5–4 KB) with one in 200
//! large (250 KB, sparse), mtimes spread over 90 days, once per contestant,
//! in a temporary directory under BENCH_DIR (default: the system's temp
//! directory). Then:
//!
//! 1. scan only (nothing deleted, BENCH_ROUNDS rounds, default 3):
//!    `chatmail-expire` dry runs with each `--jobs` of BENCH_JOBS (default
//!    `1,2`) against the two `find` passes without `-delete`;
//! 2. delete, each on its own copy: `find -delete`, then
//!    `chatmail-expire --remove` with each `--jobs` in turn; and checks that
//!    all copies are left identical;
//! 3. the next day: the same on the copies as step 2 left them, with every
//!    limit one day shorter (chatmail-expire: delete_mails_after 39,
//!    delete_large_after 6; find: `-mtime +38`, `+5`), which deletes the
//!    mail of one day (about 1/40 of what is left): a daily sweep's usual
//!    work, mostly reading.
//!
//! Every timed run starts after a `sync` and is timed until it exits and
//! until a `sync` after it returns (its deletions reached the disk), with
//! its CPU time.
//!
//! BENCH_COLD=1 drops the page cache before every timed run (needs root;
//! affects the whole machine).
//! The temporary directory is removed at the end.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const DAY: u64 = 86_400;
const LARGE_SIZE: u64 = 250 * 1000;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// splitmix64: a small deterministic generator, so every copy is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn set_mtime(file: &File, when: SystemTime) {
    file.set_times(FileTimes::new().set_modified(when)).expect("set mtime");
}

/// One account as Dovecot and chatmail-auth leave it, with `files` messages.
fn build_account(root: &Path, index: u64, files: u64, now: SystemTime, body: &[u8]) {
    let dir = root.join(format!("u{index:07}@bench.test"));
    let cur = dir.join("cur");
    fs::create_dir_all(&cur).expect("cur");
    fs::create_dir(dir.join("new")).expect("new");
    fs::create_dir(dir.join("tmp")).expect("tmp");
    for (name, content) in [("password", &b"{SHA512-CRYPT}$6$x"[..]), ("enforceE2EEincoming", b""), ("dovecot-uidlist", b"3 V1 N1\n"), ("dovecot.index.log", b"....")] {
        let mut file = File::create(dir.join(name)).expect("account file");
        file.write_all(content).expect("write");
        // Logged in within the last week: no account is inactive.
        if name == "password" {
            set_mtime(&file, now - Duration::from_secs(index % 7 * DAY));
        }
    }
    let mut rng = Rng(index);
    for n in 0..files {
        // Ages keep an hour away from whole days, so `find -mtime` (whole
        // days, rounded down) and chatmail-expire (seconds) cannot disagree
        // about a file however long the run takes.
        let age = rng.below(90) * DAY + 3600 + rng.below(DAY - 7200);
        let large = rng.below(200) == 0;
        let size = if large { LARGE_SIZE } else { 500 + rng.below(3500) };
        let received = 1_700_000_000 + index * 1000 + n;
        let name = format!("{received}.M{}P{}.relay.bench.test,S={size},W={}:2,S", rng.below(1_000_000), 1000 + index, size + size / 40);
        let mut file = File::create(cur.join(name)).expect("message");
        if large {
            file.set_len(size).expect("sparse");
        } else {
            file.write_all(&body[..size as usize]).expect("write");
        }
        set_mtime(&file, now - Duration::from_secs(age));
    }
}

fn build_copy(root: &Path, accounts: u64, files: u64, now: SystemTime) {
    fs::create_dir_all(root).expect("root");
    let body = vec![b'm'; 4096];
    let threads = 2;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let body = &body;
            scope.spawn(move || {
                for index in (t..accounts).step_by(threads as usize) {
                    build_account(root, index, files, now, body);
                }
            });
        }
    });
}

/// Every path below `root` (symlinks are not expected here).
fn listing(root: &Path) -> BTreeSet<PathBuf> {
    let mut all = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let rel = entry.path().strip_prefix(root).expect("below").to_path_buf();
            if entry.file_type().expect("type").is_dir() {
                stack.push(entry.path());
            }
            all.insert(rel);
        }
    }
    all
}

fn drop_caches_if_cold() {
    if std::env::var("BENCH_COLD").is_ok_and(|v| v == "1") {
        let synced = Command::new("sync").status().is_ok_and(|s| s.success());
        let dropped = fs::write("/proc/sys/vm/drop_caches", "3");
        assert!(synced && dropped.is_ok(), "BENCH_COLD=1 needs root: {dropped:?}");
    }
}

fn sync() {
    assert!(Command::new("sync").status().is_ok_and(|s| s.success()), "sync failed");
}

/// CPU seconds (user + system) of this process's waited-for children.
fn children_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after "(comm)": state is field 3, cutime 16, cstime 17.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks: u64 = fields[13].parse::<u64>().expect("cutime") + fields[14].parse::<u64>().expect("cstime");
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// One timed run.
#[derive(Default, Clone, Copy)]
struct Time {
    /// Wall seconds until the program exited.
    run: f64,
    /// … and until its writes reached the disk (a `sync` after it).
    synced: f64,
    /// CPU seconds of the program.
    cpu: f64,
}

impl std::ops::AddAssign for Time {
    fn add_assign(&mut self, o: Time) {
        self.run += o.run;
        self.synced += o.synced;
        self.cpu += o.cpu;
    }
}

/// Runs `command` after the disk has settled (`sync`; with BENCH_COLD=1
/// also an empty page cache); returns its times and stdout.
fn timed(mut command: Command) -> (Time, String) {
    sync();
    drop_caches_if_cold();
    let cpu_before = children_cpu();
    let started = Instant::now();
    let output = command.stderr(Stdio::inherit()).output().expect("run");
    let run = started.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu_before;
    sync();
    let synced = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{command:?} failed: {}", output.status);
    (Time { run, synced, cpu }, String::from_utf8_lossy(&output.stdout).into_owned())
}

fn expire(config: &Path, jobs: u32, remove: bool) -> (Time, u64) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatmail-expire"));
    command.arg("--config").arg(config).args(["--jobs", &jobs.to_string()]);
    if remove {
        command.arg("--remove");
    }
    let (seconds, stdout) = timed(command);
    let summary = stdout.lines().find(|l| l.starts_with("chatmail-expire: summary ")).expect("summary");
    let field = |key: &str| -> u64 {
        summary.split_whitespace().find_map(|f| f.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} in {summary}"))
    };
    assert_eq!(field("errors="), 0, "{summary}");
    assert_eq!(field("accounts_removed="), 0, "{summary}");
    (seconds, field("messages="))
}

/// chatmail's two cron lines (expiry `days` (40) days, large mail
/// `large_days` (7) days); `-mtime +39` is "at least 40 whole days", the
/// same files as chatmail-expire's "more than 40 days" with the ages
/// generated above.
fn find_passes(root: &Path, delete: bool, days: u32, large_days: u32) -> (Time, u64) {
    let mut total = Time::default();
    let mut matched = 0;
    let (all, large) = (format!("+{}", days - 1), format!("+{}", large_days - 1));
    for extra in [&["-mtime", &all][..], &["-mtime", &large, "-size", "+200k"]] {
        let mut command = Command::new("find");
        command.arg(root).args(["-type", "f", "-path", "*/cur/*"]).args(extra);
        // One byte per file found, to count them.
        command.args(["-printf", "."]);
        if delete {
            command.arg("-delete");
        }
        let (seconds, stdout) = timed(command);
        total += seconds;
        matched += stdout.len() as u64;
    }
    (total, matched)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    let accounts = env_number("BENCH_ACCOUNTS", 10_000);
    let files = env_number("BENCH_FILES", 100);
    let rounds = env_number("BENCH_ROUNDS", 3);
    let jobs: Vec<u32> = std::env::var("BENCH_JOBS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|j| j.trim().parse().expect("BENCH_JOBS: numbers separated by commas"))
        .collect();
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::Builder::new().prefix("chatmail-expire-bench-").tempdir_in(&base).expect("temp dir");
    let copies: Vec<String> = std::iter::once("find".to_owned()).chain(jobs.iter().map(|j| format!("expire-j{j}"))).collect();

    let now = SystemTime::now();
    for name in &copies {
        let started = Instant::now();
        build_copy(&dir.path().join(name), accounts, files, now);
        eprintln!("built {name}: {accounts} accounts × {files} files in {:.0} s", started.elapsed().as_secs_f64());
        let ini = |days: u32, large_days: u32| {
            format!(
                "[params]\nmail_domain = bench.test\nmailboxes_dir = {}\ndelete_mails_after = {days}\ndelete_large_after = {large_days}\n",
                dir.path().join(name).display()
            )
        };
        fs::write(dir.path().join(format!("{name}.ini")), ini(40, 7)).expect("config");
        fs::write(dir.path().join(format!("{name}-next-day.ini")), ini(39, 6)).expect("config");
    }
    let config = |name: &str| dir.path().join(format!("{name}.ini"));
    let root = |name: &str| dir.path().join(name);
    println!(
        "{accounts} accounts, {} message files per copy, {} copies in {}{}",
        accounts * files,
        copies.len(),
        dir.path().display(),
        if std::env::var("BENCH_COLD").is_ok_and(|v| v == "1") { ", cold cache (dropped before every run)" } else { ", warm cache" }
    );

    // Scans go over the first chatmail-expire copy (before its deletion).
    let scanned = &copies[1];
    println!("\nscan only (nothing deleted): wall seconds (CPU seconds); ratio = find / chatmail-expire");
    print!("| round | find (2 passes) |");
    for j in &jobs {
        print!(" chatmail-expire --jobs {j} | ratio |");
    }
    println!("\n|---|---|{}", "---|---|".repeat(jobs.len()));
    for round in 1..=rounds {
        let (find, found) = find_passes(&root(scanned), false, 40, 7);
        print!("| {round} | {:.2} ({:.2}) |", find.run, find.cpu);
        for j in &jobs {
            let (t, expired) = expire(&config(scanned), *j, false);
            // The large pass finds some of the old files again.
            assert!(expired <= found, "expire {expired} vs find {found}");
            print!(" {:.2} ({:.2}) | {:.2} |", t.run, t.cpu, find.run / t.run);
        }
        println!();
    }

    for (title, days, large_days, suffix) in
        [("delete", 40, 7, ""), ("the next day (limits one day shorter: one day of mail goes)", 39, 6, "-next-day")]
    {
        println!("\n{title}, each copy on its own, in this order: wall seconds until exit / until synced (CPU seconds)");
        let (find, _) = find_passes(&root("find"), true, days, large_days);
        let mut rows = vec![("find -delete (2 passes)".to_owned(), find)];
        let mut deleted = None;
        for j in &jobs {
            let (t, n) = expire(&config(&format!("expire-j{j}{suffix}")), *j, true);
            assert!(deleted.is_none_or(|d| d == n), "--jobs {j} deleted {n}, not {deleted:?}");
            deleted = Some(n);
            rows.push((format!("chatmail-expire --remove --jobs {j}"), t));
        }
        println!("{} files deleted by each", deleted.unwrap_or(0));
        println!("| | exit | synced | CPU | find / this (synced) |");
        println!("|---|---|---|---|---|");
        for (name, t) in rows {
            println!("| {name} | {:.2} | {:.2} | {:.2} | {:.2} |", t.run, t.synced, t.cpu, find.synced / t.synced);
        }
    }

    let left = listing(&root("find"));
    for name in &copies[1..] {
        assert_eq!(left, listing(&root(name)), "{name} and find left different trees");
    }
    println!("all copies left identical: {} paths each", left.len());
    let started = Instant::now();
    drop(dir);
    eprintln!("cleaned up in {:.0} s", started.elapsed().as_secs_f64());
}
