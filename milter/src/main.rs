//! `chatmail-milter`: the Postfix milter daemon and its DKIM key commands.
//!
//! Usage:
//!   chatmail-milter [--config FILE] [--socket SPEC] [--local-socket SPEC] [--socket-group GROUP] [--no-dkim]
//!   chatmail-milter dkim-keygen [--config FILE] [--ed25519]
//!   chatmail-milter dkim-record [--config FILE]
//!   chatmail-milter dkim-check [--config FILE]
//!
//! SPEC is `unix:PATH` or `inet:HOST:PORT`; `--local-socket none` turns the
//! socket for Postfix's `non_smtpd_milters` off. `--no-dkim` neither signs
//! nor checks DKIM signatures: for a relay where another filter (say the
//! OpenDKIM of a chatmail relay being migrated) still does it, and as the
//! benchmark baseline.
//!
//! Exit codes: 0 after SIGTERM/SIGINT or a successful command, 1 on a
//! runtime failure (or a DNS record that does not match), 2 on bad
//! arguments or configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chatmail_config::metrics::MetricsFile;
use chatmail_config::Config;
use chatmail_milter::{DkimSettings, KeyKind, MailOrigin, MilterSettings};
use indymilter::Listener;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

const USAGE: &str = "\
usage: chatmail-milter [--config FILE] [--socket unix:PATH|inet:HOST:PORT] [--local-socket unix:PATH|inet:HOST:PORT|none] [--socket-group GROUP] [--no-dkim]
       chatmail-milter dkim-keygen [--config FILE] [--ed25519]   create the DKIM key and print its DNS record
       chatmail-milter dkim-record [--config FILE]               print the DNS records of the configured keys
       chatmail-milter dkim-check [--config FILE]                compare the published records with the keys";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Serve,
    Keygen,
    Record,
    Check,
}

