//! Benchmark: 100 parallel IMAP logins against a relay whose logins are
//! answered by chatmail-auth (Dovecot 2.3: dict passdb/userdb; Dovecot 2.4:
//! the Lua passdb/userdb that asks it) and, in the same
//! run, against a relay with Dovecot's own passwd-file holding the same kind
//! of hashes (SHA512-CRYPT) — with STARTTLS and without TLS (Dovecot allows
//! plaintext logins on loopback), so the TLS share shows too.
//!
//! Build in release first so chatmail-auth is the optimised one:
//!   cargo build --release --workspace && target/release/chatmail-bench-auth
//!
//! Each round: PARALLEL threads each connect, (STARTTLS,) LOGIN, LOGOUT once,
//! all at the same moment; logins/s = PARALLEL / wall time of the round; the
//! latency of each login is from connect to the tagged OK of LOGIN. Rounds
//! alternate between the relays. Both relays run with the same Dovecot auth
//! cache settings: "cold" rounds use accounts that never logged in (no cache
//! entry: the full check), "warm" rounds repeat the logins of the round
//! before (as clients reconnecting do). Override with BENCH_PARALLEL,
//! BENCH_ROUNDS.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use chatmail_testrelay::bench::{env_or, percentile, median};
use chatmail_testrelay::{Account, AccountBackend, ImapClient, Relay, RelayOptions, Security};


fn relay(accounts: AccountBackend) -> Relay {
    Relay::start(RelayOptions { accounts, ..RelayOptions::default() }).unwrap_or_else(|e| panic!("relay: {e}"))
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    StartTls,
    Plain,
}

/// One login: connect, optional STARTTLS, LOGIN; returns its latency.
fn login(relay: &Relay, account: &Account, transport: Transport) -> Duration {
    let start = Instant::now();
    let mut imap = ImapClient::connect(relay.ports.imap, Security::Plain, &relay.cert_der).expect("connect");
    if transport == Transport::StartTls {
        imap.starttls().expect("starttls");
    }
    imap.login(&account.addr, &account.password).expect("login").ok().expect("login accepted");
    let took = start.elapsed();
    imap.logout();
    took
}

struct Round {
    per_second: f64,
    latencies: Vec<Duration>,
}

fn round(relay: &Arc<Relay>, accounts: &[Account], transport: Transport) -> Round {
    let barrier = Arc::new(Barrier::new(accounts.len() + 1));
    let handles: Vec<_> = accounts
        .iter()
        .cloned()
        .map(|account| {
            let relay = Arc::clone(relay);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                login(&relay, &account, transport)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies: Vec<Duration> = handles.into_iter().map(|h| h.join().expect("login thread")).collect();
    let wall = start.elapsed();
    latencies.sort();
    Round { per_second: accounts.len() as f64 / wall.as_secs_f64(), latencies }
}



fn main() {
    let parallel = env_or("BENCH_PARALLEL", 100);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let auth = Arc::new(relay(AccountBackend::Auth));
    let file = Arc::new(relay(AccountBackend::PasswdFile));
    let make = |r: &Relay| -> Vec<Account> {
        (0..parallel).map(|_| r.add_account(&chatmail_testrelay::token(9), &chatmail_testrelay::token(12)).expect("account")).collect()
    };

    let auth_label = match chatmail_config::wiring::DovecotRelease::installed() {
        Ok(chatmail_config::wiring::DovecotRelease::V2_4) => "chatmail-auth (2.4, lua)",
        _ => "chatmail-auth (2.3, dict)",
    };
    println!("{parallel} parallel IMAP logins, {rounds} rounds per case (median logins/s; latency p50/p99 over all rounds)");
    println!("{:<10} {:<6} {:<24} {:>10} {:>9} {:>9}", "transport", "cache", "passdb", "logins/s", "p50 ms", "p99 ms");
    // Warm up both (process pools, TLS contexts).
    round(&auth, &make(&auth), Transport::StartTls);
    round(&file, &make(&file), Transport::StartTls);
    let mut medians = Vec::new();
    for (transport, name) in [(Transport::StartTls, "STARTTLS"), (Transport::Plain, "plaintext")] {
      for warm in [false, true] {
        let cache = if warm { "warm" } else { "cold" };
        let (mut auth_rates, mut file_rates, mut auth_lat, mut file_lat) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (auth_accounts, file_accounts) = (make(&auth), make(&file));
            if warm {
                round(&auth, &auth_accounts, transport);
                round(&file, &file_accounts, transport);
            }
            let a = round(&auth, &auth_accounts, transport);
            let f = round(&file, &file_accounts, transport);
            auth_rates.push(a.per_second);
            file_rates.push(f.per_second);
            auth_lat.extend(a.latencies);
            file_lat.extend(f.latencies);
        }
        auth_lat.sort();
        file_lat.sort();
        let (a, f) = (median(&mut auth_rates), median(&mut file_rates));
        for (passdb, rate, lat) in [(auth_label, a, &auth_lat), ("passwd-file", f, &file_lat)] {
            println!(
                "{name:<10} {cache:<6} {passdb:<24} {rate:>10.0} {:>9.1} {:>9.1}",
                percentile(lat, 0.5).as_secs_f64() * 1e3,
                percentile(lat, 0.99).as_secs_f64() * 1e3
            );
        }
        println!("{name:<10} {cache:<6} ratio chatmail-auth / passwd-file: {:.2}  (goal >= 0.9)", a / f);
        medians.push((a, f));
      }
    }
    // Cold rounds: STARTTLS is medians[0], plaintext medians[2].
    let ((auth_tls, file_tls), (auth_plain, file_plain)) = (medians[0], medians[2]);
    // Time per login is 1/rate; what TLS adds is the difference.
    let tls_share = |tls: f64, plain: f64| (1.0 / tls - 1.0 / plain) / (1.0 / tls);
    println!(
        "TLS share of a cold login's cost: {:.0} % with chatmail-auth, {:.0} % with passwd-file",
        tls_share(auth_tls, auth_plain) * 100.0,
        tls_share(file_tls, file_plain) * 100.0
    );
    // The password check itself (one SHA512-CRYPT per login with either
    // passdb), measured here on one core: its share of the machine's time
    // per login (2 cores busy) at the STARTTLS rate.
    let stored = chatmail_accounts::hash_password("benchmark-password").expect("hash");
    let start = Instant::now();
    let checks = 200;
    for _ in 0..checks {
        assert_eq!(chatmail_accounts::verify_password("benchmark-password", &stored), Ok(true));
    }
    let per_check = start.elapsed().as_secs_f64() / checks as f64;
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "SHA512-CRYPT check: {:.2} ms CPU; share of a cold STARTTLS login's machine time: {:.0} % (chatmail-auth), {:.0} % (passwd-file)",
        per_check * 1e3,
        per_check / (cores / auth_tls) * 100.0,
        per_check / (cores / file_tls) * 100.0
    );
}
