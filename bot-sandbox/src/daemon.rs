//! The daemon: takes jobs from the spool and installs or runs bots, at
//! most `bot_max_parallel` at a time.
//!
//! Logging policy: one line per job on stderr, `key=value` words starting
//! with `op=install`, `op=run` or `op=job`: what happened (`result=`), and
//! for runs the outcome, CPU, wall time and metering points. Failures of
//! the daemon itself say `result=error`. Mail content is never logged; a
//! bot's stderr (first 4 KiB) goes into its `errors.log` when it fails.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatmail_config::metrics::{FamilyDoc, Kind, Registry as Metrics};
use chatmail_config::spool::{Job, JobKind, BOT_MARKER};
use chatmail_config::Config;
use mail_parser::MessageParser;

use crate::engine::{self, POINTS_PER_CPU_SECOND};
use crate::limits::{self, CpuBudget, RunRecord};
use crate::dsn;
use crate::lmtp;
use crate::maildir;
use crate::package::{self, Code};
use crate::queue::{Spool, Taken};
use crate::runner::{RunEnd, Runner};
use crate::state::{Installed, InstalledCode, Registry};
use crate::worker::{Outcome, StorageRequest, WorkerRequest};
use crate::conversation::{Chat, Gate, Verified};

/// What the daemon needs, from chatmail.ini.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mail_domain: String,
    pub mailboxes_dir: PathBuf,
    pub spool_dir: PathBuf,
    pub state_dir: PathBuf,
    pub install_folder: String,
    pub enabled: bool,
    pub accounts: Vec<String>,
    pub max_parallel: u32,
    pub memory_limit: u64,
    pub wall_time: Duration,
    pub output_limit: u64,
    pub max_package_size: u64,
    pub max_message_size: u64,
    pub budget: CpuBudget,
    /// The operator's `bot_allowed_origins`.
    pub allowed_origins: Vec<String>,
    pub lmtp_socket: PathBuf,
    /// Postfix's submission socket for the bots' mail.
    pub submission_socket: PathBuf,
    /// The daemon runs in its own empty network namespace (workers need
    /// not make one each).
    pub network_isolated: bool,
    /// Where `chatmail-bots run` writes its metrics; `None`: nowhere.
    pub metrics_dir: Option<PathBuf>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            mail_domain: config.mail_domain.clone(),
            mailboxes_dir: config.mailboxes_dir.clone(),
            spool_dir: config.bot_spool_dir.clone(),
            state_dir: config.bot_state_dir.clone(),
            install_folder: config.bot_install_folder.clone(),
            enabled: config.bots_enabled,
            accounts: config.bot_accounts.clone(),
            max_parallel: config.bot_max_parallel,
            memory_limit: config.bot_memory_limit,
            wall_time: Duration::from_secs(u64::from(config.bot_wall_time)),
            output_limit: config.bot_output_limit,
            max_package_size: config.bot_max_package_size,
            max_message_size: config.max_message_size,
            budget: CpuBudget { percent_per_hour: config.bot_cpu_percent_per_hour, percent_per_day: config.bot_cpu_percent_per_day },
            allowed_origins: config.bot_allowed_origins.clone(),
            lmtp_socket: config.lmtp_socket.clone(),
            submission_socket: config.bot_submission_socket.clone(),
            network_isolated: false,
            metrics_dir: config.metrics_dir.clone(),
        }
    }

    /// Whether `account` may install a bot.
    pub fn may_install(&self, account: &str) -> bool {
        self.accounts.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(account))
    }
}

/// What to do with a job after handling it.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done (ran, or refused with a log line): remove it.
    Finish,
    /// The worker crashed: try again later (bounded).
    Retry(String),
}

/// The daemon's shared parts.
pub struct Daemon {
    pub settings: Settings,
    pub spool: Spool,
    pub registry: Registry,
    pub runner: Runner,
    /// The helper that makes bots' network requests (outside the daemon's
    /// network namespace); `None`: no bot gets network.
    fetcher: Option<Arc<Mutex<FetchHelper>>>,
    /// Bots being installed or run, so two jobs of one bot never overlap.
    busy: Mutex<Vec<String>>,
    metrics: Arc<Metrics>,
}

/// The bot daemon's metric families (see the operator guide's metrics section).
pub const METRICS: &[FamilyDoc] = &[
    FamilyDoc {
        name: "chatmail_bot_runs_total",
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Bot runs by how they ended: exited, exited-nonzero, trapped, out-of-cpu, output-limit, load-failed, timed-out, crashed.",
    },
    FamilyDoc {
        name: "chatmail_bot_refusals_total",
        kind: Kind::Counter,
        labels: &["stage", "reason"],
        help: "Mail or output a bot did not get to act on: stage gate (not encrypted to the bot or not signed by its sender), limit (a rate or CPU allowance used up), skipped (bot not runnable), action (an output line refused); reason as in the log line.",
    },
    FamilyDoc {
        name: "chatmail_bot_installs_total",
        kind: Kind::Counter,
        labels: &["result"],
        help: "Bot install mails by result: installed, unchanged, uninstalled, refused, nothing-installed, error.",
    },
];

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("settings", &self.settings).finish_non_exhaustive()
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn log(line: &str) {
    eprintln!("chatmail-bots: {line}");
}

