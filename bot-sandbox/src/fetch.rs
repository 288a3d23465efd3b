//! Host-mediated network requests for bots: HTTPS GET to origins the bot's
//! metadata names *and* the operator allows (`bot_allowed_origins`).
//!
//! Bots have no sockets. A bot calls the host function `chatmail.fetch`;
//! the worker passes the URL to the daemon, which hands it to its fetcher
//! helper: a small process the daemon starts before it moves into its
//! empty network namespace, so only the helper can reach the network. The
//! helper checks the origin again, makes one HTTPS request (no redirects,
//! a timeout, a size cap) with the relay's HTTPS client
//! (`chatmail_accounts::HttpsClient`) and answers status and body.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::Duration;

use chatmail_accounts::{https_tls_config, HttpsClient};
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

/// One HTTPS GET of `target` with `client`: status and body (at most
/// `max` bytes; a larger body is an error, and reading stops at the cap).
/// Redirects are answered as they are, never followed.
pub async fn get(client: &HttpsClient, target: &Target, max: u64) -> Result<(u16, Vec<u8>), String> {
    let url = format!("{}{}", target.origin, target.path);
    let headers = [("user-agent", "chatmail-bots"), ("accept-encoding", "identity")];
    let answer = client.get(&url, &headers, usize::try_from(max).unwrap_or(usize::MAX)).await?;
    if answer.oversize {
        return Err(format!("the response is larger than {max} bytes"));
    }
    Ok((answer.status, answer.body))
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
/// body on stdout, until stdin closes. Each request runs to its end on a
/// current-thread runtime before the next line is read; kept-alive
/// connections are reused between requests to the same origin.
pub fn serve_helper(extra_ca: Option<&Path>) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Without usable CA certificates every fetch fails, with the reason;
    // the daemon keeps its helper (bots without network are unaffected).
    let client = https_tls_config(extra_ca).map(|tls| HttpsClient::new(tls, TIMEOUT));
    if let Err(e) = &client {
        eprintln!("chatmail-bots: fetcher: warning: {e}");
    }
    let stdin = io::stdin();
    let mut stdout = io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let result = serde_json::from_str::<FetchRequest>(&line)
            .map_err(|e| format!("bad request: {e}"))
            .and_then(|request| check(&request.url, &request.origins))
            .and_then(|target| {
                let client = client.as_ref().map_err(Clone::clone)?;
                runtime.block_on(get(client, &target, MAX_BODY))
            });
        let (answer, body) = match result {
            Ok((status, body)) => (FetchAnswer { status, error: None, len: body.len() as u64 }, body),
            Err(e) => (FetchAnswer { status: 0, error: Some(e), len: 0 }, Vec::new()),
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
}
