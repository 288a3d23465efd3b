//! What each request gets: routing, `/new`, the pages, the per-IP limit.
//! No sockets here, so that every answer can be tested directly.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use chatmail_config::Config;
use serde_json::json;

use super::dclogin::{dclogin_url, LoginHints};
use super::http::{Request, Response};
use super::pages::{self, IndexKind};
use crate::{random_credentials, AccountPolicy, NewAccountLimiter};

/// What the index page's QR code offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onboarding {
    /// `dcaccount:{url}`: Delta Chat POSTs to `url` (this server's `/new`)
    /// and logs in with the credentials it gets. The normal case; needs a
    /// certificate the client trusts.
    DcAccount { url: String },
    /// A `dclogin:` link with fresh credentials for every page view, with
    /// host, port and certificate hints: for relays on non-standard ports
    /// or with self-signed certificates, where `dcaccount:` cannot work.
    DcLogin(LoginHints),
}

impl Onboarding {
    /// The usual `dcaccount:` onboarding at `https://{mail_domain}/new`.
    pub fn default_for(config: &Config) -> Onboarding {
        Onboarding::DcAccount { url: format!("https://{}/new", config.mail_domain) }
    }
}

/// A source of random bytes: the OS (`getrandom`) in the server, a fixed
/// sequence in tests.
pub trait RandomSource: Send {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String>;
}

/// The operating system's random number generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        getrandom::getrandom(buf).map_err(|e| format!("the OS random number generator failed: {e}"))
    }
}

/// Fresh credentials from `source`, uniformly distributed over the policy's
/// alphabet (rejection sampling, no modulo bias).
pub fn fresh_credentials(policy: &AccountPolicy, source: &mut dyn RandomSource) -> Result<(String, String), String> {
    let mut pool = [0u8; 256];
    source.fill(&mut pool)?;
    let mut pos = 0;
    let mut failure = None;
    let credentials = {
        let mut random = |n: u32| -> u32 {
            if n <= 1 {
                return 0;
            }
            let limit = (1u64 << 32) - (1u64 << 32) % u64::from(n);
            loop {
                if pos + 4 > pool.len() {
                    if let Err(e) = source.fill(&mut pool) {
                        failure = Some(e);
                        return 0;
                    }
                    pos = 0;
                }
                let x = u32::from_le_bytes([pool[pos], pool[pos + 1], pool[pos + 2], pool[pos + 3]]);
                pos += 4;
                if u64::from(x) < limit {
                    return x % n;
                }
            }
        };
        random_credentials(policy, &mut random)
    };
    match failure {
        Some(e) => Err(e),
        None => Ok(credentials),
    }
}

/// The JSON body of a refused `/new`: Delta Chat shows `reason` to the
/// user; `error` is a stable code for scripts.
fn refusal(code: &str, reason: &str) -> serde_json::Value {
    json!({ "error": code, "reason": reason })
}

/// The key the per-IP limit counts under: an IPv4 address, or the /64
/// network of an IPv6 address (one IPv6 client usually holds a whole /64).
pub fn limit_key(ip: IpAddr) -> String {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// An IPv4 client reaching a dual-stack socket appears as `::ffff:a.b.c.d`;
/// this gives back `a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A response and, for refusals, a short reason for the log line.
#[derive(Debug)]
pub struct Outcome {
    pub response: Response,
    pub reason: Option<&'static str>,
}

impl Outcome {
    fn ok(response: Response) -> Outcome {
        Outcome { response, reason: None }
    }

    fn refused(response: Response, reason: &'static str) -> Outcome {
        Outcome { response, reason: Some(reason) }
    }
}

enum NoCredentials {
    Off,
    Limit,
    Random(String),
}

struct State {
    limiter: NewAccountLimiter,
    random: Box<dyn RandomSource>,
}

/// The web application: configuration, prepared pages, and the mutable
/// state (per-IP limiter, random source) behind one lock.
pub struct App {
    config: Config,
    policy: AccountPolicy,
    onboarding: Onboarding,
    /// Prepared once for `dcaccount:` onboarding (the same for everyone).
    index: Option<String>,
    info: String,
    privacy: String,
    state: Mutex<State>,
    started: Instant,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("mail_domain", &self.config.mail_domain).field("onboarding", &self.onboarding).finish()
    }
}