/// A value fit for a `key=value` log word.
pub(crate) fn word(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// What the daemon reads from a delivered mail's headers before the gate.
#[derive(Debug, Default, PartialEq, Eq)]
struct Arrival {
    /// The From address, lower-cased.
    sender: String,
    /// One of the daemon's own reports (install, problems).
    own_report: bool,
    /// A delivery status notification (a bounce).
    delivery_report: bool,
}

fn arrival(mail: &[u8]) -> Arrival {
    let Some(message) = MessageParser::default().parse_headers(mail) else { return Arrival::default() };
    Arrival {
        sender: message.from().and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or("").to_ascii_lowercase(),
        own_report: message.header_raw(lmtp::REPORT_HEADER).is_some(),
        delivery_report: dsn::is_delivery_report(&message),
    }
}

impl Daemon {
    pub fn new(settings: Settings, runner: Runner) -> Daemon {
        Daemon {
            spool: Spool::new(settings.spool_dir.clone()),
            registry: Registry::new(settings.state_dir.clone()),
            runner,
            settings,
            fetcher: None,
            busy: Mutex::new(Vec::new()),
            metrics: Arc::new(Metrics::new(METRICS)),
        }
    }

    /// The daemon's counters (written to `metrics_dir` by `chatmail-bots run`).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Gives the daemon its network helper.
    pub fn with_fetcher(mut self, helper: FetchHelper) -> Daemon {
        self.fetcher = Some(Arc::new(Mutex::new(helper)));
        self
    }

    /// An install's outcome: counted, and logged as one `op=install` line
    /// (`detail`: the words after `result=`, each with its leading space).
    fn install_result(&self, job_name: &str, account: &str, result: &str, detail: &str) {
        self.metrics.inc("chatmail_bot_installs_total", &[result]);
        log(&format!("op=install job={job_name} bot={account} result={result}{detail}"));
    }

    fn home(&self, account: &str) -> PathBuf {
        self.settings.mailboxes_dir.join(account)
    }

    /// Handles one job.
    pub fn handle(&self, job_name: &str, job: &Job) -> Disposition {
        if !crate::state::valid_account(&job.account) {
            log(&format!("op=job job={job_name} result=refused reason=bad-account account={}", word(&job.account)));
            return Disposition::Finish;
        }
        match job.kind {
            JobKind::Install => self.install(job_name, job),
            JobKind::Deliver | JobKind::Tick => self.deliver(job_name, job),
        }
    }

    fn report(&self, account: &str, subject: &str, body: &str) {
        let message = lmtp::report_message(&self.settings.mail_domain, account, subject, body, SystemTime::now());
        if let Err(e) = lmtp::deliver(&self.settings.lmtp_socket, account, &message) {
            log(&format!("op=report bot={account} result=error problem={}", word(&e.to_string())));
        }
    }

    fn refuse_install(&self, job_name: &str, account: &str, reason: &str, problems: &[String]) -> Disposition {
        self.install_result(job_name, account, "refused", &format!(" reason={reason} problems={}", word(&problems.join("; "))));
        let mut body = String::from("Your bot was not installed. Problems found:\n\n");
        for problem in problems {
            body.push_str(&format!("- {problem}\n"));
        }
        body.push_str("\nFix them and store a new package mail in the folder; the newest one counts.\n");
        self.report(account, "Bot not installed", &body);
        Disposition::Finish
    }

    fn install(&self, job_name: &str, job: &Job) -> Disposition {
        let account = &job.account;
        if !self.settings.enabled {
            return self.refuse_install(job_name, account, "bots-disabled", &["bots are not enabled on this relay".into()]);
        }
        if !self.settings.may_install(account) {
            return self.refuse_install(job_name, account, "not-allowed", &["this account may not install bots on this relay".into()]);
        }
        let home = self.home(account);
        // Mails this job says were expunged count as gone even if Dovecot
        // has not removed their files yet.
        let newest = match maildir::newest_mail_except(&home, &self.settings.install_folder, &job.expunged) {
            Ok(newest) => newest,
            Err(e) => {
                self.install_result(job_name, account, "error", &format!(" problem={}", word(&e.to_string())));
                return Disposition::Retry(format!("reading the install folder: {e}"));
            }
        };
        let installed = self.registry.load(account).ok().flatten();
        let Some((uid, path)) = newest else {
            // An empty folder uninstalls.
            if installed.is_none() {
                self.install_result(job_name, account, "nothing-installed", "");
                return Disposition::Finish;
            }
            let _ = std::fs::remove_file(home.join(BOT_MARKER));
            if let Err(e) = self.registry.uninstall(account) {
                self.install_result(job_name, account, "error", &format!(" problem={}", word(&e.to_string())));
                return Disposition::Retry(format!("uninstalling: {e}"));
            }
            self.install_result(job_name, account, "uninstalled", "");
            self.report(account, "Bot uninstalled", "The bot folder is empty, so the bot was uninstalled.\n");
            return Disposition::Finish;
        };
        if installed.as_ref().is_some_and(|b| b.installed.uid == uid) {
            self.install_result(job_name, account, "unchanged", &format!(" uid={uid}"));
            return Disposition::Finish;
        }
        let mail = match std::fs::read(&path) {
            Ok(mail) => mail,
            Err(e) => return Disposition::Retry(format!("reading {}: {e}", path.display())),
        };
        let package = match package::unpack(&mail, self.settings.max_package_size) {
            Ok(package) => package,
            Err(problems) => return self.refuse_install(job_name, account, "bad-package", &problems),
        };
        let artifact;
        let (code, record) = match &package.code {
            Code::Wasm(wasm) => {
                let module = match engine::compile(self.settings.memory_limit, wasm) {
                    Ok(module) => module,
                    Err(problems) => return self.refuse_install(job_name, account, "bad-module", &problems),
                };
                artifact = match module.serialize() {
                    Ok(artifact) => artifact,
                    Err(e) => return Disposition::Retry(format!("serializing the module: {e}")),
                };
                let record = Installed { uid, installed_at: now_secs(), wasm_bytes: wasm.len() as u64, script_bytes: None };
                (InstalledCode::Artifact(&artifact), record)
            }
            Code::Script(script) => {
                let engine_artifact = match crate::js::engine_artifact(&self.registry.dir, self.settings.memory_limit) {
                    Ok(path) => path,
                    Err(e) => {
                        // The relay's own engine: nothing the author can fix.
                        self.install_result(job_name, account, "error", &format!(" problem={}", word(&e)));
                        return Disposition::Retry(e);
                    }
                };
                let network_isolated = self.settings.network_isolated;
                match crate::js::check_script(&self.runner, &engine_artifact, self.settings.memory_limit, network_isolated, script) {
                    Ok(problems) if problems.is_empty() => {}
                    Ok(problems) => return self.refuse_install(job_name, account, "bad-script", &problems),
                    Err(e) => {
                        self.install_result(job_name, account, "error", &format!(" problem={}", word(&e)));
                        return Disposition::Retry(e);
                    }
                }
                let record = Installed { uid, installed_at: now_secs(), wasm_bytes: 0, script_bytes: Some(script.len() as u64) };
                (InstalledCode::Script(script), record)
            }
        };
        let toml_text = package_toml(&mail).unwrap_or_default();
        if let Err(e) = self.registry.install(account, &record, &toml_text, &code) {
            self.install_result(job_name, account, "error", &format!(" problem={}", word(&e.to_string())));
            return Disposition::Retry(format!("storing the bot: {e}"));
        }
        if let Err(e) = std::fs::write(home.join(BOT_MARKER), b"") {
            self.install_result(job_name, account, "error", &format!(" problem={}", word(&format!("marker: {e}"))));
            return Disposition::Retry(format!("writing the marker: {e}"));
        }
        let package_key = match package.key.as_deref().map(crate::openpgp::SecretKey::from_armor) {
            Some(Ok(key)) => Some(key),
            Some(Err(problem)) => {
                let _ = self.registry.uninstall(account);
                let _ = std::fs::remove_file(home.join(BOT_MARKER));
                return self.refuse_install(job_name, account, "bad-key", &[format!("the secret key attachment: {problem}")]);
            }
            None => None,
        };
        let key_source = if package_key.is_some() { "from the package" } else { "kept or generated" };
        let (key, link) = match self.prepare_identity(account, package_key) {
            Ok(identity) => identity,
            Err(e) => {
                self.install_result(job_name, account, "error", &format!(" problem={}", word(&format!("identity: {e}"))));
                return Disposition::Retry(format!("preparing the bot's identity: {e}"));
            }
        };
        let fingerprint = key.public().fingerprint();
        let m = &package.metadata;
        let detail = format!(
            " uid={uid} name={} author={} {}_bytes={} fingerprint={fingerprint} key={}",
            word(&m.name),
            word(&m.author),
            if matches!(package.code, Code::Script(_)) { "script" } else { "wasm" },
            package.code.len(),
            if key_source.starts_with("from") { "package" } else { "relay" }
        );
        self.install_result(job_name, account, "installed", &detail);
        let mut body = format!(
            "Your bot is installed and runs for every mail this account receives.\n\n\
             Name: {}\nDescription: {}\nAuthor: {}\n{}: {} bytes\n\n\
             Limits per sender: {} mails per hour, {} per day, {} CPU seconds per hour, {} bytes per hour.\n",
            m.name, m.description, m.author,
            if matches!(package.code, Code::Script(_)) { "Script (bot.js, run by the relay's JavaScript engine)" } else { "Module" },
            package.code.len(), m.limits.mails_per_hour, m.limits.mails_per_day, m.limits.cpu_seconds_per_hour, m.limits.bytes_per_hour
        );
        body.push_str(&format!(
            "Limits per run on this relay: {} bytes of memory, {} seconds, {} bytes of output.\n",
            self.settings.memory_limit,
            self.settings.wall_time.as_secs(),
            self.settings.output_limit
        ));
        if let Some(minutes) = m.schedule_minutes {
            body.push_str(&format!("Schedule: every {minutes} minutes.\n"));
        }
        body.push_str(&format!(
            "\nThe bot's OpenPGP key ({key_source}): {fingerprint}\n\
             Only encrypted mail signed by its sender reaches the bot.\n\n\
             Invite link: scan it or open it in Delta Chat to start an encrypted chat with the bot:\n\n{link}\n\n"
        ));
        if let Some(qr) = crate::identity::qr_text(&link) {
            body.push_str(&qr);
            body.push('\n');
        }
        self.report(account, &format!("Bot installed: {}", m.name), &body);
        Disposition::Finish
    }

    /// Logs a delivery report's recipients, and records those the bot's
    /// message will not reach in the bot's errors (`chatmail-bots list`).
    fn note_delivery_report(&self, job_name: &str, account: &str, reporter: &str, recipients: &[dsn::RecipientStatus]) {
        if recipients.is_empty() {
            log(&format!("op=delivery-report job={job_name} bot={account} reporter={} result=unreadable", word(reporter)));
            return;
        }
        for r in recipients {
            log(&format!(
                "op=delivery-report job={job_name} bot={account} reporter={} recipient={} action={} status={} diagnostic={}",
                word(reporter),
                word(&r.recipient),
                word(&r.action),
                word(&r.status),
                word(&r.diagnostic)
            ));
            if r.failed() {
                let line = format!("a message to {} was not delivered: {} {}", r.recipient, r.status, r.diagnostic);
                if let Err(e) = self.registry.record_error(account, now_secs(), line.trim_end()) {
                    log(&format!("op=delivery-report job={job_name} bot={account} result=error problem={}", word(&e.to_string())));
                }
            }
        }
    }

    fn deliver(&self, job_name: &str, job: &Job) -> Disposition {
        let account = &job.account;
        let refuse = |reason: &str| {
            self.metrics.inc("chatmail_bot_refusals_total", &["skipped", reason]);
            log(&format!("op=run job={job_name} bot={account} result=skipped reason={reason}"));
            Disposition::Finish
        };
        if !self.settings.enabled {
            return refuse("bots-disabled");
        }
        let bot = match self.registry.load(account) {
            Ok(Some(bot)) => bot,
            Ok(None) => return refuse("no-bot"),
            Err(e) => return Disposition::Retry(format!("loading the bot: {e}")),
        };
        if bot.disabled {
            return refuse("disabled-by-operator");
        }
        let scheduled = job.kind == JobKind::Tick;
        let mail = if scheduled {
            if bot.metadata.schedule_minutes.is_none() {
                return refuse("no-schedule");
            }
            Vec::new()
        } else {
            let Some(uid) = job.uid else { return refuse("no-uid") };
            let path = match maildir::find_mail(&self.home(account), &job.mailbox, job.uidvalidity, uid) {
                Ok(Some(path)) => path,
                Ok(None) => return refuse("mail-gone"),
                Err(e) => return Disposition::Retry(format!("finding the mail: {e}")),
            };
            match std::fs::read(&path) {
                Ok(mail) => mail,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return refuse("mail-gone"),
                Err(e) => return Disposition::Retry(format!("reading {}: {e}", path.display())),
            }
        };
        if mail.len() as u64 > self.settings.max_message_size.saturating_mul(2) {
            return refuse("mail-too-large");
        }
        let Arrival { sender, own_report, delivery_report } = if scheduled { Arrival::default() } else { arrival(&mail) };
        if own_report && sender == format!("mailer-daemon@{}", self.settings.mail_domain) {
            return refuse("own-report");
        }
        // A bounce of the bot's own message: cleartext, but not someone
        // writing to the bot; noted for the operator, the bot does not run.
        if delivery_report {
            self.note_delivery_report(job_name, account, &sender, &dsn::recipient_statuses(&mail));
            return Disposition::Finish;
        }
        // The gate: only mail decrypted with the bot's key and signed by
        // its sender reaches the bot; Secure-Join is answered here.
        let mut gate_micros = 0;
        let verified = if scheduled {
            None
        } else {
            let started = std::time::Instant::now();
            let gate = self.gate(job_name, &bot, &mail);
            gate_micros = started.elapsed().as_micros();
            match gate {
                Gate::Run(verified) => Some(verified),
                Gate::Handled(reason) => {
                    log(&format!("op=gate job={job_name} bot={account} sender={} result=handled reason={reason}", word(&sender)));
                    return Disposition::Finish;
                }
                Gate::Refused(reason, detail) => {
                    self.metrics.inc("chatmail_bot_refusals_total", &["gate", reason]);
                    log(&format!("op=gate job={job_name} bot={account} sender={} result=refused reason={reason} detail={}", word(&sender), word(&detail)));
                    if let Err(e) = self.registry.count_refusal(account, reason) {
                        log(&format!("op=gate job={job_name} bot={account} result=error problem={}", word(&e.to_string())));
                    }
                    return Disposition::Finish;
                }
            }
        };
        let sender = verified.as_ref().map_or(sender, |v| v.sender.clone());
        let input: Vec<u8> = match &verified {
            Some(v) => v.content.status_update.clone().unwrap_or_else(|| v.content.text.clone()).into_bytes(),
            None => Vec::new(),
        };
        let now = now_secs();
        let mut history = match self.registry.history(account) {
            Ok(history) => history,
            Err(e) => return Disposition::Retry(format!("reading usage: {e}")),
        };
        limits::prune(&mut history, now);
        let allowance = match limits::check(&history, &sender, mail.len() as u64, now, &bot.metadata.limits, &self.settings.budget) {
            Ok(allowance) => allowance,
            Err(over) => {
                self.metrics.inc("chatmail_bot_refusals_total", &["limit", over.code()]);
                log(&format!("op=run job={job_name} bot={account} sender={} result=dropped reason={}", word(&sender), over.code()));
                let _ = self.registry.record_error(account, now, &format!("dropped a mail from {sender}: {}", over.code()));
                return Disposition::Finish;
            }
        };
        let wall_micros = u64::try_from(self.settings.wall_time.as_micros()).unwrap_or(u64::MAX);
        let cpu_micros = allowance.cpu_micros.min(wall_micros);
        let files = match bot.metadata.storage {
            Some(quota) => match self.registry.load_storage(account, quota) {
                Ok(files) => files,
                Err(e) => return Disposition::Retry(format!("reading the bot's storage: {e}")),
            },
            None => BTreeMap::new(),
        };
        let script = if bot.is_script() {
            match std::fs::read(bot.script_path()) {
                Ok(script) => Some(script),
                Err(e) => return Disposition::Retry(format!("reading {}: {e}", bot.script_path().display())),
            }
        } else {
            None
        };
        let artifact = if script.is_some() {
            match crate::js::engine_artifact(&self.registry.dir, self.settings.memory_limit) {
                Ok(path) => path,
                Err(e) => return Disposition::Retry(e),
            }
        } else {
            bot.artifact()
        };
        let request = WorkerRequest {
            artifact,
            memory_limit: self.settings.memory_limit,
            output_limit: self.settings.output_limit,
            points: cpu_micros.saturating_mul(POINTS_PER_CPU_SECOND / 1_000_000),
            cpu_seconds: cpu_micros.div_ceil(1_000_000) + 1,
            environment: environment(account, verified.as_deref()),
            network_isolated: self.settings.network_isolated,
            storage: bot.metadata.storage.map(|quota| StorageRequest {
                quota,
                files: files.iter().map(|(name, data)| (name.clone(), data.len() as u64)).collect(),
            }),
            input_len: None,
            network: false,
            script_len: None,
        };
        let origins = crate::fetch::allowed_origins(&bot.metadata.network, &self.settings.allowed_origins);
        let fetch: Option<crate::runner::FetchFn> = match (&self.fetcher, origins.is_empty()) {
            (Some(helper), false) => {
                let helper = Arc::clone(helper);
                let (account, job_name) = (account.clone(), job_name.to_owned());
                Some(Arc::new(move |url: &str| {
                    let answer = match helper.lock() {
                        Ok(mut helper) => helper.fetch(url, &origins),
                        Err(_) => (crate::fetch::FetchAnswer { status: 0, error: Some("network helper unavailable".into()), len: 0 }, Vec::new()),
                    };
                    log(&format!(
                        "op=fetch job={job_name} bot={account} url={} status={} error={}",
                        word(url),
                        answer.0.status,
                        word(answer.0.error.as_deref().unwrap_or("-"))
                    ));
                    answer
                }))
            }
            _ => None,
        };
        let mut request = request;
        request.network = fetch.is_some();
        let run = self.runner.run_bot(&request, script.as_deref(), &files, &input, fetch);
        let mut pending_actions = Vec::new();
        let (outcome_word, used_micros, detail) = match &run.end {
            RunEnd::Reported { report, output, storage } => {
                if let Some(files) = storage {
                    if let Err(e) = self.registry.save_storage(account, files) {
                        log(&format!("op=run job={job_name} bot={account} result=error problem={}", word(&format!("saving storage: {e}"))));
                    }
                }
                if !output.is_empty() {
                    if let Err(e) = self.registry.store_output(account, job_name, output) {
                        log(&format!("op=run job={job_name} bot={account} result=error problem={}", word(&e.to_string())));
                    }
                }
                let (actions, refused) = crate::actions::parse(output);
                for reason in &refused {
                    // The reason is the bot's own output quoted: counted by its first word.
                    self.metrics.inc("chatmail_bot_refusals_total", &["action", reason.split([' ', ':']).next().unwrap_or("")]);
                    log(&format!("op=action job={job_name} bot={account} result=refused reason={}", word(reason)));
                    let _ = self.registry.record_error(account, now, &format!("output refused: {reason}"));
                }
                match &report.outcome {
                    _ if actions.is_empty() => {}
                    // Carried out once the run is recorded, below.
                    Outcome::Exited(0) => pending_actions = actions,
                    _ => log(&format!("op=action job={job_name} bot={account} result=refused reason=the-run-failed actions={}", actions.len())),
                }
                let outcome = match &report.outcome {
                    Outcome::Exited(0) => "exited".to_owned(),
                    Outcome::Exited(code) => format!("exited-{code}"),
                    Outcome::Trapped(_) => "trapped".into(),
                    Outcome::OutOfCpu => "out-of-cpu".into(),
                    Outcome::OutputLimit => "output-limit".into(),
                    Outcome::LoadFailed(_) => "load-failed".into(),
                };
                let detail = match &report.outcome {
                    Outcome::Trapped(m) | Outcome::LoadFailed(m) => Some(m.clone()),
                    Outcome::OutOfCpu => Some("used its CPU allowance".into()),
                    Outcome::OutputLimit => Some(format!("wrote more than {} bytes", self.settings.output_limit)),
                    Outcome::Exited(0) => None,
                    Outcome::Exited(code) => Some(format!("exit code {code}")),
                };
                if !report.unprotected.is_empty() {
                    log(&format!("op=run job={job_name} bot={account} result=warning unprotected={}", word(&report.unprotected.join("; "))));
                }
                let detail = detail.map(|d| if report.stderr.is_empty() { d } else { format!("{d}; stderr: {}", report.stderr.trim()) });
                // A run stopped by metering used all it was given, whatever
                // the points were worth in CPU on this machine: charging
                // the allowance makes the budget run out instead of
                // shrinking run by run.
                let charged = if report.outcome == Outcome::OutOfCpu { report.cpu_micros.max(cpu_micros) } else { report.cpu_micros };
                (outcome, charged, detail)
            }
            RunEnd::TimedOut => ("timed-out".into(), wall_micros, Some(format!("ran longer than {} seconds", self.settings.wall_time.as_secs()))),
            RunEnd::Crashed(problem) => {
                self.metrics.inc("chatmail_bot_runs_total", &["crashed"]);
                log(&format!("op=run job={job_name} bot={account} result=crashed problem={}", word(problem)));
                let _ = self.registry.record_error(account, now, &format!("worker crashed: {problem}"));
                return Disposition::Retry(problem.clone());
            }
        };
        history.push(RunRecord { at: now, sender: sender.clone(), cpu_micros: used_micros, bytes: mail.len() as u64 });
        if let Err(e) = self.registry.save_history(account, &history) {
            log(&format!("op=run job={job_name} bot={account} result=error problem={}", word(&e.to_string())));
        }
        if let Some(detail) = &detail {
            let _ = self.registry.record_error(account, now, &format!("{outcome_word}: {detail}"));
        }
        let points = match &run.end {
            RunEnd::Reported { report, .. } => report.points_used,
            _ => 0,
        };
        let outcome_label = if outcome_word.starts_with("exited-") { "exited-nonzero" } else { outcome_word.as_str() };
        self.metrics.inc("chatmail_bot_runs_total", &[outcome_label]);
        log(&format!(
            "op=run job={job_name} bot={account} sender={} result=ran outcome={outcome_word} cpu_ms={} wall_ms={} points={points} gate_us={gate_micros} wall_us={}",
            word(&sender),
            used_micros / 1000,
            run.wall_micros / 1000,
            run.wall_micros
        ));
        if !pending_actions.is_empty() {
            self.carry_out(job_name, &bot, verified.as_deref(), pending_actions);
        }
        Disposition::Finish
    }

    /// Writes a tick job for every bot whose schedule is due, and notes
    /// the time in its `last-tick` file. A tick that is still waiting is
    /// not doubled: the time is noted when the job is written.
    pub fn schedule_ticks(&self, now: u64) {
        let Ok(accounts) = self.registry.accounts() else { return };
        for account in accounts {
            let Ok(Some(bot)) = self.registry.load(&account) else { continue };
            let Some(minutes) = bot.metadata.schedule_minutes else { continue };
            if bot.disabled || !self.settings.enabled {
                continue;
            }
            let stamp = bot.dir.join("last-tick");
            let last: u64 = std::fs::read_to_string(&stamp).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(bot.installed.installed_at);
            if now < last.saturating_add(u64::from(minutes) * 60) {
                continue;
            }
            let job = Job {
                kind: JobKind::Tick,
                account: account.clone(),
                mailbox: String::new(),
                uidvalidity: None,
                uid: None,
                expunged: Vec::new(),
                created: now,
            };
            match chatmail_config::spool::write_job(&self.spool.dir, &job) {
                Ok(_) => {
                    if let Err(e) = crate::state::write_atomically(&stamp, now.to_string().as_bytes(), 0o600) {
                        log(&format!("op=schedule bot={account} result=error problem={}", word(&e.to_string())));
                    }
                }
                Err(e) => log(&format!("op=schedule bot={account} result=error problem={}", word(&e.to_string()))),
            }
        }
    }

    /// Takes and handles the waiting job `name`, if it is still there and
    /// its bot is not busy. Returns whether it was taken.
    fn take_and_handle(&self, name: &str) -> bool {
        let taken = match self.spool.take(name) {
            Ok(Some(taken)) => taken,
            Ok(None) => return false,
            Err(e) => {
                log(&format!("op=job job={name} result=error problem={}", word(&e.to_string())));
                return false;
            }
        };
        let job = match self.spool.read(&taken) {
            Ok(Ok(job)) => job,
            Ok(Err(problem)) => {
                log(&format!("op=job job={name} result=refused reason=unreadable problem={}", word(&problem)));
                self.settle(taken, Disposition::Finish);
                return true;
            }
            Err(e) => {
                self.settle(taken, Disposition::Retry(e.to_string()));
                return true;
            }
        };
        // A bug here must not take the thread (and so a run slot) down:
        // a panicking job is retried like a crashed worker, then parked.
        let disposition = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(&taken.name, &job)))
            .unwrap_or_else(|_| Disposition::Retry("the daemon panicked handling this job".into()));
        self.settle(taken, disposition);
        true
    }

    fn settle(&self, taken: Taken, disposition: Disposition) {
        let name = taken.name.clone();
        let result = match disposition {
            Disposition::Finish => self.spool.finish(taken).map(|()| None),
            Disposition::Retry(reason) => self.spool.retry(taken, &reason).map(|parked| Some((parked, reason))),
        };
        match result {
            Ok(Some((true, reason))) => log(&format!("op=job job={name} result=parked reason={}", word(&reason))),
            Ok(Some((false, reason))) => log(&format!("op=job job={name} result=retry reason={}", word(&reason))),
            Ok(None) => {}
            Err(e) => log(&format!("op=job job={name} result=error problem={}", word(&e.to_string()))),
        }
    }

    /// Marks the account of job `name` busy: `Err` if it already is (the
    /// job waits for the next round), else the account to release after
    /// the job (`None` for unreadable jobs, which have no account).
    fn reserve(&self, name: &str) -> Result<Option<String>, ()> {
        let path = self.spool.dir.join("new").join(name);
        let Ok(Ok(job)) = std::fs::read_to_string(path).map(|t| Job::parse(&t)) else { return Ok(None) };
        let Ok(mut busy) = self.busy.lock() else { return Ok(None) };
        if busy.contains(&job.account) {
            return Err(());
        }
        busy.push(job.account.clone());
        Ok(Some(job.account))
    }

    fn release(&self, account: &str) {
        if let Ok(mut busy) = self.busy.lock() {
            busy.retain(|a| a != account);
        }
    }
}

