//! The auth service behind Dovecot's dict passdb and userdb: answers
//! lookups, creates accounts on first login, and serves the dict protocol
//! on a unix socket.
//!
//! A passdb lookup carries the password (`%w` in the key). The service
//! checks it against the stored hash itself and answers with `{PLAIN}` and
//! the password only when it matches; otherwise with the stored hash, so
//! Dovecot reports an ordinary password mismatch. So each login costs one
//! SHA512-CRYPT, as with a passwd-file, and a login is recorded only when
//! the password was right.
//!
//! A sessions lookup (a deny passdb, asked once the password is right)
//! refuses an IMAP login when the account has `max_user_connections`
//! sessions open already: the user is "found" there, with a `reason` the
//! client sees as `NO [UNAVAILABLE] Maximum number of sessions …`. The
//! Dovecot plugin still refuses a session that finds no free slot (two
//! logins racing past this check), but there the client only gets
//! Dovecot's generic internal error.
//!
//! Logging policy: one line per lookup that changes or refuses something
//! (`result=created`, `result=refused`, `result=wrong-password`,
//! `result=error`) on stderr, as `key=value` words; successful logins of
//! existing accounts are not logged (Dovecot logs logins). Passwords are
//! never logged.
//!
//! Metrics ([`METRICS`]): accounts created, creations refused by reason,
//! password checks by result, sessions refused, internal errors.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use chatmail_config::metrics::{FamilyDoc, Kind, Registry};
use chatmail_config::Config;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::crypt::{hash_password, verify_password};
use crate::dict::{self, Command, Reply};
use crate::keys::{parse_key, Request};
use crate::policy::{check_password_bytes, AccountPolicy, NewAccountLimiter, Refusal, ResourceGate, Resources};
use crate::store::{CreateOutcome, Store};

/// Everything the service needs, from chatmail.ini and the command line.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub policy: AccountPolicy,
    pub gate: ResourceGate,
    pub nocreate_file: PathBuf,
    pub mailboxes_dir: PathBuf,
    pub new_accounts_per_ip_per_hour: u32,
    pub max_user_connections: u32,
    /// The mail user's ids, returned by userdb lookups.
    pub mail_uid: u32,
    pub mail_gid: u32,
}

impl AuthSettings {
    pub fn from_config(config: &Config, mail_uid: u32, mail_gid: u32) -> AuthSettings {
        AuthSettings {
            policy: AccountPolicy::from_config(config),
            gate: ResourceGate::from_config(config),
            nocreate_file: config.nocreate_file.clone(),
            mailboxes_dir: config.mailboxes_dir.clone(),
            new_accounts_per_ip_per_hour: config.new_accounts_per_ip_per_hour,
            max_user_connections: config.max_user_connections,
            mail_uid,
            mail_gid,
        }
    }
}

/// The answer to one lookup, and what to log about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOutcome {
    pub reply: Reply,
    /// `None`: nothing worth a log line.
    pub log: Option<String>,
}

impl LookupOutcome {
    /// The outcome, after counting it in `name` with `labels`.
    fn counted(self, metrics: &Registry, name: &str, labels: &[&str]) -> LookupOutcome {
        metrics.inc(name, labels);
        self
    }
}

type MeasureFn = dyn Fn(&std::path::Path) -> std::io::Result<Resources> + Send + Sync;

/// The service: policy, store, and the per-IP limiter.
pub struct AuthService {
    settings: AuthSettings,
    store: Store,
    limiter: Mutex<NewAccountLimiter>,
    clock_start: Instant,
    measure: Box<MeasureFn>,
    metrics: Arc<Registry>,
}

