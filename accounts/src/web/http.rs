//! The HTTP/1.1 side that hyper does not do the way this server wants.
//! hyper parses requests and writes responses; before it sees a byte, a
//! small gate ([`head_complete`]) waits for the whole request head under
//! this server's limits, so that clients get the answers they always got
//! where hyper would answer otherwise or only close the connection: 414
//! for a long request line (hyper: 431), 505 for another HTTP version
//! (hyper: 400), 400 for a head with both `Content-Length` and
//! `Transfer-Encoding` (hyper: drops the length and reads on). What hyper
//! hands over becomes the app's [`Request`], checked once more
//! ([`check_request`]); the app's [`Response`] becomes hyper's.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use hyper::{StatusCode, Uri, Version};

/// Longest request line (method, target, version) accepted.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Most bytes of request line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Largest request body accepted (and then ignored).
pub const MAX_BODY: u64 = 16 * 1024;

/// A request head as the app sees it.
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

    /// The app's view of a request head hyper parsed.
    pub fn from_hyper(head: &hyper::http::request::Parts) -> Request {
        let version = if head.version == Version::HTTP_10 { (1, 0) } else { (1, 1) };
        let headers = head
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).trim().to_owned()))
            .collect();
        Request { method: head.method.as_str().to_owned(), path: request_path(&head.uri), version, headers }
    }
}

/// The path of an origin-form (`/a?b`) or absolute-form
/// (`https://host/a?b`) target, without the query.
pub fn request_path(uri: &Uri) -> String {
    let path = uri.path();
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

/// Why a request is refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP syntax, or ambiguous framing.
    Malformed(&'static str),
    /// 414: the request line is longer than [`MAX_REQUEST_LINE`].
    RequestLineTooLong,
    /// 431: the head is larger than [`MAX_HEAD`] or has too many lines.
    HeadTooLarge,
    /// 413: the body is larger than [`MAX_BODY`].
    BodyTooLarge,
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
            HeadError::Version => "http-version",
        }
    }
}