/// The network helper process (`chatmail-bots fetcher`), started before
/// the daemon leaves the host's network namespace.
#[derive(Debug)]
pub struct FetchHelper {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl FetchHelper {
    /// Starts `program fetcher` with `args` before it.
    pub fn start(program: &std::path::Path, args: &[std::ffi::OsString]) -> std::io::Result<FetchHelper> {
        use std::process::{Command, Stdio};
        let mut child = Command::new(program).args(args).arg("fetcher").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(std::io::Error::other("fetcher pipes missing"));
        };
        Ok(FetchHelper { child, input, output: std::io::BufReader::new(output) })
    }

    fn fetch(&mut self, url: &str, origins: &[String]) -> (crate::fetch::FetchAnswer, Vec<u8>) {
        use std::io::{BufRead, Read, Write};
        let failed = |e: String| (crate::fetch::FetchAnswer { status: 0, error: Some(e), len: 0 }, Vec::new());
        let request = crate::fetch::FetchRequest { url: url.to_owned(), origins: origins.to_vec() };
        let mut line = match serde_json::to_vec(&request) {
            Ok(line) => line,
            Err(e) => return failed(e.to_string()),
        };
        line.push(b'\n');
        if let Err(e) = self.input.write_all(&line).and_then(|()| self.input.flush()) {
            return failed(format!("network helper: {e}"));
        }
        let mut answer = String::new();
        if let Err(e) = self.output.read_line(&mut answer) {
            return failed(format!("network helper: {e}"));
        }
        let answer: crate::fetch::FetchAnswer = match serde_json::from_str(&answer) {
            Ok(answer) => answer,
            Err(e) => return failed(format!("network helper: {e}")),
        };
        let mut body = vec![0; usize::try_from(answer.len.min(crate::fetch::MAX_BODY)).unwrap_or(0)];
        if let Err(e) = self.output.read_exact(&mut body) {
            return failed(format!("network helper: {e}"));
        }
        (answer, body)
    }
}

