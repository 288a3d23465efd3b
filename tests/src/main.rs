//! `chatmail-local-relay`: a complete chatmail relay on 127.0.0.1 for
//! development (`make run`). Starts real Postfix and Dovecot in a scratch
//! directory, prints how to connect, writes relay.json, and stops everything
//! on Ctrl-C or SIGTERM.
//!
//! Environment:
//!   CHATMAIL_RUN_DIR          scratch directory (default /tmp/chatmail-dev)
//!   CHATMAIL_INI              chatmail.ini to use (default: generated in the run dir)
//!   CHATMAIL_DOMAIN           mail domain of a generated chatmail.ini (default chatmail.test)
//!   CHATMAIL_SMTP_PORT        incoming SMTP (default 2025)
//!   CHATMAIL_SUBMISSION_PORT  submission, STARTTLS (default 2587)
//!   CHATMAIL_SMTPS_PORT       submission, implicit TLS (default 2465)
//!   CHATMAIL_IMAP_PORT        IMAP, STARTTLS (default 2143)
//!   CHATMAIL_IMAPS_PORT       IMAP, implicit TLS (default 2993)
//!   CHATMAIL_HTTPS_PORT       onboarding web page and /new (default 2443)
//!   CHATMAIL_TEST_ACCOUNTS    how many test accounts to create (default 2)
//!   CHATMAIL_CAPTURE=1        copy every accepted message to capture@DOMAIN's maildir
//!   CHATMAIL_PARAMS           extra [params] for a generated chatmail.ini: KEY=VALUE;KEY=VALUE
//!   CHATMAIL_PEERS            other local relays: DOMAIN=SMTP_PORT,… (mail for DOMAIN goes
//!                             to 127.0.0.1:SMTP_PORT, as MX records would send it)
//! A port of 0 means "any free port" (relay.json tells which).
//!
//! DKIM: the relay signs with the harness's test key, and its DNS (a small
//! server inside this process) answers the test key's record for every
//! domain, so relays started by separate chatmail-local-relay processes
//! (CHATMAIL_PEERS) accept each other's signatures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatmail_testrelay::{Account, PortChoice, Relay, RelayOptions};

const DEFAULT_RUN_DIR: &str = "/tmp/chatmail-dev";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-local-relay: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn port_from_env(name: &str, default: Option<u16>) -> Result<Option<u16>, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => match value.trim().parse::<u16>() {
            Ok(0) => Ok(None),
            Ok(port) => Ok(Some(port)),
            Err(_) => Err(format!("{name}={value:?} is not a port number (0..65535)")),
        },
    }
}

/// The `A=B` entries of environment variable `name`, separated by
/// `separator` (empty entries skipped); `form` names A and B for errors.
fn env_pairs(name: &str, separator: char, form: &str) -> Result<Vec<(String, String)>, String> {
    let Ok(text) = std::env::var(name) else { return Ok(Vec::new()) };
    text.split(separator)
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (a, b) = entry.split_once('=').ok_or_else(|| format!("{name} entry {entry:?} is not {form}"))?;
            Ok((a.trim().to_owned(), b.trim().to_owned()))
        })
        .collect()
}

/// CHATMAIL_PARAMS: `key=value` pairs separated by semicolons.
fn params_from_env() -> Result<Vec<(String, String)>, String> {
    env_pairs("CHATMAIL_PARAMS", ';', "KEY=VALUE")
}

/// CHATMAIL_PEERS: `domain=port` pairs separated by commas.
fn peers_from_env() -> Result<Vec<(String, u16)>, String> {
    env_pairs("CHATMAIL_PEERS", ',', "DOMAIN=PORT")?
        .into_iter()
        .map(|(domain, port)| {
            chatmail_config::check_domain(&domain).map_err(|e| format!("CHATMAIL_PEERS: {domain:?}: {e}"))?;
            let port = port.parse::<u16>().map_err(|_| format!("CHATMAIL_PEERS: {port:?} is not a port"))?;
            Ok((domain, port))
        })
        .collect()
}