/// chatmail-auth's metric families (see the operator guide's metrics section).
pub const METRICS: &[FamilyDoc] = &[
    FamilyDoc { name: "chatmail_accounts_created_total", kind: Kind::Counter, labels: &[], help: "Accounts created at a first login." },
    FamilyDoc {
        name: "chatmail_account_creations_refused_total",
        kind: Kind::Counter,
        labels: &["reason"],
        help: "First logins that created no account, by reason (bad-address, reserved-name, password-too-short, password-too-long, password-characters, nocreate-file, load-too-high, memory-too-low, disk-too-full, ip-limit).",
    },
    FamilyDoc {
        name: "chatmail_logins_total",
        kind: Kind::Counter,
        labels: &["result"],
        help: "Logins of existing accounts checked by chatmail-auth: ok, wrong-password, refused (not an address of this relay). Dovecot's auth cache answers repeated logins itself; those are not counted.",
    },
    FamilyDoc { name: "chatmail_sessions_refused_total", kind: Kind::Counter, labels: &[], help: "IMAP logins refused because the account had max_user_connections sessions open." },
    FamilyDoc { name: "chatmail_auth_errors_total", kind: Kind::Counter, labels: &["op"], help: "Lookups that failed inside chatmail-auth (Dovecot tempfails the login; the log line result=error says why), by lookup." },
];

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// A user name fit for a log line: hostile input is quoted and cut short.
fn loggable(user: &str) -> String {
    let mut shown: String = user.chars().take(80).collect();
    if shown.len() < user.len() {
        shown.push('…');
    }
    if shown.bytes().all(|b| b.is_ascii_graphic()) {
        shown
    } else {
        format!("{shown:?}")
    }
}

impl AuthService {
    pub fn new(settings: AuthSettings) -> AuthService {
        AuthService::with_measure(settings, Box::new(crate::resources::measure))
    }

