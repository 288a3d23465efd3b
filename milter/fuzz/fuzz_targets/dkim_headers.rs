//! Arbitrary bytes as an incoming message's header section and body: the
//! DKIM check's parsing and body hashing must never panic (a panic would
//! drop the milter connection, and Postfix would tempfail every message
//! shaped like it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.windows(4).position(|w| w == b"\r\n\r\n").map_or(data.len(), |at| at + 4);
    let mut check = chatmail_milter::IncomingCheck::start(data[..split].to_vec());
    for chunk in data[split..].chunks(7) {
        check.write(chunk);
    }
});
