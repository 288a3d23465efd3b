//! Cost of DKIM per message, 2 KB and 1 MB encrypted messages: signing
//! (RSA-2048, and RSA + Ed25519) as the milter does it while the message
//! streams by, and checking an RSA signature (key from a warm DNS cache),
//! against a baseline measured in the same run: the encrypted-message check
//! every message gets anyway (`check_message`).
//!
//! Run: cargo bench -p chatmail-milter --bench dkim
//! (Postfix throughput with signing on vs off: chatmail-bench-relay, see BENCHMARKS.md.)

use std::hint::black_box;
use std::time::Duration;

use chatmail_testrelay::bench::seconds_per_call;

use chatmail_milter::{check_message, generate, load_signers, KeyKind, KeySource, MessageSigning, Signers};

/// Signs `message` the way the milter does: header section, then the body
/// in Postfix-sized chunks.
fn sign(signers: &'static Signers, message: &[u8]) -> bool {
    let mut signing = MessageSigning::start(signers);
    for chunk in message.chunks(65_535) {
        signing.write(chunk);
    }
    signing.finish().is_ok_and(|values| !values.is_empty())
}

fn main() {
    let budget = Duration::from_millis(1500);
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa_key = dir.path().join("rsa.private");
    std::fs::write(&rsa_key, chatmail_testrelay::dkim::TEST_KEY_PEM).expect("key");
    let ed_key = dir.path().join("ed.private");
    generate(&ed_key, KeyKind::Ed25519).expect("ed25519 key");
    let rsa_only: &'static Signers =
        Box::leak(Box::new(load_signers("chat.example", KeySource { path: &rsa_key, selector: "opendkim" }, None).expect("signers")));
    let both: &'static Signers = Box::leak(Box::new(
        load_signers(
            "chat.example",
            KeySource { path: &rsa_key, selector: "opendkim" },
            Some(KeySource { path: &ed_key, selector: "ed25519" }),
        )
        .expect("signers"),
    ));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dns = chatmail_testrelay::test_dns().expect("test dns");
    let authenticator = {
        let _inside = runtime.enter();
        chatmail_milter::authenticator(&[dns.addr()], Duration::from_secs(2)).expect("resolver")
    };

    println!(
        "{:>6} {:>15} {:>9} {:>10} {:>15} {:>10} {:>12}",
        "size", "check µs (base)", "sign µs", "sign/check", "sign+ed25519 µs", "verify µs", "verify/check"
    );
    for (label, size) in [("2 KB", 2 << 10), ("1 MB", 1 << 20)] {
        let message = chatmail_testrelay::mail::encrypted_sized("alice@other.example", "bob@chat.example", "bench", size * 3 / 4);
        let signed = chatmail_testrelay::dkim::sign(&message, "other.example").expect("sign");
        let message = message.into_bytes();
        let per_check = seconds_per_call(budget, || check_message(black_box(&message)).is_ok());
        let per_sign = seconds_per_call(budget, || sign(rsa_only, black_box(&message)));
        let per_sign_both = seconds_per_call(budget, || sign(both, black_box(&message)));
        let verify = || {
            let checks = runtime.block_on(chatmail_milter::check_signatures(&authenticator, black_box(signed.as_bytes())));
            matches!(chatmail_milter::judge(Some("other.example"), &checks), chatmail_milter::DkimVerdict::Pass { .. })
        };
        let per_verify = seconds_per_call(budget, verify);
        println!(
            "{label:>6} {:>15.1} {:>9.1} {:>10.2} {:>15.1} {:>10.1} {:>12.2}",
            per_check * 1e6,
            per_sign * 1e6,
            per_sign / per_check,
            per_sign_both * 1e6,
            per_verify * 1e6,
            per_verify / per_check
        );
    }
    println!("ratios: DKIM time / encrypted-message check time for the same message");
}
