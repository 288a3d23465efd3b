//! Feeds arbitrary bodies (split at an arbitrary point) through the MIME,
//! armor and packet checks, and arbitrary bytes through the packet check
//! alone: nothing may panic, and chunking must not change the verdict.
#![no_main]

use chatmail_milter::{check_message, check_packets, parse_content_type, EncryptedBodyChecker, PacketChecker};
use libfuzzer_sys::fuzz_target;

fn run_body(data: &[u8], split: usize) -> bool {
    let Some(ct) = parse_content_type("multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"B\"") else {
        return false;
    };
    let Ok(mut checker) = EncryptedBodyChecker::new(&ct) else { return false };
    let (a, b) = data.split_at(split.min(data.len()));
    let joined: Vec<u8> = [a, b].concat();
    for line in joined.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if checker.line(line).is_err() {
            return false;
        }
    }
    checker.finish().is_ok()
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b));
    let whole = run_body(data, 0);
    assert_eq!(whole, run_body(data, split));

    let once = check_packets(data).is_ok();
    let mut chunked = PacketChecker::new();
    let mut ok = true;
    for piece in data.chunks(split.max(1)) {
        if chunked.feed(piece).is_err() {
            ok = false;
            break;
        }
    }
    let chunked_ok = ok && chunked.finish().is_ok();
    assert_eq!(once, chunked_ok);

    // Whole messages, headers included (seeds: captured Delta Chat mail).
    let _ = check_message(data);

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_content_type(text);
        let _ = chatmail_milter::from_address(text);
    }
});