fn run() -> Result<(), String> {
    if std::env::args().len() > 1 {
        return Err("takes no arguments; configure it with CHATMAIL_* environment variables (see docs/development.md)".into());
    }
    let defaults = PortChoice::LOCAL_DEFAULTS;
    let ports = PortChoice {
        smtp: port_from_env("CHATMAIL_SMTP_PORT", defaults.smtp)?,
        submission: port_from_env("CHATMAIL_SUBMISSION_PORT", defaults.submission)?,
        smtps: port_from_env("CHATMAIL_SMTPS_PORT", defaults.smtps)?,
        imap: port_from_env("CHATMAIL_IMAP_PORT", defaults.imap)?,
        imaps: port_from_env("CHATMAIL_IMAPS_PORT", defaults.imaps)?,
        https: port_from_env("CHATMAIL_HTTPS_PORT", defaults.https)?,
    };
    let run_dir = PathBuf::from(std::env::var("CHATMAIL_RUN_DIR").unwrap_or_else(|_| DEFAULT_RUN_DIR.into()));
    let options = RelayOptions {
        run_dir: Some(run_dir.clone()),
        config_file: std::env::var_os("CHATMAIL_INI").map(PathBuf::from),
        mail_domain: std::env::var("CHATMAIL_DOMAIN").unwrap_or_else(|_| "chatmail.test".into()),
        params: params_from_env()?,
        ports,
        milter: true,
        milter_dkim: true,
        capture: std::env::var("CHATMAIL_CAPTURE").is_ok_and(|v| v == "1"),
        accounts: chatmail_testrelay::AccountBackend::Auth,
        dovecot_plugin: true,
        imap_hibernate_timeout: RelayOptions::default().imap_hibernate_timeout,
    };

    // Install the handlers before starting, so a Ctrl-C during startup
    // still tears down whatever was started.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    // A stale relay.json would tell scripts an old relay is ready.
    let json_path = run_dir.join("relay.json");
    let _ = std::fs::remove_file(&json_path);

    let account_count: usize = match std::env::var("CHATMAIL_TEST_ACCOUNTS") {
        Err(_) => 2,
        Ok(value) => value.trim().parse().map_err(|_| format!("CHATMAIL_TEST_ACCOUNTS={value:?} is not a number"))?,
    };

    let peers = peers_from_env()?;
    let dns = chatmail_testrelay::test_dns().map_err(|e| e.to_string())?;
    dns.answer_any_domain_key(chatmail_testrelay::dkim::SELECTOR, chatmail_testrelay::dkim::TEST_KEY_RECORD.trim());
    let mut relay = Relay::start(options).map_err(|e| e.to_string())?;
    if !peers.is_empty() {
        relay.route(&peers).map_err(|e| e.to_string())?;
    }
    let accounts: Vec<Account> = (0..account_count).map(|_| relay.new_account()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;

    let json = serde_json::to_string_pretty(&relay.connection_json(&accounts)).map_err(|e| e.to_string())?;
    let temp = json_path.with_extension("json.new");
    std::fs::write(&temp, json + "\n").map_err(|e| format!("writing {}: {e}", temp.display()))?;
    std::fs::rename(&temp, &json_path).map_err(|e| format!("writing {}: {e}", json_path.display()))?;

    print_banner(&relay, &accounts, &json_path);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("\nstopping the relay …");
    let _ = std::fs::remove_file(&json_path);
    relay.stop();
    eprintln!("stopped; state is kept in {}", relay.run_dir.display());
    Ok(())
}

fn print_banner(relay: &Relay, accounts: &[Account], json_path: &std::path::Path) {
    let p = relay.ports;
    println!("chatmail relay for {} is running on 127.0.0.1", relay.domain);
    println!();
    println!("  incoming SMTP        {}", p.smtp);
    println!("  submission STARTTLS  {}", p.submission);
    println!("  submission TLS       {}", p.smtps);
    println!("  IMAP STARTTLS        {}", p.imap);
    println!("  IMAP TLS             {}", p.imaps);
    println!("  web (onboarding QR)  https://127.0.0.1:{}/", p.https);
    println!();
    println!("  config     {}", relay.config_path.display());
    println!("  logs       {}", relay.log_dir.display());
    println!("  certificate {} (self-signed)", relay.cert_pem.display());
    println!("  DKIM key   {} (selector {}; its record is served by the harness's own DNS)", relay.config.dkim_key_file.display(), relay.config.dkim_selector);
    println!("  details    {}", json_path.display());
    println!();
    println!("Test accounts (log in with Delta Chat: \"Add account\" > \"Log into your e-mail account\" > paste the link, or scan it as a QR code):");
    for account in accounts {
        println!("  {}  password {}", account.addr, account.password);
        println!("    {}", relay.dclogin(account));
    }
    println!();
    println!(
        "Accounts are created on first login: any unused {}-character name @{} with a password of at least {} characters logs in.",
        relay.config.username_max_length, relay.domain, relay.config.password_min_length
    );
    println!();
    println!("Press Ctrl-C to stop.");
}