impl Drop for FetchHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a run gets: who wrote, in which chat, which message.
fn environment(account: &str, verified: Option<&Verified>) -> Vec<(String, String)> {
    let mut env = vec![("CHATMAIL_BOT".to_owned(), account.to_owned())];
    let Some(v) = verified else {
        env.push(("CHATMAIL_EVENT".into(), "schedule".into()));
        return env;
    };
    let event = if v.content.status_update.is_some() { "webxdc-update" } else { "message" };
    env.push(("CHATMAIL_EVENT".into(), event.into()));
    env.push(("CHATMAIL_SENDER".into(), v.sender.clone()));
    env.push(("CHATMAIL_SENDER_VERIFIED".into(), if v.sender_verified { "1" } else { "0" }.into()));
    match &v.chat {
        Chat::Single => env.push(("CHATMAIL_CHAT".into(), "single".into())),
        Chat::Group { id, name } => {
            env.push(("CHATMAIL_CHAT".into(), id.clone()));
            env.push(("CHATMAIL_CHAT_NAME".into(), name.clone()));
        }
    }
    env.push(("CHATMAIL_MESSAGE_ID".into(), v.content.message_id.clone()));
    if let Some(attachment) = &v.content.attachment {
        env.push(("CHATMAIL_ATTACHMENT".into(), attachment.name.clone()));
        env.push(("CHATMAIL_ATTACHMENT_SIZE".into(), attachment.size.to_string()));
    }
    if v.content.status_update.is_some() {
        env.push(("CHATMAIL_WEBXDC_INSTANCE".into(), v.content.in_reply_to.first().cloned().unwrap_or_default()));
    } else if let Some(parent) = v.content.in_reply_to.first() {
        // The message this one quotes or answers: how a bot learns the id
        // of one of its own messages (to `delete` it).
        env.push(("CHATMAIL_IN_REPLY_TO".into(), parent.clone()));
    }
    env
}

