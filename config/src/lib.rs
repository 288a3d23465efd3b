//! Reading `chatmail.ini`, the one configuration file of a chatmail relay,
//! and the address rules that several components share.
//!
//! The file format and key names are chatmail relay's, so an operator can
//! bring an existing `chatmail.ini`: settings live in a `[params]` section;
//! sizes may be written `100M` or `1G`. Keys chatmail knows but this relay
//! does not use are accepted silently; unknown keys produce a warning naming
//! them; an invalid value is an error naming file, line, key and problem.
//! Every key, its default and meaning is listed in [`KEYS`] (and in the
//! configuration reference, docs/configuration.md, which a test keeps in sync).

mod address;
pub mod base64;
pub mod calendar;
pub mod files;
mod ini;
pub mod layout;
pub mod metrics;
pub mod retention;
pub mod sessions;
pub mod push;
pub mod spool;
pub mod wiring;
mod value;

use std::fmt;
use std::path::{Path, PathBuf};

pub use address::{check_domain, split_address, AccountAddressRules, AddressProblem, MAX_ADDRESS_LEN};
pub use value::{format_size, parse_bool, parse_decimal, parse_list, parse_size, parse_uint, BareNumber};

/// Where a key comes from, which decides what an operator may expect of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A chatmail relay key with the same meaning here.
    Chatmail,
    /// A chatmail relay key for parts this relay does differently; accepted
    /// (so existing files load) and ignored.
    ChatmailIgnored,
    /// A key this relay adds.
    New,
}

/// One documented key of `[params]`.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    pub name: &'static str,
    /// Default as written in the file; `None` if the key is required.
    pub default: Option<&'static str>,
    pub origin: Origin,
    pub meaning: &'static str,
}

