//! Test messages shaped like Delta Chat's: an RFC 3156 encrypted message
//! (whose OpenPGP packets have the right structure but are not real
//! ciphertext: the relay checks structure, it cannot decrypt), and plain
//! cleartext.

use crate::client::base64;

fn headers(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}.{nonce}@client.test>\r\n\
         Date: Mon, 23 Nov 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\n",
        nonce = crate::random::token(8)
    )
}

/// OpenPGP packets: one PKESK and a SEIPD of about `payload` bytes whose
/// body starts with `marker`.
fn packets(marker: &str, payload: usize) -> Vec<u8> {
    let mut data = vec![0xc1, 60];
    data.extend_from_slice(&[3; 60]);
    let mut body = vec![1u8];
    body.extend_from_slice(marker.as_bytes());
    body.resize(payload.max(body.len() + 1), 0x5a);
    data.extend_from_slice(&[0xd2, 0xff]);
    data.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    data.extend_from_slice(&body);
    data
}

/// An encrypted-looking message of about 1 KB; tests find it by its subject.
pub fn encrypted(from: &str, to: &str, subject: &str) -> String {
    encrypted_sized(from, to, subject, 200)
}

/// An encrypted-looking message whose encrypted data has `payload` bytes
/// (the message is about 4/3 of that).
pub fn encrypted_sized(from: &str, to: &str, subject: &str, payload: usize) -> String {
    let encoded = base64(&packets(subject, payload));
    let mut armor = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in encoded.as_bytes().chunks(76) {
        armor.push_str(&String::from_utf8_lossy(line));
        armor.push_str("\r\n");
    }
    armor.push_str("-----END PGP MESSAGE-----\r\n");
    format!(
        "{headers}Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\
         \tboundary=\"outer-boundary\"\r\n\r\n\
         This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
         --outer-boundary\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\r\n\
         Version: 1\r\n\r\n\
         --outer-boundary\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\";\r\n\r\n\
         {armor}\r\n\
         --outer-boundary--\r\n",
        headers = headers(from, to, subject),
    )
}

/// A plain text message.
pub fn cleartext(from: &str, to: &str, subject: &str) -> String {
    format!("{}Content-Type: text/plain; charset=utf-8\r\n\r\nbody of {subject}\r\n", headers(from, to, subject))
}

/// IMAP date-time (`"05-Mar-2026 07:08:09 +0000"`, for APPEND) of
/// `secs_ago` seconds ago.
pub fn imap_date(secs_ago: u64) -> String {
    use chatmail_config::calendar::{civil_from_days, MONTH_ABBREVIATIONS};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t = now.saturating_sub(secs_ago);
    let (days, rest) = (t / 86_400, t % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!("{day:02}-{}-{year} {:02}:{:02}:{:02} +0000", MONTH_ABBREVIATIONS[month as usize - 1], rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The domain of the address in `message`'s first From header, lowercase.
pub fn from_domain(message: &str) -> Option<String> {
    let line = message.lines().take_while(|l| !l.is_empty()).find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case("from:"))?;
    let value = &line[5..];
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.trim(),
    };
    let (_, domain) = addr.rsplit_once('@')?;
    Some(domain.trim().to_ascii_lowercase())
}
