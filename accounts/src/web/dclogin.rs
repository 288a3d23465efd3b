//! `dclogin:` links: an address, its password and optionally where and how
//! to connect, in the form Delta Chat reads from a QR code
//! (`dclogin:ADDR?p=PW&v=1&ih=HOST&ip=PORT&is=ssl&sh=HOST&sp=PORT&ss=ssl&ic=3&sc=3`).

use std::fmt::Write as _;
use std::str::FromStr;

/// How the client secures a connection (`is=` / `ss=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (IMAPS, SMTPS).
    Ssl,
    /// Plain connection upgraded with STARTTLS.
    Starttls,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Ssl => "ssl",
            Security::Starttls => "starttls",
        }
    }
}

impl FromStr for Security {
    type Err = String;

    fn from_str(s: &str) -> Result<Security, String> {
        match s {
            "ssl" => Ok(Security::Ssl),
            "starttls" => Ok(Security::Starttls),
            other => Err(format!("security {other:?} is not ssl or starttls")),
        }
    }
}

/// Where and how the client connects. Everything left out, the client
/// finds itself (DNS, then the usual ports).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginHints {
    /// IMAP and SMTP host (`ih=`, `sh=`).
    pub host: Option<String>,
    pub imap_port: Option<u16>,
    pub smtp_port: Option<u16>,
    /// For both IMAP and SMTP (`is=`, `ss=`).
    pub security: Option<Security>,
    /// Accept a self-signed or otherwise invalid certificate (`ic=3`,
    /// `sc=3`): only for test relays.
    pub accept_invalid_certs: bool,
}

/// Percent-encodes everything except RFC 3986 unreserved characters and
/// the bytes in `keep`.
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The `dclogin:` link for `addr` with `password`.
pub fn dclogin_url(addr: &str, password: &str, hints: &LoginHints) -> String {
    let mut url = format!("dclogin:{}?p={}&v=1", percent_encode(addr, b"@"), percent_encode(password, b""));
    let host = hints.host.as_deref().map(|h| percent_encode(h, b""));
    let security = hints.security.map(Security::as_str);
    let mut push = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            let _ = write!(url, "&{key}={value}");
        }
    };
    push("ih", host.as_deref());
    push("ip", hints.imap_port.map(|p| p.to_string()).as_deref());
    push("is", security);
    push("sh", host.as_deref());
    push("sp", hints.smtp_port.map(|p| p.to_string()).as_deref());
    push("ss", security);
    if hints.accept_invalid_certs {
        url.push_str("&ic=3&sc=3");
    }
    url
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_link() {
        let url = dclogin_url("abc123xyz@chat.example", "secretpassw0", &LoginHints::default());
        assert_eq!(url, "dclogin:abc123xyz@chat.example?p=secretpassw0&v=1");
    }

    #[test]
    fn link_for_a_local_relay() {
        let hints = LoginHints {
            host: Some("127.0.0.1".into()),
            imap_port: Some(2993),
            smtp_port: Some(2465),
            security: Some(Security::Ssl),
            accept_invalid_certs: true,
        };
        assert_eq!(
            dclogin_url("abc123xyz@chatmail.test", "pw", &hints),
            "dclogin:abc123xyz@chatmail.test?p=pw&v=1&ih=127.0.0.1&ip=2993&is=ssl&sh=127.0.0.1&sp=2465&ss=ssl&ic=3&sc=3"
        );
        let hints = LoginHints { smtp_port: Some(2587), security: Some(Security::Starttls), ..LoginHints::default() };
        assert_eq!(dclogin_url("a@b", "pw", &hints), "dclogin:a@b?p=pw&v=1&is=starttls&sp=2587&ss=starttls");
    }

    #[test]
    fn hostile_values_are_encoded() {
        let hints = LoginHints { host: Some("::1&x=y".into()), ..LoginHints::default() };
        let url = dclogin_url("a b?c&d@x", "p&w=d %?#+/ü", &hints);
        assert_eq!(url, "dclogin:a%20b%3Fc%26d@x?p=p%26w%3Dd%20%25%3F%23%2B%2F%C3%BC&v=1&ih=%3A%3A1%26x%3Dy&sh=%3A%3A1%26x%3Dy");
    }

    #[test]
    fn security_names() {
        assert_eq!("ssl".parse(), Ok(Security::Ssl));
        assert_eq!("starttls".parse(), Ok(Security::Starttls));
        assert!("tls".parse::<Security>().is_err());
    }
}
