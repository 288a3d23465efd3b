//! A deliberately small HTTP/1.1 server side: one request per connection
//! (every response says `Connection: close`), hard limits on the request
//! line and header size, and no request body is ever needed (the only POST,
//! `/new`, ignores its body). Parsing is pure so that it can be tested
//! without sockets.

use std::fmt::Write as _;

/// Longest request line (method, target, version) accepted.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Most bytes of request line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Largest declared request body accepted (and then ignored).
pub const MAX_BODY: u64 = 16 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path of the target, without query string (`/new`).
    pub path: String,
    /// `(1, 0)` or `(1, 1)`.
    pub version: (u8, u8),
    /// Header names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request head is refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP syntax, or ambiguous framing.
    Malformed(&'static str),
    /// 414: the request line is longer than [`MAX_REQUEST_LINE`].
    RequestLineTooLong,
    /// 431: the head is larger than [`MAX_HEAD`] or has too many lines.
    HeadTooLarge,
    /// 413: the declared body is larger than [`MAX_BODY`].
    BodyTooLarge,
    /// 501: a transfer coding other than chunked.
    UnsupportedTransferCoding,
    /// 505: not HTTP/1.0 or HTTP/1.1.
    Version,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::RequestLineTooLong => 414,
            HeadError::HeadTooLarge => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::Version => 505,
        }
    }

    /// A short word for the logs.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed(why) => why,
            HeadError::RequestLineTooLong => "request-line-too-long",
            HeadError::HeadTooLarge => "head-too-large",
            HeadError::BodyTooLarge => "body-too-large",
            HeadError::UnsupportedTransferCoding => "transfer-coding",
            HeadError::Version => "http-version",
        }
    }
}

/// Looks at the bytes received so far. `Ok(Some(n))`: the head is complete
/// and ends after `n` bytes; `Ok(None)`: more bytes are needed; `Err`: the
/// head is already too large, whatever follows.
pub fn head_complete(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    // Empty lines before the request line are skipped (RFC 9112, 2.2).
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let mut line_start = start;
    let mut first_line = true;
    while let Some(offset) = buf[line_start..].iter().position(|&b| b == b'\n') {
        let line_end = line_start + offset;
        if first_line && line_end - start > MAX_REQUEST_LINE {
            return Err(HeadError::RequestLineTooLong);
        }
        first_line = false;
        let line = &buf[line_start..line_end];
        if line.is_empty() || line == b"\r" {
            let end = line_end + 1;
            return if end > MAX_HEAD { Err(HeadError::HeadTooLarge) } else { Ok(Some(end)) };
        }
        line_start = line_end + 1;
    }
    if first_line && buf.len() - start > MAX_REQUEST_LINE {
        return Err(HeadError::RequestLineTooLong);
    }
    if buf.len() >= MAX_HEAD {
        return Err(HeadError::HeadTooLarge);
    }
    Ok(None)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a complete head (as delimited by [`head_complete`]).
pub fn parse_head(head: &[u8]) -> Result<Request, HeadError> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(head.len());
    let mut lines = head[start..].split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().ok_or(HeadError::Malformed("empty-request"))?;
    if request_line.len() > MAX_REQUEST_LINE {
        return Err(HeadError::RequestLineTooLong);
    }
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("bad-request-line"));
    };
    if method.is_empty() || method.len() > 32 || !method.iter().all(|&b| is_token_byte(b)) {
        return Err(HeadError::Malformed("bad-method"));
    }
    let version = match version {
        b"HTTP/1.1" => (1, 1),
        b"HTTP/1.0" => (1, 0),
        v if v.starts_with(b"HTTP/") => return Err(HeadError::Version),
        _ => return Err(HeadError::Malformed("bad-request-line")),
    };
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(HeadError::Malformed("bad-target"));
    }
    let path = target_path(target)?;

    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HeadError::HeadTooLarge);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HeadError::Malformed("folded-header"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Malformed("bad-header"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(HeadError::Malformed("bad-header"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Malformed("bad-header"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value).trim_matches([' ', '\t']).to_owned();
        headers.push((name, value));
    }
    let request = Request { method: String::from_utf8_lossy(method).into_owned(), path, version, headers };
    check_framing(&request)?;
    Ok(request)
}

/// The path of an origin-form (`/a?b`) or absolute-form
/// (`https://host/a?b`) target, without the query.
fn target_path(target: &[u8]) -> Result<String, HeadError> {
    let text = std::str::from_utf8(target).map_err(|_| HeadError::Malformed("bad-target"))?;
    let path = if text.starts_with('/') {
        text
    } else if let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err(HeadError::Malformed("bad-target"));
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Ok(if path.is_empty() { "/".to_owned() } else { path.to_owned() })
}

/// Refuses heads whose framing is ambiguous or unsupported. Bodies are
/// never read (one request per connection), but a request smuggling
/// attempt or a huge declared upload deserves a clear refusal.
fn check_framing(request: &Request) -> Result<(), HeadError> {
    let lengths: Vec<&str> =
        request.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    let codings: Vec<&str> =
        request.headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.as_str()).collect();
    if !lengths.is_empty() && !codings.is_empty() {
        return Err(HeadError::Malformed("length-and-coding"));
    }
    if let Some(first) = lengths.first() {
        let mut values = lengths.iter().flat_map(|v| v.split(',')).map(str::trim);
        if values.clone().any(|v| v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit())) {
            return Err(HeadError::Malformed("bad-content-length"));
        }
        let first_value = first.split(',').next().unwrap_or("").trim();
        if !values.all(|v| v == first_value) {
            return Err(HeadError::Malformed("bad-content-length"));
        }
        let length: u64 = first_value.parse().map_err(|_| HeadError::Malformed("bad-content-length"))?;
        if length > MAX_BODY {
            return Err(HeadError::BodyTooLarge);
        }
    }
    if !codings.is_empty() {
        if request.version == (1, 0) {
            return Err(HeadError::Malformed("coding-in-http-1.0"));
        }
        let all: Vec<String> =
            codings.iter().flat_map(|v| v.split(',')).map(|c| c.trim().to_ascii_lowercase()).collect();
        if all.last().map(String::as_str) != Some("chunked") || all.iter().filter(|c| *c == "chunked").count() != 1 {
            return Err(HeadError::UnsupportedTransferCoding);
        }
        if all.iter().any(|c| c != "chunked") {
            return Err(HeadError::UnsupportedTransferCoding);
        }
    }
    let hosts = request.headers.iter().filter(|(n, _)| n == "host").count();
    if hosts > 1 || (request.version == (1, 1) && hosts == 0) {
        return Err(HeadError::Malformed("host-header"));
    }
    Ok(())
}