/// Every `[params]` key this relay reads or accepts, with default and meaning.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc { name: "mail_domain", default: None, origin: Origin::Chatmail,
        meaning: "Domain of the relay's addresses (required), e.g. chat.example.org." },
    KeyDoc { name: "max_user_send_per_minute", default: Some("60"), origin: Origin::Chatmail,
        meaning: "Messages an account may send per minute, on average." },
    KeyDoc { name: "max_user_send_burst_size", default: Some("10"), origin: Origin::Chatmail,
        meaning: "Messages an account may send in a quick burst before the per-minute rate applies." },
    KeyDoc { name: "max_mailbox_size", default: Some("100M"), origin: Origin::Chatmail,
        meaning: "Storage quota per account; a plain number means megabytes (chatmail's default is larger; 100M keeps a relay cheap)." },
    KeyDoc { name: "max_message_size", default: Some("31457280"), origin: Origin::Chatmail,
        meaning: "Largest message accepted; a plain number means bytes." },
    KeyDoc { name: "delete_mails_after", default: Some("40"), origin: Origin::Chatmail,
        meaning: "Days after which messages are deleted from the server (chatmail's default is shorter)." },
    KeyDoc { name: "delete_large_after", default: Some("7"), origin: Origin::Chatmail,
        meaning: "Days after which messages larger than 200 kB are deleted." },
    KeyDoc { name: "delete_inactive_users_after", default: Some("90"), origin: Origin::Chatmail,
        meaning: "Days without login after which an account and its mail are removed." },
    KeyDoc { name: "username_min_length", default: Some("9"), origin: Origin::Chatmail,
        meaning: "Shortest local part (name before '@') of a new account." },
    KeyDoc { name: "username_max_length", default: Some("9"), origin: Origin::Chatmail,
        meaning: "Longest local part of a new account." },
    KeyDoc { name: "password_min_length", default: Some("9"), origin: Origin::Chatmail,
        meaning: "Shortest password accepted when an account is created." },
    KeyDoc { name: "passthrough_senders", default: Some(""), origin: Origin::Chatmail,
        meaning: "Space-separated addresses whose outgoing mail may be unencrypted (chatmail up to 1.11)." },
    KeyDoc { name: "passthrough_recipients", default: Some(""), origin: Origin::Chatmail,
        meaning: "Space-separated addresses (or @domain) that may receive unencrypted mail (chatmail up to 1.11)." },
    KeyDoc { name: "mailboxes_dir", default: Some("/home/vmail/mail/{mail_domain}"), origin: Origin::Chatmail,
        meaning: "Directory holding one directory per account ({mailboxes_dir}/{address})." },
    KeyDoc { name: "max_load_1m", default: Some("5"), origin: Origin::Chatmail,
        meaning: "No new accounts while the one-minute load average is above this." },
    KeyDoc { name: "min_available_memory", default: Some("200M"), origin: Origin::Chatmail,
        meaning: "No new accounts while less memory than this is available; a plain number means megabytes." },
    KeyDoc { name: "min_free_disk_space", default: Some("1G"), origin: Origin::Chatmail,
        meaning: "No new accounts while the mailboxes_dir file system has less free space than this; a plain number means megabytes." },
    KeyDoc { name: "max_recipients_per_message", default: Some("1000"), origin: Origin::New,
        meaning: "Most recipients one message may have (further RCPT TO get 452)." },
    KeyDoc { name: "reduced_send_per_minute", default: Some("20"), origin: Origin::New,
        meaning: "Send rate for new accounts and accounts that recently tried to send unencrypted mail." },
    KeyDoc { name: "reduced_send_burst_size", default: Some("5"), origin: Origin::New,
        meaning: "Burst size that goes with reduced_send_per_minute." },
    KeyDoc { name: "reduced_rate_new_account_hours", default: Some("24"), origin: Origin::New,
        meaning: "Accounts younger than this many hours get the reduced send rate." },
    KeyDoc { name: "reduced_rate_after_cleartext_minutes", default: Some("60"), origin: Origin::New,
        meaning: "After a refused unencrypted message, the account gets the reduced send rate for this many minutes." },
    KeyDoc { name: "max_user_connections", default: Some("10"), origin: Origin::New,
        meaning: "Most concurrent IMAP sessions per account, across all client addresses; further logins are refused." },
    KeyDoc { name: "instant_idle", default: Some("true"), origin: Origin::New,
        meaning: "Whether the Dovecot plugin tells IDLE-ing IMAP clients about new mail at once (its own inotify watch). false: Dovecot's own wake-up, about 500 ms after a change." },
    KeyDoc { name: "instant_idle_min_interval", default: Some("0"), origin: Origin::New,
        meaning: "Least time in milliseconds between two instant wake-ups of one IDLE session (changes in between are told together at its end); protects the CPU from a flood of deliveries. 0: no limit." },
    KeyDoc { name: "bot_spool_dir", default: Some("/var/spool/chatmail-bots"), origin: Origin::New,
        meaning: "Where the Dovecot plugin leaves jobs for the bot daemon (deliveries to bot accounts, bot installs)." },
    KeyDoc { name: "bot_install_folder", default: Some("DeltaBot"), origin: Origin::New,
        meaning: "IMAP folder in which an account stores its bot package; saving a mail there asks the bot daemon to install it." },
    KeyDoc { name: "bots_enabled", default: Some("false"), origin: Origin::New,
        meaning: "Whether accounts may install and run WebAssembly bots (the bot daemon does nothing while this is false)." },
    KeyDoc { name: "bot_accounts", default: Some("*"), origin: Origin::New,
        meaning: "Accounts that may install a bot: addresses separated by spaces, or `*` for every account." },
    KeyDoc { name: "bot_state_dir", default: Some("/var/lib/chatmail-bots"), origin: Origin::New,
        meaning: "The bot daemon's own files: installed packages, compiled modules, usage, parked jobs." },
    KeyDoc { name: "bot_max_parallel", default: Some("1"), origin: Origin::New,
        meaning: "Most bot runs at the same time, so host IO, memory and CPU never spike." },
    KeyDoc { name: "bot_memory_limit", default: Some("128M"), origin: Origin::New,
        meaning: "Largest linear memory a bot run may have; a plain number means megabytes." },
    KeyDoc { name: "bot_wall_time", default: Some("30"), origin: Origin::New,
        meaning: "Seconds a bot run may take before its worker is killed." },
    KeyDoc { name: "bot_output_limit", default: Some("1M"), origin: Origin::New,
        meaning: "Most bytes a bot run may write to stdout; a plain number means bytes." },
    KeyDoc { name: "bot_max_package_size", default: Some("16M"), origin: Origin::New,
        meaning: "Largest bot.wasm accepted at install; a plain number means bytes." },
    KeyDoc { name: "bot_cpu_percent_per_hour", default: Some("1"), origin: Origin::New,
        meaning: "CPU one bot may use in any hour, in percent of one core (1 = 36 seconds)." },
    KeyDoc { name: "bot_cpu_percent_per_day", default: Some("0.1"), origin: Origin::New,
        meaning: "CPU one bot may use in any day, in percent of one core (0.1 = 86 seconds)." },
    KeyDoc { name: "bot_allowed_origins", default: Some(""), origin: Origin::New,
        meaning: "Network origins (e.g. https://api.example.org), separated by spaces, that bots may ever reach; a bot's own list narrows it. Empty: none." },
    KeyDoc { name: "bot_network_ca_file", default: Some(""), origin: Origin::New,
        meaning: "PEM file of extra CA certificates that bot network requests trust (e.g. an internal CA); empty: the system's only." },
    KeyDoc { name: "lmtp_socket", default: Some("/run/dovecot/lmtp-bots"), origin: Origin::New,
        meaning: "Dovecot LMTP socket through which the bot daemon (running as the mail user) delivers install reports; the rendered Dovecot wiring makes this listener, owned by the mail user." },
    KeyDoc { name: "bot_submission_socket", default: Some("/var/spool/postfix/public/chatmail-bots"), origin: Origin::New,
        meaning: "Postfix's SMTP submission socket for bots (a `chatmail-bots unix` smtpd service in master.cf): the bot daemon sends its bots' mail through it, logged in as the bot, so the milter and rate limits apply. The daemon needs the group `postdrop` for it." },
    KeyDoc { name: "dkim_selector", default: Some("opendkim"), origin: Origin::New,
        meaning: "DKIM selector of the RSA key: its public key is published as TXT record `{dkim_selector}._domainkey.{mail_domain}` (chatmail relays use `opendkim`)." },
    KeyDoc { name: "dkim_key_file", default: Some("/etc/dkimkeys/opendkim.private"), origin: Origin::New,
        meaning: "The RSA private key (PEM, PKCS#1 or PKCS#8) the milter signs outgoing mail with; chatmail's OpenDKIM key file works as is. `chatmail-milter dkim-keygen` creates one." },
    KeyDoc { name: "dkim_ed25519_key_file", default: Some(""), origin: Origin::New,
        meaning: "Optional Ed25519 private key (PEM, PKCS#8): when set, outgoing mail gets a second signature with it, selector `dkim_ed25519_selector`. Empty: RSA only." },
    KeyDoc { name: "dkim_ed25519_selector", default: Some("ed25519"), origin: Origin::New,
        meaning: "DKIM selector of the Ed25519 key (used only with `dkim_ed25519_key_file`)." },
    KeyDoc { name: "dns_servers", default: Some(""), origin: Origin::New,
        meaning: "Name servers the milter asks for DKIM keys, as `IP` or `IP:PORT`, separated by spaces. Empty: those in /etc/resolv.conf." },
    KeyDoc { name: "dns_timeout", default: Some("5"), origin: Origin::New,
        meaning: "Seconds the milter waits for one DNS answer (two tries per server); when no answer comes, the message is tempfailed, never accepted unchecked." },
    KeyDoc { name: "nocreate_file", default: Some("/etc/chatmail-nocreate"), origin: Origin::New,
        meaning: "While this file exists, no new accounts are created (existing accounts still log in); chatmail uses this fixed path." },
    KeyDoc { name: "new_accounts_per_ip_per_hour", default: Some("20"), origin: Origin::New,
        meaning: "Most new accounts (first logins, and `/new` requests) per client IP address in any hour; 0 turns creation off." },
    KeyDoc { name: "iroh_relay", default: Some(""), origin: Origin::Chatmail,
        meaning: "URL of an iroh relay that Delta Chat's realtime webxdc apps use, served as server metadata `/shared/vendor/deltachat/irohrelay`. Empty: none (clients use their default)." },
    KeyDoc { name: "push_notification_url", default: Some("https://notifications.delta.chat/notify"), origin: Origin::New,
        meaning: "Where chatmail-metadata POSTs a device token when its account receives mail (Delta Chat's notification service; the body is the token only). Empty: push notifications off (XDELTAPUSH is still advertised; tokens are kept)." },
    KeyDoc { name: "push_notification_ca_file", default: Some(""), origin: Origin::New,
        meaning: "PEM file of extra CA certificates trusted for `push_notification_url` (a private notification service, tests); empty: the system's only." },
    KeyDoc { name: "push_spool_dir", default: Some("/var/spool/chatmail-push"), origin: Origin::New,
        meaning: "Where the Dovecot plugin records accounts that received mail, and chatmail-metadata keeps its queue of notifications (one file per device token)." },
    KeyDoc { name: "turn_server", default: Some(""), origin: Origin::New,
        meaning: "TURN server for Delta Chat calls, `HOST:PORT` (e.g. `chat.example.org:3478`): clients get time-limited credentials for it as server metadata `/shared/vendor/deltachat/turn`. Empty: no TURN metadata." },
    KeyDoc { name: "turn_secret_file", default: Some("/etc/chatmail/turn-secret"), origin: Origin::New,
        meaning: "File holding the secret shared with the TURN server (coturn's `static-auth-secret` with `use-auth-secret`); read only when `turn_server` is set." },
    KeyDoc { name: "metrics_dir", default: Some("/var/lib/chatmail-relay/metrics"), origin: Origin::New,
        meaning: "Directory where each daemon keeps its counters as a Prometheus text file (`chatmail-milter.prom`, …), rewritten every 5 seconds: point node_exporter's textfile collector here, or run `chatmail-relay metrics`. Empty: no metrics." },
];

