//! Delivering the daemon's own messages (install reports) to an account
//! through Dovecot's LMTP socket, so quota, indexes and the plugin see
//! them like any delivery.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Header that marks the daemon's own messages: a delivery carrying it is
/// never given to the bot (its own install report would run it).
pub const REPORT_HEADER: &str = "Chatmail-Bot-Report";

fn reply(reader: &mut impl BufRead) -> io::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "LMTP server closed the connection"));
        }
        let code = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad LMTP reply {line:?}")))?;
        text.push_str(line.get(4..).unwrap_or("").trim_end());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
        text.push(' ');
    }
}

fn expect(reader: &mut impl BufRead, want: u16, after: &str) -> io::Result<()> {
    let (code, text) = reply(reader)?;
    if code == want {
        Ok(())
    } else {
        Err(io::Error::other(format!("LMTP {after}: {code} {text}")))
    }
}

/// Delivers `message` (CRLF lines) to `recipient` via the socket at `socket`.
pub fn deliver(socket: &Path, recipient: &str, message: &[u8]) -> io::Result<()> {
    let stream = UnixStream::connect(socket).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    expect(&mut reader, 220, "greeting")?;
    writer.write_all(b"LHLO chatmail-bots\r\n")?;
    expect(&mut reader, 250, "LHLO")?;
    writer.write_all(b"MAIL FROM:<>\r\n")?;
    expect(&mut reader, 250, "MAIL FROM")?;
    writer.write_all(format!("RCPT TO:<{recipient}>\r\n").as_bytes())?;
    expect(&mut reader, 250, "RCPT TO")?;
    writer.write_all(b"DATA\r\n")?;
    expect(&mut reader, 354, "DATA")?;
    let mut data = Vec::with_capacity(message.len() + 64);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    writer.write_all(&data)?;
    expect(&mut reader, 250, "end of data")?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(())
}

/// A plain-text report message from the relay to `account`.
pub fn report_message(domain: &str, account: &str, subject: &str, body: &str, now: std::time::SystemTime) -> Vec<u8> {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut text = format!(
        "From: Bot daemon <mailer-daemon@{domain}>\r\nTo: <{account}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <bot-report.{secs}.{pid}.{nanos}@{domain}>\r\n{REPORT_HEADER}: install\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        date = rfc2822(secs),
        pid = std::process::id(),
        nanos = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()),
    );
    for line in body.lines() {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// `secs` as an RFC 5322 date in UTC.
fn rfc2822(secs: u64) -> String {
    use chatmail_config::calendar::{civil_from_days, MONTH_ABBREVIATIONS};
    // 1970-01-01 was a Thursday.
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTH_ABBREVIATIONS[month as usize - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_795_435_200), "Mon, 23 Nov 2026 12:00:00 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn report_is_marked() {
        let text = String::from_utf8(report_message("chat.example", "bot@chat.example", "Bot installed: echo", "a\nb", std::time::UNIX_EPOCH)).expect("utf8");
        assert!(text.contains("\r\nChatmail-Bot-Report: install\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\na\r\nb\r\n"), "{text}");
    }
}
