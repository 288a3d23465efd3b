//! Benchmark: the plugin's instant IDLE wake-up against Dovecot's own
//! (`instant_idle = false`), two relays in the same run:
//!
//! - latency until an IDLE-ing session hears of new mail (`* N EXISTS`),
//!   from the start of an SMTP submission (through the milter, Postfix and
//!   LMTP), and from the end of a direct LMTP delivery; p50/p90 of
//!   BENCH_SAMPLES samples each, the two relays taking turns;
//! - CPU: LMTP deliveries per second (BENCH_DELIVERIES from 4 threads) to an
//!   account with 5 IDLE-ing sessions, and the CPU time those sessions'
//!   imap processes spend per delivery; also with `instant_idle_min_interval`
//!   (BENCH_MIN_INTERVAL ms), the setting for a flood. The mail stores are
//!   in memory (/dev/shm): disk flush times would drown the syncs' work. Median of
//!   BENCH_ROUNDS rounds in which the configurations take turns;
//!   BENCH_CPU_DETAIL=1 prints every round's CPU time by program.
//!
//! Build in release first:
//!   cargo build --release --workspace && target/release/chatmail-bench-idle

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatmail_testrelay::bench::{env_or, median, percentile};
use chatmail_testrelay::mail::encrypted;
use chatmail_testrelay::{Account, ImapClient, Relay, RelayOptions};

const IDLE_SESSIONS: usize = 5;
const DELIVERY_THREADS: usize = 4;

fn relay(params: &[(&str, String)]) -> Relay {
    let params = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    Relay::start(RelayOptions { params, ..RelayOptions::default() }).unwrap_or_else(|e| panic!("relay: {e}"))
}

/// A relay whose mail store is in memory (a directory in /dev/shm, kept by
/// the returned guard): the flood measures the work of the syncs, which a
/// shared disk's fsync times would drown.
fn relay_in_memory(params: &[(&str, String)]) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("chatmail-bench-").tempdir_in("/dev/shm").expect("a directory in /dev/shm");
    let params = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let relay = Relay::start(RelayOptions { params, run_dir: Some(dir.path().to_path_buf()), ..RelayOptions::default() })
        .unwrap_or_else(|e| panic!("relay: {e}"));
    (relay, dir)
}

fn idle_session(relay: &Relay, account: &Account) -> ImapClient {
    let mut imap = relay.imap_login(account).expect("login");
    imap.command("SELECT INBOX").expect("select").ok().expect("selected");
    imap.idle().expect("idle");
    imap
}

/// Waits for `* N EXISTS` and returns N.
fn next_exists(imap: &mut ImapClient) -> u32 {
    imap.idle_wait_exists(Duration::from_secs(30)).expect("EXISTS during IDLE")
}

/// One side of the latency comparison: a relay, a sender and an IDLE-ing
/// recipient whose INBOX grows by one per sample.
struct Latency {
    name: &'static str,
    relay: Relay,
    sender: Account,
    recipient: Account,
    idle: ImapClient,
    count: u32,
    submission: Vec<Duration>,
    lmtp: Vec<Duration>,
}

impl Latency {
    fn new(name: &'static str, relay: Relay) -> Latency {
        let sender = relay.new_account().expect("sender");
        let recipient = relay.new_account().expect("recipient");
        let idle = idle_session(&relay, &recipient);
        Latency { name, relay, sender, recipient, idle, count: 0, submission: Vec::new(), lmtp: Vec::new() }
    }

    fn sample_submission(&mut self) {
        let text = encrypted(&self.sender.addr, &self.recipient.addr, "latency");
        let start = Instant::now();
        self.relay.submit(&self.sender, &[&self.recipient.addr], &text).expect("submit");
        self.count += 1;
        assert_eq!(next_exists(&mut self.idle), self.count);
        self.submission.push(start.elapsed());
    }

    fn sample_lmtp(&mut self) {
        let text = encrypted("sender@other.example", &self.recipient.addr, "latency");
        let answer = self.relay.lmtp_deliver(&self.recipient.addr, &text).expect("lmtp");
        let delivered = Instant::now();
        assert!(answer.starts_with("250"), "{answer}");
        self.count += 1;
        assert_eq!(next_exists(&mut self.idle), self.count);
        self.lmtp.push(delivered.elapsed());
    }
}

fn p50_p90(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(percentile(samples, 0.5)), ms(percentile(samples, 0.9)))
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    // After "(comm) ": state is field 0, utime 11, stime 12 (in clock ticks).
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / USER_HZ
}

/// Clock ticks per second in /proc: Linux's USER_HZ, 100 on every
/// architecture Debian ships.
const USER_HZ: f64 = 100.0;

/// CPU seconds used so far by every process on the machine, by program
/// name (this benchmark's own threads count as "chatmail-bench").
fn cpu_by_program() -> std::collections::HashMap<String, f64> {
    let mut by_program = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let comm = stat.split_once(" (").and_then(|(_, rest)| rest.rsplit_once(") ")).map_or("?", |(c, _)| c).to_owned();
        *by_program.entry(comm).or_insert(0.0) += cpu_seconds(pid);
    }
    by_program
}