/// chatmail relay keys for things this relay does differently (its
/// filtermail and reinjection ports, metrics, web and TLS setup, privacy
/// page texts). Accepted so that an existing file loads, and otherwise ignored.
pub const CHATMAIL_IGNORED_KEYS: &[&str] = &[
    "filtermail_smtp_port",
    "filtermail_smtp_port_incoming",
    "filtermail_http_port_incoming",
    "filtermail_lmtp_port_transport",
    "postfix_reinject_port",
    "postfix_reinject_port_incoming",
    "turn_socket_path",
    "passdb_path",
    "max_imap_connections",
    "max_smtp_connections",
    "mtail_address",
    "disable_ipv6",
    "imap_rawlog",
    "imap_compress",
    "acme_email",
    "tls_external_cert_and_key",
    "www_folder",
    "privacy_postal",
    "privacy_mail",
    "privacy_pdo",
    "privacy_supervisor",
];

/// The `[params]` reference as a Markdown table, as docs/configuration.md shows it.
pub fn reference_table() -> String {
    let mut table = String::from("| key | default | from | meaning |\n|---|---|---|---|\n");
    for key in KEYS {
        let default = match key.default {
            None => "(required)".to_owned(),
            Some("") => "(empty)".to_owned(),
            Some(value) => format!("`{value}`"),
        };
        let origin = match key.origin {
            Origin::Chatmail => "chatmail",
            Origin::ChatmailIgnored => "chatmail, ignored",
            Origin::New => "new",
        };
        table.push_str(&format!("| `{}` | {default} | {origin} | {} |\n", key.name, key.meaning));
    }
    table
}