    /// With a stand-in for the resource measurement (tests).
    pub fn with_measure(settings: AuthSettings, measure: Box<MeasureFn>) -> AuthService {
        AuthService {
            store: Store::new(settings.mailboxes_dir.clone()),
            limiter: Mutex::new(NewAccountLimiter::new(settings.new_accounts_per_ip_per_hour)),
            settings,
            clock_start: Instant::now(),
            measure,
            metrics: Arc::new(Registry::new(METRICS)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock_start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The service's counters (written to `metrics_dir` by the daemon).
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.metrics
    }

    /// Answers the lookup of `key` (blocking: file I/O and password hashing).
    pub fn lookup(&self, key: &[u8]) -> LookupOutcome {
        match parse_key(key) {
            Ok(Request::Passdb { client_ip, user, password }) => self.passdb(&client_ip, &user, &password),
            Ok(Request::Userdb { user }) => self.userdb(&user),
            Ok(Request::Sessions { service, user }) => self.sessions(&service, &user),
            Err(e) => LookupOutcome {
                reply: Reply::Failed(format!("chatmail-auth: {e}")),
                log: Some(format!("op=lookup result=error reason=bad-key problem={:?}", e.to_string())),
            },
        }
    }

    fn userdb(&self, user: &str) -> LookupOutcome {
        if self.settings.policy.check_existing_address(user).is_err() {
            return LookupOutcome { reply: Reply::NotFound, log: None };
        }
        match self.store.exists(user) {
            Ok(true) => {
                let value = serde_json::Value::Object(self.userdb_fields(user));
                LookupOutcome { reply: Reply::Found(value.to_string()), log: None }
            }
            Ok(false) => LookupOutcome { reply: Reply::NotFound, log: None },
            Err(e) => self.error("userdb", user, &e.to_string()),
        }
    }

    /// Whether `user` may open one more `service` session, answered for a
    /// deny passdb: "not found" lets the login through; found (with any
    /// password, since the first passdb checked it) refuses it, with the
    /// reason the client sees. A reason starting with `[` is sent as the
    /// response code; `nodelay` spares the client Dovecot's failure delay
    /// and its IP the penalty meant for password guessing.
    fn sessions(&self, service: &str, user: &str) -> LookupOutcome {
        let no_objection = LookupOutcome { reply: Reply::NotFound, log: None };
        if !chatmail_config::sessions::counts(service) || self.settings.policy.check_existing_address(user).is_err() {
            return no_objection;
        }
        let max = self.settings.max_user_connections;
        match chatmail_config::sessions::all_busy(&self.store.account_dir(user), max) {
            Ok(false) => no_objection,
            Ok(true) => LookupOutcome {
                reply: Reply::Found(
                    json!({
                        "nopassword": "yes",
                        "nodelay": "yes",
                        "reason": format!("[UNAVAILABLE] Maximum number of sessions for this account exceeded (max_user_connections={max})"),
                    })
                    .to_string(),
                ),
                log: Some(format!("op=sessions user={} service={service} result=refused reason=max-user-connections max={max}", loggable(user))),
            }
            .counted(&self.metrics, "chatmail_sessions_refused_total", &[]),
            // Fail open, as the plugin does: a broken slot directory must
            // not lock the account out; the plugin still counts.
            Err(e) => LookupOutcome {
                reply: Reply::NotFound,
                log: Some(format!("op=sessions user={} result=warning problem={:?}", loggable(user), format!("connection limit not checked: {e}"))),
            },
        }
    }

    /// The userdb fields of an existing account.
    fn userdb_fields(&self, user: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("home".into(), self.store.account_dir(user).display().to_string().into());
        fields.insert("uid".into(), self.settings.mail_uid.into());
        fields.insert("gid".into(), self.settings.mail_gid.into());
        // An operator's per-account quota (file max_mailbox_size in the
        // account's home) replaces max_mailbox_size for Dovecot's quota.
        match chatmail_config::layout::quota_override(&self.store.account_dir(user)) {
            Ok(Some(bytes)) => {
                fields.insert("quota_rule".into(), format!("*:storage={bytes}B").into());
            }
            Ok(None) => {}
            Err(problem) => eprintln!("chatmail-auth: op=userdb user={} result=warning problem={problem:?}", loggable(user)),
        }
        fields
    }

    /// The passdb answer for a correct password: the password to compare
    /// (trivially), and the userdb fields prefixed `userdb_`, which Dovecot's
    /// `userdb { driver = prefetch }` uses instead of a second lookup.
    fn login_answer(&self, user: &str, password: &str) -> String {
        let mut fields = serde_json::Map::new();
        fields.insert("password".into(), format!("{{PLAIN}}{password}").into());
        for (key, value) in self.userdb_fields(user) {
            fields.insert(format!("userdb_{key}"), value);
        }
        serde_json::Value::Object(fields).to_string()
    }

    fn error(&self, op: &str, user: &str, problem: &str) -> LookupOutcome {
        self.metrics.inc("chatmail_auth_errors_total", &[op]);
        LookupOutcome {
            reply: Reply::Failed(format!("chatmail-auth: {problem}")),
            log: Some(format!("op={op} user={} result=error problem={problem:?}", loggable(user))),
        }
    }

    /// `creating`: the refusal stopped a first login (no account yet).
    fn refused(&self, user: &str, ip: &str, refusal: &Refusal, creating: bool) -> LookupOutcome {
        if creating {
            self.metrics.inc("chatmail_account_creations_refused_total", &[refusal.code()]);
        } else {
            self.metrics.inc("chatmail_logins_total", &["refused"]);
        }
        LookupOutcome {
            reply: Reply::NotFound,
            log: Some(format!(
                "op=passdb user={} ip={ip} result=refused reason={} detail={:?}",
                loggable(user),
                refusal.code(),
                refusal.to_string()
            )),
        }
    }

    /// Whether `password` is the submission token of `user`'s bot: the bot
    /// daemon sends the bot's mail through the relay's own submission
    /// service with it, so every milter rule and rate limit applies. Only
    /// from loopback: the token never leaves the relay's machine.
    fn bot_token_matches(&self, user: &str, ip: &str, password: &str) -> bool {
        if !ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return false;
        }
        match self.store.read_bot_token(user) {
            Ok(Some(stored)) => verify_password(password, &stored).unwrap_or_else(|problem| {
                eprintln!("chatmail-auth: op=passdb user={} result=warning problem={:?}", loggable(user), format!("bot token: {problem}"));
                false
            }),
            Ok(None) => false,
            Err(e) => {
                eprintln!("chatmail-auth: op=passdb user={} result=warning problem={:?}", loggable(user), format!("bot token: {e}"));
                false
            }
        }
    }

    /// The reply for a login whose password was checked against `stored`.
    fn checked_login(&self, user: &str, ip: &str, password: &[u8], stored: &str) -> LookupOutcome {
        let verdict = match check_password_bytes(password) {
            Ok(text) => verify_password(text, stored).map(|ok| ok || self.bot_token_matches(user, ip, text)),
            // No password we could have stored: a mismatch.
            Err(_) => Ok(false),
        };
        match verdict {
            Ok(true) => {
                if let Err(e) = self.store.record_login(user, SystemTime::now()) {
                    // The login itself is fine; expiry may see an older day.
                    eprintln!("chatmail-auth: op=passdb user={} result=warning problem={:?}", loggable(user), format!("recording last login: {e}"));
                }
                self.metrics.inc("chatmail_logins_total", &["ok"]);
                let text = String::from_utf8_lossy(password);
                LookupOutcome { reply: Reply::Found(self.login_answer(user, &text)), log: None }
            }
            Ok(false) => LookupOutcome {
                // Dovecot compares and reports the mismatch itself.
                reply: Reply::Found(json!({ "password": stored }).to_string()),
                log: Some(format!("op=passdb user={} ip={ip} result=wrong-password", loggable(user))),
            }
            .counted(&self.metrics, "chatmail_logins_total", &["wrong-password"]),
            Err(problem) => self.error("passdb", user, &format!("stored password of {user}: {problem}")),
        }
    }

    fn passdb(&self, ip: &str, user: &str, password: &[u8]) -> LookupOutcome {
        let policy = &self.settings.policy;
        if let Err(refusal) = policy.check_existing_address(user) {
            return self.refused(user, ip, &refusal, false);
        }
        match self.store.read_password(user) {
            Ok(Some(stored)) => return self.checked_login(user, ip, password, &stored),
            Ok(None) => {}
            Err(e) => return self.error("passdb", user, &e.to_string()),
        }
        // No such account: a first login may create it.
        if let Err(refusal) = policy.check_address(user) {
            return self.refused(user, ip, &refusal, true);
        }
        let password_text = match policy.check_new_password(password) {
            Ok(text) => text,
            Err(refusal) => return self.refused(user, ip, &refusal, true),
        };
        if self.settings.nocreate_file.exists() {
            return self.refused(user, ip, &Refusal::NoCreateFile, true);
        }
        match (self.measure)(&self.settings.mailboxes_dir) {
            Ok(resources) => {
                if let Err(refusal) = self.settings.gate.check(&resources) {
                    return self.refused(user, ip, &refusal, true);
                }
            }
            Err(e) => return self.error("passdb", user, &format!("measuring resources: {e}")),
        }
        let now = self.now_ms();
        let acquired = match self.limiter.lock() {
            Ok(mut limiter) => limiter.acquire(ip, now),
            Err(_) => return self.error("passdb", user, "per-IP limiter poisoned"),
        };
        if let Err(refusal) = acquired {
            return self.refused(user, ip, &refusal, true);
        }
        let release = || {
            if let Ok(mut limiter) = self.limiter.lock() {
                limiter.release(ip, now);
            }
        };
        let stored = match hash_password(password_text) {
            Ok(stored) => stored,
            Err(problem) => {
                release();
                return self.error("passdb", user, &problem);
            }
        };
        match self.store.create(user, &stored) {
            Ok(CreateOutcome::Created) => {
                self.metrics.inc("chatmail_accounts_created_total", &[]);
                let text = password_text.to_owned();
                LookupOutcome {
                    reply: Reply::Found(self.login_answer(user, &text)),
                    log: Some(format!("op=passdb user={user} ip={ip} result=created")),
                }
            }
            Ok(CreateOutcome::Existed(existing)) => {
                // A parallel first login won; this one is an ordinary login.
                release();
                self.checked_login(user, ip, password, &existing)
            }
            Err(e) => {
                release();
                self.error("passdb", user, &e.to_string())
            }
        }
    }
}

/// Serves the dict protocol on `listener` until `shutdown` completes.
pub async fn serve(listener: UnixListener, service: Arc<AuthService>, shutdown: impl Future) -> std::io::Result<()> {
    crate::accept_loop("chatmail-auth", listener, shutdown, move |stream| connection(stream, Arc::clone(&service))).await
}

/// The dict name with which Dovecot 2.4's Lua passdb/userdb script
/// (packaging/dovecot/chatmail-auth.lua) greets: found values are then
/// Dovecot's own field list rather than JSON, and userdb fields use 2.4's
/// setting names.
pub const LUA_DICT_NAME: &str = "chatmail-lua";

/// A found value as the Lua script reads it: `name=value` fields joined by
/// tabs, each value tab-escaped (the script has no JSON parser); 2.3's
/// `quota_rule` of a per-account quota becomes 2.4's `quota_storage_size`.
pub fn lua_fields(json: &str) -> Result<String, String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for (name, value) in object {
        let value = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let (name, value) = match (name.as_str(), value.strip_prefix("*:storage=")) {
            ("quota_rule", Some(size)) => ("quota_storage_size".to_owned(), size.to_owned()),
            ("userdb_quota_rule", Some(size)) => ("userdb_quota_storage_size".to_owned(), size.to_owned()),
            _ => (name, value),
        };
        if !out.is_empty() {
            out.push('\t');
        }
        out.push_str(&name);
        out.push('=');
        dict::escape(&value, &mut out);
    }
    Ok(out)
}

