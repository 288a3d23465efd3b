//! `chatmail-bots`: the bot daemon of a chatmail relay, and the operator's
//! command for it.
//!
//! Usage:
//!   chatmail-bots [--config FILE] [--user USER] run      serve the spool
//!   chatmail-bots [--config FILE] list                   bots, authors, usage, last errors
//!   chatmail-bots [--config FILE] [--user USER] check    can the daemon reach what it needs?
//!   chatmail-bots [--config FILE] disable ADDRESS        stop running a bot (kept installed)
//!   chatmail-bots [--config FILE] enable ADDRESS
//!   chatmail-bots package ADDRESS BOT.WASM|BOT.JS BOT.TOML   print a package mail (to store in the bot folder)
//!
//! Exit codes: 0 after SIGTERM/SIGINT (or a finished command), 1 on a
//! runtime failure, 2 on bad arguments or configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatmail_bot_sandbox::{Daemon, Registry, Runner, Settings, Spool};
use nix::unistd::{Uid, User};

const USAGE: &str = "usage: chatmail-bots [--config FILE] [--user USER] run
       chatmail-bots [--config FILE] list
       chatmail-bots [--config FILE] [--user USER] check
       chatmail-bots [--config FILE] disable ADDRESS
       chatmail-bots [--config FILE] enable ADDRESS
       chatmail-bots package ADDRESS BOT.WASM|BOT.JS BOT.TOML

  --config FILE  chatmail.ini (default /etc/chatmail/chatmail.ini)
  --user USER    when started as root, run as this user (default vmail: the
                 daemon reads the accounts' mail and marks bot accounts)";

/// The group of Postfix's public/ directory.
const SUBMISSION_GROUP: &str = "postdrop";

/// How often the spool is listed when no nudge arrives.
const RESCAN: Duration = Duration::from_secs(2);

struct Args {
    config: PathBuf,
    user: String,
    command: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { config: PathBuf::from("/etc/chatmail/chatmail.ini"), user: "vmail".into(), command: Vec::new() };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--config" => args.config = PathBuf::from(value()?),
            "--user" => args.user = value()?,
            "--help" | "-h" => return Err(USAGE.into()),
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}\n{USAGE}")),
            other => args.command.push(other.to_owned()),
        }
    }
    Ok(args)
}

fn drop_privileges(name: &str) -> Result<(), String> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let user = User::from_name(name).map_err(|e| format!("looking up user {name:?}: {e}"))?.ok_or_else(|| format!("user {name:?} does not exist"))?;
    // The group postdrop opens Postfix's public/ directory, where the
    // bots' submission socket is (bot_submission_socket).
    let mut groups = vec![user.gid];
    match nix::unistd::Group::from_name(SUBMISSION_GROUP) {
        Ok(Some(group)) => groups.push(group.gid),
        _ => eprintln!("chatmail-bots: warning: no group {SUBMISSION_GROUP}: bots' mail cannot reach Postfix's submission socket"),
    }
    // The kernel clears a parent-death signal when the credentials change;
    // whoever set one (a test harness) still wants it.
    let death_signal = nix::sys::prctl::get_pdeathsig().ok().flatten();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(user.gid).map_err(|e| format!("setgid {}: {e}", user.gid))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("setuid {}: {e}", user.uid))?;
    if let Some(signal) = death_signal {
        nix::sys::prctl::set_pdeathsig(signal).map_err(|e| format!("restoring the parent-death signal: {e}"))?;
    }
    Ok(())
}