/// `HOST:PORT` with a DNS name or IP address and a port number (an IPv6
/// address in brackets).
fn check_host_port(text: &str) -> Result<String, String> {
    let (host, port) = text.rsplit_once(':').ok_or("expected HOST:PORT, e.g. chat.example.org:3478")?;
    port.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("{port:?} is not a port number"))?;
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let valid = match bracketed {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || check_domain(host).is_ok(),
    };
    if !valid {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(text.to_owned())
}

/// The relay's configuration, with every value checked and converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mail_domain: String,
    pub max_user_send_per_minute: u32,
    pub max_user_send_burst_size: u32,
    /// Bytes.
    pub max_mailbox_size: u64,
    /// Bytes.
    pub max_message_size: u64,
    /// Days.
    pub delete_mails_after: u32,
    /// Days.
    pub delete_large_after: u32,
    /// Days.
    pub delete_inactive_users_after: u32,
    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
    pub passthrough_senders: Vec<String>,
    pub passthrough_recipients: Vec<String>,
    pub mailboxes_dir: PathBuf,
    pub max_load_1m: f64,
    /// Bytes.
    pub min_available_memory: u64,
    /// Bytes.
    pub min_free_disk_space: u64,
    pub max_recipients_per_message: u32,
    pub reduced_send_per_minute: u32,
    pub reduced_send_burst_size: u32,
    pub reduced_rate_new_account_hours: u32,
    pub reduced_rate_after_cleartext_minutes: u32,
    pub max_user_connections: u32,
    pub instant_idle: bool,
    /// Milliseconds; 0: no limit.
    pub instant_idle_min_interval: u32,
    pub bot_spool_dir: PathBuf,
    pub bot_install_folder: String,
    pub bots_enabled: bool,
    /// Addresses; `["*"]` for every account.
    pub bot_accounts: Vec<String>,
    pub bot_state_dir: PathBuf,
    pub bot_max_parallel: u32,
    /// Bytes.
    pub bot_memory_limit: u64,
    /// Seconds.
    pub bot_wall_time: u32,
    /// Bytes.
    pub bot_output_limit: u64,
    /// Bytes.
    pub bot_max_package_size: u64,
    /// Percent of one core.
    pub bot_cpu_percent_per_hour: f64,
    /// Percent of one core.
    pub bot_cpu_percent_per_day: f64,
    pub bot_allowed_origins: Vec<String>,
    /// Empty: none.
    pub bot_network_ca_file: Option<PathBuf>,
    pub lmtp_socket: PathBuf,
    pub bot_submission_socket: PathBuf,
    pub dkim_selector: String,
    pub dkim_key_file: PathBuf,
    /// Empty: no Ed25519 signature.
    pub dkim_ed25519_key_file: Option<PathBuf>,
    pub dkim_ed25519_selector: String,
    /// Empty: the system's resolvers.
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Seconds.
    pub dns_timeout: u32,
    pub nocreate_file: PathBuf,
    pub new_accounts_per_ip_per_hour: u32,
    /// Empty: none.
    pub iroh_relay: Option<String>,
    /// `None`: push notifications off.
    pub push_notification_url: Option<String>,
    /// Empty: the system's CAs only.
    pub push_notification_ca_file: Option<PathBuf>,
    pub push_spool_dir: PathBuf,
    /// `HOST:PORT`; `None`: no TURN server.
    pub turn_server: Option<String>,
    pub turn_secret_file: PathBuf,
    /// Empty: no metrics.
    pub metrics_dir: Option<PathBuf>,
}

