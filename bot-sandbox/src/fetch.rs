//! Host-mediated network requests for bots: HTTPS GET to origins the bot's
//! metadata names *and* the operator allows (`bot_allowed_origins`).
//!
//! Bots have no sockets. A bot calls the host function `chatmail.fetch`;
//! the worker passes the URL to the daemon, which hands it to its fetcher
//! helper: a small process the daemon starts before it moves into its
//! empty network namespace, so only the helper can reach the network. The
//! helper checks the origin again, makes one HTTPS request (no redirects,
//! a timeout, a size cap) and answers status and body.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Most requests one run may make.
pub const MAX_FETCHES_PER_RUN: u32 = 10;
/// Largest response body handed to a bot.
pub const MAX_BODY: u64 = 1 << 20;
/// Time for one request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A URL taken apart, once its origin is known to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub origin: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// The origins both lists allow (exact matches, after normalising the
/// default port away).
pub fn allowed_origins(bot: &[String], operator: &[String]) -> Vec<String> {
    let normal = |o: &String| o.trim_end_matches('/').trim_end_matches(":443").to_ascii_lowercase();
    let operator: Vec<String> = operator.iter().map(normal).collect();
    bot.iter().map(normal).filter(|o| operator.contains(o)).collect()
}

/// Checks `url` against `origins`; refusals are plain words for the bot.
pub fn check(url: &str, origins: &[String]) -> Result<Target, String> {
    let rest = url.strip_prefix("https://").ok_or("only https:// URLs")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    if authority.contains('@') || authority.is_empty() {
        return Err("no user info, and a host is needed".into());
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') || path.contains('#') {
        return Err("the path has spaces, control characters or a fragment".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| "bad port")?),
        None => (authority, 443),
    };
    let host = host.to_ascii_lowercase();
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return Err("bad host name".into());
    }
    let origin = if port == 443 { format!("https://{host}") } else { format!("https://{host}:{port}") };
    if !origins.contains(&origin) {
        return Err(format!("{origin} is not an allowed origin for this bot"));
    }
    Ok(Target { origin, host, port, path })
}

/// The TLS setup: the system's CA certificates, plus `extra_ca` if given.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    for path in [Some(system), extra_ca].into_iter().flatten() {
        let certs = match CertificateDer::pem_file_iter(path) {
            Ok(certs) => certs,
            Err(_) if path == system => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads a chunked body (RFC 9112 7.1) up to `max` bytes.
fn read_chunked(reader: &mut impl BufRead, max: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        if body.len() as u64 + size > max {
            return Err(format!("the response is larger than {max} bytes"));
        }
        let mut chunk = vec![0; size as usize];
        reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
        body.extend_from_slice(&chunk);
        let mut end = [0u8; 2];
        reader.read_exact(&mut end).map_err(|e| e.to_string())?;
    }
}

/// One HTTPS GET of `target`: status and body (at most `max` bytes).
pub fn get(target: &Target, tls: Arc<rustls::ClientConfig>, timeout: Duration, max: u64) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let address = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", target.host))?;
    let tcp = TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("connecting to {address}: {e}"))?;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    tcp.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let host_header = if target.port == 443 { target.host.clone() } else { format!("{}:{}", target.host, target.port) };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: chatmail-bots\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        target.path
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("sending: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(|e| format!("reading: {e}"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP response: {:?}", status_line.trim_end()))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(|e| format!("reading headers: {e}"))? == 0 || line.len() > 8192 {
            return Err("bad response headers".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<u64>().map_err(|_| "bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        read_chunked(&mut reader, max)?
    } else {
        if length.is_some_and(|l| l > max) {
            return Err(format!("the response is larger than {max} bytes"));
        }
        let mut body = Vec::new();
        let limit = length.unwrap_or(max + 1).min(max + 1);
        // A server may close without close_notify after the body.
        match reader.take(limit).read_to_end(&mut body) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && length.is_none() => {}
            Err(e) => return Err(format!("reading the body: {e}")),
        }
        if body.len() as u64 > max {
            return Err(format!("the response is larger than {max} bytes"));
        }
        body
    };
    Ok((status, body))
}

/// What the daemon asks its fetcher helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    pub url: String,
    pub origins: Vec<String>,
}

/// The helper's answer line; `len` body bytes follow it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchAnswer {
    /// HTTP status, or 0 with `error`.
    pub status: u16,
    #[serde(default)]
    pub error: Option<String>,
    pub len: u64,
}

/// The helper's main loop: one JSON request per line on stdin, answer and
/// body on stdout, until stdin closes.
pub fn serve_helper(extra_ca: Option<&Path>) -> io::Result<()> {
    let tls = tls_config(extra_ca).map_err(io::Error::other)?;
    let stdin = io::stdin();
    let mut stdout = io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let (answer, body) = match serde_json::from_str::<FetchRequest>(&line) {
            Err(e) => (FetchAnswer { status: 0, error: Some(format!("bad request: {e}")), len: 0 }, Vec::new()),
            Ok(request) => match check(&request.url, &request.origins).and_then(|t| get(&t, Arc::clone(&tls), TIMEOUT, MAX_BODY)) {
                Ok((status, body)) => (FetchAnswer { status, error: None, len: body.len() as u64 }, body),
                Err(e) => (FetchAnswer { status: 0, error: Some(e), len: 0 }, Vec::new()),
            },
        };
        serde_json::to_writer(&mut stdout, &answer).map_err(io::Error::other)?;
        stdout.write_all(b"\n")?;
        stdout.write_all(&body)?;
        stdout.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_intersect() {
        let bot = vec!["https://api.example.org".to_owned(), "https://x.example:8443/".to_owned(), "https://other.org".to_owned()];
        let operator = vec!["https://API.example.org:443".to_owned(), "https://x.example:8443".to_owned()];
        assert_eq!(allowed_origins(&bot, &operator), vec!["https://api.example.org", "https://x.example:8443"]);
        assert!(allowed_origins(&bot, &[]).is_empty(), "nothing unless the operator allows it");
    }

    #[test]
    fn urls() {
        let origins = vec!["https://api.example.org".to_owned(), "https://127.0.0.1:8443".to_owned()];
        let ok = |url: &str, path: &str| {
            let target = check(url, &origins).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.path, path, "{url}");
        };
        ok("https://api.example.org", "/");
        ok("https://api.example.org/v1/x?y=1", "/v1/x?y=1");
        ok("https://API.example.org:443/a", "/a");
        ok("https://api.example.org?q", "/?q");
        ok("https://127.0.0.1:8443/status", "/status");
        for (url, want) in [
            ("http://api.example.org/", "only https"),
            ("https://evil.org/", "not an allowed origin"),
            ("https://api.example.org.evil.org/", "not an allowed origin"),
            ("https://api.example.org:444/", "not an allowed origin"),
            ("https://user@api.example.org/", "no user info"),
            ("https://api.example.org/a b", "spaces"),
            ("https://api.example.org/#x", "fragment"),
            ("https://api.example.org:x/", "bad port"),
            ("https://api.exa mple.org/", "bad host"),
        ] {
            let problem = check(url, &origins).expect_err(url);
            assert!(problem.contains(want), "{url}: {problem}");
        }
    }

    #[test]
    fn chunked_bodies() {
        let mut input = &b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n"[..];
        assert_eq!(read_chunked(&mut input, 100), Ok(b"Wikipedia".to_vec()));
        let mut input = &b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"[..];
        assert!(read_chunked(&mut input, 8).is_err());
    }
}
