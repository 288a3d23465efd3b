//! One isolated local relay: a real Postfix and a real Dovecot with their own
//! config directories, ports and scratch directory, torn down on drop.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use chatmail_config::Config;
use nix::unistd::{Group, User};

use crate::client::{ImapClient, Security, SmtpClient, SmtpReply};
use crate::dovecot::{self, DovecotBase, PasswdFile};
use crate::error::{Context, Error, Result};
use crate::ports::{PortChoice, Ports};
use crate::postfix::{self, PostfixBase};
use chatmail_config::wiring::{render_dovecot, render_postfix, DovecotHost, DovecotRelease, Logins, PluginPlace, PostfixHost};
use crate::process::{spawn_watchdog, wait_for_greeting, wait_for_path, wait_for_port, Daemon};
use crate::tls;

/// The system user that owns the mail store (created by scripts/setup-host.sh).
pub const MAIL_USER: &str = "vmail";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a relay. `RelayOptions::default()` gives a relay for
/// `chatmail.test` on free ports in a fresh temporary directory.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Scratch directory for all state; `None` makes a temporary one that is
    /// removed when the relay stops.
    pub run_dir: Option<PathBuf>,
    /// An existing chatmail.ini to use as is; `None` writes one into the run
    /// directory from `mail_domain` and `params`.
    pub config_file: Option<PathBuf>,
    /// Mail domain of a generated chatmail.ini.
    pub mail_domain: String,
    /// Extra `[params]` lines for a generated chatmail.ini.
    pub params: Vec<(String, String)>,
    pub ports: PortChoice,
    /// Run the chatmail milter in Postfix's `smtpd_milters` (the default);
    /// off only for benchmarks that need a baseline without it.
    pub milter: bool,
    /// The milter signs and checks DKIM (the default); off (`--no-dkim`)
    /// only for benchmarks that need a baseline without it.
    pub milter_dkim: bool,
    /// Keep a copy of every accepted message in the maildir of
    /// `capture@{domain}` (Postfix `always_bcc`), which no client reads:
    /// Delta Chat deletes what it fetched, so fixtures are captured here.
    pub capture: bool,
    /// Where logins are checked (chatmail-auth unless a benchmark asks for
    /// the passwd-file baseline).
    pub accounts: AccountBackend,
    /// Load the chatmail Dovecot plugin (the default); off only for
    /// benchmarks that need a baseline without it.
    pub dovecot_plugin: bool,
    /// Seconds an IDLE-ing IMAP session waits before Dovecot hands it to
    /// imap-hibernate (chatmail's 30 unless a test needs it sooner).
    pub imap_hibernate_timeout: u32,
}

/// Who answers Dovecot's passdb and userdb lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountBackend {
    /// chatmail-auth over the dict protocol: accounts are made on first login.
    Auth,
    /// Dovecot's passwd-file with accounts the harness adds (a baseline for
    /// benchmarks).
    PasswdFile,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            run_dir: None,
            config_file: None,
            mail_domain: "chatmail.test".into(),
            params: Vec::new(),
            ports: PortChoice::default(),
            milter: true,
            milter_dkim: true,
            capture: false,
            accounts: AccountBackend::Auth,
            dovecot_plugin: true,
            imap_hibernate_timeout: 30,
        }
    }
}

/// Login of a test account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub addr: String,
    pub password: String,
}

/// A running relay. Dropping it stops both servers; when the drop happens
/// while a test panics, the servers' logs are printed first.
#[derive(Debug)]
pub struct Relay {
    pub domain: String,
    pub ports: Ports,
    pub run_dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    pub log_dir: PathBuf,
    pub cert_der: Vec<u8>,
    pub cert_pem: PathBuf,
    passwd_file: PathBuf,
    accounts: AccountBackend,
    postfix_conf: PathBuf,
    // Field order is drop order: Postfix stops before Dovecot, and the
    // temporary directory goes last.
    postfix_watchdog: Option<Daemon>,
    postfix: Option<Daemon>,
    milter: Option<Daemon>,
    dovecot: Option<Daemon>,
    auth: Option<Daemon>,
    metadata: Option<Daemon>,
    web: Option<Daemon>,
    bots: Option<Daemon>,
    milter_socket: PathBuf,
    milter_local_socket: PathBuf,
    milter_dkim: bool,
    auth_socket: PathBuf,
    metadata_socket: PathBuf,
    mailboxes_dir: PathBuf,
    /// uid and gid of the mail store's owner.
    mail_owner: (u32, u32),
    _temp_dir: Option<tempfile::TempDir>,
}

struct SystemUsers {
    mail_uid: u32,
    mail_gid: u32,
    postfix_uid: u32,
    postfix_gid: u32,
    dovecot_gid: u32,
}

fn system_users() -> Result<SystemUsers> {
    let user = |name: &str| -> Result<User> {
        User::from_name(name)
            .context(|| format!("looking up user {name}"))?
            .ok_or_else(|| Error::new(format!("system user {name} is missing; run scripts/setup-host.sh as root")))
    };
    let group = |name: &str| -> Result<Group> {
        Group::from_name(name)
            .context(|| format!("looking up group {name}"))?
            .ok_or_else(|| Error::new(format!("system group {name} is missing; run scripts/setup-host.sh as root")))
    };
    let mail = user(MAIL_USER)?;
    let postfix = user("postfix")?;
    let dovecot = group("dovecot")?;
    user("dovenull")?;
    Ok(SystemUsers {
        mail_uid: mail.uid.as_raw(),
        mail_gid: mail.gid.as_raw(),
        postfix_uid: postfix.uid.as_raw(),
        postfix_gid: postfix.gid.as_raw(),
        dovecot_gid: dovecot.gid.as_raw(),
    })
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).context(|| format!("chmod {}", path.display()))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    fs::write(path, contents).context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).context(|| format!("chmod {}", path.display()))
}

fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<()> {
    chown(path, Some(uid), Some(gid)).context(|| format!("chown {}", path.display()))
}

