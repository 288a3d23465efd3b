//! Benchmark: Postfix throughput with the chatmail milter against the same
//! Postfix without it, and with the milter's DKIM signing on against off
//! (`--no-dkim`), measured in the same run; and the milter's memory under
//! 100 concurrent 20 MB messages.
//!
//! Build in release first so the milter is the optimised one:
//!   cargo build --release --workspace && target/release/chatmail-bench-relay
//!
//! Between measurements the relay just measured delivers everything it
//! accepted (its queue drains), so one relay's delivery backlog never runs
//! while the other is measured.
//!
//! Load: 16 threads (BENCH_CLIENTS) (enough to keep both cores busy, so the ratio measures
//! cost rather than added latency) each keep one authenticated submission session
//! (STARTTLS) and send 2 KB encrypted messages to a local account, as
//! Delta Chat does; the three relays are measured in turn, ROUNDS times.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use chatmail_testrelay::bench::{env_or};
use chatmail_testrelay::mail::{encrypted, encrypted_sized};
use chatmail_testrelay::{Account, Relay, RelayOptions};

const DEFAULT_CLIENTS: usize = 16;
const DEFAULT_MESSAGES_PER_CLIENT: usize = 50;

/// Overridable for exploration: BENCH_CLIENTS, BENCH_MESSAGES, BENCH_SKIP_BIG=1,
/// and BENCH_ONLY=with|without, which loads only that relay for ROUNDS rounds
/// (for profiling one side, e.g. under `perf record -a`; no ratio is printed).
const ROUNDS: usize = 3;
const BIG_CLIENTS: usize = 100;
const BIG_SIZE: usize = 20 << 20;

fn relay(milter: bool, milter_dkim: bool) -> Relay {
    let options = RelayOptions {
        milter,
        milter_dkim,
        // Unlimited enough for a benchmark: the rate limit is not measured here.
        params: vec![("max_user_send_per_minute".into(), "1000000".into()), ("max_user_send_burst_size".into(), "1000000".into())],
        ..RelayOptions::default()
    };
    Relay::start(options).unwrap_or_else(|e| panic!("relay: {e}"))
}

fn messages_per_client() -> usize {
    env_or("BENCH_MESSAGES", DEFAULT_MESSAGES_PER_CLIENT)
}