fn run(mut settings: Settings, user: &str) -> Result<(), String> {
    // First, while single-threaded: an empty network namespace for the
    // daemon and all its workers (the daemon itself needs only unix
    // sockets). Without it, each worker makes its own.
    // The network helper stays outside (started first); it makes the
    // bots' requests to allowed origins and nothing else.
    let helper = if settings.allowed_origins.is_empty() {
        None
    } else {
        let program = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).take_while(|a| a != "run").collect();
        Some(chatmail_bot_sandbox::FetchHelper::start(&program, &args).map_err(|e| format!("starting the network helper: {e}"))?)
    };
    match chatmail_bot_sandbox::isolate_network() {
        Ok(()) => settings.network_isolated = true,
        Err(e) => eprintln!("chatmail-bots: warning: no network namespace for the daemon ({e}); each worker makes its own"),
    }
    drop_privileges(user)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
    }
    if !settings.enabled {
        eprintln!("chatmail-bots: warning: bots_enabled is false: installs are refused and no bot runs");
    }
    let runner = Runner::beside_current(settings.wall_time).map_err(|e| format!("the worker program: {e}"))?;
    let mut daemon = Daemon::new(settings, runner);
    if let Some(helper) = helper {
        daemon = daemon.with_fetcher(helper);
    }
    let daemon = Arc::new(daemon);
    if let Some(file) = chatmail_config::metrics::MetricsFile::new(daemon.settings.metrics_dir.as_deref(), "chatmail-bots") {
        chatmail_config::metrics::write_periodically("chatmail-bots", daemon.metrics(), file);
    }
    chatmail_bot_sandbox::serve(daemon, stop, RESCAN).map_err(|e| e.to_string())
}

/// A directory the daemon writes: a file can be made and removed in it.
fn writable_dir(dir: &std::path::Path) -> Result<String, String> {
    let probe = dir.join(format!(".chatmail-bots-check.{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))?;
    Ok(String::new())
}

/// What the running daemon needs, checked as its user (as root: after
/// dropping to `--user`, like `run`): its directories, Dovecot's LMTP socket
/// for install reports, Postfix's submission socket for the bots' mail
/// (offering AUTH). One `ok:` or `FAILED:` line each; fails if any failed.
fn check(settings: &Settings, user: &str) -> Result<(), String> {
    drop_privileges(user)?;
    let mut failed = 0;
    let mut report = |what: String, result: Result<String, String>| match result {
        Ok(detail) => println!("ok: {what}{detail}"),
        Err(e) => {
            failed += 1;
            println!("FAILED: {what}: {e}");
        }
    };
    report(format!("spool {}", settings.spool_dir.display()), writable_dir(&settings.spool_dir));
    report(format!("state {}", settings.state_dir.display()), writable_dir(&settings.state_dir));
    report(
        format!("mailboxes {}", settings.mailboxes_dir.display()),
        std::fs::read_dir(&settings.mailboxes_dir).map(|_| String::new()).map_err(|e| format!("cannot list it: {e}")),
    );
    report(
        format!("LMTP {}", settings.lmtp_socket.display()),
        chatmail_bot_sandbox::probe_mail_socket(&settings.lmtp_socket, "LHLO").map(|_| String::new()).map_err(|e| e.to_string()),
    );
    report(
        format!("submission {}", settings.submission_socket.display()),
        chatmail_bot_sandbox::probe_mail_socket(&settings.submission_socket, "EHLO").map_err(|e| e.to_string()).and_then(|extensions| {
            if extensions.split(' ').any(|word| word.eq_ignore_ascii_case("AUTH")) {
                Ok(String::new())
            } else {
                Err(format!("the service offers no AUTH (smtpd_sasl_auth_enable=yes?): {extensions}"))
            }
        }),
    );
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} check(s) failed"))
    }
}