/// A generated relay signs with the harness's test key (its record is in
/// the harness DNS); a relay with its own key file keeps it.
fn prepare_dkim_key(config: &Config) -> Result<()> {
    let path = &config.dkim_key_file;
    if !path.exists() {
        if let Some(dir) = path.parent() {
            make_dir(dir, 0o700)?;
        }
        write_file(path, crate::dkim::TEST_KEY_PEM, 0o600)?;
    }
    if fs::read_to_string(path).is_ok_and(|key| key == crate::dkim::TEST_KEY_PEM) {
        crate::dkim::publish(crate::dns::test_dns()?, &config.dkim_selector, &config.mail_domain);
    }
    Ok(())
}

/// Every directory above `path` must be searchable by the servers'
/// unprivileged users, or Dovecot and Postfix fail with confusing errors.
fn check_reachable(path: &Path) -> Result<()> {
    for ancestor in path.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else { continue };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(Error::new(format!(
                "{} is not searchable by other users (mode {:o}), so Dovecot and Postfix could not reach {}; \
                 choose a run directory elsewhere, e.g. CHATMAIL_RUN_DIR=/tmp/chatmail-dev",
                ancestor.display(),
                meta.permissions().mode() & 0o7777,
                path.display()
            )));
        }
    }
    Ok(())
}

/// Unix socket paths are limited to 107 bytes.
fn check_socket_path(path: &Path) -> Result<()> {
    if path.as_os_str().len() > 100 {
        return Err(Error::new(format!(
            "socket path {} is too long for a unix socket; choose a shorter run directory",
            path.display()
        )));
    }
    Ok(())
}