/// Headers every answer carries: no scripts, frames, sniffing or referrers.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
];

const PAGE_CACHE: &str = "public, max-age=300";

impl App {
    /// An app drawing credentials from the OS random number generator.
    pub fn new(config: Config, onboarding: Onboarding) -> Result<App, String> {
        App::with_random(config, onboarding, Box::new(OsRandom))
    }

    pub fn with_random(config: Config, onboarding: Onboarding, random: Box<dyn RandomSource>) -> Result<App, String> {
        let policy = AccountPolicy::from_config(&config);
        let index = match &onboarding {
            Onboarding::DcAccount { url } => {
                Some(pages::index_page(&config, &format!("dcaccount:{url}"), IndexKind::DcAccount)?)
            }
            Onboarding::DcLogin(hints) => {
                // Check now that a link of this shape fits into a QR code.
                let (addr, password) = fresh_credentials(&policy, &mut OsRandom)?;
                pages::index_page(&config, &dclogin_url(&addr, &password, hints), IndexKind::DcLogin)?;
                None
            }
        };
        Ok(App {
            info: pages::info_page(&config),
            privacy: pages::privacy_page(&config),
            state: Mutex::new(State { limiter: NewAccountLimiter::new(config.new_accounts_per_ip_per_hour), random }),
            policy,
            onboarding,
            index,
            config,
            started: Instant::now(),
        })
    }

    /// The link the index page's QR code holds (for `dclogin:`, its shape
    /// with placeholder credentials).
    pub fn onboarding_link(&self) -> String {
        match &self.onboarding {
            Onboarding::DcAccount { url } => format!("dcaccount:{url}"),
            Onboarding::DcLogin(hints) => dclogin_url("ADDRESS", "PASSWORD", hints),
        }
    }

    /// The answer to `request` from `ip`, now.
    pub fn respond(&self, request: &Request, ip: IpAddr) -> Outcome {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.respond_at(request, ip, now_ms)
    }

    /// The answer to `request` from `ip` at `now_ms` (milliseconds on any
    /// monotonic clock).
    pub fn respond_at(&self, request: &Request, ip: IpAddr, now_ms: u64) -> Outcome {
        let mut outcome = self.route(request, ip, now_ms);
        for (name, value) in SECURITY_HEADERS {
            outcome.response = outcome.response.with(name, *value);
        }
        outcome
    }

    fn route(&self, request: &Request, ip: IpAddr, now_ms: u64) -> Outcome {
        let method = request.method.as_str();
        let read = method == "GET" || method == "HEAD";
        match request.path.as_str() {
            "/new" => match method {
                "POST" => self.new_account(ip, now_ms),
                // A browser that followed the link: show the page instead.
                "GET" | "HEAD" => Outcome::ok(Response::text(303, "See /").with("Location", "/")),
                _ => self.wrong_method("GET, HEAD, POST"),
            },
            "/" | "/index.html" if read => self.index(ip, now_ms),
            "/info.html" if read => Outcome::ok(Response::html(200, self.info.clone()).with("Cache-Control", PAGE_CACHE)),
            "/privacy.html" if read => {
                Outcome::ok(Response::html(200, self.privacy.clone()).with("Cache-Control", PAGE_CACHE))
            }
            "/" | "/index.html" | "/info.html" | "/privacy.html" => self.wrong_method("GET, HEAD"),
            _ => Outcome::refused(
                Response::html(404, pages::error_page(&self.config, "Not found", "There is no such page on this relay.")),
                "not-found",
            ),
        }
    }

    fn wrong_method(&self, allow: &str) -> Outcome {
        Outcome::refused(Response::text(405, "method not allowed").with("Allow", allow), "method")
    }

