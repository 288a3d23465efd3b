//! Benchmark: the chatmail Dovecot plugin's cost, against the same relay
//! without it, in the same run:
//!
//! - IMAP login + logout per second (each session end runs the plugin's
//!   maintenance check: quota usage and the hourly expiry stamp), from
//!   CLIENTS threads with logins served by the auth cache;
//! - LMTP deliveries per second of 2 KB messages (each delivery's session
//!   end runs the same check: the plugin's cost per saved message).
//!
//! Build in release first:
//!   cargo build --release --workspace && target/release/chatmail-bench-plugin
//! Overridable: BENCH_CLIENTS (8), BENCH_SESSIONS per client (50), BENCH_ROUNDS (5).

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use chatmail_testrelay::bench::{env_or, median};
use chatmail_testrelay::{Account, Relay, RelayOptions};


fn relay(dovecot_plugin: bool) -> Relay {
    Relay::start(RelayOptions { dovecot_plugin, ..RelayOptions::default() }).unwrap_or_else(|e| panic!("relay: {e}"))
}

/// Runs `work(relay, account)` `per_client` times in each of the client
/// threads (one account each) and returns operations per second.
fn rate(relay: &Arc<Relay>, accounts: &[Account], per_client: usize, work: fn(&Relay, &Account)) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = accounts
        .iter()
        .cloned()
        .map(|account| {
            let relay = Arc::clone(relay);
            thread::spawn(move || {
                for _ in 0..per_client {
                    work(&relay, &account);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread");
    }
    (accounts.len() * per_client) as f64 / start.elapsed().as_secs_f64()
}

fn login_logout(relay: &Relay, account: &Account) {
    relay.imap_login(account).expect("login").logout();
}

fn deliver(relay: &Relay, account: &Account) {
    let text = chatmail_testrelay::mail::encrypted("sender@other.example", &account.addr, "bench");
    let answer = relay.lmtp_deliver(&account.addr, &text).expect("lmtp");
    assert!(answer.starts_with("250"), "{answer}");
}


fn main() {
    let clients = env_or("BENCH_CLIENTS", 8);
    let per_client = env_or("BENCH_SESSIONS", 50);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let with = Arc::new(relay(true));
    let without = Arc::new(relay(false));
    let accounts = |r: &Relay| -> Vec<Account> { (0..clients).map(|_| r.new_account().expect("account")).collect() };
    let (with_accounts, without_accounts) = (accounts(&with), accounts(&without));
    println!("{clients} clients × {per_client} operations, {rounds} rounds (median)");
    println!("{:<22} {:>14} {:>14} {:>7}", "operation", "without /s", "with plugin /s", "ratio");
    for (name, work) in [("IMAP login + logout", login_logout as fn(&Relay, &Account)), ("LMTP delivery (2 KB)", deliver)] {
        // Warm up: process pools, auth cache, indexes.
        rate(&with, &with_accounts, 5, work);
        rate(&without, &without_accounts, 5, work);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            b.push(rate(&without, &without_accounts, per_client, work));
            a.push(rate(&with, &with_accounts, per_client, work));
        }
        let (with_rate, without_rate) = (median(&mut a), median(&mut b));
        println!("{name:<22} {without_rate:>14.0} {with_rate:>14.0} {:>7.3}", with_rate / without_rate);
    }
    println!("goal: overhead <= 5 % (ratio >= 0.95)");
}
