//! Command lines of `chatmail-web` and `chatmail-account`.

use std::path::PathBuf;

use super::app::Onboarding;
use super::dclogin::LoginHints;

pub const DEFAULT_CONFIG: &str = "/etc/chatmail/chatmail.ini";
/// Listens on every address, IPv6 and (dual-stack) IPv4; if the machine
/// has no IPv6, on every IPv4 address.
pub const DEFAULT_LISTEN: &str = "[::]:443";
pub const FALLBACK_LISTEN: &str = "0.0.0.0:443";

pub const WEB_USAGE: &str = "\
usage: chatmail-web --cert PEM --key PEM [--config FILE] [--listen HOST:PORT]...
                    [--new-url URL]
                    [--onboarding dcaccount|dclogin] [--host HOST] [--imap-port N] [--smtp-port N]
                    [--security ssl|starttls] [--accept-invalid-certs]

HTTPS server of a chatmail relay: POST /new hands out fresh credentials as JSON
({\"email\": ..., \"password\": ...}, rate limited per client IP by
new_accounts_per_ip_per_hour); GET / shows the onboarding QR code, /info.html the
limits from chatmail.ini, /privacy.html the privacy policy. Nothing is written to
disk: an account is created by its first login.

  --config FILE        chatmail.ini (default /etc/chatmail/chatmail.ini)
  --listen HOST:PORT   address to listen on, may be repeated (default [::]:443, which
                       is dual-stack; 0.0.0.0:443 on machines without IPv6)
  --cert PEM           certificate chain (PEM); reread when the file changes or on SIGHUP
  --key PEM            its private key (PEM)
  --new-url URL        link in the QR code is dcaccount:URL
                       (default https://{mail_domain}/new)
  --onboarding MODE    dcaccount (default): the QR code makes Delta Chat POST to /new,
                       which needs a certificate clients trust.
                       dclogin: the QR code holds a dclogin: link with a fresh address and
                       password for each page view (counted like /new), plus the hints
                       below: for relays on non-standard ports or with self-signed
                       certificates, such as a local test relay.
  --host HOST          dclogin: IMAP and SMTP host
  --imap-port N        dclogin: IMAP port
  --smtp-port N        dclogin: SMTP submission port
  --security MODE      dclogin: ssl (implicit TLS) or starttls, for IMAP and SMTP
  --accept-invalid-certs
                       dclogin: tell Delta Chat to accept any certificate (test relays)
  -h, --help           this text

Logs one line per request on stderr:
  chatmail-web: method=POST path=/new status=200 ip=192.0.2.1
Exit codes: 0 after SIGTERM/SIGINT, 1 on runtime failures, 2 on bad arguments,
configuration or certificate.";

pub const ACCOUNT_USAGE: &str = "\
usage: chatmail-account new-login [--config FILE] [--host HOST] [--imap-port N] [--smtp-port N]
                                  [--security ssl|starttls] [--accept-invalid-certs]
                                  [--no-qr] [--light-terminal]

new-login: prints a dclogin: link for a fresh random account of this relay, and the
same link as a QR code, for scanning with Delta Chat. Nothing is written: the
account is created when Delta Chat first logs in with it. Without host or port
options, Delta Chat finds the servers of the address's domain itself.

  --config FILE        chatmail.ini (default /etc/chatmail/chatmail.ini)
  --host HOST          IMAP and SMTP host (e.g. 127.0.0.1 for a local relay)
  --imap-port N        IMAP port
  --smtp-port N        SMTP submission port
  --security MODE      ssl (implicit TLS) or starttls, for IMAP and SMTP
  --accept-invalid-certs
                       tell Delta Chat to accept any certificate (self-signed test relays)
  --no-qr              print only the link
  --light-terminal     draw the QR code for dark text on a light background
  -h, --help           this text

For the relay of `make run` (ports from its output):
  chatmail-account new-login --config /tmp/chatmail-dev/chatmail.ini --host 127.0.0.1 \\
      --imap-port 2993 --smtp-port 2465 --security ssl --accept-invalid-certs
Exit codes: 0 on success, 1 on failures, 2 on bad arguments or configuration.";

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    Run(T),
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebArgs {
    pub config: PathBuf,
    /// Empty: [`DEFAULT_LISTEN`] (or [`FALLBACK_LISTEN`]).
    pub listen: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `None`: `dcaccount:https://{mail_domain}/new`, known once the
    /// configuration is read.
    pub onboarding: Option<Onboarding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountArgs {
    pub config: PathBuf,
    pub hints: LoginHints,
    pub qr: bool,
    pub dark_terminal: bool,
}

fn port(arg: &str, value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{arg} {value:?} is not a port number (1-65535)")),
    }
}

fn host(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 253 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("--host {value:?} is not a host name or address"));
    }
    Ok(value.to_owned())
}