/// A response; serialized with `Content-Length` and `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("Content-Type", content_type.to_owned())], body: body.into() }
    }

    pub fn html(status: u16, body: String) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string();
        body.push('\n');
        Response::new(status, "application/json", body).with("Cache-Control", "no-store")
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The bytes on the wire; without the body for a HEAD request.
    pub fn serialize(&self, head_only: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        for (name, value) in &self.headers {
            // Values are ours, but never let one split the head.
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len());
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, HeadError> {
        let end = head_complete(text.as_bytes())?.ok_or(HeadError::Malformed("incomplete"))?;
        parse_head(&text.as_bytes()[..end])
    }

    #[test]
    fn simple_requests() {
        let r = parse("POST /new HTTP/1.1\r\nHost: chat.example\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.version), ("POST", "/new", (1, 1)));
        assert_eq!(r.header("host"), Some("chat.example"));
        let r = parse("GET /info.html?x=1#y HTTP/1.0\n\n").unwrap();
        assert_eq!((r.path.as_str(), r.version), ("/info.html", (1, 0)));
        let r = parse("\r\nGET https://chat.example/new?q HTTP/1.1\r\nhost:  x \r\n\r\n").unwrap();
        assert_eq!(r.path, "/new");
        assert_eq!(r.header("host"), Some("x"));
        let r = parse("GET https://chat.example HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.path, "/");
        let r = parse("POST /new HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    }

    #[test]
    fn incomplete_and_complete() {
        assert_eq!(head_complete(b""), Ok(None));
        assert_eq!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY"), Ok(Some(27)));
        assert_eq!(head_complete(b"\r\n\r\n"), Ok(None));
    }

    #[test]
    fn malformed_requests() {
        let table: &[(&str, u16)] = &[
            ("GET /\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
            ("G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            ("GET / FTP/1.0\r\nHost: x\r\n\r\n", 400),
            ("GET new HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET /é HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400),
            ("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            ("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 16385\r\n\r\n", 413),
            ("POST /new HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("POST /new HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501),
            ("POST /new HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ];
        for (text, status) in table {
            assert_eq!(parse(text).map_err(HeadError::status).err(), Some(*status), "{text:?}");
        }
        // Equal repeated lengths are fine.
        assert!(parse("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n").is_ok());
        assert!(parse("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 16384\r\n\r\n").is_ok());
    }

    #[test]
    fn size_limits() {
        // A request line longer than the limit is refused before its end arrives.
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(head_complete(long_line.as_bytes()), Err(HeadError::RequestLineTooLong));
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(head_complete(long_line.as_bytes()), Err(HeadError::RequestLineTooLong));
        // Just under the limit is fine.
        let ok = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_REQUEST_LINE - 15));
        assert!(parse(&ok).is_ok());
        // A head that never ends.
        let endless = format!("GET / HTTP/1.1\r\n{}", "X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n".repeat(MAX_HEAD / 20));
        assert_eq!(head_complete(endless.as_bytes()), Err(HeadError::HeadTooLarge));
        // A complete head that is too large.
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head_complete(big.as_bytes()), Err(HeadError::HeadTooLarge));
        // Too many header lines.
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS));
        assert_eq!(parse(&many).map_err(HeadError::status).err(), Some(431));
        // Leading empty lines do not hide a long request line.
        let sneaky = format!("{}GET /{}", "\r\n".repeat(10), "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(head_complete(sneaky.as_bytes()), Err(HeadError::RequestLineTooLong));
    }

    #[test]
    fn responses() {
        let r = Response::text(404, "not found").with("Allow", "GET\r\nX-Evil: 1");
        let wire = String::from_utf8(r.serialize(false)).unwrap();
        assert!(wire.starts_with("HTTP/1.1 404 Not Found\r\n"), "{wire}");
        assert!(wire.contains("\r\nAllow: GETX-Evil: 1\r\n"), "{wire}");
        assert!(wire.contains("\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n"), "{wire}");
        let head = String::from_utf8(r.serialize(true)).unwrap();
        assert!(head.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"), "{head}");
    }
}
