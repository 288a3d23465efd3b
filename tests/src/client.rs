//! Minimal SMTP and IMAP clients for tests: enough to log in over STARTTLS
//! or implicit TLS, submit mail, and read a mailbox, with every server reply
//! visible to the test (codes and texts are what the tests check).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::error::{Context, Error, Result};
use crate::tls::pinned_client_config;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP (upgrade later with STARTTLS).
    Plain,
    /// TLS from the first byte.
    Implicit,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while switching from plain to TLS.
    Switching,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Switching => Err(io::Error::other("connection is switching to TLS")),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Switching => Err(io::Error::other("connection is switching to TLS")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Switching => Ok(()),
        }
    }
}

/// A line-oriented connection that can switch to TLS.
struct Connection {
    reader: BufReader<Stream>,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.reader.get_ref() {
            Stream::Plain(_) => "plain",
            Stream::Tls(_) => "tls",
            Stream::Switching => "switching",
        };
        write!(f, "Connection({kind})")
    }
}

impl Connection {
    /// Connects to 127.0.0.1:`port`, from the loopback address `source`
    /// if given (any 127.0.0.0/8 address works on Linux): the servers then
    /// see a client of that IP, which keeps per-IP limits and penalties of
    /// different tests apart.
    fn open_from(source: Option<std::net::Ipv4Addr>, port: u16, security: Security, cert_der: &[u8]) -> Result<Connection> {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = match source {
            None => TcpStream::connect(target).context(|| format!("connecting to {target}"))?,
            Some(ip) => {
                let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).context(|| "making a socket".into())?;
                socket.bind(&std::net::SocketAddr::from((ip, 0)).into()).context(|| format!("binding to {ip}"))?;
                socket.connect(&target.into()).context(|| format!("connecting to {target} from {ip}"))?;
                socket.into()
            }
        };
        tcp.set_read_timeout(Some(IO_TIMEOUT)).context(|| "setting a read timeout".into())?;
        tcp.set_write_timeout(Some(IO_TIMEOUT)).context(|| "setting a write timeout".into())?;
        tcp.set_nodelay(true).context(|| "setting TCP_NODELAY".into())?;
        let tls = pinned_client_config(cert_der);
        let mut conn = Connection { reader: BufReader::new(Stream::Plain(tcp)), tls };
        if security == Security::Implicit {
            conn.upgrade()?;
        }
        Ok(conn)
    }

    fn upgrade(&mut self) -> Result<()> {
        if !self.reader.buffer().is_empty() {
            return Err(Error::new("server sent data before the TLS handshake"));
        }
        let old = std::mem::replace(self.reader.get_mut(), Stream::Switching);
        let Stream::Plain(tcp) = old else {
            return Err(Error::new("connection is already encrypted"));
        };
        let name = ServerName::try_from("relay.invalid").map_err(|e| Error::new(e.to_string()))?;
        let client = ClientConnection::new(self.tls.clone(), name).context(|| "starting TLS".into())?;
        let mut tls = StreamOwned::new(client, tcp);
        // Complete the handshake now so certificate problems show up here.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).context(|| "TLS handshake".into())?;
        }
        *self.reader.get_mut() = Stream::Tls(Box::new(tls));
        Ok(())
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        let tcp = match self.reader.get_ref() {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
            Stream::Switching => return Err(Error::new("connection is switching to TLS")),
        };
        tcp.set_read_timeout(Some(timeout)).context(|| "setting a read timeout".into())?;
        tcp.set_write_timeout(Some(timeout)).context(|| "setting a write timeout".into())
    }

    fn is_tls(&self) -> bool {
        matches!(self.reader.get_ref(), Stream::Tls(_))
    }

    fn send(&mut self, line: &str) -> Result<()> {
        // One write per command: separate writes for the line and its CRLF
        // become separate TCP segments and stall on delayed ACKs.
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(&buf).context(|| "sending".into())?;
        stream.flush().context(|| "sending".into())
    }

    fn send_raw(&mut self, data: &[u8]) -> Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(data).context(|| "sending".into())?;
        stream.flush().context(|| "sending".into())
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).context(|| "reading from the server".into())?;
        if n == 0 {
            return Err(Error::new("server closed the connection"));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_exact(&mut self, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf).context(|| "reading a literal".into())?;
        Ok(buf)
    }
}

