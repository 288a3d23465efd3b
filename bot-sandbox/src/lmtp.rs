//! The daemon's mail clients: its own messages (install reports) go to an
//! account through Dovecot's LMTP socket, so quota, indexes and the plugin
//! see them like any delivery; the bots' messages go out through the
//! relay's SMTP submission service, as any client's would.

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

/// `message` dot-stuffed and terminated for the DATA phase.
fn data_phase(message: &[u8]) -> Vec<u8> {
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
    data
}

fn connect(socket: &Path) -> io::Result<(UnixStream, BufReader<UnixStream>)> {
    let stream = UnixStream::connect(socket).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let writer = stream.try_clone()?;
    Ok((writer, BufReader::new(stream)))
}

/// Connects to the LMTP or SMTP server at `socket`, says `hello` (`LHLO` or
/// `EHLO`) and returns the reply's text (the server's extensions): what
/// `chatmail-bots check` asks of the sockets it needs.
pub fn probe(socket: &Path, hello: &str) -> io::Result<String> {
    let (mut writer, mut reader) = connect(socket)?;
    let (code, text) = reply(&mut reader)?;
    if code != 220 {
        return Err(io::Error::other(format!("greeting: {code} {text}")));
    }
    writer.write_all(format!("{hello} chatmail-bots\r\n").as_bytes())?;
    let (code, text) = reply(&mut reader)?;
    let _ = writer.write_all(b"QUIT\r\n");
    if code == 250 {
        Ok(text)
    } else {
        Err(io::Error::other(format!("{hello}: {code} {text}")))
    }
}

/// Delivers `message` (CRLF lines) to `recipient` via the socket at `socket`.
pub fn deliver(socket: &Path, recipient: &str, message: &[u8]) -> io::Result<()> {
    let (mut writer, mut reader) = connect(socket)?;
    expect(&mut reader, 220, "greeting")?;
    writer.write_all(b"LHLO chatmail-bots\r\n")?;
    expect(&mut reader, 250, "LHLO")?;
    writer.write_all(b"MAIL FROM:<>\r\n")?;
    expect(&mut reader, 250, "MAIL FROM")?;
    writer.write_all(format!("RCPT TO:<{recipient}>\r\n").as_bytes())?;
    expect(&mut reader, 250, "RCPT TO")?;
    writer.write_all(b"DATA\r\n")?;
    expect(&mut reader, 354, "DATA")?;
    writer.write_all(&data_phase(message))?;
    expect(&mut reader, 250, "end of data")?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(())
}

/// Why a submission did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Try again later: a 4xx reply (rate limit, milter tempfail) or no
    /// connection.
    Temporary(String),
    /// The relay refused the mail for good (5xx): retrying cannot help.
    Permanent(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Temporary(text) => write!(f, "temporary: {text}"),
            SubmitError::Permanent(text) => write!(f, "permanent: {text}"),
        }
    }
}

/// Submits `message` from `from` to `recipients` through the relay's own
/// SMTP submission service at `socket`, logged in as `from` with its bot
/// token: the milter checks the mail and the relay's rate limits apply as
/// for any client. Recipients refused for good are returned (the others
/// got the mail); a refusal of the mail itself is an error.
pub fn submit(socket: &Path, from: &str, token: &str, recipients: &[String], message: &[u8]) -> Result<Vec<(String, String)>, SubmitError> {
    let temporary = |e: io::Error| SubmitError::Temporary(e.to_string());
    let (mut writer, mut reader) = connect(socket).map_err(temporary)?;
    let mut step = |command: &[u8], want: u16, what: &str| -> Result<(), SubmitError> {
        if !command.is_empty() {
            writer.write_all(command).map_err(temporary)?;
        }
        let (code, text) = reply(&mut reader).map_err(temporary)?;
        match code {
            c if c == want => Ok(()),
            400..=499 => Err(SubmitError::Temporary(format!("{what}: {code} {text}"))),
            _ => Err(SubmitError::Permanent(format!("{what}: {code} {text}"))),
        }
    };
    step(b"", 220, "greeting")?;
    step(b"EHLO chatmail-bots\r\n", 250, "EHLO")?;
    let credentials = chatmail_config::base64::encode(format!("\0{from}\0{token}").as_bytes());
    // A refused login is a setup problem (token file, auth socket) the
    // operator fixes: keep the mail.
    step(format!("AUTH PLAIN {credentials}\r\n").as_bytes(), 235, "AUTH").map_err(|e| match e {
        SubmitError::Permanent(text) => SubmitError::Temporary(text),
        temporary => temporary,
    })?;
    step(format!("MAIL FROM:<{from}>\r\n").as_bytes(), 250, "MAIL FROM")?;
    let mut refused = Vec::new();
    let mut accepted = 0;
    for recipient in recipients {
        match step(format!("RCPT TO:<{recipient}>\r\n").as_bytes(), 250, "RCPT TO") {
            Ok(()) => accepted += 1,
            Err(SubmitError::Permanent(text)) => refused.push((recipient.clone(), text)),
            Err(temporary) => return Err(temporary),
        }
    }
    if accepted == 0 {
        return Err(SubmitError::Permanent(format!("every recipient refused: {refused:?}")));
    }
    step(b"DATA\r\n", 354, "DATA")?;
    step(&data_phase(message), 250, "end of data")?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(refused)
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
pub(crate) fn rfc2822(secs: u64) -> String {
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