impl Relay {
    /// Starts Dovecot and Postfix and returns once both accept connections.
    pub fn start(options: RelayOptions) -> Result<Relay> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(Error::new("a local relay needs root: Postfix and Dovecot start as root and drop privileges"));
        }
        let users = system_users()?;

        let (run_dir, temp_dir) = match &options.run_dir {
            Some(dir) => {
                make_dir(dir, 0o755)?;
                (dir.canonicalize().context(|| format!("resolving {}", dir.display()))?, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("chatmail-")
                    .tempdir_in("/tmp")
                    .context(|| "creating a temporary run directory".into())?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        make_dir(&run_dir, 0o755)?;
        check_reachable(&run_dir)?;

        let config_path = match &options.config_file {
            Some(path) => path.clone(),
            None => {
                let path = run_dir.join("chatmail.ini");
                let mut ini = format!(
                    "# Generated by chatmail-testrelay for a local test relay.\n[params]\nmail_domain = {}\nmailboxes_dir = {}\n",
                    options.mail_domain,
                    run_dir.join("mailboxes").display()
                );
                let nocreate = run_dir.join("nocreate");
                let nocreate = nocreate.display().to_string();
                let bot_spool = run_dir.join("bot-spool").display().to_string();
                let push_spool = run_dir.join("push-spool").display().to_string();
                let metrics = run_dir.join("metrics").display().to_string();
                let bot_state = run_dir.join("bot-state").display().to_string();
                let lmtp_bots = run_dir.join("dovecot").join("run").join(dovecot::LMTP_BOTS_SOCKET).display().to_string();
                let bot_submission = run_dir.join("postfix").join("queue").join("public").join("chatmail-bots").display().to_string();
                let dkim_key = run_dir.join("dkim").join("opendkim.private").display().to_string();
                // DKIM keys of test domains come from the harness's own DNS server.
                let dns_server = crate::dns::test_dns()?.addr().to_string();
                // Test accounts are minutes old, all come from 127.0.0.1, and
                // tests run in parallel on small machines: unless a test asks
                // for them, the send-rate rating, the per-IP limit and the
                // resource gate stay out of the way. The nocreate file is the
                // relay's own, not the host's /etc/chatmail-nocreate.
                let harness_defaults = [
                    ("reduced_rate_new_account_hours", "0"),
                    ("new_accounts_per_ip_per_hour", "1000000"),
                    ("max_load_1m", "1000"),
                    ("min_available_memory", "1"),
                    ("min_free_disk_space", "1"),
                    ("nocreate_file", nocreate.as_str()),
                    ("bot_spool_dir", bot_spool.as_str()),
                    // A local relay runs bots (the daemon is part of it).
                    ("bots_enabled", "true"),
                    ("bot_state_dir", bot_state.as_str()),
                    ("lmtp_socket", lmtp_bots.as_str()),
                    ("bot_submission_socket", bot_submission.as_str()),
                    ("dkim_key_file", dkim_key.as_str()),
                    ("dns_servers", dns_server.as_str()),
                    ("push_spool_dir", push_spool.as_str()),
                    // The relay's own, not the host's /var/lib/chatmail-relay/metrics.
                    ("metrics_dir", metrics.as_str()),
                    // No POSTs to Delta Chat's real notification service
                    // from tests; push tests name their own.
                    ("push_notification_url", ""),
                ];
                for (key, value) in harness_defaults {
                    if !options.params.iter().any(|(k, _)| k == key) {
                        ini.push_str(&format!("{key} = {value}\n"));
                    }
                }
                for (key, value) in &options.params {
                    ini.push_str(&format!("{key} = {value}\n"));
                }
                write_file(&path, &ini, 0o644)?;
                path
            }
        };
        let loaded = Config::load(&config_path).map_err(|e| Error::new(e.to_string()))?;
        for warning in &loaded.warnings {
            eprintln!("chatmail-testrelay: warning: {warning}");
        }
        let config = loaded.config;
        let domain = config.mail_domain.clone();
        prepare_dkim_key(&config)?;
        let ports = options.ports.resolve().context(|| "choosing free ports".into())?;

        let log_dir = run_dir.join("log");
        let tls_dir = run_dir.join("tls");
        let dovecot_dir = run_dir.join("dovecot");
        let dovecot_base = dovecot_dir.join("run");
        let postfix_dir = run_dir.join("postfix");
        // Postfix wants everything under its config directory owned by root,
        // so the config lives apart from the queue and data directories.
        let postfix_conf = postfix_dir.join("conf");
        let queue_dir = postfix_dir.join("queue");
        let data_dir = postfix_dir.join("data");
        for dir in [&log_dir, &tls_dir, &dovecot_dir, &postfix_dir, &postfix_conf, &queue_dir] {
            make_dir(dir, 0o755)?;
        }
        make_dir(&data_dir, 0o700)?;
        set_owner(&data_dir, users.postfix_uid, users.postfix_gid)?;
        make_dir(&config.mailboxes_dir, 0o700)?;
        set_owner(&config.mailboxes_dir, users.mail_uid, users.mail_gid)?;
        check_reachable(&config.mailboxes_dir)?;
        // Dovecot's mail processes (the mail user) write bot jobs here.
        make_dir(&config.bot_spool_dir, 0o750)?;
        set_owner(&config.bot_spool_dir, users.mail_uid, users.mail_gid)?;
        make_dir(&config.bot_state_dir, 0o700)?;
        set_owner(&config.bot_state_dir, users.mail_uid, users.mail_gid)?;
        // ... and push arrivals here, for chatmail-metadata (the mail user too).
        make_dir(&config.push_spool_dir, 0o750)?;
        set_owner(&config.push_spool_dir, users.mail_uid, users.mail_gid)?;
        // Every daemon writes its metrics file here, as the package's
        // /var/lib/chatmail-relay/metrics (the mail user's group may write).
        if let Some(metrics_dir) = &config.metrics_dir {
            make_dir(metrics_dir, 0o2775)?;
            set_owner(metrics_dir, users.mail_uid, users.mail_gid)?;
        }
        let milter_dir = run_dir.join("milter");
        make_dir(&milter_dir, 0o755)?;
        let milter_socket = milter_dir.join("milter.sock");
        check_socket_path(&milter_socket)?;
        let milter_local_socket = milter_dir.join("local.sock");
        check_socket_path(&milter_local_socket)?;
        // chatmail-auth runs as the mail user and creates its socket here.
        let auth_dir = run_dir.join("auth");
        make_dir(&auth_dir, 0o755)?;
        set_owner(&auth_dir, users.mail_uid, users.mail_gid)?;
        let auth_socket_path = auth_dir.join("auth.sock");
        check_socket_path(&auth_socket_path)?;
        // chatmail-metadata, the same.
        let metadata_dir = run_dir.join("metadata");
        make_dir(&metadata_dir, 0o755)?;
        set_owner(&metadata_dir, users.mail_uid, users.mail_gid)?;
        let metadata_socket = metadata_dir.join("metadata.sock");
        check_socket_path(&metadata_socket)?;
        let lmtp_socket = dovecot_base.join(dovecot::LMTP_SOCKET);
        let auth_socket = dovecot_base.join(dovecot::AUTH_SOCKET);
        check_socket_path(&lmtp_socket)?;
        check_socket_path(&auth_socket)?;
        // Sockets of an earlier run would make the readiness checks pass early.
        let _ = fs::remove_file(&lmtp_socket);
        let _ = fs::remove_file(&auth_socket);

        let cert = tls::generate(&tls_dir, &domain)?;
        fs::set_permissions(&cert.key_pem, fs::Permissions::from_mode(0o600))
            .context(|| format!("chmod {}", cert.key_pem.display()))?;

        let passwd_file = dovecot_dir.join("users");
        if !passwd_file.exists() {
            write_file(&passwd_file, "", 0o640)?;
        }
        set_owner(&passwd_file, 0, users.dovecot_gid)?;

        let plugin_dir = dovecot_dir.join("modules");
        if options.dovecot_plugin {
            prepare_plugin_dir(&plugin_dir)?;
        }
        // The host's Dovecot decides the config syntax (Debian 12: 2.3,
        // Debian 13: 2.4).
        let release = installed_dovecot()?;
        if release == DovecotRelease::V2_4 && options.dovecot_plugin {
            check_settings_module()?;
        }

        // The relay's wiring from the generator the package runs, with this
        // instance's paths.
        let wiring = render_dovecot(
            &config,
            &DovecotHost {
                release,
                lua_script: auth_lua_script(),
                base_dir: dovecot_base.clone(),
                chatmail_ini: config_path.clone(),
                auth_dict_file: dovecot_dir.join("auth-dict.conf.ext"),
                sessions_dict_file: dovecot_dir.join("auth-sessions.conf.ext"),
                auth_socket: auth_socket_path.clone(),
                metadata_socket: metadata_socket.clone(),
                lmtp_listener: lmtp_socket.clone(),
                sasl_listener: auth_socket.clone(),
                postfix_user: "postfix".into(),
                mail_user: MAIL_USER.into(),
                mail_uid: users.mail_uid,
                plugin: if options.dovecot_plugin { PluginPlace::Dir(plugin_dir.clone()) } else { PluginPlace::Off },
                logins: match options.accounts {
                    AccountBackend::Auth => Logins::ChatmailAuth,
                    AccountBackend::PasswdFile => Logins::Elsewhere,
                },
                imap_hibernate_timeout: options.imap_hibernate_timeout,
            },
        );
        for (path, text) in &wiring.aux {
            write_file(path, text, 0o644)?;
        }
        let instance_name = format!("chatmail-{}", ports.imap);
        let dovecot_conf = dovecot_dir.join("dovecot.conf");
        let dovecot_log = log_dir.join("dovecot.log");
        let passwd = PasswdFile { file: &passwd_file, mail_user: MAIL_USER, mailboxes_dir: &config.mailboxes_dir };
        write_file(
            &dovecot_conf,
            &dovecot::render(
                &DovecotBase {
                    release,
                    instance_name: &instance_name,
                    domain: &domain,
                    base_dir: &dovecot_base,
                    state_dir: &dovecot_dir.join("state"),
                    log_file: &dovecot_log,
                    cert_pem: &cert.cert_pem,
                    key_pem: &cert.key_pem,
                    imap_port: ports.imap,
                    imaps_port: ports.imaps,
                    passwd_file: matches!(options.accounts, AccountBackend::PasswdFile).then_some(passwd),
                },
                &wiring.auth_conf,
                &wiring.conf,
            ),
            0o644,
        )?;

        let capture_addr = options.capture.then(|| format!("capture@{domain}"));
        let unix = |path: &Path| format!("unix:{}", path.display());
        let postfix_wiring = render_postfix(
            &config,
            &PostfixHost {
                queue_dir: queue_dir.clone(),
                lmtp_socket: lmtp_socket.display().to_string(),
                sasl_socket: auth_socket.display().to_string(),
                milter: options.milter.then(|| (unix(&milter_socket), unix(&milter_local_socket))),
                submission_service: format!("127.0.0.1:{}", ports.submission),
                submissions_service: format!("127.0.0.1:{}", ports.smtps),
                chroot: false,
            },
        );
        let postfix_base = PostfixBase {
            domain: &domain,
            queue_dir: &queue_dir,
            data_dir: &data_dir,
            log_file: &log_dir.join("postfix.log"),
            cert_pem: &cert.cert_pem,
            key_pem: &cert.key_pem,
            smtp_port: ports.smtp,
            always_bcc: capture_addr.as_deref(),
        };
        write_file(&postfix_conf.join("main.cf"), &postfix::render_main_cf(&postfix_base, &postfix_wiring), 0o644)?;
        write_file(&postfix_conf.join("master.cf"), &postfix::render_master_cf(&postfix_base, &postfix_wiring), 0o644)?;

        let config_mailboxes_dir = config.mailboxes_dir.clone();
        let mut relay = Relay {
            domain,
            ports,
            run_dir,
            config_path,
            config,
            log_dir: log_dir.clone(),
            cert_der: cert.cert_der,
            cert_pem: cert.cert_pem.clone(),
            passwd_file,
            accounts: options.accounts,
            postfix_conf,
            postfix_watchdog: None,
            postfix: None,
            milter: None,
            dovecot: None,
            auth: None,
            metadata: None,
            web: None,
            bots: None,
            milter_socket,
            milter_local_socket,
            milter_dkim: options.milter_dkim,
            auth_socket: auth_socket_path,
            metadata_socket,
            mailboxes_dir: config_mailboxes_dir,
            mail_owner: (users.mail_uid, users.mail_gid),
            _temp_dir: temp_dir,
        };
        if let Some(addr) = &capture_addr {
            // No enforceE2EEincoming marker: the capture box takes anything.
            relay.add_account("capture", &crate::random::token(16))?;
            let _ = fs::remove_file(relay.mailboxes_dir.join(addr).join("enforceE2EEincoming"));
        }
        relay.start_servers(&dovecot_conf, options.milter).map_err(|e| Error::new(format!("{e}\n{}", relay.logs())))?;
        Ok(relay)
    }

    fn start_servers(&mut self, dovecot_conf: &Path, with_milter: bool) -> Result<()> {
        if self.accounts == AccountBackend::Auth {
            self.start_auth()?;
        }
        self.start_metadata()?;
        let mut command = Command::new("dovecot");
        command.arg("-F").arg("-c").arg(dovecot_conf);
        let dovecot = self.dovecot.insert(Daemon::spawn("dovecot", command, &self.log_dir.join("dovecot.out"), true)?);
        let base = dovecot_conf.with_file_name("run");
        wait_for_greeting(self.ports.imap, "* OK", STARTUP_TIMEOUT, || dovecot.check_running())?;
        wait_for_path(&base.join(dovecot::LMTP_SOCKET), STARTUP_TIMEOUT, || dovecot.check_running())?;
        wait_for_path(&base.join(dovecot::AUTH_SOCKET), STARTUP_TIMEOUT, || dovecot.check_running())?;

        if with_milter {
            self.start_milter()?;
        }
        self.start_web()?;
        self.start_bots()?;

        // `postfix check` creates the queue directories with the right owners;
        // the master then runs in the foreground (-s) so the harness owns it.
        let check = Command::new("postfix")
            .arg("-c")
            .arg(&self.postfix_conf)
            .arg("check")
            .output()
            .context(|| "running postfix check".into())?;
        if !check.status.success() {
            return Err(Error::new(format!(
                "postfix check failed: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            )));
        }
        let mut command = Command::new("/usr/lib/postfix/sbin/master");
        command.arg("-c").arg(&self.postfix_conf).arg("-s");
        let postfix = self.postfix.insert(Daemon::spawn("postfix", command, &self.log_dir.join("postfix.out"), false)?);
        self.postfix_watchdog = Some(spawn_watchdog("postfix", postfix.pid(), &self.log_dir.join("postfix.out"))?);
        for port in [self.ports.smtp, self.ports.submission] {
            wait_for_greeting(port, "220", STARTUP_TIMEOUT, || postfix.check_running())?;
        }
        Ok(())
    }

    /// Starts the chatmail milter that Postfix consults for every message
    /// (again, after [`Relay::kill_milter`]).
    pub fn start_milter(&mut self) -> Result<()> {
        let binary = sibling_binary("chatmail-milter", "CHATMAIL_MILTER")?;
        let _ = fs::remove_file(&self.milter_socket);
        let _ = fs::remove_file(&self.milter_local_socket);
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--socket")
            .arg(format!("unix:{}", self.milter_socket.display()))
            .arg("--local-socket")
            .arg(format!("unix:{}", self.milter_local_socket.display()));
        if !self.milter_dkim {
            command.arg("--no-dkim");
        }
        let milter = self.milter.insert(Daemon::spawn("chatmail-milter", command, &self.log_dir.join("milter.log"), true)?);
        wait_for_path(&self.milter_socket, STARTUP_TIMEOUT, || milter.check_running())?;
        wait_for_path(&self.milter_local_socket, STARTUP_TIMEOUT, || milter.check_running())
    }

    /// Starts chatmail-auth, which answers Dovecot's passdb and userdb.
    /// It is started as the mail user (not root dropping privileges later),
    /// so it keeps the signal that ends it with the harness.
    fn start_auth(&mut self) -> Result<()> {
        let binary = sibling_binary("chatmail-auth", "CHATMAIL_AUTH")?;
        let _ = fs::remove_file(&self.auth_socket);
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--socket")
            .arg(&self.auth_socket)
            .args(["--socket-group", MAIL_USER, "--mail-user", MAIL_USER])
            .uid(self.mail_owner.0)
            .gid(self.mail_owner.1);
        let auth = self.auth.insert(Daemon::spawn("chatmail-auth", command, &self.log_dir.join("auth.log"), true)?);
        wait_for_path(&self.auth_socket, STARTUP_TIMEOUT, || auth.check_running())
    }

    /// Starts chatmail-metadata (IMAP METADATA and push notifications) as
    /// the mail user; ready once its dict socket and its nudge socket exist.
    pub fn start_metadata(&mut self) -> Result<()> {
        let binary = sibling_binary("chatmail-metadata", "CHATMAIL_METADATA")?;
        let nudge = self.config.push_spool_dir.join(chatmail_config::push::NUDGE_SOCKET);
        let _ = fs::remove_file(&self.metadata_socket);
        let _ = fs::remove_file(&nudge);
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--socket")
            .arg(&self.metadata_socket)
            .args(["--mail-user", MAIL_USER])
            .uid(self.mail_owner.0)
            .gid(self.mail_owner.1);
        let metadata = self.metadata.insert(Daemon::spawn("chatmail-metadata", command, &self.log_dir.join("metadata.log"), true)?);
        wait_for_path(&self.metadata_socket, STARTUP_TIMEOUT, || metadata.check_running())?;
        wait_for_path(&nudge, STARTUP_TIMEOUT, || metadata.check_running())
    }

    /// Stops chatmail-metadata (SIGTERM).
    pub fn stop_metadata(&mut self) {
        if let Some(mut metadata) = self.metadata.take() {
            metadata.stop(Duration::from_secs(5));
        }
    }

    /// Starts chatmail-bots, the bot daemon, as the mail user; ready once
    /// its nudge socket exists.
    pub fn start_bots(&mut self) -> Result<()> {
        let binary = sibling_binary("chatmail-bots", "CHATMAIL_BOTS")?;
        let nudge = self.config.bot_spool_dir.join("nudge");
        let _ = fs::remove_file(&nudge);
        let mut command = Command::new(&binary);
        // Started as root, as its unit does: it drops to the mail user
        // itself, keeping the group postdrop for the submission socket.
        command.arg("--config").arg(&self.config_path).arg("--user").arg(MAIL_USER).arg("run");
        let bots = self.bots.insert(Daemon::spawn("chatmail-bots", command, &self.log_dir.join("bots.log"), true)?);
        wait_for_path(&nudge, STARTUP_TIMEOUT, || bots.check_running())
    }

    /// Stops the bot daemon (SIGTERM; it finishes running jobs first).
    pub fn stop_bots(&mut self) {
        if let Some(mut bots) = self.bots.take() {
            bots.stop(Duration::from_secs(60));
        }
    }

    /// Starts chatmail-web, the HTTPS onboarding server, in its mode for
    /// test relays: the page's QR code is a `dclogin:` link for a fresh
    /// account with this relay's host and ports (and "accept any
    /// certificate"), since `dcaccount:` needs a publicly trusted one.
    fn start_web(&mut self) -> Result<()> {
        let binary = sibling_binary("chatmail-web", "CHATMAIL_WEB")?;
        let tls_dir = self.run_dir.join("tls");
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.ports.https))
            .arg("--cert")
            .arg(&self.cert_pem)
            .arg("--key")
            .arg(tls_dir.join("key.pem"))
            .args(["--onboarding", "dclogin", "--host", "127.0.0.1", "--security", "ssl", "--accept-invalid-certs"])
            .arg("--imap-port")
            .arg(self.ports.imaps.to_string())
            .arg("--smtp-port")
            .arg(self.ports.smtps.to_string());
        let web = self.web.insert(Daemon::spawn("chatmail-web", command, &self.log_dir.join("web.log"), true)?);
        wait_for_port(self.ports.https, STARTUP_TIMEOUT, || web.check_running())
    }

    /// `POST /new` on the relay's web server from the loopback address
    /// `source`: the HTTP status and body.
    pub fn post_new(&self, source: Option<std::net::Ipv4Addr>) -> Result<(u16, String)> {
        crate::client::https_request(source, self.ports.https, &self.cert_der, "POST", "/new")
    }

    /// Delivers `text` to `to` straight over Dovecot's LMTP socket, as
    /// Postfix would, and returns Dovecot's reply to the message data
    /// (e.g. `250 2.0.0 <…> Saved` or `552 5.2.2 …`).
    pub fn lmtp_deliver(&self, to: &str, text: &str) -> Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let socket = self.run_dir.join("dovecot").join("run").join(dovecot::LMTP_SOCKET);
        let stream = std::os::unix::net::UnixStream::connect(&socket).context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).context(|| "setting a timeout".into())?;
        let mut reader = BufReader::new(stream.try_clone().context(|| "cloning the LMTP stream".into())?);
        let mut writer = stream;
        let mut reply = || -> Result<String> {
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).context(|| "reading from LMTP".into())? == 0 {
                    return Err(Error::new("LMTP server closed the connection"));
                }
                if line.as_bytes().get(3) == Some(&b' ') {
                    return Ok(line.trim_end().to_owned());
                }
            }
        };
        let greeting = reply()?;
        if !greeting.starts_with("220") {
            return Err(Error::new(format!("unexpected LMTP greeting {greeting:?}")));
        }
        let mut send = |data: &str| writer.write_all(data.as_bytes()).context(|| "writing to LMTP".into());
        for command in ["LHLO harness.test".to_owned(), "MAIL FROM:<sender@other.example>".into(), format!("RCPT TO:<{to}>")] {
            send(&format!("{command}\r\n"))?;
            let answer = reply()?;
            if !answer.starts_with('2') {
                return Ok(answer);
            }
        }
        send("DATA\r\n")?;
        let answer = reply()?;
        if !answer.starts_with("354") {
            return Ok(answer);
        }
        // Dot-stuffing: a line starting with '.' gets another.
        let body = text.replace("\r\n.", "\r\n..");
        send(&body)?;
        send(if body.ends_with("\r\n") { ".\r\n" } else { "\r\n.\r\n" })?;
        let answer = reply()?;
        let _ = send("QUIT\r\n");
        Ok(answer)
    }

    /// Creates or removes the relay's nocreate file (account creation off/on).
    pub fn set_nocreate(&self, on: bool) -> Result<()> {
        let path = &self.config.nocreate_file;
        if on {
            write_file(path, "", 0o644)
        } else {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::new(format!("removing {}: {e}", path.display()))),
                _ => Ok(()),
            }
        }
    }

    /// Messages in Postfix's queue (received, not yet delivered or bounced).
    pub fn queued_messages(&self) -> usize {
        fn count(dir: &Path) -> usize {
            fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => count(&e.path()),
                        Ok(_) => 1,
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        let queue = self.run_dir.join("postfix").join("queue");
        ["maildrop", "incoming", "active", "deferred", "hold"].iter().map(|q| count(&queue.join(q))).sum()
    }

    /// Waits until Postfix has handed on everything it accepted.
    pub fn wait_for_empty_queue(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let queued = self.queued_messages();
            if queued == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::new(format!("{queued} messages still queued after {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Process id of the running milter, if any (for memory measurements).
    pub fn milter_pid(&self) -> Option<u32> {
        self.milter.as_ref().map(Daemon::pid)
    }

    /// Stops the milter (to test that Postfix then tempfails).
    pub fn kill_milter(&mut self) {
        if let Some(mut milter) = self.milter.take() {
            milter.kill_now();
        }
    }

    /// Makes the account `local_part@domain` with `password` exist, as an
    /// operator would: written straight into the account store (chatmail's
    /// layout, as chatmail-auth writes it) or into the baseline's passwd-file.
    /// Accounts made this way need not follow the creation policy (e.g. the
    /// `capture` box).
    pub fn add_account(&self, local_part: &str, password: &str) -> Result<Account> {
        if self.accounts == AccountBackend::PasswdFile {
            return self.add_passwd_file_account(local_part, password);
        }
        let addr = format!("{local_part}@{}", self.domain);
        let hash = chatmail_accounts::hash_password(password).map_err(Error::new)?;
        let store = chatmail_accounts::Store::new(&self.mailboxes_dir);
        match store.create(&addr, &hash).context(|| format!("creating account {addr}"))? {
            chatmail_accounts::CreateOutcome::Created => {}
            chatmail_accounts::CreateOutcome::Existed(_) => return Err(Error::new(format!("account {addr} exists already"))),
        }
        let dir = store.account_dir(&addr);
        let (uid, gid) = self.mail_owner;
        set_owner(&dir, uid, gid)?;
        for entry in fs::read_dir(&dir).context(|| format!("listing {}", dir.display()))?.flatten() {
            set_owner(&entry.path(), uid, gid)?;
        }
        Ok(Account { addr, password: password.to_owned() })
    }

    fn add_passwd_file_account(&self, local_part: &str, password: &str) -> Result<Account> {
        let addr = format!("{local_part}@{}", self.domain);
        if addr.contains([':', '\n', '\r']) || password.contains([':', '\n', '\r']) {
            return Err(Error::new(format!("test account {addr:?} or its password contains ':' or a newline")));
        }
        let mut users = fs::read_to_string(&self.passwd_file).context(|| format!("reading {}", self.passwd_file.display()))?;
        // Hashed as an operator's passwd-file would be (and as chatmail-auth
        // stores them), so benchmarks compare like with like.
        let hash = chatmail_accounts::hash_password(password).map_err(Error::new)?;
        users.push_str(&format!("{addr}:{hash}::::::\n"));
        self.create_mailbox(&addr)?;
        // Dovecot rereads the passwd-file when its mtime changes; write via a
        // rename so it never sees a half-written file.
        let temp = self.passwd_file.with_extension("new");
        fs::write(&temp, users).context(|| format!("writing {}", temp.display()))?;
        let group = fs::metadata(&self.passwd_file).map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap_or(0);
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o640)).context(|| format!("chmod {}", temp.display()))?;
        set_owner(&temp, 0, group)?;
        fs::rename(&temp, &self.passwd_file).context(|| format!("replacing {}", self.passwd_file.display()))?;
        Ok(Account { addr, password: password.to_owned() })
    }

    /// Creates the account's directory as account creation does on a chatmail
    /// relay, with the `enforceE2EEincoming` marker (cleartext from other
    /// servers is refused for it).
    fn create_mailbox(&self, addr: &str) -> Result<()> {
        let (uid, gid) = self.mail_owner;
        let dir = self.mailboxes_dir.join(addr);
        make_dir(&dir, 0o700)?;
        set_owner(&dir, uid, gid)?;
        let marker = dir.join("enforceE2EEincoming");
        write_file(&marker, "", 0o600)?;
        set_owner(&marker, uid, gid)
    }

    /// Removes an account's `enforceE2EEincoming` marker.
    pub fn allow_cleartext_for(&self, account: &Account) -> Result<()> {
        let marker = self.mailboxes_dir.join(&account.addr).join("enforceE2EEincoming");
        fs::remove_file(&marker).context(|| format!("removing {}", marker.display()))
    }

    /// A new account with a random 9-character name and 12-character
    /// password, made as Delta Chat makes one: by its first (IMAP) login,
    /// which chatmail-auth turns into an account.
    pub fn new_account(&self) -> Result<Account> {
        let account = Account {
            addr: format!("{}@{}", crate::random::token(9), self.domain),
            password: crate::random::token(12),
        };
        if self.accounts == AccountBackend::PasswdFile {
            let local = account.addr.split('@').next().unwrap_or_default();
            return self.add_account(local, &account.password);
        }
        self.imap_login(&account).context(|| format!("first login of {}", account.addr))?.logout();
        Ok(account)
    }

    /// A `dclogin:` link with which Delta Chat configures `account` against
    /// this relay (implicit TLS for IMAP and SMTP, self-signed certificate accepted).
    pub fn dclogin(&self, account: &Account) -> String {
        format!(
            "dclogin:{addr}?p={password}&v=1&ih=127.0.0.1&ip={imaps}&is=ssl&ic=3&sh=127.0.0.1&sp={smtps}&ss=ssl&sc=3",
            addr = account.addr,
            password = percent_encode(&account.password),
            imaps = self.ports.imaps,
            smtps = self.ports.smtps,
        )
    }

    /// Connects to the given SMTP port (plain TCP; call `starttls` for STARTTLS).
    pub fn smtp(&self, port: u16) -> Result<SmtpClient> {
        let security = if port == self.ports.smtps { Security::Implicit } else { Security::Plain };
        SmtpClient::connect(port, security, &self.cert_der)
    }

    /// Connects to IMAP with STARTTLS and logs in.
    pub fn imap_login(&self, account: &Account) -> Result<ImapClient> {
        let mut imap = self.imap_from(None)?;
        imap.login(&account.addr, &account.password)?.ok()?;
        Ok(imap)
    }

    /// Installs a bot for `account` the way its owner would: a package mail
    /// (made by `chatmail-bots package`) stored in the install folder.
    pub fn install_bot(&self, account: &Account, wasm: &[u8], toml: &str) -> Result<()> {
        self.install_bot_code(account, "bot.wasm", wasm, toml)
    }

    /// As [`Relay::install_bot`], for the code file `name` (`bot.wasm` or
    /// `bot.js`).
    pub fn install_bot_code(&self, account: &Account, name: &str, code: &[u8], toml: &str) -> Result<()> {
        let dir = tempfile::tempdir_in(&self.run_dir).context(|| "temporary directory".into())?;
        let (wasm_path, toml_path) = (dir.path().join(name), dir.path().join("bot.toml"));
        fs::write(&wasm_path, code).context(|| format!("writing {name}"))?;
        fs::write(&toml_path, toml).context(|| "writing bot.toml".into())?;
        let binary = sibling_binary("chatmail-bots", "CHATMAIL_BOTS")?;
        let out = Command::new(&binary)
            .arg("package")
            .arg(&account.addr)
            .arg(&wasm_path)
            .arg(&toml_path)
            .output()
            .context(|| format!("running {}", binary.display()))?;
        if !out.status.success() {
            return Err(Error::new(format!("chatmail-bots package: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let package = String::from_utf8(out.stdout).map_err(|_| Error::new("package mail is not UTF-8"))?;
        let folder = &self.config.bot_install_folder;
        let mut imap = self.imap_login(account)?;
        let _ = imap.command(&format!("CREATE {folder}"))?;
        imap.command(&format!("APPEND {folder} {{{}+}}\r\n{package}", package.len()))?.ok()?;
        imap.logout();
        Ok(())
    }

    /// The outputs of `addr`'s bot runs (outbox files), oldest job first.
    pub fn bot_outputs(&self, addr: &str) -> Vec<String> {
        let dir = self.config.bot_state_dir.join("bots").join(addr).join("outbox");
        let mut names: Vec<_> = fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        names.sort();
        names.iter().filter_map(|p| fs::read_to_string(p).ok()).collect()
    }

    /// Jobs waiting or running in the bot spool.
    pub fn bot_spool_len(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|sub| fs::read_dir(self.config.bot_spool_dir.join(sub)).map(|d| d.count()).unwrap_or(0))
            .sum()
    }

    /// Process ids of the IMAP sessions `addr` logged in, oldest first, from
    /// Dovecot's login lines (`mpid=`; 2.3 writes `Login:`, 2.4 `Logged
    /// in:`). A session back from hibernation runs in a new process that no
    /// login line names.
    pub fn imap_session_pids(&self, addr: &str) -> Vec<i32> {
        let log = fs::read_to_string(self.log_dir.join("dovecot.log")).unwrap_or_default();
        log.lines()
            .filter(|l| {
                (l.contains("imap-login: Info: Login:") || l.contains("imap-login: Info: Logged in:")) && l.contains(&format!("user=<{addr}>"))
            })
            .filter_map(|l| l.split("mpid=").nth(1)?.split(',').next()?.parse().ok())
            .collect()
    }

    /// An IMAP connection after STARTTLS, not logged in, from the loopback
    /// address `source` (default 127.0.0.1).
    pub fn imap_from(&self, source: Option<std::net::Ipv4Addr>) -> Result<ImapClient> {
        let mut imap = ImapClient::connect_from(source, self.ports.imap, Security::Plain, &self.cert_der)?;
        imap.starttls()?;
        Ok(imap)
    }

    /// A submission session (STARTTLS) logged in as `account`.
    pub fn submission_session(&self, account: &Account) -> Result<SmtpClient> {
        let mut smtp = self.smtp(self.ports.submission)?;
        smtp.ehlo("client.test")?.expect(250)?;
        smtp.starttls()?;
        smtp.ehlo("client.test")?.expect(250)?;
        smtp.auth_plain(&account.addr, &account.password)?.expect(235)?;
        Ok(smtp)
    }

    /// Logs in as `login` on submission and sends with envelope sender
    /// `mail_from`; returns the first refusal or the reply to the message.
    pub fn submit_as(&self, login: &Account, mail_from: &str, to: &[&str], message: &str) -> Result<SmtpReply> {
        let mut smtp = self.submission_session(login)?;
        let reply = smtp.transaction(mail_from, to, message)?;
        smtp.quit();
        Ok(reply)
    }

    /// Submits a message as `from`; any refusal is an error.
    pub fn submit(&self, from: &Account, to: &[&str], message: &str) -> Result<()> {
        self.submit_as(from, &from.addr, to, message)?.expect(250).map(|_| ())
    }

    /// Sends a message to the incoming SMTP port with STARTTLS, as another
    /// server would, DKIM-signed for the domain of its From header (the
    /// test key, published in the harness DNS); returns the first refusal
    /// or the reply to the message.
    pub fn deliver_incoming(&self, mail_from: &str, to: &[&str], message: &str) -> Result<SmtpReply> {
        let domain = crate::mail::from_domain(message).ok_or_else(|| Error::new("the message has no From address to sign for"))?;
        self.deliver_incoming_unsigned(mail_from, to, &crate::dkim::sign(message, &domain)?)
    }

    /// Like [`Relay::deliver_incoming`], with the message exactly as given.
    pub fn deliver_incoming_unsigned(&self, mail_from: &str, to: &[&str], message: &str) -> Result<SmtpReply> {
        let mut smtp = SmtpClient::connect(self.ports.smtp, Security::Plain, &self.cert_der)?;
        smtp.ehlo("mx.other.example")?.expect(250)?;
        smtp.starttls()?;
        smtp.ehlo("mx.other.example")?.expect(250)?;
        let reply = smtp.transaction(mail_from, to, message)?;
        smtp.quit();
        Ok(reply)
    }

    /// Sends mail for `other`'s domain to its incoming SMTP port (the test
    /// stand-in for MX records): Postfix transport maps, then a reload.
    pub fn route_to(&self, other: &Relay) -> Result<()> {
        self.route(&[(other.domain.clone(), other.ports.smtp)])
    }

    /// Sends mail for each `(domain, port)` to 127.0.0.1:port, replacing
    /// earlier routes.
    pub fn route(&self, routes: &[(String, u16)]) -> Result<()> {
        let postconf = |setting: String| -> Result<()> {
            let out = Command::new("postconf")
                .arg("-c")
                .arg(&self.postfix_conf)
                .arg("-e")
                .arg(&setting)
                .output()
                .context(|| "running postconf".into())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Error::new(format!("postconf -e {setting}: {}", String::from_utf8_lossy(&out.stderr))))
            }
        };
        let entries: Vec<String> = routes.iter().map(|(domain, port)| format!("{domain}=smtp:[127.0.0.1]:{port}")).collect();
        postconf(format!("transport_maps=inline:{{ {} }}", entries.join(", ")))?;
        let out = Command::new("postfix").arg("-c").arg(&self.postfix_conf).arg("reload").output().context(|| "postfix reload".into())?;
        if !out.status.success() {
            return Err(Error::new(format!("postfix reload: {}", String::from_utf8_lossy(&out.stderr))));
        }
        Ok(())
    }

    /// Polls `account`'s INBOX over IMAP until a message containing `needle`
    /// is there, and returns that message.
    pub fn wait_for_message(&self, account: &Account, needle: &str, timeout: Duration) -> Result<String> {
        let mut imap = self.imap_login(account)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            imap.command("SELECT INBOX")?.ok()?;
            for message in imap.fetch_all()? {
                if message.contains(needle) {
                    imap.logout();
                    return Ok(message);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "no message containing {needle:?} reached {}'s INBOX within {timeout:?}",
                    account.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The servers' logs, for failure output.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["dovecot.log", "dovecot.out", "postfix.log", "postfix.out", "milter.log", "auth.log", "metadata.log", "web.log", "bots.log"] {
            let path = self.log_dir.join(name);
            let text = fs::read_to_string(&path).unwrap_or_default();
            out.push_str(&format!("===== {} =====\n{text}", path.display()));
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// Connection details for scripts and other tools, as written to relay.json.
    pub fn connection_json(&self, accounts: &[Account]) -> serde_json::Value {
        let accounts: Vec<serde_json::Value> = accounts
            .iter()
            .map(|a| serde_json::json!({"addr": a.addr, "password": a.password, "dclogin": self.dclogin(a)}))
            .collect();
        serde_json::json!({
            "domain": self.domain,
            "host": "127.0.0.1",
            "smtp_port": self.ports.smtp,
            "submission_port": self.ports.submission,
            "smtps_port": self.ports.smtps,
            "imap_port": self.ports.imap,
            "imaps_port": self.ports.imaps,
            "https_port": self.ports.https,
            "config": self.config_path,
            "log_dir": self.log_dir,
            "run_dir": self.run_dir,
            "cert_pem": self.cert_pem,
            "accounts": accounts,
            "capture_maildir": self.mailboxes_dir.join(format!("capture@{}", self.domain)),
        })
    }

    /// Stops both servers. Also done on drop.
    pub fn stop(&mut self) {
        if let Some(mut watchdog) = self.postfix_watchdog.take() {
            watchdog.kill_now();
        }
        if let Some(mut postfix) = self.postfix.take() {
            postfix.stop(Duration::from_secs(5));
        }
        if let Some(mut milter) = self.milter.take() {
            milter.stop(Duration::from_secs(5));
        }
        if let Some(mut dovecot) = self.dovecot.take() {
            dovecot.stop(Duration::from_secs(5));
        }
        if let Some(mut web) = self.web.take() {
            web.stop(Duration::from_secs(5));
        }
        if let Some(mut auth) = self.auth.take() {
            auth.stop(Duration::from_secs(5));
        }
        self.stop_metadata();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; logs of the relay in {}:\n{}", self.run_dir.display(), self.logs());
        }
        self.stop();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The chatmail-milter binary: `CHATMAIL_MILTER`, or the one built beside
/// this program (target/debug/ for binaries, its parent for test binaries in deps/).
/// Dovecot's own modules directory.
const DOVECOT_MODULES: &str = "/usr/lib/dovecot/modules";

/// Fills `dir` with the chatmail plugin (named as Dovecot expects) and links
/// to Dovecot's own modules, so `mail_plugin_dir = dir` finds both.
fn prepare_plugin_dir(dir: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    make_dir(dir, 0o755)?;
    let plugin = sibling_binary("libchatmail_dovecot_plugin.so", "CHATMAIL_DOVECOT_PLUGIN")?;
    fs::copy(&plugin, dir.join("lib90_chatmail_plugin.so")).context(|| format!("copying {}", plugin.display()))?;
    for entry in fs::read_dir(DOVECOT_MODULES).context(|| format!("listing {DOVECOT_MODULES}"))?.flatten() {
        let name = entry.file_name();
        // A host with the dovecot-chatmail package has the plugin there
        // too: this relay's build stays the one it loads.
        if name.to_string_lossy().ends_with(".so") && name != "lib90_chatmail_plugin.so" {
            std::os::unix::fs::symlink(entry.path(), dir.join(&name)).context(|| format!("linking {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The host's Dovecot release, asked once per process (every relay a test
/// starts would run `dovecot --version` again).
fn installed_dovecot() -> Result<DovecotRelease> {
    static RELEASE: std::sync::OnceLock<std::result::Result<DovecotRelease, String>> = std::sync::OnceLock::new();
    RELEASE.get_or_init(DovecotRelease::installed).clone().map_err(Error::new)
}

/// Dovecot 2.4's Lua passdb/userdb for chatmail-auth: the repository's
/// (packaging/dovecot), or CHATMAIL_AUTH_LUA.
fn auth_lua_script() -> PathBuf {
    match std::env::var_os("CHATMAIL_AUTH_LUA") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/dovecot/chatmail-auth.lua"),
    }
}

/// Dovecot 2.4 learns the plugin's setting chatmail_config only from a
/// module in its own module directory (see c-shim/chatmail-settings.c).
fn check_settings_module() -> Result<()> {
    let module = Path::new(DOVECOT_MODULES).join("settings/libchatmail_settings.so");
    if module.is_file() {
        return Ok(());
    }
    Err(Error::new(format!(
        "{} is missing: Dovecot 2.4 refuses the setting chatmail_config without it; install dovecot-chatmail \
         or copy libchatmail_settings.so from the plugin's 2.4 build there",
        module.display()
    )))
}

/// A binary of this workspace: from the environment variable `env`, else
/// beside the running program (target/debug/ for tests and the harness).
pub fn sibling_binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context(|| "finding the running program".into())?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::new(format!(
        "{name} not found beside {}; build it (cargo build --workspace) or set {env}",
        exe.display()
    )))
}