/// A configuration and the warnings found while reading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

/// A value or file problem that stops the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Something worth telling the operator that does not stop the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            problem: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Checks `text`, naming `path` in errors and warnings.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let error = |line: Option<usize>, key: Option<&str>, problem: String| ConfigError {
            path: path.to_path_buf(),
            line,
            key: key.map(str::to_owned),
            problem,
        };
        let entries = ini::parse(text).map_err(|e| error(Some(e.line), None, e.problem))?;
        let mut warnings = Vec::new();
        let mut params = Vec::new();
        for entry in &entries {
            if entry.section != "params" {
                // chatmail has only [params]; other sections are someone
                // else's business (or a typo), so mention them once per key.
                warnings.push(ConfigWarning {
                    path: path.to_path_buf(),
                    line: entry.line,
                    message: format!("key {:?} in section [{}] is ignored: settings belong in [params]", entry.key, entry.section),
                });
                continue;
            }
            if KEYS.iter().any(|k| k.name == entry.key) {
                params.push(entry);
            } else if !CHATMAIL_IGNORED_KEYS.contains(&entry.key.as_str()) {
                warnings.push(ConfigWarning {
                    path: path.to_path_buf(),
                    line: entry.line,
                    message: format!("unknown key {:?} in [params] is ignored", entry.key),
                });
            }
        }

        // Look up a key's text: from the file, else its documented default.
        let lookup = |name: &str| -> Result<(String, Option<usize>), ConfigError> {
            if let Some(entry) = params.iter().find(|e| e.key == name) {
                return Ok((entry.value.clone(), Some(entry.line)));
            }
            match KEYS.iter().find(|k| k.name == name).and_then(|k| k.default) {
                Some(default) => Ok((default.to_owned(), None)),
                None => Err(error(None, Some(name), "is required but missing from [params]".into())),
            }
        };
        let field = |name: &str, parse: &dyn Fn(&str) -> Result<u64, String>| -> Result<u64, ConfigError> {
            let (text, line) = lookup(name)?;
            parse(&text).map_err(|problem| error(line, Some(name), problem))
        };
        let uint = |name: &str, min: u64, max: u64| field(name, &|t| parse_uint(t, min, max));
        let size = |name: &str, bare: BareNumber| field(name, &|t| parse_size(t, bare));
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);

        let (mail_domain, domain_line) = lookup("mail_domain")?;
        check_domain(&mail_domain).map_err(|p| error(domain_line, Some("mail_domain"), p.to_string()))?;

        let (mailboxes_text, mailboxes_line) = lookup("mailboxes_dir")?;
        let mailboxes_dir = PathBuf::from(mailboxes_text.replace("{mail_domain}", &mail_domain));
        if !mailboxes_dir.is_absolute() {
            return Err(error(mailboxes_line, Some("mailboxes_dir"), format!("{:?} is not an absolute path", mailboxes_dir.display().to_string())));
        }

        let (nocreate_text, nocreate_line) = lookup("nocreate_file")?;
        let nocreate_file = PathBuf::from(nocreate_text);
        if !nocreate_file.is_absolute() {
            return Err(error(nocreate_line, Some("nocreate_file"), format!("{:?} is not an absolute path", nocreate_file.display().to_string())));
        }

        let (spool_text, spool_line) = lookup("bot_spool_dir")?;
        let bot_spool_dir = PathBuf::from(spool_text);
        if !bot_spool_dir.is_absolute() {
            return Err(error(spool_line, Some("bot_spool_dir"), format!("{:?} is not an absolute path", bot_spool_dir.display().to_string())));
        }

        let absolute = |name: &str| -> Result<PathBuf, ConfigError> {
            let (text, line) = lookup(name)?;
            let path = PathBuf::from(text);
            if !path.is_absolute() {
                return Err(error(line, Some(name), format!("{:?} is not an absolute path", path.display().to_string())));
            }
            Ok(path)
        };
        let decimal = |name: &str| -> Result<f64, ConfigError> {
            let (text, line) = lookup(name)?;
            parse_decimal(&text).map_err(|p| error(line, Some(name), p))
        };
        let (bots_text, bots_line) = lookup("bots_enabled")?;
        let bots_enabled = parse_bool(&bots_text).map_err(|p| error(bots_line, Some("bots_enabled"), p))?;

        let (idle_text, idle_line) = lookup("instant_idle")?;
        let instant_idle = parse_bool(&idle_text).map_err(|p| error(idle_line, Some("instant_idle"), p))?;

        let (load_text, load_line) = lookup("max_load_1m")?;
        let max_load_1m = parse_decimal(&load_text).map_err(|p| error(load_line, Some("max_load_1m"), p))?;

        let selector = |name: &str| -> Result<String, ConfigError> {
            let (text, line) = lookup(name)?;
            check_selector(&text).map_err(|p| error(line, Some(name), p))?;
            Ok(text)
        };
        // Empty: none.
        let optional_https_url = |name: &str| -> Result<Option<String>, ConfigError> {
            let (text, line) = lookup(name)?;
            match text.trim() {
                "" => Ok(None),
                url if url.starts_with("https://") && !url.contains(char::is_whitespace) => Ok(Some(url.to_owned())),
                _ => Err(error(line, Some(name), "not an https:// URL".into())),
            }
        };
        let list = |name: &str| -> Result<Vec<String>, ConfigError> {
            Ok(parse_list(&lookup(name)?.0).into_iter().map(|a| a.replace("{mail_domain}", &mail_domain)).collect())
        };

        let config = Config {
            max_user_send_per_minute: narrow(uint("max_user_send_per_minute", 1, 1_000_000)?),
            max_user_send_burst_size: narrow(uint("max_user_send_burst_size", 1, 1_000_000)?),
            max_mailbox_size: size("max_mailbox_size", BareNumber::Megabytes)?,
            max_message_size: size("max_message_size", BareNumber::Bytes)?,
            delete_mails_after: narrow(uint("delete_mails_after", 1, 36_500)?),
            delete_large_after: narrow(uint("delete_large_after", 1, 36_500)?),
            delete_inactive_users_after: narrow(uint("delete_inactive_users_after", 1, 36_500)?),
            username_min_length: uint("username_min_length", 1, 64)? as usize,
            username_max_length: uint("username_max_length", 1, 64)? as usize,
            password_min_length: uint("password_min_length", 1, 1024)? as usize,
            passthrough_senders: list("passthrough_senders")?,
            passthrough_recipients: list("passthrough_recipients")?,
            mailboxes_dir,
            max_load_1m,
            min_available_memory: size("min_available_memory", BareNumber::Megabytes)?,
            min_free_disk_space: size("min_free_disk_space", BareNumber::Megabytes)?,
            max_recipients_per_message: narrow(uint("max_recipients_per_message", 1, 1_000_000)?),
            reduced_send_per_minute: narrow(uint("reduced_send_per_minute", 1, 1_000_000)?),
            reduced_send_burst_size: narrow(uint("reduced_send_burst_size", 1, 1_000_000)?),
            reduced_rate_new_account_hours: narrow(uint("reduced_rate_new_account_hours", 0, 100_000)?),
            reduced_rate_after_cleartext_minutes: narrow(uint("reduced_rate_after_cleartext_minutes", 0, 1_000_000)?),
            max_user_connections: narrow(uint("max_user_connections", 1, 100_000)?),
            instant_idle,
            instant_idle_min_interval: narrow(uint("instant_idle_min_interval", 0, 60_000)?),
            bot_spool_dir,
            bot_install_folder: lookup("bot_install_folder")?.0,
            bots_enabled,
            bot_accounts: list("bot_accounts")?,
            bot_state_dir: absolute("bot_state_dir")?,
            bot_max_parallel: narrow(uint("bot_max_parallel", 1, 64)?),
            bot_memory_limit: size("bot_memory_limit", BareNumber::Megabytes)?,
            bot_wall_time: narrow(uint("bot_wall_time", 1, 3600)?),
            bot_output_limit: size("bot_output_limit", BareNumber::Bytes)?,
            bot_max_package_size: size("bot_max_package_size", BareNumber::Bytes)?,
            bot_cpu_percent_per_hour: decimal("bot_cpu_percent_per_hour")?,
            bot_cpu_percent_per_day: decimal("bot_cpu_percent_per_day")?,
            bot_allowed_origins: list("bot_allowed_origins")?,
            bot_network_ca_file: match lookup("bot_network_ca_file")?.0.trim() {
                "" => None,
                _ => Some(absolute("bot_network_ca_file")?),
            },
            lmtp_socket: absolute("lmtp_socket")?,
            bot_submission_socket: absolute("bot_submission_socket")?,
            dkim_selector: selector("dkim_selector")?,
            dkim_key_file: absolute("dkim_key_file")?,
            dkim_ed25519_key_file: match lookup("dkim_ed25519_key_file")?.0.trim() {
                "" => None,
                _ => Some(absolute("dkim_ed25519_key_file")?),
            },
            dkim_ed25519_selector: selector("dkim_ed25519_selector")?,
            dns_servers: {
                let (text, line) = lookup("dns_servers")?;
                parse_list(&text)
                    .iter()
                    .map(|entry| parse_name_server(entry))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|p| error(line, Some("dns_servers"), p))?
            },
            dns_timeout: narrow(uint("dns_timeout", 1, 60)?),
            nocreate_file,
            new_accounts_per_ip_per_hour: narrow(uint("new_accounts_per_ip_per_hour", 0, 1_000_000)?),
            iroh_relay: optional_https_url("iroh_relay")?,
            push_notification_url: optional_https_url("push_notification_url")?,
            push_notification_ca_file: match lookup("push_notification_ca_file")?.0.trim() {
                "" => None,
                _ => Some(absolute("push_notification_ca_file")?),
            },
            push_spool_dir: absolute("push_spool_dir")?,
            turn_server: {
                let (text, line) = lookup("turn_server")?;
                match text.trim() {
                    "" => None,
                    server => Some(check_host_port(server).map_err(|p| error(line, Some("turn_server"), p))?),
                }
            },
            turn_secret_file: absolute("turn_secret_file")?,
            metrics_dir: match lookup("metrics_dir")?.0.trim() {
                "" => None,
                _ => Some(absolute("metrics_dir")?),
            },
            mail_domain,
        };
        if config.username_min_length > config.username_max_length {
            let line = lookup("username_min_length")?.1;
            return Err(error(
                line,
                Some("username_min_length"),
                format!("{} is larger than username_max_length ({})", config.username_min_length, config.username_max_length),
            ));
        }
        if config.max_message_size == 0 {
            return Err(error(lookup("max_message_size")?.1, Some("max_message_size"), "must be larger than 0".into()));
        }
        if config.max_mailbox_size < config.max_message_size {
            return Err(error(
                lookup("max_mailbox_size")?.1,
                Some("max_mailbox_size"),
                format!("{} bytes is smaller than max_message_size ({} bytes)", config.max_mailbox_size, config.max_message_size),
            ));
        }
        Ok(Loaded { config, warnings })
    }

    /// The rules for new account addresses this configuration implies.
    /// The checked value of `key` as a line of text for scripts
    /// (`chatmail-relay value KEY`): sizes in bytes, `{mail_domain}` filled
    /// in, an unset optional value empty. `None`: a key scripts cannot ask
    /// for (yet).
    pub fn value_text(&self, key: &str) -> Option<String> {
        let path = |p: &Path| p.display().to_string();
        let optional = |v: &Option<String>| v.clone().unwrap_or_default();
        Some(match key {
            "mail_domain" => self.mail_domain.clone(),
            "mailboxes_dir" => path(&self.mailboxes_dir),
            "max_mailbox_size" => self.max_mailbox_size.to_string(),
            "max_message_size" => self.max_message_size.to_string(),
            "max_recipients_per_message" => self.max_recipients_per_message.to_string(),
            "bot_spool_dir" => path(&self.bot_spool_dir),
            "bot_submission_socket" => path(&self.bot_submission_socket),
            "push_spool_dir" => path(&self.push_spool_dir),
            "push_notification_url" => optional(&self.push_notification_url),
            "dkim_key_file" => path(&self.dkim_key_file),
            "turn_server" => optional(&self.turn_server),
            "turn_secret_file" => path(&self.turn_secret_file),
            "nocreate_file" => path(&self.nocreate_file),
            "lmtp_socket" => path(&self.lmtp_socket),
            "metrics_dir" => self.metrics_dir.as_deref().map(path).unwrap_or_default(),
            _ => return None,
        })
    }

    pub fn account_address_rules(&self) -> AccountAddressRules {
        AccountAddressRules {
            mail_domain: self.mail_domain.clone(),
            min_local_len: self.username_min_length,
            max_local_len: self.username_max_length,
        }
    }
}

/// A DKIM selector is one or more DNS labels (RFC 6376 3.1).
fn check_selector(text: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if text.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("{text:?} is not a DKIM selector (DNS labels of letters, digits, '-' and '_', separated by dots)"))
    }
}

/// `IP` (port 53) or `IP:PORT`; IPv6 with a port as `[IP]:PORT`.
fn parse_name_server(entry: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    entry
        .parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{entry:?} is not a name server address (IP or IP:PORT)"))
}

/// Loads `path` for the daemon or command `program`, the way every binary
/// of this project does: warnings go to stderr as `program: warning: …`;
/// an error is printed as `program: error: …` and becomes exit code 2.
pub fn load_for(program: &str, path: &Path) -> Result<Config, std::process::ExitCode> {
    match Config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{program}: warning: {warning}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("{program}: error: {e}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests;
