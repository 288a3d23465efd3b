//! Benchmark: push notifications, against a local HTTPS stub standing in
//! for Delta Chat's notification service, on the harness's relay:
//!
//! - what push costs a delivery: LMTP deliveries to an account with a
//!   device token against deliveries to one without, taking turns
//!   (BENCH_SAMPLES each; p50 and the ratio);
//! - delivery → POST: from the start of the LMTP delivery to the stub
//!   reading the POST, one delivery at a time (p50/p90; goal p50 < 100 ms
//!   after the delivery), next to the LMTP delivery's own duration (the
//!   arrival is recorded when Dovecot commits, before its answer);
//! - drain: BENCH_TOKENS accounts with a token each and an arrival each,
//!   queued while chatmail-metadata is stopped; POSTs per second once it
//!   starts, until the stub has them all.
//!
//! Build in release first:
//!   cargo build --release --workspace && target/release/chatmail-bench-push

use std::time::{Duration, Instant};

use chatmail_testrelay::bench::{env_or, percentile};
use chatmail_testrelay::mail::encrypted;
use chatmail_testrelay::{PushStub, Relay, RelayOptions};

fn set_token(relay: &Relay, account: &chatmail_testrelay::Account, token: &str) {
    let mut imap = relay.imap_login(account).expect("login");
    imap.command(&format!("SETMETADATA INBOX (/private/devicetoken \"{token}\")")).expect("setmetadata").ok().expect("token stored");
    imap.logout();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let samples = env_or("BENCH_SAMPLES", 200);
    let tokens = env_or("BENCH_TOKENS", 1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = PushStub::start_in(dir.path()).expect("push stub");
    let (url, ca) = (stub.url(), stub.ca_file.display().to_string());
    let params = vec![("push_notification_url".to_owned(), url), ("push_notification_ca_file".to_owned(), ca)];
    let mut relay = Relay::start(RelayOptions { params, ..RelayOptions::default() }).unwrap_or_else(|e| panic!("relay: {e}"));
    let (sender, with_token, without_token) =
        (relay.new_account().expect("sender"), relay.new_account().expect("with"), relay.new_account().expect("without"));
    set_token(&relay, &with_token, "openpgp:bench-device");

    // Delivery cost and delivery → POST latency, taking turns.
    let (mut plain, mut pushed, mut to_post) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..samples {
        // Turns alternate, so neither side always follows the other's
        // after-work (the daemon's queue bookkeeping after a POST).
        for pushing in if i % 2 == 0 { [false, true] } else { [true, false] } {
            let to = if pushing { &with_token } else { &without_token };
            let before = stub.received().len();
            let message = encrypted(&sender.addr, &to.addr, &format!("mail {i} {pushing}"));
            let started = Instant::now();
            let reply = relay.lmtp_deliver(&to.addr, &message).expect("lmtp");
            assert!(reply.starts_with("250"), "{reply}");
            if !pushing {
                plain.push(started.elapsed());
                continue;
            }
            pushed.push(started.elapsed());
            let received = stub.wait_for(before + 1, Duration::from_secs(30)).expect("POST");
            to_post.push(received[before].at.saturating_duration_since(started));
        }
    }
    for list in [&mut plain, &mut pushed, &mut to_post] {
        list.sort_unstable();
    }
    let (plain50, pushed50) = (ms(percentile(&plain, 0.5)), ms(percentile(&pushed, 0.5)));
    println!("LMTP delivery p50, account without token: {plain50:.2} ms; with token: {pushed50:.2} ms; ratio {:.2}", pushed50 / plain50);
    println!(
        "LMTP delivery start -> POST ({samples} samples): p50 {:.2} ms, p90 {:.2} ms; the delivery alone p50 {pushed50:.2} ms (goal: POST < 100 ms after it)",
        ms(percentile(&to_post, 0.5)),
        ms(percentile(&to_post, 0.9))
    );

    // Drain: many accounts' arrivals queued while the daemon is down.
    relay.stop_metadata();
    let mailboxes = relay.config.mailboxes_dir.clone();
    let spool = relay.config.push_spool_dir.clone();
    let owner = std::fs::metadata(&mailboxes).expect("mailboxes");
    let (uid, gid) = (std::os::unix::fs::MetadataExt::uid(&owner), std::os::unix::fs::MetadataExt::gid(&owner));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    for i in 0..tokens {
        let addr = format!("drain{i}@{}", relay.domain);
        let home = mailboxes.join(&addr);
        std::fs::create_dir_all(&home).expect("home");
        std::fs::write(home.join("metadata.json"), format!("{{\"devicetoken\": {{\"openpgp:drain-{i}\": {now}}}}}")).expect("metadata");
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).expect("chown");
        chatmail_config::push::record_arrival(&spool, &addr).expect("arrival");
    }
    for entry in std::fs::read_dir(spool.join("arrived")).expect("arrived").flatten() {
        std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid)).expect("chown");
    }
    let before = stub.received().len();
    let started = Instant::now();
    relay.start_metadata().expect("restart");
    stub.wait_for(before + tokens, Duration::from_secs(600)).expect("all POSTs");
    let took = started.elapsed();
    println!("drain: {tokens} queued notifications in {:.2} s: {:.0} POSTs/s", took.as_secs_f64(), tokens as f64 / took.as_secs_f64());
}