/// An SMTP reply: the code and the text of every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The whole reply as the server sent it, lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{} {l}", self.code)).collect::<Vec<_>>().join("\n")
    }

    /// Fails unless the code is `code`.
    pub fn expect(self, code: u16) -> Result<SmtpReply> {
        if self.code == code {
            Ok(self)
        } else {
            Err(Error::new(format!("expected SMTP {code}, got: {}", self.text())))
        }
    }
}

/// An SMTP session.
#[derive(Debug)]
pub struct SmtpClient {
    conn: Connection,
    pub greeting: SmtpReply,
}

impl SmtpClient {
    pub fn connect(port: u16, security: Security, cert_der: &[u8]) -> Result<SmtpClient> {
        SmtpClient::connect_from(None, port, security, cert_der)
    }

    /// Connects from the loopback address `source` (see `ImapClient::connect_from`).
    pub fn connect_from(source: Option<std::net::Ipv4Addr>, port: u16, security: Security, cert_der: &[u8]) -> Result<SmtpClient> {
        let mut conn = Connection::open_from(source, port, security, cert_der)?;
        let greeting = read_smtp_reply(&mut conn)?;
        Ok(SmtpClient { conn, greeting })
    }

    /// Sends one command line and reads the reply.
    pub fn command(&mut self, line: &str) -> Result<SmtpReply> {
        self.conn.send(line)?;
        read_smtp_reply(&mut self.conn)
    }

    pub fn ehlo(&mut self, name: &str) -> Result<SmtpReply> {
        self.command(&format!("EHLO {name}"))
    }

    pub fn starttls(&mut self) -> Result<()> {
        self.command("STARTTLS")?.expect(220)?;
        self.conn.upgrade()
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Changes the read and write timeout (default 30 s), e.g. for huge messages.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.conn.set_timeout(timeout)
    }

    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<SmtpReply> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}"))
    }

    /// Sends the message body after DATA (dot-stuffed, CRLF line ends) and
    /// returns the final reply.
    pub fn data(&mut self, message: &str) -> Result<SmtpReply> {
        let reply = self.command("DATA")?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut body = String::with_capacity(message.len() + 64);
        for line in message.lines() {
            if line.starts_with('.') {
                body.push('.');
            }
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.conn.send_raw(body.as_bytes())?;
        read_smtp_reply(&mut self.conn)
    }

    /// MAIL FROM, RCPT TO for each recipient, DATA; returns the first reply
    /// that is not a success, or the reply to the message.
    pub fn transaction(&mut self, from: &str, to: &[&str], message: &str) -> Result<SmtpReply> {
        let reply = self.command(&format!("MAIL FROM:<{from}>"))?;
        if reply.code != 250 {
            return Ok(reply);
        }
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>"))?;
            if reply.code != 250 {
                return Ok(reply);
            }
        }
        self.data(message)
    }

    /// Like [`SmtpClient::transaction`], but any refusal is an error.
    pub fn send_mail(&mut self, from: &str, to: &[&str], message: &str) -> Result<SmtpReply> {
        self.transaction(from, to, message)?.expect(250)
    }

    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}

fn read_smtp_reply(conn: &mut Connection) -> Result<SmtpReply> {
    let mut lines = Vec::new();
    loop {
        let line = conn.read_line()?;
        let (code, rest) = line.split_at_checked(3).ok_or_else(|| Error::new(format!("bad SMTP reply line {line:?}")))?;
        let code: u16 = code.parse().map_err(|_| Error::new(format!("bad SMTP reply line {line:?}")))?;
        let more = rest.starts_with('-');
        lines.push(rest.get(1..).unwrap_or("").to_owned());
        if !more {
            return Ok(SmtpReply { code, lines });
        }
    }
}