/// The gate in front of hyper: looks at the bytes received so far.
/// `Ok(Some(n))`: the head is complete and ends after `n` bytes; `Ok(None)`:
/// more bytes are needed; `Err`: the head breaks a limit (whatever
/// follows) or is one hyper would answer differently. Everything else
/// about the syntax is hyper's to judge.
pub fn head_complete(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    // Empty lines before the request line are skipped (RFC 9112, 2.2).
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let mut line_start = start;
    let mut first_line = true;
    let (mut headers, mut length, mut coding) = (0, false, false);
    while let Some(offset) = buf[line_start..].iter().position(|&b| b == b'\n') {
        let line_end = line_start + offset;
        let line = &buf[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if first_line {
            if line_end - start > MAX_REQUEST_LINE {
                return Err(HeadError::RequestLineTooLong);
            }
            check_version(line)?;
            first_line = false;
        } else if line.is_empty() {
            let end = line_end + 1;
            return if end > MAX_HEAD { Err(HeadError::HeadTooLarge) } else { Ok(Some(end)) };
        } else {
            headers += 1;
            if headers > MAX_HEADERS {
                return Err(HeadError::HeadTooLarge);
            }
            let name = line.split(|&b| b == b':').next().unwrap_or(line);
            length |= name.eq_ignore_ascii_case(b"content-length");
            coding |= name.eq_ignore_ascii_case(b"transfer-encoding");
            if length && coding {
                // A request smuggling attempt, or a broken client.
                return Err(HeadError::Malformed("length-and-coding"));
            }
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

/// A request line ending in another HTTP version than 1.0 or 1.1.
fn check_version(request_line: &[u8]) -> Result<(), HeadError> {
    let version = request_line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    if version.starts_with(b"HTTP/") && version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(HeadError::Version);
    }
    Ok(())
}

/// What hyper accepts but this server does not: a missing or repeated
/// Host, a declared body over [`MAX_BODY`]. (hyper has already refused
/// malformed lengths and transfer codings other than chunked.)
pub fn check_request(head: &hyper::http::request::Parts) -> Result<(), HeadError> {
    let hosts = head.headers.get_all(HOST).iter().count();
    if hosts > 1 || (head.version == Version::HTTP_11 && hosts == 0) {
        return Err(HeadError::Malformed("host-header"));
    }
    let declared = head.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next());
    if let Some(length) = declared.and_then(|v| v.trim().parse::<u64>().ok()) {
        if length > MAX_BODY {
            return Err(HeadError::BodyTooLarge);
        }
    }
    Ok(())
}

/// A response; `Content-Length` and `Connection: close` are added on the
/// way out.
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

    /// hyper's response; without the body for a HEAD request (but with
    /// the length it would have). A header value that cannot be one (our
    /// own values, so a bug) is left out rather than failing the answer.
    pub fn into_hyper(self, head_only: bool) -> hyper::Response<Full<Bytes>> {
        let length = self.body.len();
        let body = if head_only { Bytes::new() } else { Bytes::from(self.body) };
        let mut response = hyper::Response::new(Full::new(body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                headers.append(name, value);
            }
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// The bytes of an answer the gate gives itself, before hyper has
    /// seen the request.
    pub fn serialize_refusal(&self) -> Vec<u8> {
        let reason = StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown");
        let mut wire = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            wire.push_str(&format!("{name}: {value}\r\n"));
        }
        wire.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
        let mut wire = wire.into_bytes();
        wire.extend_from_slice(&self.body);
        wire
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(request: hyper::http::request::Builder) -> hyper::http::request::Parts {
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn incomplete_and_complete() {
        assert_eq!(head_complete(b""), Ok(None));
        assert_eq!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY"), Ok(Some(27)));
        assert_eq!(head_complete(b"\r\n\r\n"), Ok(None));
        assert_eq!(head_complete(b"\r\nGET / HTTP/1.0\n\n"), Ok(Some(18)));
        // Syntax is hyper's to judge.
        assert_eq!(head_complete(b"HELLO\r\n\r\n"), Ok(Some(9)));
    }

    #[test]
    fn what_the_gate_refuses_itself() {
        let table: &[(&str, u16)] = &[
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\n", 505),
            ("POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST /new HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-LENGTH: 5\r\n", 400),
        ];
        for (text, status) in table {
            assert_eq!(head_complete(text.as_bytes()).map_err(HeadError::status), Err(*status), "{text:?}");
        }
        assert!(head_complete(b"GET / FTP/1.0\r\nHost: x\r\n\r\n").unwrap().is_some());
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
        assert!(head_complete(ok.as_bytes()).unwrap().is_some());
        // A head that never ends.
        let endless = format!("GET / HTTP/1.1\r\n{}", "X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n".repeat(MAX_HEAD / 40));
        assert_eq!(head_complete(endless.as_bytes()), Err(HeadError::HeadTooLarge));
        // A complete head that is too large.
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head_complete(big.as_bytes()), Err(HeadError::HeadTooLarge));
        // Too many header lines; just enough is fine.
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS));
        assert_eq!(head_complete(many.as_bytes()).map_err(HeadError::status), Err(431));
        let enough = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS - 1));
        assert!(head_complete(enough.as_bytes()).unwrap().is_some());
        // Leading empty lines do not hide a long request line.
        let sneaky = format!("{}GET /{}", "\r\n".repeat(10), "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(head_complete(sneaky.as_bytes()), Err(HeadError::RequestLineTooLong));
    }

    #[test]
    fn target_paths() {
        let path = |target: &str| request_path(&target.parse().unwrap());
        assert_eq!(path("/info.html?x=1"), "/info.html");
        assert_eq!(path("/new"), "/new");
        assert_eq!(path("https://chat.example/new?q"), "/new");
        assert_eq!(path("https://chat.example"), "/");
        assert_eq!(path("*"), "*");
    }

    #[test]
    fn requests_from_hyper() {
        let head = parts(hyper::Request::post("https://chat.example/new?x").header("Host", "chat.example").header("X-A", " b "));
        let request = Request::from_hyper(&head);
        assert_eq!((request.method.as_str(), request.path.as_str(), request.version), ("POST", "/new", (1, 1)));
        assert_eq!(request.header("host"), Some("chat.example"));
        assert_eq!(request.header("x-a"), Some("b"));
        assert_eq!(check_request(&head), Ok(()));
        let old = parts(hyper::Request::get("/").version(Version::HTTP_10));
        assert_eq!(Request::from_hyper(&old).version, (1, 0));
        assert_eq!(check_request(&old), Ok(()));

        let refused = [
            (parts(hyper::Request::get("/")), 400),
            (parts(hyper::Request::get("/").header("Host", "x").header("Host", "y")), 400),
            (parts(hyper::Request::post("/new").header("Host", "x").header("Content-Length", "16385")), 413),
        ];
        for (head, status) in refused {
            assert_eq!(check_request(&head).map_err(HeadError::status), Err(status), "{head:?}");
        }
        let fits = parts(hyper::Request::post("/new").header("Host", "x").header("Content-Length", "16384"));
        assert_eq!(check_request(&fits), Ok(()));
    }

    #[test]
    fn responses() {
        let r = Response::text(404, "not found").with("Allow", "GET\r\nX-Evil: 1");
        let hyper = r.clone().into_hyper(false);
        assert_eq!(hyper.status(), 404);
        assert_eq!(hyper.headers()["allow"], "GETX-Evil: 1");
        assert_eq!(hyper.headers()["content-length"], "10");
        assert_eq!(hyper.headers()["connection"], "close");
        assert_eq!(hyper.headers()["content-type"], "text/plain; charset=utf-8");
        let head = r.clone().into_hyper(true);
        assert_eq!(head.headers()["content-length"], "10");
        assert_eq!(hyper::body::Body::size_hint(head.body()).exact(), Some(0));

        let wire = String::from_utf8(r.serialize_refusal()).unwrap();
        assert!(wire.starts_with("HTTP/1.1 404 Not Found\r\n"), "{wire}");
        assert!(wire.contains("\r\nAllow: GETX-Evil: 1\r\n"), "{wire}");
        assert!(wire.ends_with("\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n"), "{wire}");
    }
}