/// Messages per second accepted by `relay` from CLIENTS parallel sessions.
fn throughput(relay: &Arc<Relay>, senders: &[Account], to: &Account) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = senders
        .iter()
        .cloned()
        .map(|sender| {
            let relay = Arc::clone(relay);
            let to = to.addr.clone();
            thread::spawn(move || {
                let mut smtp = relay.submission_session(&sender).expect("login");
                for i in 0..messages_per_client() {
                    let message = encrypted(&sender.addr, &to, &format!("bench-{i}"));
                    smtp.send_mail(&sender.addr, &[&to], &message).expect("accepted");
                }
                smtp.quit();
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread");
    }
    let rate = (senders.len() * messages_per_client()) as f64 / start.elapsed().as_secs_f64();
    relay.wait_for_empty_queue(std::time::Duration::from_secs(300)).expect("queue drains");
    rate
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends BIG_CLIENTS encrypted messages of BIG_SIZE at once (refused at the
/// end for a forged From, so nothing is delivered) and returns the milter's
/// peak resident memory in KiB.
fn big_messages(relay: &Arc<Relay>, sender: &Account, to: &Account) -> (u64, u64) {
    let pid = relay.milter_pid().expect("milter running");
    let before = rss_kib(pid, "VmRSS:");
    // A From that is not the sender's: fully checked, then refused, so
    // nothing is delivered and only the milter's streaming is measured.
    let body = Arc::new(encrypted_sized("someone-else@other.example", &to.addr, "big", BIG_SIZE * 3 / 4));
    let handles: Vec<_> = (0..BIG_CLIENTS)
        .map(|_| {
            let relay = Arc::clone(relay);
            let body = Arc::clone(&body);
            let sender = sender.clone();
            let to = to.addr.clone();
            thread::spawn(move || {
                let mut smtp = relay.submission_session(&sender).expect("login");
                // 100 × 20 MB at once keeps both cores busy for minutes.
                smtp.set_timeout(std::time::Duration::from_secs(600)).expect("timeout");
                smtp.command(&format!("MAIL FROM:<{}>", sender.addr)).expect("mail");
                smtp.command(&format!("RCPT TO:<{to}>")).expect("rcpt");
                let reply = smtp.data(&body).expect("data");
                assert_eq!(reply.code, 553, "{}", reply.text());
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread");
    }
    (before, rss_kib(pid, "VmHWM:"))
}

fn main() {
    let with = Arc::new(relay(true, true));
    let without = Arc::new(relay(false, false));
    let no_dkim = Arc::new(relay(true, false));
    let accounts = |r: &Relay| -> (Vec<Account>, Account) {
        let clients = env_or("BENCH_CLIENTS", DEFAULT_CLIENTS);
        ((0..clients).map(|_| r.new_account().expect("account")).collect(), r.new_account().expect("account"))
    };
    let (with_senders, with_to) = accounts(&with);
    let (without_senders, without_to) = accounts(&without);
    let (no_dkim_senders, no_dkim_to) = accounts(&no_dkim);
    // Warm up all (TLS session caches, process pools).
    throughput(&with, &with_senders, &with_to);
    throughput(&without, &without_senders, &without_to);
    throughput(&no_dkim, &no_dkim_senders, &no_dkim_to);
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        let (relay, senders, to) = match only.as_str() {
            "with" => (&with, &with_senders, &with_to),
            "without" => (&without, &without_senders, &without_to),
            "no-dkim" => (&no_dkim, &no_dkim_senders, &no_dkim_to),
            other => panic!("BENCH_ONLY={other}: expected with, without or no-dkim"),
        };
        for round in 1..=ROUNDS {
            println!("round {round}: {only} milter {:.0} msg/s", throughput(relay, senders, to));
        }
        return;
    }
    let milter_pid = with.milter_pid().expect("milter");
    let cpu_before = cpu_seconds(milter_pid);
    let mut ratios = Vec::new();
    let mut dkim_ratios = Vec::new();
    println!("round  without milter msg/s  milter, DKIM off msg/s  milter, DKIM on msg/s  on/without  on/off");
    for round in 1..=ROUNDS {
        let base = throughput(&without, &without_senders, &without_to);
        let off = throughput(&no_dkim, &no_dkim_senders, &no_dkim_to);
        let milter = throughput(&with, &with_senders, &with_to);
        ratios.push(milter / base);
        dkim_ratios.push(milter / off);
        println!("{round:>5}  {base:>20.0}  {off:>22.0}  {milter:>21.0}  {:>10.3}  {:>6.3}", milter / base, milter / off);
    }
    let milter_cpu = cpu_seconds(milter_pid) - cpu_before;
    println!(
        "milter CPU: {:.0} µs per message ({} messages)",
        milter_cpu * 1e6 / (ROUNDS * with_senders.len() * messages_per_client()) as f64,
        ROUNDS * with_senders.len() * messages_per_client()
    );
    ratios.sort_by(f64::total_cmp);
    dkim_ratios.sort_by(f64::total_cmp);
    println!("median ratio (with / without milter): {:.3}  (goal >= 0.95)", ratios[ratios.len() / 2]);
    println!("median ratio (milter with / without DKIM signing): {:.3}", dkim_ratios[dkim_ratios.len() / 2]);
    if std::env::var("BENCH_SKIP_BIG").is_ok_and(|v| v == "1") {
        return;
    }
    let (before, peak) = big_messages(&with, &with_senders[0], &with_to);
    println!(
        "milter memory with {BIG_CLIENTS} concurrent {} MB messages: RSS before {:.1} MB, peak {:.1} MB  (goal < 100 MB)",
        BIG_SIZE >> 20,
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