    fn index(&self, ip: IpAddr, now_ms: u64) -> Outcome {
        if let Some(index) = &self.index {
            return Outcome::ok(Response::html(200, index.clone()).with("Cache-Control", PAGE_CACHE));
        }
        let Onboarding::DcLogin(hints) = &self.onboarding else {
            return Outcome::refused(Response::text(500, "no index page"), "no-index");
        };
        let page = self.credentials(ip, now_ms).map_err(|e| self.no_credentials_page(e)).and_then(|(addr, password)| {
            pages::index_page(&self.config, &dclogin_url(&addr, &password, hints), IndexKind::DcLogin)
                .map_err(|_| Outcome::refused(Response::text(500, "internal error"), "qr"))
        });
        match page {
            Ok(page) => Outcome::ok(Response::html(200, page).with("Cache-Control", "no-store")),
            Err(outcome) => outcome,
        }
    }

    fn no_credentials_page(&self, why: NoCredentials) -> Outcome {
        let (status, title, message, reason) = match why {
            NoCredentials::Off => {
                (503, "No new accounts", "This relay does not create new accounts at the moment.", "creation-off")
            }
            NoCredentials::Limit => (
                429,
                "Too many new accounts",
                "Too many accounts were created from your network in the last hour. Please try again later.",
                "ip-limit",
            ),
            NoCredentials::Random(_) => (500, "Internal error", "Please try again later.", "random-failed"),
        };
        let response = Response::html(status, pages::error_page(&self.config, title, message)).with("Cache-Control", "no-store");
        Outcome::refused(response, reason)
    }

    /// `POST /new`: fresh credentials as JSON, what Delta Chat's
    /// `dcaccount:` QR code asks for. Nothing is written: the account is
    /// created by the first login.
    fn new_account(&self, ip: IpAddr, now_ms: u64) -> Outcome {
        match self.credentials(ip, now_ms) {
            Ok((email, password)) => Outcome::ok(Response::json(200, &json!({ "email": email, "password": password }))),
            Err(NoCredentials::Off) => Outcome::refused(
                Response::json(503, &refusal("creation-off", "This relay does not create new accounts at the moment.")),
                "creation-off",
            ),
            Err(NoCredentials::Limit) => Outcome::refused(
                Response::json(
                    429,
                    &refusal(
                        "ip-limit",
                        "Too many new accounts from your network in the last hour. Please try again later.",
                    ),
                ),
                "ip-limit",
            ),
            Err(NoCredentials::Random(e)) => {
                eprintln!("chatmail-web: error: {e}");
                Outcome::refused(
                    Response::json(500, &refusal("internal", "Internal error, please try again later.")),
                    "random-failed",
                )
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fresh credentials for `ip`, counted against its hourly limit.
    fn credentials(&self, ip: IpAddr, now_ms: u64) -> Result<(String, String), NoCredentials> {
        if self.config.new_accounts_per_ip_per_hour == 0 || self.config.nocreate_file.exists() {
            return Err(NoCredentials::Off);
        }
        let key = limit_key(ip);
        let mut state = self.lock();
        state.limiter.check(&key, now_ms).map_err(|_| NoCredentials::Limit)?;
        let credentials = fresh_credentials(&self.policy, state.random.as_mut()).map_err(NoCredentials::Random)?;
        state.limiter.record(&key, now_ms);
        Ok(credentials)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    use super::*;
    use crate::web::dclogin::Security;

    /// Bytes counting up from a seed: deterministic, and every value of
    /// the alphabet appears.
    struct Counter(u32);

    impl RandomSource for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
            for chunk in buf.chunks_mut(4) {
                self.0 = self.0.wrapping_add(1);
                let bytes = self.0.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            Ok(())
        }
    }

    struct Broken;

    impl RandomSource for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), String> {
            Err("no entropy".into())
        }
    }

    fn config(extra: &str) -> Config {
        let nocreate = if extra.contains("nocreate_file") { "" } else { "nocreate_file = /nonexistent/nocreate\n" };
        let text = format!("[params]\nmail_domain = chat.example\n{nocreate}{extra}");
        Config::parse(&text, Path::new("test.ini")).unwrap().config
    }

    fn request(method: &str, path: &str) -> Request {
        Request { method: method.into(), path: path.into(), version: (1, 1), headers: vec![("host".into(), "x".into())] }
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn app(extra: &str) -> App {
        let c = config(extra);
        let onboarding = Onboarding::default_for(&c);
        App::with_random(c, onboarding, Box::new(Counter(7))).unwrap()
    }

    fn json_body(outcome: &Outcome) -> serde_json::Value {
        serde_json::from_slice(&outcome.response.body).unwrap()
    }

    #[test]
    fn new_gives_credentials_that_satisfy_the_policy() {
        let app = app("");
        let policy = AccountPolicy::from_config(&config(""));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let outcome = app.respond_at(&request("POST", "/new"), IP, 0);
            assert_eq!(outcome.response.status, 200);
            assert_eq!(outcome.response.header("Content-Type"), Some("application/json"));
            assert_eq!(outcome.response.header("Cache-Control"), Some("no-store"));
            let value = json_body(&outcome);
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 2, "{value}");
            let email = object["email"].as_str().unwrap();
            let password = object["password"].as_str().unwrap();
            assert!(policy.check_address(email).is_ok(), "{email}");
            assert!(policy.check_new_password(password.as_bytes()).is_ok(), "{password}");
            assert!(email.ends_with("@chat.example"));
            assert!(seen.insert(email.to_owned()), "repeated {email}");
        }
    }