/// The end of an IMAP command: its status and every untagged response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapResponse {
    /// `OK`, `NO` or `BAD`; `BYE` when the server hung up after an
    /// untagged BYE instead of answering (the BYE's text is then `text`).
    pub status: String,
    /// Text after the status in the tagged line.
    pub text: String,
    /// Untagged responses; literals are inlined.
    pub untagged: Vec<String>,
}

impl ImapResponse {
    pub fn ok(self) -> Result<ImapResponse> {
        if self.status == "OK" {
            Ok(self)
        } else {
            Err(Error::new(format!("IMAP command failed: {} {}", self.status, self.text)))
        }
    }
}

/// An IMAP session.
#[derive(Debug)]
pub struct ImapClient {
    conn: Connection,
    next_tag: u32,
    /// Tag of the IDLE command in progress.
    idle_tag: Option<String>,
    pub greeting: String,
}

impl ImapClient {
    pub fn connect(port: u16, security: Security, cert_der: &[u8]) -> Result<ImapClient> {
        ImapClient::connect_from(None, port, security, cert_der)
    }

    /// Connects from the loopback address `source` (e.g. 127.0.0.7): Dovecot
    /// then sees a client of that IP, so per-IP account limits and failed-login
    /// penalties of one test do not slow down another.
    pub fn connect_from(source: Option<std::net::Ipv4Addr>, port: u16, security: Security, cert_der: &[u8]) -> Result<ImapClient> {
        let mut conn = Connection::open_from(source, port, security, cert_der)?;
        let greeting = conn.read_line()?;
        if !greeting.starts_with("* OK") {
            return Err(Error::new(format!("unexpected IMAP greeting {greeting:?}")));
        }
        Ok(ImapClient { conn, next_tag: 1, idle_tag: None, greeting })
    }

    /// Sends one command and reads up to its tagged completion.
    pub fn command(&mut self, command: &str) -> Result<ImapResponse> {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.conn.send(&format!("{tag} {command}"))?;
        let mut untagged: Vec<String> = Vec::new();
        loop {
            let mut line = match self.conn.read_line() {
                Ok(line) => line,
                // The server said BYE and hung up before the tagged answer.
                Err(e) => match untagged.iter().find_map(|l| l.strip_prefix("* BYE ")) {
                    Some(text) => return Ok(ImapResponse { status: "BYE".into(), text: text.to_owned(), untagged: untagged.clone() }),
                    None => return Err(e),
                },
            };
            // A line ending in {N} is followed by N bytes of literal data.
            while let Some(len) = literal_length(&line) {
                let data = self.conn.read_exact(len)?;
                line.push_str("\r\n");
                line.push_str(&String::from_utf8_lossy(&data));
                line.push_str(&self.conn.read_line()?);
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
                return Ok(ImapResponse { status: status.to_owned(), text: text.to_owned(), untagged });
            }
            untagged.push(line);
        }
    }

    pub fn starttls(&mut self) -> Result<()> {
        self.command("STARTTLS")?.ok()?;
        self.conn.upgrade()
    }

    pub fn login(&mut self, user: &str, password: &str) -> Result<ImapResponse> {
        self.command(&format!("LOGIN {} {}", quote(user), quote(password)))
    }

    /// The capabilities the server announces now.
    pub fn capabilities(&mut self) -> Result<Vec<String>> {
        let response = self.command("CAPABILITY")?.ok()?;
        Ok(response
            .untagged
            .iter()
            .filter_map(|l| l.strip_prefix("* CAPABILITY "))
            .flat_map(|l| l.split(' ').map(str::to_owned))
            .collect())
    }

