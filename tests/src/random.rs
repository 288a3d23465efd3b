//! Random test names and passwords from the kernel's generator.

use std::io::Read;

/// `len` random characters from `a-z0-9`, suitable as a chatmail local part
/// or password.
pub fn token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // /dev/urandom always exists on Linux; fall back to the clock rather
        // than failing a test over it.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i * 5) % 64)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    // 256 is not a multiple of 36: the slight bias is irrelevant for test names.
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}