/// The `bot.toml` text of a package mail (as stored for the record).
fn package_toml(mail: &[u8]) -> Option<String> {
    use mail_parser::MimeHeaders;
    let message = MessageParser::default().parse(mail)?;
    let part = message.attachments().find(|p| p.attachment_name() == Some("bot.toml"))?;
    String::from_utf8(part.contents().to_vec()).ok()
}

/// How often bots' schedules are looked at, in seconds.
const SCHEDULE_CHECK_SECS: u64 = 30;

/// Serves the spool until `stop` is set: recovers jobs of an earlier run,
/// then hands waiting jobs to `max_parallel` threads, woken by datagrams
/// on `{spool}/nudge` or every `rescan`.
pub fn serve(daemon: Arc<Daemon>, stop: Arc<AtomicBool>, rescan: Duration) -> std::io::Result<()> {
    daemon.spool.prepare()?;
    let recovered = daemon.spool.recover()?;
    if recovered > 0 {
        log(&format!("op=start result=recovered jobs={recovered}"));
    }
    let nudge_path = daemon.spool.dir.join("nudge");
    let _ = std::fs::remove_file(&nudge_path);
    let nudge = UnixDatagram::bind(&nudge_path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", nudge_path.display())))?;
    // Whoever may write jobs (the mail user's Dovecot processes) may nudge.
    let _ = std::fs::set_permissions(&nudge_path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
    nudge.set_read_timeout(Some(rescan))?;

    // Each free thread offers a one-shot channel; the main loop answers
    // with a job (name, account to release after it) or None (nothing for
    // it this round). Dropping the offers at stop ends idle threads.
    type Offer = mpsc::Sender<Option<(String, Option<String>)>>;
    let (ready_tx, ready_rx) = mpsc::channel::<Offer>();
    let mut threads = Vec::new();
    for _ in 0..daemon.settings.max_parallel.max(1) {
        let daemon = Arc::clone(&daemon);
        let ready_tx = ready_tx.clone();
        threads.push(std::thread::spawn(move || loop {
            let (job_tx, job_rx) = mpsc::channel();
            if ready_tx.send(job_tx).is_err() {
                return;
            }
            match job_rx.recv() {
                Ok(Some((name, account))) => {
                    daemon.take_and_handle(&name);
                    if let Some(account) = account {
                        daemon.release(&account);
                        // Its bot may have more jobs waiting: look again now.
                        chatmail_config::spool::nudge(&daemon.spool.dir);
                    }
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }));
    }
    drop(ready_tx);
    log(&format!("op=start result=serving spool={} parallel={}", daemon.spool.dir.display(), daemon.settings.max_parallel));

    let mut buffer = [0u8; 64];
    let mut last_schedule_check = 0;
    'serving: while !stop.load(Ordering::Relaxed) {
        let now = now_secs();
        if now >= last_schedule_check + SCHEDULE_CHECK_SECS {
            daemon.schedule_ticks(now);
            daemon.retry_queued();
            last_schedule_check = now;
        }
        let waiting = daemon.spool.waiting()?;
        let mut handed = false;
        for name in waiting {
            if stop.load(Ordering::Relaxed) {
                break 'serving;
            }
            // Wait for a free thread, checking for stop now and then.
            let worker = loop {
                match ready_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(worker) => break worker,
                    Err(mpsc::RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => break 'serving,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break 'serving,
                }
            };
            let Ok(account) = daemon.reserve(&name) else {
                // Its bot is busy with an earlier job: hand the thread back.
                let _ = worker.send(None);
                continue;
            };
            if worker.send(Some((name, account))).is_err() {
                break 'serving;
            }
            handed = true;
        }
        if !handed {
            // Nothing to do: sleep until nudged, or the next rescan.
            let _ = nudge.recv(&mut buffer);
        }
    }
    log("op=stop result=stopping (finishing running jobs)");
    // Idle threads see their offer dropped and end; running ones finish
    // their job first, then find nobody listening.
    drop(ready_rx);
    for thread in threads {
        let _ = thread.join();
    }
    let _ = std::fs::remove_file(&nudge_path);
    log("op=stop result=stopped");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings with every path under `dir` (tests of the daemon's parts).
    pub(crate) fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            mail_domain: "chat.example".into(),
            mailboxes_dir: dir.join("mail"),
            spool_dir: dir.join("spool"),
            state_dir: dir.join("state"),
            install_folder: "DeltaBot".into(),
            enabled: true,
            accounts: vec!["*".into()],
            max_parallel: 1,
            memory_limit: 1 << 20,
            wall_time: Duration::from_secs(1),
            output_limit: 1000,
            max_package_size: 1000,
            max_message_size: 1000,
            budget: CpuBudget { percent_per_hour: 1.0, percent_per_day: 0.1 },
            allowed_origins: Vec::new(),
            lmtp_socket: dir.join("lmtp"),
            submission_socket: dir.join("submit"),
            network_isolated: false,
            metrics_dir: None,
        }
    }

    #[test]
    fn schedules_make_one_tick_job_per_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Daemon::new(settings(dir.path()), Runner { program: "/bin/false".into(), wall_time: Duration::from_secs(1) });
        daemon.spool.prepare().expect("spool");
        let toml = "name = \"clock\"\nauthor = \"a@b.c\"\n[schedule]\nevery_minutes = 5\n";
        daemon.registry.install("clock@chat.example", &Installed { uid: 1, installed_at: 1000, wasm_bytes: 1, script_bytes: None }, toml, &InstalledCode::Artifact(b"x")).expect("install");
        daemon.registry.install("plain@chat.example", &Installed { uid: 1, installed_at: 1000, wasm_bytes: 1, script_bytes: None }, "name = \"p\"\nauthor = \"a@b.c\"\n", &InstalledCode::Artifact(b"x")).expect("install");
        let ticks = |daemon: &Daemon| daemon.spool.waiting().expect("waiting").len();
        daemon.schedule_ticks(1000 + 299);
        assert_eq!(ticks(&daemon), 0, "not due before five minutes");
        daemon.schedule_ticks(1000 + 300);
        assert_eq!(ticks(&daemon), 1);
        daemon.schedule_ticks(1000 + 400);
        assert_eq!(ticks(&daemon), 1, "one per period");
        daemon.schedule_ticks(1000 + 600);
        assert_eq!(ticks(&daemon), 2);
        let name = &daemon.spool.waiting().expect("waiting")[0];
        let taken = daemon.spool.take(name).expect("take").expect("there");
        let job = daemon.spool.read(&taken).expect("read").expect("valid");
        assert_eq!((job.kind, job.account.as_str()), (JobKind::Tick, "clock@chat.example"));
        daemon.registry.set_disabled("clock@chat.example", true).expect("disable");
        daemon.schedule_ticks(1000 + 10_000);
        assert_eq!(ticks(&daemon), 1, "disabled bots get no ticks");
    }

    #[test]
    fn senders_own_reports_and_bounces() {
        // (mail, (sender, own report, delivery report))
        type Case<'a> = (&'a [u8], (&'a str, bool, bool));
        let table: &[Case] = &[
            (b"From: Alice <Alice@Example.org>\r\nSubject: x\r\n\r\nbody", ("alice@example.org", false, false)),
            (b"From: <mailer-daemon@chat.example>\r\nChatmail-Bot-Report: install\r\n\r\n", ("mailer-daemon@chat.example", true, false)),
            (
                b"From: MAILER-DAEMON@chat.example\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b--\r\n",
                ("mailer-daemon@chat.example", false, true),
            ),
            (b"Subject: no sender\r\n\r\n", ("", false, false)),
            (b"", ("", false, false)),
        ];
        for (mail, (sender, own_report, delivery_report)) in table {
            let want = Arrival { sender: sender.to_string(), own_report: *own_report, delivery_report: *delivery_report };
            assert_eq!(arrival(mail), want, "{:?}", String::from_utf8_lossy(mail));
        }
    }

    #[test]
    fn who_may_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = settings(dir.path());
        assert!(s.may_install("anyone@chat.example"));
        s.accounts = vec!["Bot@chat.example".into()];
        assert!(s.may_install("bot@chat.example"));
        assert!(!s.may_install("other@chat.example"));
        s.accounts = vec![];
        assert!(!s.may_install("bot@chat.example"));
    }
}