/// Applies a `dclogin:` hint option; `Ok(false)` if `arg` is none.
fn hint_option(
    hints: &mut LoginHints,
    arg: &str,
    value: &mut dyn FnMut() -> Result<String, String>,
) -> Result<bool, String> {
    match arg {
        "--host" => hints.host = Some(host(&value()?)?),
        "--imap-port" => hints.imap_port = Some(port(arg, &value()?)?),
        "--smtp-port" => hints.smtp_port = Some(port(arg, &value()?)?),
        "--security" => hints.security = Some(value()?.parse()?),
        "--accept-invalid-certs" => hints.accept_invalid_certs = true,
        _ => return Ok(false),
    }
    Ok(true)
}

fn check_new_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && url.chars().all(|c| c.is_ascii_graphic()) => Ok(()),
        _ => Err(format!("--new-url {url:?} is not an http(s) URL without spaces")),
    }
}

pub fn parse_web_args(args: impl IntoIterator<Item = String>) -> Result<Parsed<WebArgs>, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut listen = Vec::new();
    let (mut cert, mut key) = (None, None);
    let mut new_url = None;
    let mut mode = None;
    let mut hints = LoginHints::default();
    let mut hinted = false;
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => config = PathBuf::from(value()?),
            "--listen" => listen.push(value()?),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--new-url" => {
                let url = value()?;
                check_new_url(&url)?;
                new_url = Some(url);
            }
            "--onboarding" => match value()?.as_str() {
                "dcaccount" => mode = Some(false),
                "dclogin" => mode = Some(true),
                other => return Err(format!("--onboarding {other:?} is not dcaccount or dclogin")),
            },
            "--help" | "-h" => return Ok(Parsed::Help),
            other => {
                if !hint_option(&mut hints, other, &mut value)? {
                    return Err(format!("unknown argument {other:?}"));
                }
                hinted = true;
            }
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err("--cert and --key are required".into());
    };
    let onboarding = match mode {
        Some(true) => {
            if new_url.is_some() {
                return Err("--new-url goes with --onboarding dcaccount, not dclogin".into());
            }
            Some(Onboarding::DcLogin(hints))
        }
        _ if hinted => {
            return Err(
                "--host, --imap-port, --smtp-port, --security and --accept-invalid-certs need --onboarding dclogin".into()
            )
        }
        _ => new_url.map(|url| Onboarding::DcAccount { url }),
    };
    Ok(Parsed::Run(WebArgs { config, listen, cert, key, onboarding }))
}