    #[test]
    fn new_is_limited_per_ip() {
        let app = app("new_accounts_per_ip_per_hour = 2\n");
        let post = request("POST", "/new");
        assert_eq!(app.respond_at(&post, IP, 0).response.status, 200);
        assert_eq!(app.respond_at(&post, IP, 1).response.status, 200);
        let refused = app.respond_at(&post, IP, 2);
        assert_eq!((refused.response.status, refused.reason), (429, Some("ip-limit")));
        let body = json_body(&refused);
        assert_eq!(body["error"], "ip-limit");
        assert!(body["reason"].as_str().unwrap().contains("Too many new accounts"), "{body}");
        // Another client is not affected; an hour later the first may again.
        assert_eq!(app.respond_at(&post, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 3).response.status, 200);
        assert_eq!(app.respond_at(&post, IP, 3_600_000).response.status, 200);
    }

    #[test]
    fn ipv6_clients_count_per_64_network() {
        let app = app("new_accounts_per_ip_per_hour = 1\n");
        let post = request("POST", "/new");
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(app.respond_at(&post, a, 0).response.status, 200);
        assert_eq!(app.respond_at(&post, b, 0).response.status, 429);
        assert_eq!(app.respond_at(&post, c, 0).response.status, 200);
        // An IPv4 client on a dual-stack socket counts as its IPv4 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(limit_key(mapped), "192.0.2.1");
        assert_eq!(limit_key(IpAddr::V6(Ipv6Addr::LOCALHOST)), "0:0:0:0::/64");
    }

    #[test]
    fn creation_switched_off() {
        let app = app("new_accounts_per_ip_per_hour = 0\n");
        let outcome = app.respond_at(&request("POST", "/new"), IP, 0);
        assert_eq!((outcome.response.status, outcome.reason), (503, Some("creation-off")));

        let dir = tempfile::tempdir().unwrap();
        let nocreate = dir.path().join("nocreate");
        let c = config(&format!("nocreate_file = {}\n", nocreate.display()));
        let app = App::with_random(c.clone(), Onboarding::default_for(&c), Box::new(Counter(1))).unwrap();
        assert_eq!(app.respond_at(&request("POST", "/new"), IP, 0).response.status, 200);
        std::fs::write(&nocreate, "").unwrap();
        assert_eq!(app.respond_at(&request("POST", "/new"), IP, 0).response.status, 503);
    }

    #[test]
    fn broken_random_source_is_an_internal_error() {
        let c = config("");
        let app = App::with_random(c.clone(), Onboarding::default_for(&c), Box::new(Broken)).unwrap();
        let outcome = app.respond_at(&request("POST", "/new"), IP, 0);
        assert_eq!((outcome.response.status, outcome.reason), (500, Some("random-failed")));
    }

