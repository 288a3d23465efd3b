//! `chatmail-relay`: the relay's configuration as its programs read it, and
//! the Postfix and Dovecot wiring rendered from it, for the package's
//! maintainer scripts (which parse no chatmail.ini and write no wiring of
//! their own).
//!
//! Usage:
//!   chatmail-relay [--config FILE] value KEY
//!   chatmail-relay [--config FILE] render dovecot [--dir DIR] [--mail-user USER] [--dovecot-version V]
//!   chatmail-relay [--config FILE] render postfix [--queue-dir DIR]
//!   chatmail-relay [--config FILE] metrics
//!   chatmail-relay [--config FILE] check [--only PARTS] [--address IP]... [--cert FILE]
//!
//! Exit codes: 0; 1 for an invalid chatmail.ini (the problem is printed) or
//! files that cannot be written; 2 for bad arguments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chatmail_config::wiring::{render_dovecot, render_postfix, DovecotHost, DovecotRelease, PostfixHost};
use chatmail_config::Config;

const USAGE: &str = "usage: chatmail-relay [--config FILE] COMMAND

  --config FILE   chatmail.ini (default /etc/chatmail/chatmail.ini)

commands:
  value KEY       print KEY's checked value (sizes in bytes, paths with
                  {mail_domain} filled in, unset optional values empty)
  render dovecot [--dir DIR] [--mail-user USER] [--dovecot-version V]
                  write Dovecot's chatmail wiring in the syntax of Dovecot V
                  (default: what `dovecot --version` says; 2.3 or 2.4):
                  DIR/conf.d/05-chatmail-auth.conf, DIR/conf.d/90-chatmail.conf,
                  and for 2.3
                  DIR/chatmail-auth.conf.ext and DIR/chatmail-sessions.conf.ext
                  (DIR default /etc/dovecot, USER default vmail)
  render postfix [--queue-dir DIR]
                  print Postfix's chatmail wiring, one item per line:
                  `set NAME=VALUE`, `append NAME WORD` (to a list setting),
                  `service NAME/TYPE ENTRY` (master.cf); DIR is Postfix's
                  queue_directory (default /var/spool/postfix)
  check [--only dns,dkim,tls,wiring] [--address IP]... [--cert FILE]
        [--postfix-config-dir DIR] [--dovecot-config FILE]
                  check the relay as other servers and clients meet it: DNS
                  (A/AAAA, MX, SPF, DMARC, MTA-STS, TLS-RPT, reverse DNS of
                  the relay's addresses: --address, else the domain's), the
                  DKIM records (chatmail-milter dkim-check), the TLS
                  certificate (--cert, else Postfix's), and the wiring (the
                  milter in Postfix, the plugin in Dovecot, the daemons
                  answering). One line per check, with the record to
                  publish for each DNS problem; exit 1 if any check failed
  metrics         print the daemons' metrics (every *.prom file in
                  metrics_dir, Prometheus text format); warns on stderr about
                  files no longer rewritten (a daemon not running)";

