//! Standard base64 with padding (RFC 4648): the encoder several parts need
//! for mail bodies and SASL, and a decoder for values made by others
//! (Autocrypt key data, bots' attachments).

const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `data` in base64, on one line.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64 `text`; ASCII whitespace (line folding) is skipped,
/// padding is optional. `Err` names the first problem.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut count, mut padding) = (0u32, 0u32, 0usize);
    for (at, &b) in text.iter().enumerate() {
        if b.is_ascii_whitespace() {
            continue;
        }
        if b == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(format!("data after padding at byte {at}"));
        }
        let value = TABLE.iter().position(|&t| t == b).ok_or_else(|| format!("{:?} at byte {at} is not base64", char::from(b)))?;
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    if count >= 6 || padding > 2 {
        return Err("truncated base64".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encodes() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 255, 128, 7]] {
            assert_eq!(decode(encode(data).as_bytes()).as_deref(), Ok(data));
        }
        assert_eq!(decode(b"Zm9v\r\n YmFy").as_deref(), Ok(&b"foobar"[..]));
        assert_eq!(decode(b"Zg").as_deref(), Ok(&b"f"[..]));
        for bad in [&b"Zm9v!"[..], b"Z", b"Zg==Zg==", b"Zg==="] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc4648_vectors() {
        let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (input, want) in cases {
            assert_eq!(encode(input.as_bytes()), want);
        }
    }
}
