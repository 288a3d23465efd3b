//! Throughput of the encrypted-body check (MIME structure, armor, OpenPGP
//! packets) on messages of 2 KB, 50 KB, 1 MB and 20 MB, against a baseline
//! measured in the same run: splitting the same body into lines and
//! touching every byte, the least work any line-based check must do.
//!
//! Run: cargo bench -p chatmail-milter --bench checker

use std::hint::black_box;
use std::time::Duration;

use chatmail_testrelay::bench::seconds_per_call;

use chatmail_milter::{parse_content_type, EncryptedBodyChecker};

// The unit tests' helper (a cfg(test) module is not visible to benches).
#[path = "../src/test_support.rs"]
mod test_support;
use test_support::base64;

/// An encrypted body of about `size` bytes (boundary B).
fn body(size: usize) -> Vec<u8> {
    let payload_len = size * 3 / 4;
    let mut packets = vec![0xc1, 60];
    packets.extend_from_slice(&[3; 60]);
    packets.extend_from_slice(&[0xd2, 0xff]);
    packets.extend_from_slice(&(payload_len as u32).to_be_bytes());
    let mut seipd = vec![0x77u8; payload_len];
    seipd[0] = 1;
    packets.extend_from_slice(&seipd);
    let encoded = base64(&packets);
    let mut text = String::from(
        "--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--B\r\n\
         Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n",
    );
    for line in encoded.as_bytes().chunks(76) {
        text.push_str(std::str::from_utf8(line).expect("ascii"));
        text.push_str("\r\n");
    }
    text.push_str("-----END PGP MESSAGE-----\r\n\r\n--B--\r\n");
    text.into_bytes()
}

fn check(body: &[u8]) -> bool {
    let ct = parse_content_type("multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=B").expect("ct");
    let mut checker = EncryptedBodyChecker::new(&ct).expect("checker");
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if checker.line(line).is_err() {
            return false;
        }
    }
    checker.finish().is_ok()
}

fn baseline(body: &[u8]) -> bool {
    let mut sum = 0u64;
    for line in body.split(|&b| b == b'\n') {
        sum = sum.wrapping_add(line.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
    sum != 1
}

fn main() {
    let budget = Duration::from_millis(1500);
    println!("{:>8} {:>12} {:>10} {:>12} {:>8}", "size", "checker/s", "MB/s", "baseline MB/s", "ratio");
    for (label, size) in [("2 KB", 2 << 10), ("50 KB", 50 << 10), ("1 MB", 1 << 20), ("20 MB", 20 << 20)] {
        let input = body(size);
        let per_check = seconds_per_call(budget, || check(black_box(&input)));
        let per_baseline = seconds_per_call(budget, || baseline(black_box(&input)));
        let mb = input.len() as f64 / 1e6;
        println!(
            "{label:>8} {:>12.0} {:>10.1} {:>12.1} {:>8.2}",
            1.0 / per_check,
            mb / per_check,
            mb / per_baseline,
            per_baseline / per_check
        );
    }
}