/// One client connection: a handshake, then commands answered in order.
async fn connection(stream: UnixStream, service: Arc<AuthService>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut commands = dict::CommandReader::new(read);
    while let Some(command) = commands.next().await? {
        let lua = commands.dict_name() == LUA_DICT_NAME;
        let reply = match command {
            Command::Hello { .. } => continue,
            Command::Lookup { key, .. } => {
                let service = Arc::clone(&service);
                let outcome = tokio::task::spawn_blocking(move || service.lookup(&key))
                    .await
                    .unwrap_or_else(|e| LookupOutcome {
                        reply: Reply::Failed("chatmail-auth: internal error".into()),
                        log: Some(format!("op=lookup result=error problem={:?}", e.to_string())),
                    });
                if let Some(log) = &outcome.log {
                    eprintln!("chatmail-auth: {log}");
                }
                match outcome.reply {
                    Reply::Found(json) if lua => match lua_fields(&json) {
                        Ok(fields) => Reply::Found(fields).line(),
                        Err(e) => Reply::Failed(format!("chatmail-auth: internal error: {e}")).line(),
                    },
                    reply => reply.line(),
                }
            }
            Command::Iterate => dict::ITERATION_FINISHED.to_owned(),
            Command::Commit { id } => dict::commit_refused(&id),
            Command::Begin { .. } | Command::Set { .. } | Command::Unset { .. } | Command::Rollback { .. } | Command::OtherWrite { .. } => continue,
        };
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatmail_config::AccountAddressRules;

    const GOOD_PW: &str = "password123";

    #[test]
    fn lua_fields_are_dovecot_field_lists() {
        let table = [
            (r#"{"home":"/m/a@x","uid":5000}"#, "home=/m/a@x\tuid=5000"),
            (r#"{"password":"{PLAIN}p\tw","userdb_uid":1}"#, "password={PLAIN}p\x01tw\tuserdb_uid=1"),
            (r#"{"quota_rule":"*:storage=1024B"}"#, "quota_storage_size=1024B"),
            (r#"{"userdb_quota_rule":"*:storage=5B"}"#, "userdb_quota_storage_size=5B"),
            (r#"{"nopassword":"yes","reason":"[UNAVAILABLE] no"}"#, "nopassword=yes\treason=[UNAVAILABLE] no"),
            (r#"{}"#, ""),
        ];
        for (json, want) in table {
            assert_eq!(lua_fields(json).as_deref(), Ok(want), "{json}");
        }
        assert!(lua_fields("[1]").is_err());
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        service: AuthService,
        nocreate: PathBuf,
        mailboxes: PathBuf,
    }

    fn fixture(per_hour: u32, resources: Resources) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mailboxes = dir.path().join("mail");
        let nocreate = dir.path().join("nocreate");
        let settings = AuthSettings {
            policy: AccountPolicy {
                address: AccountAddressRules { mail_domain: "chat.example".into(), min_local_len: 9, max_local_len: 9 },
                password_min_len: 9,
            },
            gate: ResourceGate { max_load_1m: 5.0, min_available_memory: 100, min_free_disk: 100 },
            nocreate_file: nocreate.clone(),
            mailboxes_dir: mailboxes.clone(),
            new_accounts_per_ip_per_hour: per_hour,
            max_user_connections: 2,
            mail_uid: 5000,
            mail_gid: 5001,
        };
        let service = AuthService::with_measure(settings, Box::new(move |_| Ok(resources)));
        Fixture { _dir: dir, service, nocreate, mailboxes }
    }

    const FINE: Resources = Resources { load_1m: 0.1, available_memory: 1 << 30, free_disk: 1 << 30 };

    fn passdb(f: &Fixture, ip: &str, user: &str, pw: &str) -> LookupOutcome {
        f.service.lookup(format!("shared/passdb/{ip}/{user}/{pw}").as_bytes())
    }

    /// The answer to a correct login (`userdb_*` fields for prefetch).
    fn plain(pw: &str) -> Reply {
        Reply::Found(format!("{{\"password\":{}", serde_json::to_string(&format!("{{PLAIN}}{pw}")).expect("json")))
    }

    fn is_login_ok(reply: &Reply, pw: &str) -> bool {
        let Reply::Found(json) = reply else { return false };
        let Reply::Found(prefix) = plain(pw) else { return false };
        json.starts_with(&prefix) && json.contains("\"userdb_home\"") && json.contains("\"userdb_uid\":5000")
    }

    #[test]
    fn first_login_creates_then_password_is_checked() {
        let f = fixture(10, FINE);
        let created = passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW);
        assert!(is_login_ok(&created.reply, GOOD_PW), "{created:?}");
        assert!(created.log.as_deref().is_some_and(|l| l.contains("result=created")), "{created:?}");
        assert!(f.mailboxes.join("alice0001@chat.example/enforceE2EEincoming").exists());
        // Right password again: plain answer, nothing logged.
        let again = passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW);
        assert!(is_login_ok(&again.reply, GOOD_PW) && again.log.is_none(), "{again:?}");
        // Wrong password: the stored hash, so Dovecot reports a mismatch; never overwritten.
        let wrong = passdb(&f, "192.0.2.1", "alice0001@chat.example", "wrongpassword");
        let stored = std::fs::read_to_string(f.mailboxes.join("alice0001@chat.example/password")).expect("stored");
        assert_eq!(wrong.reply, Reply::Found(json!({ "password": stored }).to_string()));
        assert!(wrong.log.as_deref().is_some_and(|l| l.contains("result=wrong-password") && !l.contains("wrongpassword")));
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW).reply, GOOD_PW));
        // userdb knows the account now.
        let user = f.service.lookup(b"shared/userdb/alice0001@chat.example");
        let home = f.mailboxes.join("alice0001@chat.example");
        assert_eq!(user.reply, Reply::Found(json!({ "home": home.display().to_string(), "uid": 5000, "gid": 5001 }).to_string()));
        assert_eq!(f.service.lookup(b"shared/userdb/nobody001@chat.example").reply, Reply::NotFound);
        let metrics = f.service.metrics();
        assert_eq!(metrics.get("chatmail_accounts_created_total", &[]), Some(1.0));
        assert_eq!(metrics.get("chatmail_logins_total", &["ok"]), Some(2.0));
        assert_eq!(metrics.get("chatmail_logins_total", &["wrong-password"]), Some(1.0));
    }

    #[test]
    fn bot_submission_token_works_from_loopback_only() {
        let f = fixture(10, FINE);
        let user = "botbot001@chat.example";
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", user, GOOD_PW).reply, GOOD_PW));
        let token = "0123456789abcdef0123456789abcdef";
        let token_file = f.mailboxes.join(user).join(chatmail_config::spool::BOT_SUBMIT_TOKEN);
        let table: &[(&str, &str, bool)] = &[
            ("127.0.0.1", token, false),
            ("::1", token, false),
            ("192.0.2.1", GOOD_PW, true),
        ];
        // No token file yet: the token is just a wrong password.
        for (ip, pw, ok) in table {
            assert_eq!(is_login_ok(&passdb(&f, ip, user, pw).reply, pw), *ok, "{ip} without a token file");
        }
        std::fs::write(&token_file, hash_password(token).expect("hash")).expect("token file");
        let table: &[(&str, &str, bool)] = &[
            ("127.0.0.1", token, true),
            ("::1", token, true),
            ("192.0.2.1", token, false),
            ("127.0.0.1", "wrongtoken0000000", false),
            ("192.0.2.1", GOOD_PW, true),
            ("127.0.0.1", GOOD_PW, true),
        ];
        for (ip, pw, ok) in table {
            assert_eq!(is_login_ok(&passdb(&f, ip, user, pw).reply, pw), *ok, "{ip} {pw}");
        }
    }

    #[test]
    fn refusals() {
        let f = fixture(10, FINE);
        let long = "x".repeat(10_000);
        let table: &[(&str, &str, &str)] = &[
            ("short@chat.example", GOOD_PW, "bad-address"),
            ("postmaster@chat.example", GOOD_PW, "bad-address"),
            ("alice0001@other.example", GOOD_PW, "bad-address"),
            ("ALICE0001@chat.example", GOOD_PW, "bad-address"),
            ("alice0001@chat.example", "short", "password-too-short"),
            ("alice0001@chat.example", &long, "password-too-long"),
            ("alice\t001@chat.example", GOOD_PW, "bad-address"),
            ("alice\"001@chat.example", GOOD_PW, "bad-address"),
            ("alice\\001@chat.example", GOOD_PW, "bad-address"),
            ("..@chat.example", GOOD_PW, "bad-address"),
            ("al\0ce0001@chat.example", GOOD_PW, "bad-address"),
            ("älice0001@chat.example", GOOD_PW, "bad-address"),
            (&long, GOOD_PW, "bad-address"),
        ];
        for (user, pw, reason) in table {
            let outcome = passdb(&f, "192.0.2.1", user, pw);
            assert_eq!(outcome.reply, Reply::NotFound, "{user:?}");
            let log = outcome.log.unwrap_or_default();
            assert!(log.contains(&format!("reason={reason}")), "{user:?}: {log}");
            assert!(!log.contains(GOOD_PW) && log.len() < 400, "{log}");
        }
        // Reserved names with a length that would otherwise fit.
        let g = fixture(10, FINE);
        let mut settings = g.service.settings.clone();
        settings.policy.address.min_local_len = 4;
        settings.policy.address.max_local_len = 20;
        let service = AuthService::with_measure(settings, Box::new(|_| Ok(FINE)));
        let outcome = service.lookup(format!("shared/passdb/1.2.3.4/postmaster@chat.example/{GOOD_PW}").as_bytes());
        assert!(outcome.log.unwrap_or_default().contains("reason=reserved-name"));
        // Nothing was created anywhere.
        assert!(!f.mailboxes.exists() || std::fs::read_dir(&f.mailboxes).expect("list").count() == 0);
        // Counted by reason: an address that can never be an account here is
        // a refused login; the rest refused a creation.
        let metrics = f.service.metrics();
        assert_eq!(metrics.get("chatmail_logins_total", &["refused"]).unwrap_or(0.0) + metrics.get("chatmail_account_creations_refused_total", &["bad-address"]).unwrap_or(0.0), 11.0);
        assert_eq!(metrics.get("chatmail_account_creations_refused_total", &["password-too-short"]), Some(1.0));
        assert_eq!(metrics.get("chatmail_account_creations_refused_total", &["password-too-long"]), Some(1.0));
        assert_eq!(metrics.get("chatmail_accounts_created_total", &[]), None);
    }

    #[test]
    fn slash_in_user_cannot_escape_mailboxes() {
        let f = fixture(10, FINE);
        let outcome = f.service.lookup(format!("shared/passdb/1.2.3.4/../../../tmp/evil@chat.example/{GOOD_PW}").as_bytes());
        assert_eq!(outcome.reply, Reply::NotFound);
        assert!(!f.mailboxes.exists());
    }

    #[test]
    fn nocreate_stops_creation_but_not_logins() {
        let f = fixture(10, FINE);
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW).reply, GOOD_PW));
        std::fs::write(&f.nocreate, "").expect("nocreate");
        let refused = passdb(&f, "192.0.2.1", "bob000001@chat.example", GOOD_PW);
        assert!(refused.log.unwrap_or_default().contains("reason=nocreate-file"));
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW).reply, GOOD_PW));
    }

    #[test]
    fn resource_gate_stops_creation_but_not_logins() {
        let f = fixture(10, FINE);
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW).reply, GOOD_PW));
        let busy = AuthService::with_measure(f.service.settings.clone(), Box::new(|_| Ok(Resources { load_1m: 9.0, ..FINE })));
        let refused = busy.lookup(format!("shared/passdb/1.2.3.4/bob000001@chat.example/{GOOD_PW}").as_bytes());
        assert!(refused.log.unwrap_or_default().contains("reason=load-too-high"));
        let login = busy.lookup(format!("shared/passdb/1.2.3.4/alice0001@chat.example/{GOOD_PW}").as_bytes());
        assert!(is_login_ok(&login.reply, GOOD_PW));
    }

    #[test]
    fn per_ip_limit() {
        let f = fixture(2, FINE);
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW).reply, GOOD_PW));
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0002@chat.example", GOOD_PW).reply, GOOD_PW));
        let third = passdb(&f, "192.0.2.1", "alice0003@chat.example", GOOD_PW);
        assert!(third.log.unwrap_or_default().contains("reason=ip-limit"));
        // Logins of existing accounts and creation from elsewhere still work.
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", "alice0001@chat.example", GOOD_PW).reply, GOOD_PW));
        assert!(is_login_ok(&passdb(&f, "192.0.2.9", "alice0003@chat.example", GOOD_PW).reply, GOOD_PW));
    }

    #[test]
    fn parallel_first_logins_make_one_account() {
        let f = Arc::new(fixture(100, FINE));
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let f = Arc::clone(&f);
                std::thread::spawn(move || {
                    // Half with the right password, half with another one.
                    let pw = if i % 2 == 0 { GOOD_PW.to_owned() } else { format!("other-pw-{i}") };
                    (pw.clone(), passdb(&f, "192.0.2.1", "racer0001@chat.example", &pw))
                })
            })
            .collect();
        let results: Vec<(String, LookupOutcome)> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        let created: Vec<&String> =
            results.iter().filter(|(_, o)| o.log.as_deref().is_some_and(|l| l.contains("result=created"))).map(|(pw, _)| pw).collect();
        assert_eq!(created.len(), 1, "{results:?}");
        // Exactly the winner's password logs in.
        for (pw, outcome) in &results {
            assert_eq!(is_login_ok(&outcome.reply, pw), pw == created[0], "{pw}: {outcome:?}");
        }
    }

    #[test]
    fn sessions_over_the_limit_are_refused_with_a_reason() {
        use chatmail_config::sessions::{acquire, Acquired};
        let f = fixture(10, FINE);
        let user = "alice0001@chat.example";
        assert!(is_login_ok(&passdb(&f, "192.0.2.1", user, GOOD_PW).reply, GOOD_PW));
        let ask = |service: &str, user: &str| f.service.lookup(format!("shared/sessions/{service}/{user}/c2Vzc2lvbg==").as_bytes());
        assert_eq!(ask("imap", user), LookupOutcome { reply: Reply::NotFound, log: None }, "no sessions yet");
        let home = f.mailboxes.join(user);
        let slots: Vec<_> = (0..2).map(|_| acquire(&home, 2).expect("acquire")).collect();
        assert!(slots.iter().all(|s| matches!(s, Acquired::Slot(_))));
        let refused = ask("imap", user);
        let Reply::Found(json) = &refused.reply else { panic!("{refused:?}") };
        let fields: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(fields["nopassword"], "yes");
        assert_eq!(fields["reason"], "[UNAVAILABLE] Maximum number of sessions for this account exceeded (max_user_connections=2)");
        assert!(refused.log.as_deref().is_some_and(|l| l.contains("result=refused reason=max-user-connections")), "{refused:?}");
        // The limit is for mail sessions only, and unknown users get no answer.
        assert_eq!(ask("lmtp", user).reply, Reply::NotFound);
        assert_eq!(ask("imap", "bob000001@chat.example").reply, Reply::NotFound);
        assert_eq!(ask("imap", "../../etc@chat.example").reply, Reply::NotFound);
        drop(slots);
        assert_eq!(ask("imap", user).reply, Reply::NotFound, "a session ended");
    }

    #[test]
    fn bad_keys_fail_clearly() {
        let f = fixture(10, FINE);
        let outcome = f.service.lookup(b"shared/quota/x");
        assert!(matches!(outcome.reply, Reply::Failed(_)), "{outcome:?}");
    }
}