fn list(settings: &Settings) -> Result<(), String> {
    let registry = Registry::new(settings.state_dir.clone());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let accounts = registry.accounts().map_err(|e| e.to_string())?;
    if accounts.is_empty() {
        println!("no bots");
    }
    for account in accounts {
        let bot = registry.load(&account).map_err(|e| e.to_string())?;
        let history = registry.history(&account).unwrap_or_default();
        let (hour, day): (Vec<_>, Vec<_>) = (
            history.iter().filter(|r| r.at + 3600 > now).collect(),
            history.iter().filter(|r| r.at + 86_400 > now).collect(),
        );
        let cpu = |runs: &[&chatmail_bot_sandbox::RunRecord]| runs.iter().map(|r| r.cpu_micros).sum::<u64>() as f64 / 1e6;
        match &bot {
            Some(bot) => println!(
                "{account}: {} ({}) by {}{}",
                bot.metadata.name,
                if bot.metadata.description.is_empty() { "no description" } else { &bot.metadata.description },
                bot.metadata.author,
                if bot.disabled { " [DISABLED]" } else { "" }
            ),
            None => println!("{account}: not installed"),
        }
        if let Some(bot) = &bot {
            match bot.installed.script_bytes {
                Some(bytes) => println!("  code: bot.js, {bytes} bytes (JavaScript)"),
                None => println!("  code: bot.wasm, {} bytes", bot.installed.wasm_bytes),
            }
        }
        println!("  runs: {} in the last hour ({:.2} s CPU), {} in the last day ({:.2} s CPU)", hour.len(), cpu(&hour), day.len(), cpu(&day));
        let refusals = registry.refusals(&account).unwrap_or_default();
        if !refusals.is_empty() {
            let counts: Vec<String> = refusals.iter().map(|(reason, count)| format!("{reason} {count}")).collect();
            println!("  refused by the gate: {}", counts.join(", "));
        }
        // Mail the relay tempfailed, retried for a day.
        let queued = registry.queued_outgoing(&account).map_or(0, |names| names.len());
        if queued > 0 {
            println!("  outgoing mail queued: {queued}");
        }
        for line in registry.errors(&account).unwrap_or_default().iter().rev().take(3) {
            println!("  error: {line}");
        }
    }
    let spool = Spool::new(settings.spool_dir.clone());
    if let Ok(waiting) = spool.waiting() {
        println!("spool: {} waiting", waiting.len());
    }
    for (job, reason) in spool.parked().unwrap_or_default() {
        println!("parked: {job}: {}", reason.replace('\n', " ").trim());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("chatmail-bots: {message}");
            return ExitCode::from(2);
        }
    };
    if let [command, address, code, toml] = args.command.as_slice() {
        if command == "package" {
            return match (std::fs::read(code), std::fs::read_to_string(toml)) {
                (Ok(bytes), Ok(toml)) => {
                    use std::io::Write;
                    // A script by its name (bot.js), else a module.
                    let code = if code.ends_with(".js") {
                        match String::from_utf8(bytes) {
                            Ok(text) => chatmail_bot_sandbox::Code::Script(text),
                            Err(_) => {
                                eprintln!("chatmail-bots: error: {code} is not UTF-8 text");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        chatmail_bot_sandbox::Code::Wasm(bytes)
                    };
                    let mail = chatmail_bot_sandbox::build_package(address, address, &code, &toml);
                    match std::io::stdout().write_all(&mail) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(_) => ExitCode::FAILURE,
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("chatmail-bots: error: reading the package files: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let config = match chatmail_config::load_for("chatmail-bots", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let settings = Settings::from_config(&config);
    let words: Vec<&str> = args.command.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["run"] => run(settings, &args.user),
        // The network helper (started by `run`, before it drops privileges
        // and leaves the network): runs as the same unprivileged user.
        ["fetcher"] => drop_privileges(&args.user)
            .and_then(|()| chatmail_bot_sandbox::serve_fetch_helper(config.bot_network_ca_file.as_deref()).map_err(|e| e.to_string())),
        ["list"] => list(&settings),
        ["check"] => check(&settings, &args.user),
        ["disable", account] | ["enable", account] => {
            let registry = Registry::new(settings.state_dir.clone());
            registry.set_disabled(account, words[0] == "disable").map(|()| println!("{account}: {}d", words[0])).map_err(|e| e.to_string())
        }
        _ => {
            eprintln!("chatmail-bots: {USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-bots: error: {message}");
            ExitCode::FAILURE
        }
    }
}