    #[test]
    fn routes_and_methods() {
        let app = app("");
        let table: &[(&str, &str, u16)] = &[
            ("GET", "/", 200),
            ("HEAD", "/", 200),
            ("GET", "/index.html", 200),
            ("GET", "/info.html", 200),
            ("GET", "/privacy.html", 200),
            ("POST", "/", 405),
            ("DELETE", "/info.html", 405),
            ("GET", "/new", 303),
            ("PUT", "/new", 405),
            ("GET", "/nothing", 404),
            ("GET", "/../etc/passwd", 404),
            ("POST", "/new/", 404),
        ];
        for (method, path, status) in table {
            let outcome = app.respond_at(&request(method, path), IP, 0);
            assert_eq!(outcome.response.status, *status, "{method} {path}");
            assert!(outcome.response.header("Content-Security-Policy").is_some());
        }
        let redirect = app.respond_at(&request("GET", "/new"), IP, 0);
        assert_eq!(redirect.response.header("Location"), Some("/"));
        let wrong = app.respond_at(&request("PUT", "/new"), IP, 0);
        assert_eq!(wrong.response.header("Allow"), Some("GET, HEAD, POST"));
        let wrong = app.respond_at(&request("POST", "/info.html"), IP, 0);
        assert_eq!(wrong.response.header("Allow"), Some("GET, HEAD"));
    }

    #[test]
    fn index_holds_the_dcaccount_link() {
        let app = app("");
        assert_eq!(app.onboarding_link(), "dcaccount:https://chat.example/new");
        let body = String::from_utf8(app.respond_at(&request("GET", "/"), IP, 0).response.body).unwrap();
        assert!(body.contains("href=\"dcaccount:https://chat.example/new\""), "{body}");
    }

    #[test]
    fn dclogin_index_gives_fresh_credentials_within_the_limit() {
        let c = config("new_accounts_per_ip_per_hour = 2\n");
        let hints = LoginHints {
            host: Some("127.0.0.1".into()),
            imap_port: Some(2993),
            smtp_port: Some(2465),
            security: Some(Security::Ssl),
            accept_invalid_certs: true,
        };
        let app = App::with_random(c, Onboarding::DcLogin(hints), Box::new(Counter(3))).unwrap();
        let first = app.respond_at(&request("GET", "/"), IP, 0);
        let second = app.respond_at(&request("GET", "/"), IP, 0);
        assert_eq!((first.response.status, second.response.status), (200, 200));
        assert_eq!(first.response.header("Cache-Control"), Some("no-store"));
        let (a, b) = (String::from_utf8(first.response.body).unwrap(), String::from_utf8(second.response.body).unwrap());
        assert!(a.contains("href=\"dclogin:"), "{a}");
        assert!(a.contains("&amp;ih=127.0.0.1&amp;ip=2993&amp;is=ssl&amp;sh=127.0.0.1&amp;sp=2465&amp;ss=ssl&amp;ic=3&amp;sc=3\""), "{a}");
        assert_ne!(a, b);
        let third = app.respond_at(&request("GET", "/"), IP, 0);
        assert_eq!((third.response.status, third.reason), (429, Some("ip-limit")));
        // The other pages are not limited.
        assert_eq!(app.respond_at(&request("GET", "/info.html"), IP, 0).response.status, 200);
    }

    #[test]
    fn credentials_are_uniform_over_the_alphabet() {
        let policy = AccountPolicy::from_config(&config(""));
        let mut counts = std::collections::HashMap::new();
        let mut source = OsRandom;
        for _ in 0..2000 {
            let (addr, password) = fresh_credentials(&policy, &mut source).unwrap();
            for c in addr.split('@').next().unwrap().chars().chain(password.chars()) {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        // 2000 × 21 characters over 36 symbols: about 1167 each.
        assert_eq!(counts.len(), 36, "{counts:?}");
        assert!(counts.values().all(|&n| (900..1450).contains(&n)), "{counts:?}");
    }
}
