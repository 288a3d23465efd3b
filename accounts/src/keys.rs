//! The dict keys Dovecot looks up, as configured in the relay's
//! `auth-dict.conf.ext`:
//!
//! - `shared/passdb/%{rip}/%u/%w` — a login: client IP, user name, password.
//!   The password comes last because it may contain `/`; the client IP is
//!   empty when Dovecot does not know it.
//! - `shared/userdb/%u` — the account's home and mail user.
//! - `shared/sessions/%{service}/%u/%{session}` — may this login open one
//!   more session? Asked by a deny passdb once the password is right. The
//!   session id is there only so that Dovecot's auth cache never answers
//!   it (it may contain `/`, hence last); the service decides whether the
//!   limit applies.

use std::fmt;

/// A lookup, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Passdb { client_ip: String, user: String, password: Vec<u8> },
    Userdb { user: String },
    Sessions { service: String, user: String },
}

/// A key that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub &'static str);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for KeyError {}

fn text(bytes: &[u8], what: &'static str) -> Result<String, KeyError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| KeyError(what))
}

fn split_slash(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'/')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Parses a lookup key. The user name is returned as given; checking it is
/// the policy's job.
pub fn parse_key(key: &[u8]) -> Result<Request, KeyError> {
    if let Some(rest) = key.strip_prefix(b"shared/passdb/") {
        let (ip, rest) = split_slash(rest).ok_or(KeyError("passdb key without user"))?;
        let (user, password) = split_slash(rest).ok_or(KeyError("passdb key without password"))?;
        return Ok(Request::Passdb {
            client_ip: text(ip, "client IP is not UTF-8")?,
            user: text(user, "user name is not UTF-8")?,
            password: password.to_vec(),
        });
    }
    if let Some(user) = key.strip_prefix(b"shared/userdb/") {
        return Ok(Request::Userdb { user: text(user, "user name is not UTF-8")? });
    }
    if let Some(rest) = key.strip_prefix(b"shared/sessions/") {
        let (service, rest) = split_slash(rest).ok_or(KeyError("sessions key without user"))?;
        // Without the session id the key would be cacheable: refuse it, so
        // a wrong configuration shows at the first login.
        let (user, _session) = split_slash(rest).ok_or(KeyError("sessions key without session id"))?;
        return Ok(Request::Sessions {
            service: text(service, "service is not UTF-8")?,
            user: text(user, "user name is not UTF-8")?,
        });
    }
    Err(KeyError(UNKNOWN_KEY))
}

const UNKNOWN_KEY: &str = "unknown key (expected shared/passdb/…, shared/userdb/… or shared/sessions/…)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let pass = |ip: &str, user: &str, pw: &[u8]| Ok(Request::Passdb { client_ip: ip.into(), user: user.into(), password: pw.to_vec() });
        let table: Vec<(&[u8], Result<Request, KeyError>)> = vec![
            (b"shared/passdb/192.0.2.1/a@b.c/secret", pass("192.0.2.1", "a@b.c", b"secret")),
            (b"shared/passdb/2001:db8::1/a@b.c/se/cr/et", pass("2001:db8::1", "a@b.c", b"se/cr/et")),
            (b"shared/passdb//a@b.c/", pass("", "a@b.c", b"")),
            (b"shared/passdb/1.2.3.4/a@b.c/\xff\xfe", pass("1.2.3.4", "a@b.c", b"\xff\xfe")),
            // A user name cannot smuggle a slash in: everything after the
            // second slash is the password, and "a" is no valid address.
            (b"shared/passdb/1.2.3.4/a/../x@b.c/pw", pass("1.2.3.4", "a", b"../x@b.c/pw")),
            (b"shared/passdb/1.2.3.4", Err(KeyError("passdb key without user"))),
            (b"shared/passdb/1.2.3.4/a@b.c", Err(KeyError("passdb key without password"))),
            (b"shared/passdb/1.2.3.4/\xff@b.c/pw", Err(KeyError("user name is not UTF-8"))),
            (b"shared/userdb/a@b.c", Ok(Request::Userdb { user: "a@b.c".into() })),
            (b"shared/userdb/", Ok(Request::Userdb { user: String::new() })),
            (b"shared/sessions/imap/a@b.c/Xy+z/0w==", Ok(Request::Sessions { service: "imap".into(), user: "a@b.c".into() })),
            (b"shared/sessions/lmtp/a@b.c/", Ok(Request::Sessions { service: "lmtp".into(), user: "a@b.c".into() })),
            (b"shared/sessions/imap/a@b.c", Err(KeyError("sessions key without session id"))),
            (b"shared/sessions/imap", Err(KeyError("sessions key without user"))),
            (b"priv/passdb/x", Err(KeyError(UNKNOWN_KEY))),
            (b"", Err(KeyError(UNKNOWN_KEY))),
        ];
        for (key, want) in table {
            assert_eq!(parse_key(key), want, "{:?}", String::from_utf8_lossy(key));
        }
    }
}
