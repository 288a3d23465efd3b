//! Onboarding: how people get an account on the relay.
//!
//! - `chatmail-web`, the relay's HTTPS server: `POST /new` answers fresh
//!   random credentials as JSON (what Delta Chat's `dcaccount:` QR code
//!   asks for), limited per client IP; `GET /` shows the onboarding QR code,
//!   `/info.html` the limits and `/privacy.html` the privacy policy, all
//!   generated from chatmail.ini.
//! - `chatmail-account new-login`: a `dclogin:` link and terminal QR code
//!   for a fresh account, for operators and local test relays.
//!
//! Neither writes anything: the auth daemon creates an account at its
//! first login.

mod app;
mod cli;
mod dclogin;
mod http;
mod pages;
mod qr;
mod server;

pub use app::{canonical_ip, fresh_credentials, limit_key, App, Onboarding, OsRandom, Outcome, RandomSource};
pub use cli::{
    parse_account_args, parse_web_args, security_hint, AccountArgs, Parsed, WebArgs, ACCOUNT_USAGE, DEFAULT_CONFIG,
    DEFAULT_LISTEN, FALLBACK_LISTEN, WEB_USAGE,
};
pub use dclogin::{dclogin_url, percent_encode, LoginHints, Security};
pub use http::{
    check_request, head_complete, request_path, HeadError, Request, Response, MAX_BODY, MAX_HEAD, MAX_HEADERS,
    MAX_REQUEST_LINE,
};
pub use chatmail_config::format_size;
pub use pages::{escape as html_escape, index_page, info_page, privacy_page, IndexKind};
pub use qr::Matrix as QrMatrix;
pub use server::{serve, tls_config, CertStore, HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP};