struct Args {
    command: Command,
    config: PathBuf,
    socket: String,
    local_socket: Option<String>,
    socket_group: String,
    ed25519: bool,
    no_dkim: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        command: Command::Serve,
        config: PathBuf::from("/etc/chatmail/chatmail.ini"),
        socket: "unix:/run/chatmail-milter/milter.sock".into(),
        local_socket: Some("unix:/run/chatmail-milter/local.sock".into()),
        socket_group: "postfix".into(),
        ed25519: false,
        no_dkim: false,
    };
    let mut iter = std::env::args().skip(1).peekable();
    match iter.peek().map(String::as_str) {
        Some("dkim-keygen") => args.command = Command::Keygen,
        Some("dkim-record") => args.command = Command::Record,
        Some("dkim-check") => args.command = Command::Check,
        _ => {}
    }
    if args.command != Command::Serve {
        iter.next();
    }
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match (arg.as_str(), args.command) {
            ("--config", _) => args.config = PathBuf::from(value()?),
            ("--socket", Command::Serve) => args.socket = value()?,
            ("--local-socket", Command::Serve) => {
                let spec = value()?;
                args.local_socket = (spec != "none").then_some(spec);
            }
            ("--socket-group", Command::Serve) => args.socket_group = value()?,
            ("--no-dkim", Command::Serve) => args.no_dkim = true,
            ("--ed25519", Command::Keygen) => args.ed25519 = true,
            ("--help" | "-h", _) => return Err(USAGE.into()),
            (other, _) => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("chatmail-milter: {message}");
            return ExitCode::from(2);
        }
    };
    let config = match chatmail_config::load_for("chatmail-milter", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatmail-milter: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Command::Keygen => return keygen(&config, args.ed25519),
        Command::Record => return print_records(&config),
        Command::Check => return runtime.block_on(check_records(&config)),
        Command::Serve => {}
    }
    let dkim = if args.no_dkim {
        eprintln!("chatmail-milter: warning: --no-dkim: outgoing mail is not signed and incoming DKIM signatures are not checked");
        None
    } else {
        let _inside = runtime.enter();
        match DkimSettings::from_config(&config) {
            Ok(dkim) => Some(dkim),
            Err(message) => {
                eprintln!("chatmail-milter: error: {message}");
                if !config.dkim_key_file.exists() {
                    eprintln!("chatmail-milter: `chatmail-milter dkim-keygen` creates a key and prints the DNS record to publish");
                }
                return ExitCode::from(2);
            }
        }
    };
    let smtp = MilterSettings::from_config(&config, MailOrigin::Smtp, dkim.clone());
    let mut local = MilterSettings::from_config(&config, MailOrigin::Local, dkim);
    local.metrics = Arc::clone(&smtp.metrics);
    if let Some(file) = MetricsFile::new(config.metrics_dir.as_deref(), "chatmail-milter") {
        chatmail_config::metrics::write_periodically("chatmail-milter", Arc::clone(&smtp.metrics), file);
    }
    match runtime.block_on(serve(args, smtp, local)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-milter: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The configured keys: (kind, file, selector), RSA first.
fn configured_keys(config: &Config) -> Vec<(KeyKind, &Path, &str)> {
    let mut keys = vec![(KeyKind::Rsa, config.dkim_key_file.as_path(), config.dkim_selector.as_str())];
    if let Some(path) = &config.dkim_ed25519_key_file {
        keys.push((KeyKind::Ed25519, path.as_path(), config.dkim_ed25519_selector.as_str()));
    }
    keys
}

fn keygen(config: &Config, ed25519: bool) -> ExitCode {
    let (kind, path, selector) = if ed25519 {
        match &config.dkim_ed25519_key_file {
            Some(path) => (KeyKind::Ed25519, path.as_path(), config.dkim_ed25519_selector.as_str()),
            None => {
                eprintln!("chatmail-milter: error: --ed25519 needs dkim_ed25519_key_file set in [params]");
                return ExitCode::from(2);
            }
        }
    } else {
        (KeyKind::Rsa, config.dkim_key_file.as_path(), config.dkim_selector.as_str())
    };
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("chatmail-milter: error: creating {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(message) = chatmail_milter::generate(path, kind) {
        eprintln!("chatmail-milter: error: {message}");
        if path.exists() {
            eprintln!("chatmail-milter: `chatmail-milter dkim-record` prints the record of the existing key");
        }
        return ExitCode::FAILURE;
    }
    eprintln!("chatmail-milter: wrote a new {} key to {} (mode 0600; the milter's user must be able to read it)", kind.tag(), path.display());
    eprintln!("chatmail-milter: publish this DNS record:");
    print_record(config, kind, path, selector)
}

/// The key's public half and the DNS record (zone-file line) that publishes it.
fn key_record(config: &Config, kind: KeyKind, path: &Path, selector: &str) -> Result<(Vec<u8>, String), String> {
    let public = chatmail_milter::public_key(path, kind)?;
    let record = chatmail_milter::zone_record(selector, &config.mail_domain, &chatmail_milter::record_value(kind, &public));
    Ok((public, record))
}

fn print_record(config: &Config, kind: KeyKind, path: &Path, selector: &str) -> ExitCode {
    match key_record(config, kind, path, selector) {
        Ok((_, record)) => {
            println!("{record}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("chatmail-milter: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_records(config: &Config) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for (kind, path, selector) in configured_keys(config) {
        if print_record(config, kind, path, selector) != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    code
}

async fn check_records(config: &Config) -> ExitCode {
    let authenticator = match chatmail_milter::authenticator(&config.dns_servers, Duration::from_secs(u64::from(config.dns_timeout))) {
        Ok(a) => a,
        Err(message) => {
            eprintln!("chatmail-milter: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut all_good = true;
    for (kind, path, selector) in configured_keys(config) {
        let name = chatmail_milter::record_name(selector, &config.mail_domain);
        let (public, expected) = match key_record(config, kind, path, selector) {
            Ok(found) => found,
            Err(message) => {
                eprintln!("chatmail-milter: error: {message}");
                all_good = false;
                continue;
            }
        };
        let problem = match chatmail_milter::txt_records(&authenticator, &name).await {
            Err(e) => Some(format!("looking up TXT {name}: {e}")),
            Ok(records) => match records.as_slice() {
                [] => Some(format!("no TXT record at {name}")),
                [record] => chatmail_milter::compare_record(record, kind, &public).err().map(|why| format!("TXT {name}: {why}")),
                _ => Some(format!("{} TXT records at {name}; verifiers need exactly one", records.len())),
            },
        };
        match problem {
            None => println!("ok: {name} matches {}", path.display()),
            Some(problem) => {
                all_good = false;
                println!("MISMATCH: {problem}");
                println!("  publish: {expected}");
            }
        }
    }
    if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal(stop: watch::Sender<bool>) {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the daemon still runs until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("chatmail-milter: shutting down");
    let _ = stop.send(true);
}

async fn serve(args: Args, smtp: MilterSettings, local: MilterSettings) -> Result<(), String> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(shutdown_signal(stop));
    let smtp_run = serve_one(&args.socket, &args.socket_group, smtp, stopped.clone());
    match &args.local_socket {
        Some(spec) => {
            let local_run = serve_one(spec, &args.socket_group, local, stopped);
            tokio::try_join!(smtp_run, local_run).map(|_| ())
        }
        None => smtp_run.await,
    }
}

/// Serves one socket until the shutdown signal.
async fn serve_one(spec: &str, group: &str, settings: MilterSettings, mut stopped: watch::Receiver<bool>) -> Result<(), String> {
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let which = match settings.origin {
        MailOrigin::Smtp => "smtpd_milters",
        MailOrigin::Local => "non_smtpd_milters",
    };
    if let Some(path) = spec.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        // A socket left by an earlier run would make bind fail.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
        // Postfix connects as its own user: the socket belongs to its group.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
        match group_id(group) {
            Some(gid) => std::os::unix::fs::chown(&path, None, Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))?,
            None => eprintln!("chatmail-milter: warning: group {group} not found; only the owner can use {}", path.display()),
        }
        eprintln!("chatmail-milter: listening on unix:{} (for {which})", path.display());
        let result = chatmail_milter::run(listener, settings, shutdown).await;
        let _ = std::fs::remove_file(&path);
        result.map_err(|e| e.to_string())
    } else if let Some(addr) = spec.strip_prefix("inet:") {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        eprintln!("chatmail-milter: listening on inet:{addr} (for {which})");
        chatmail_milter::run(NoDelayListener(listener), settings, shutdown).await.map_err(|e| e.to_string())
    } else {
        Err(format!("socket {spec:?} must start with unix: or inet:"))
    }
}

/// A TCP listener whose connections send small replies at once: without
/// TCP_NODELAY, Nagle's algorithm and delayed ACKs stall each milter reply
/// by up to ~40 ms.
struct NoDelayListener(TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<TcpStream>> {
        self.0.poll_accept(cx).map(|accepted| {
            let (stream, _) = accepted?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// Looks up a group id in /etc/group (no libc call needed for this).
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.nth(1)?.parse().ok())?
    })
}