    /// Full text of every message in the selected mailbox.
    pub fn fetch_all(&mut self) -> Result<Vec<String>> {
        let response = self.command("FETCH 1:* BODY.PEEK[]")?;
        if response.status == "BAD" || response.status == "NO" {
            // An empty mailbox answers "1:*" with an error on some servers.
            return Ok(Vec::new());
        }
        Ok(response
            .untagged
            .into_iter()
            .filter(|l| l.contains(" FETCH "))
            .filter_map(|l| l.split_once("\r\n").map(|(_, body)| body.to_owned()))
            .collect())
    }

    pub fn logout(mut self) {
        let _ = self.command("LOGOUT");
    }

    /// Starts IDLE (RFC 2177) on the selected mailbox: returns the untagged
    /// responses the server sent before its `+` continuation.
    pub fn idle(&mut self) -> Result<Vec<String>> {
        if self.idle_tag.is_some() {
            return Err(Error::new("IDLE is already running"));
        }
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.conn.send(&format!("{tag} IDLE"))?;
        let mut untagged = Vec::new();
        loop {
            let line = self.conn.read_line()?;
            if line.starts_with('+') {
                self.idle_tag = Some(tag);
                return Ok(untagged);
            }
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return Err(Error::new(format!("IDLE refused: {rest}")));
            }
            untagged.push(line);
        }
    }

    /// The next untagged response during IDLE, waiting at most `timeout`
    /// (an error when none comes). Keepalives (`* OK Still here`) are
    /// returned like any other line.
    pub fn idle_wait(&mut self, timeout: Duration) -> Result<String> {
        if self.idle_tag.is_none() {
            return Err(Error::new("not in IDLE"));
        }
        self.conn.set_timeout(timeout)?;
        let line = self.conn.read_line();
        self.conn.set_timeout(IO_TIMEOUT)?;
        line.context(|| format!("waiting {timeout:?} for an untagged response during IDLE"))
    }

    /// During IDLE, reads untagged responses until one says `* N EXISTS`
    /// (waiting at most `timeout` for each) and returns N.
    pub fn idle_wait_exists(&mut self, timeout: Duration) -> Result<u32> {
        loop {
            let line = self.idle_wait(timeout)?;
            if let Some(n) = line.strip_prefix("* ").and_then(|l| l.strip_suffix(" EXISTS")) {
                return n.parse().map_err(|_| Error::new(format!("bad EXISTS response {line:?}")));
            }
        }
    }

    /// Ends IDLE with DONE: the untagged responses that came meanwhile and
    /// the tagged completion.
    pub fn idle_done(&mut self) -> Result<ImapResponse> {
        let tag = self.idle_tag.take().ok_or_else(|| Error::new("not in IDLE"))?;
        self.conn.send("DONE")?;
        let mut untagged = Vec::new();
        loop {
            let line = self.conn.read_line()?;
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
                return Ok(ImapResponse { status: status.to_owned(), text: text.to_owned(), untagged });
            }
            untagged.push(line);
        }
    }
}

/// One HTTPS request without a body to 127.0.0.1:`port` (certificate
/// pinned to `cert_der`), from the loopback address `source` if given:
/// returns the status code and the body.
pub fn https_request(source: Option<std::net::Ipv4Addr>, port: u16, cert_der: &[u8], method: &str, path: &str) -> Result<(u16, String)> {
    let mut conn = Connection::open_from(source, port, Security::Implicit, cert_der)?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    conn.send_raw(request.as_bytes())?;
    let status_line = conn.read_line()?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::new(format!("bad HTTP status line {status_line:?}")))?;
    let mut length = 0;
    loop {
        let line = conn.read_line()?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| Error::new(format!("bad Content-Length {value:?}")))?;
            }
        }
    }
    let body = conn.read_exact(length)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn literal_length(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    let inner = line.get(open + 1..)?.strip_suffix('}')?;
    inner.trim_end_matches('+').parse().ok()
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

pub(crate) use chatmail_config::base64::encode as base64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_length("* 1 FETCH (BODY[] {123}"), Some(123));
        assert_eq!(literal_length("* 1 FETCH (BODY[] {12+}"), Some(12));
        assert_eq!(literal_length("* OK done"), None);
        assert_eq!(literal_length("* OK {x}"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