fn main() -> ExitCode {
    let mut config = PathBuf::from("/etc/chatmail/chatmail.ini");
    let mut words = Vec::new();
    let mut options: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            option if option.starts_with("--") => match args.next() {
                Some(value) if option == "--config" => config = PathBuf::from(value),
                Some(value) => options.push((option.to_owned(), value)),
                None => return usage(&format!("{option} needs a value")),
            },
            _ => words.push(arg),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let allowed: &[&str] = match words.as_slice() {
        ["value", _] => &[],
        ["render", "dovecot"] => &["--dir", "--mail-user", "--dovecot-version"],
        ["render", "postfix"] => &["--queue-dir"],
        ["metrics"] => &[],
        ["check"] => &["--only", "--address", "--cert", "--postfix-config-dir", "--dovecot-config"],
        _ => return usage("expected: value KEY | render dovecot | render postfix | metrics | check"),
    };
    if let Some((option, _)) = options.iter().find(|(o, _)| !allowed.contains(&o.as_str())) {
        return usage(&format!("{option} is not an option of {}", words.join(" ")));
    }
    // The last value given for an option.
    let given = |name: &str| options.iter().rev().find(|(o, _)| o == name).map(|(_, v)| v.clone());
    let option = |name: &str, default: &str| given(name).unwrap_or_else(|| default.to_owned());
    let loaded = match Config::load(&config) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e.to_string()),
    };
    let config_file = config;
    let config = loaded.config;
    match words.as_slice() {
        ["value", key] => match config.value_text(key) {
            Some(value) => {
                println!("{value}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("chatmail-relay: error: {key:?} is not a key `value` can print");
                ExitCode::from(2)
            }
        },
        ["render", "dovecot"] => {
            let dir = PathBuf::from(option("--dir", "/etc/dovecot"));
            let user = option("--mail-user", "vmail");
            let uid = match nix::unistd::User::from_name(&user) {
                Ok(Some(u)) => u.uid.as_raw(),
                Ok(None) => return fail(&format!("no system user {user:?} (the mail store's owner)")),
                Err(e) => return fail(&format!("looking up user {user:?}: {e}")),
            };
            let release = match given("--dovecot-version") {
                Some(v) => DovecotRelease::from_version(&v),
                None => DovecotRelease::installed().map_err(|e| format!("{e} (or give --dovecot-version)")),
            };
            let mut host = DovecotHost::debian(&dir, &absolute(&config_file), uid);
            host.release = match release {
                Ok(release) => release,
                Err(e) => return fail(&e),
            };
            host.mail_user = user;
            write_dovecot(&dir, &config, &host)
        }
        ["render", "postfix"] => {
            let host = PostfixHost::debian(Path::new(&option("--queue-dir", "/var/spool/postfix")));
            print!("{}", render_postfix(&config, &host).to_lines());
            ExitCode::SUCCESS
        }
        ["metrics"] => print_metrics(config.metrics_dir.as_deref()),
        ["check"] => {
            let all = |name: &str| options.iter().filter(|(o, _)| o == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
            let parts: Vec<String> = match given("--only") {
                Some(list) => list.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
                None => CHECK_PARTS.iter().map(|p| p.to_string()).collect(),
            };
            if let Some(bad) = parts.iter().find(|p| !CHECK_PARTS.contains(&p.as_str())) {
                return usage(&format!("--only: {bad:?} is none of {}", CHECK_PARTS.join(", ")));
            }
            let mut addresses = Vec::new();
            for text in all("--address") {
                match text.parse::<std::net::IpAddr>() {
                    Ok(ip) => addresses.push(ip),
                    Err(_) => return usage(&format!("--address {text:?} is not an IP address")),
                }
            }
            let places = chatmail_accounts::relay_probe::WiringPlaces {
                postfix_dir: given("--postfix-config-dir").map(PathBuf::from),
                dovecot_config: given("--dovecot-config").map(PathBuf::from),
            };
            check(&config, &absolute(&config_file), &parts, &addresses, given("--cert").map(PathBuf::from), &places)
        }
        _ => usage("unknown command"),
    }
}

/// What `check` can check, in the order it reports.
const CHECK_PARTS: &[&str] = &["dns", "dkim", "tls", "wiring"];

fn check(
    config: &Config,
    config_file: &Path,
    parts: &[String],
    addresses: &[std::net::IpAddr],
    cert: Option<PathBuf>,
    places: &chatmail_accounts::relay_probe::WiringPlaces,
) -> ExitCode {
    use chatmail_accounts::relay_check::{self, Finding, Level};
    use chatmail_accounts::relay_probe;
    let wants = |part: &str| parts.iter().any(|p| p == part);
    let mut findings: Vec<Finding> = Vec::new();
    if wants("dns") {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return fail(&format!("starting the runtime: {e}")),
        };
        let timeout = std::time::Duration::from_secs(u64::from(config.dns_timeout));
        let resolver = match relay_probe::resolver(&config.dns_servers, timeout) {
            Ok(resolver) => resolver,
            Err(e) => return fail(&e),
        };
        let facts = runtime.block_on(relay_probe::dns_facts(&resolver, &config.mail_domain, addresses));
        findings.extend(relay_check::dns_findings(&facts, addresses));
    }
    if wants("dkim") {
        findings.extend(relay_probe::dkim_findings(config_file));
    }
    if wants("tls") {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        findings.extend(relay_probe::tls_findings(cert, places, &config.mail_domain, now));
    }
    if wants("wiring") {
        findings.extend(relay_probe::wiring_findings(config, config_file, places));
    }
    for finding in &findings {
        println!("{finding}");
    }
    let count = |level: Level| findings.iter().filter(|f| f.level == level).count();
    let failed = count(Level::Fail);
    println!("{} ok, {} warnings, {failed} failed", count(Level::Ok), count(Level::Warn));
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_metrics(dir: Option<&Path>) -> ExitCode {
    let Some(dir) = dir else { return fail("metrics_dir is empty in chatmail.ini: no daemon writes metrics") };
    let found = match chatmail_config::metrics::gather(dir) {
        Ok(found) => found,
        Err(e) => return fail(&format!("reading metrics_dir {e}")),
    };
    if found.is_empty() {
        return fail(&format!("no *.prom files in {}: are the daemons running?", dir.display()));
    }
    for file in &found {
        println!("# chatmail-relay: {}.prom, written {} s ago", file.stem, file.age.as_secs());
        print!("{}", file.text);
        if file.stale() {
            eprintln!("chatmail-relay: warning: {}.prom was last written {} s ago: is {} running?", file.stem, file.age.as_secs(), file.stem);
        }
    }
    ExitCode::SUCCESS
}

fn write_dovecot(dir: &Path, config: &Config, host: &DovecotHost) -> ExitCode {
    let files = render_dovecot(config, host);
    let mut writes = vec![(dir.join("conf.d/05-chatmail-auth.conf"), files.auth_conf), (dir.join("conf.d/90-chatmail.conf"), files.conf)];
    writes.extend(files.aux);
    // Dovecot 2.4 has no use for 2.3's dict files (an upgrade from Debian 12).
    if host.release == DovecotRelease::V2_4 {
        for stale in [&host.auth_dict_file, &host.sessions_dict_file] {
            let _ = std::fs::remove_file(stale);
        }
    }
    for (path, text) in writes {
        // Temporary files in DIR, not conf.d, whose *.conf Dovecot includes.
        if let Err(e) = chatmail_config::files::write_atomically(dir, &path, text.as_bytes(), 0o644) {
            return fail(&e.to_string());
        }
    }
    ExitCode::SUCCESS
}

/// Dovecot's plugin reads chatmail.ini from another working directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn fail(problem: &str) -> ExitCode {
    eprintln!("chatmail-relay: error: {problem}");
    ExitCode::FAILURE
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("chatmail-relay: {problem}\n{USAGE}");
    ExitCode::from(2)
}
