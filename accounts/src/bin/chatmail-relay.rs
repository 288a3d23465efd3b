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
        _ => return usage("expected: value KEY | render dovecot | render postfix | metrics"),
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
        _ => usage("unknown command"),
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