pub fn parse_account_args(args: impl IntoIterator<Item = String>) -> Result<Parsed<AccountArgs>, String> {
    let mut iter = args.into_iter();
    match iter.next().as_deref() {
        Some("new-login") => {}
        Some("--help" | "-h" | "help") => return Ok(Parsed::Help),
        Some(other) => return Err(format!("unknown command {other:?} (the command is new-login)")),
        None => return Err("a command is needed: new-login".into()),
    }
    let mut parsed =
        AccountArgs { config: PathBuf::from(DEFAULT_CONFIG), hints: LoginHints::default(), qr: true, dark_terminal: true };
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => parsed.config = PathBuf::from(value()?),
            "--no-qr" => parsed.qr = false,
            "--light-terminal" => parsed.dark_terminal = false,
            "--help" | "-h" => return Ok(Parsed::Help),
            other => {
                if !hint_option(&mut parsed.hints, other, &mut value)? {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    Ok(Parsed::Run(parsed))
}

/// Whether `security` was left out while ports were given: Delta Chat then
/// guesses, which works, but slower; a hint for the operator.
pub fn security_hint(hints: &LoginHints) -> Option<&'static str> {
    (hints.security.is_none() && (hints.imap_port.is_some() || hints.smtp_port.is_some()))
        .then_some("ports without --security: Delta Chat will try several ways to connect")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::web::dclogin::Security;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn web_defaults() {
        let Parsed::Run(a) = parse_web_args(args(&["--cert", "c.pem", "--key", "k.pem"])).unwrap() else { panic!() };
        assert_eq!(a.config, PathBuf::from(DEFAULT_CONFIG));
        assert!(a.listen.is_empty());
        assert_eq!(a.onboarding, None);
    }

    #[test]
    fn web_dclogin() {
        let parsed = parse_web_args(args(&[
            "--cert", "c", "--key", "k", "--listen", "127.0.0.1:8443", "--listen", "[::1]:8443", "--onboarding",
            "dclogin", "--host", "127.0.0.1", "--imap-port", "2993", "--smtp-port", "2465", "--security", "ssl",
            "--accept-invalid-certs",
        ]))
        .unwrap();
        let Parsed::Run(a) = parsed else { panic!() };
        assert_eq!(a.listen, vec!["127.0.0.1:8443", "[::1]:8443"]);
        assert_eq!(
            a.onboarding,
            Some(Onboarding::DcLogin(LoginHints {
                host: Some("127.0.0.1".into()),
                imap_port: Some(2993),
                smtp_port: Some(2465),
                security: Some(Security::Ssl),
                accept_invalid_certs: true,
            }))
        );
    }

    #[test]
    fn web_new_url() {
        let parsed = parse_web_args(args(&["--cert", "c", "--key", "k", "--new-url", "https://chat.example:8443/new"]));
        let Ok(Parsed::Run(a)) = parsed else { panic!() };
        assert_eq!(a.onboarding, Some(Onboarding::DcAccount { url: "https://chat.example:8443/new".into() }));
    }

    #[test]
    fn web_errors() {
        let table: &[(&[&str], &str)] = &[
            (&[], "--cert and --key are required"),
            (&["--cert", "c"], "--cert and --key are required"),
            (&["--cert"], "--cert needs a value"),
            (&["--bogus"], "unknown argument \"--bogus\""),
            (&["--cert", "c", "--key", "k", "--imap-port", "993"], "need --onboarding dclogin"),
            (&["--cert", "c", "--key", "k", "--onboarding", "qr"], "is not dcaccount or dclogin"),
            (&["--cert", "c", "--key", "k", "--onboarding", "dclogin", "--imap-port", "0"], "not a port number"),
            (&["--cert", "c", "--key", "k", "--onboarding", "dclogin", "--imap-port", "x"], "not a port number"),
            (&["--cert", "c", "--key", "k", "--onboarding", "dclogin", "--security", "tls"], "not ssl or starttls"),
            (&["--cert", "c", "--key", "k", "--onboarding", "dclogin", "--host", "a b"], "not a host"),
            (&["--cert", "c", "--key", "k", "--new-url", "ftp://x"], "not an http(s) URL"),
            (&["--cert", "c", "--key", "k", "--new-url", "https://x/ new"], "not an http(s) URL"),
            (&["--cert", "c", "--key", "k", "--onboarding", "dclogin", "--new-url", "https://x/new"], "--new-url goes with"),
        ];
        for (list, expected) in table {
            let e = parse_web_args(args(list)).unwrap_err();
            assert!(e.contains(expected), "{list:?}: {e}");
        }
        assert_eq!(parse_web_args(args(&["--help"])), Ok(Parsed::Help));
    }

    #[test]
    fn account_args() {
        let Ok(Parsed::Run(a)) = parse_account_args(args(&["new-login"])) else { panic!() };
        assert_eq!((a.hints, a.qr, a.dark_terminal), (LoginHints::default(), true, true));
        let parsed = parse_account_args(args(&[
            "new-login", "--config", "x.ini", "--host", "::1", "--smtp-port", "2587", "--security", "starttls", "--no-qr",
            "--light-terminal",
        ]));
        let Ok(Parsed::Run(a)) = parsed else { panic!() };
        assert_eq!(a.config, PathBuf::from("x.ini"));
        assert_eq!(a.hints.host.as_deref(), Some("::1"));
        assert_eq!(a.hints.smtp_port, Some(2587));
        assert_eq!(a.hints.security, Some(Security::Starttls));
        assert!(!a.qr && !a.dark_terminal);
        assert_eq!(parse_account_args(args(&["--help"])), Ok(Parsed::Help));
        assert_eq!(parse_account_args(args(&["new-login", "-h"])), Ok(Parsed::Help));
        assert!(parse_account_args(args(&[])).unwrap_err().contains("new-login"));
        assert!(parse_account_args(args(&["create"])).unwrap_err().contains("unknown command"));
        assert!(parse_account_args(args(&["new-login", "--imap-port", "70000"])).unwrap_err().contains("not a port"));
    }

    #[test]
    fn hint_for_missing_security() {
        assert!(security_hint(&LoginHints { imap_port: Some(1), ..LoginHints::default() }).is_some());
        assert!(security_hint(&LoginHints::default()).is_none());
    }
}