/// Delivers `total` messages to one account with IDLE_SESSIONS IDLE-ing
/// sessions; returns deliveries per second and the CPU milliseconds the
/// sessions' imap processes used per delivery.
fn flood(relay: &Arc<Relay>, total: usize) -> (f64, f64) {
    let account = relay.new_account().expect("account");
    let pids_before = relay.imap_session_pids(&account.addr).len();
    let sessions: Vec<ImapClient> = (0..IDLE_SESSIONS).map(|_| idle_session(relay, &account)).collect();
    let pids: Vec<i32> = relay.imap_session_pids(&account.addr).into_iter().skip(pids_before).collect();
    assert_eq!(pids.len(), IDLE_SESSIONS, "one imap process per session");
    let cpu_before: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
    let all_before = cpu_by_program();
    // Each session reads its untagged responses as they come, as a client
    // does, until it has heard of every message.
    let readers: Vec<_> = sessions
        .into_iter()
        .map(|mut imap| {
            thread::spawn(move || {
                while (next_exists(&mut imap) as usize) < total {}
                imap
            })
        })
        .collect();
    let start = Instant::now();
    let senders: Vec<_> = (0..DELIVERY_THREADS)
        .map(|t| {
            let relay = Arc::clone(relay);
            let to = account.addr.clone();
            thread::spawn(move || {
                let text = encrypted("sender@other.example", &to, "flood");
                for _ in (t..total).step_by(DELIVERY_THREADS) {
                    let answer = relay.lmtp_deliver(&to, &text).expect("lmtp");
                    assert!(answer.starts_with("250"), "{answer}");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender");
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for reader in readers {
        let mut imap = reader.join().expect("reader");
        let _ = imap.idle_done();
        imap.logout();
    }
    let cpu_after: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
    let all_after = cpu_by_program();
    let mut used: Vec<(String, f64)> =
        all_after.iter().map(|(k, v)| (k.clone(), v - all_before.get(k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.05).collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    if std::env::var_os("BENCH_CPU_DETAIL").is_some() {
        eprintln!("  CPU s by program: {used:?}");
    }
    (rate, (cpu_after - cpu_before) * 1000.0 / total as f64)
}

fn main() {
    let samples = env_or("BENCH_SAMPLES", 30);
    let deliveries = env_or("BENCH_DELIVERIES", 1000);
    let min_interval = env_or("BENCH_MIN_INTERVAL", 50);
    let rounds = env_or("BENCH_ROUNDS", 3);

    let mut on = Latency::new("instant (plugin)", relay(&[]));
    let mut off = Latency::new("Dovecot's own", relay(&[("instant_idle", "false".into())]));
    // Warm up: process pools, indexes, the milter's DNS cache.
    on.sample_submission();
    off.sample_submission();
    on.submission.clear();
    off.submission.clear();
    for _ in 0..samples {
        on.sample_submission();
        off.sample_submission();
        on.sample_lmtp();
        off.sample_lmtp();
    }
    println!("IDLE wake-up latency, {samples} samples each (ms)");
    println!("{:<18} {:>16} {:>16} {:>14} {:>14}", "wake-up", "submission p50", "submission p90", "LMTP p50", "LMTP p90");
    let mut rows = Vec::new();
    for side in [&mut on, &mut off] {
        let (s50, s90) = p50_p90(&mut side.submission);
        let (l50, l90) = p50_p90(&mut side.lmtp);
        println!("{:<18} {s50:>16.1} {s90:>16.1} {l50:>14.1} {l90:>14.1}", side.name);
        rows.push((s50, l50));
    }
    println!(
        "speed-up (off p50 / on p50): submission {:.1}x, LMTP {:.1}x; goal: on p50 < 50 ms and >= 10x",
        rows[1].0 / rows[0].0,
        rows[1].1 / rows[0].1
    );
    drop(on);
    drop(off);

    println!();
    println!(
        "{deliveries} LMTP deliveries from {DELIVERY_THREADS} threads to one account with {IDLE_SESSIONS} IDLE-ing sessions, median of {rounds} rounds"
    );
    println!("{:<28} {:>14} {:>22}", "wake-up", "deliveries/s", "imap CPU ms/delivery");
    let configs: [(&str, Vec<(&str, String)>); 3] = [
        ("Dovecot's own", vec![("instant_idle", "false".into())]),
        ("instant", vec![]),
        ("instant, min interval", vec![("instant_idle_min_interval", min_interval.to_string())]),
    ];
    // BENCH_ONLY=N runs only the Nth configuration (0, 1, 2), e.g. under a profiler.
    let only = std::env::var("BENCH_ONLY").ok().and_then(|v| v.parse::<usize>().ok());
    let mut dirs = Vec::new();
    let relays: Vec<Option<Arc<Relay>>> = configs
        .iter()
        .enumerate()
        .map(|(index, (_, params))| {
            only.is_none_or(|o| o == index).then(|| {
                let (relay, dir) = relay_in_memory(params);
                dirs.push(dir);
                Arc::new(relay)
            })
        })
        .collect();
    for relay in relays.iter().flatten() {
        flood(relay, 50); // warm up
    }
    // The configurations take turns, each round with a new account (an
    // empty mailbox), so that a slow moment of the machine hits all alike.
    let mut rates = vec![Vec::new(); configs.len()];
    let mut cpus = vec![Vec::new(); configs.len()];
    for _ in 0..rounds {
        for (index, relay) in relays.iter().enumerate() {
            if let Some(relay) = relay {
                let (rate, cpu) = flood(relay, deliveries);
                rates[index].push(rate);
                cpus[index].push(cpu);
            }
        }
    }
    let mut results = Vec::new();
    for (index, (name, _)) in configs.iter().enumerate() {
        if rates[index].is_empty() {
            results.push(f64::NAN);
            continue;
        }
        let (rate, cpu) = (median(&mut rates[index]), median(&mut cpus[index]));
        let name = if name.contains("min interval") { format!("{name} {min_interval} ms") } else { (*name).to_owned() };
        println!("{name:<28} {rate:>14.0} {cpu:>22.3}");
        results.push(rate);
    }
    drop(relays);
    drop(dirs);
    println!(
        "delivery rate instant / Dovecot's own: {:.3} (min interval: {:.3}); goal >= 0.9",
        results[1] / results[0],
        results[2] / results[0]
    );
}
