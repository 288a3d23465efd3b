//! `chatmail-relay`: the relay's configuration as its programs read it, for
//! the package's maintainer scripts (which parse no chatmail.ini of their
//! own).
//!
//! Usage: chatmail-relay [--config FILE] value KEY
//!
//! Prints KEY's checked value on one line: sizes in bytes (a plain
//! `max_mailbox_size` means megabytes, as on chatmail relays), paths with
//! `{mail_domain}` filled in, unset optional values empty. Exit codes: 0,
//! 1 for an invalid chatmail.ini (the problem is printed), 2 for bad
//! arguments or a key scripts cannot ask for.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: chatmail-relay [--config FILE] value KEY

  --config FILE   chatmail.ini (default /etc/chatmail/chatmail.ini)
  value KEY       print KEY's checked value (sizes in bytes, paths with
                  {mail_domain} filled in, unset optional values empty)";

fn main() -> ExitCode {
    let mut config = PathBuf::from("/etc/chatmail/chatmail.ini");
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config = PathBuf::from(path),
                None => return usage("--config needs a value"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => words.push(arg),
        }
    }
    let [command, key] = words.as_slice() else { return usage("expected: value KEY") };
    if command != "value" {
        return usage(&format!("unknown command {command:?}"));
    }
    let loaded = match chatmail_config::Config::load(&config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("chatmail-relay: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match loaded.config.value_text(key) {
        Some(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("chatmail-relay: error: {key:?} is not a key `value` can print");
            ExitCode::from(2)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("chatmail-relay: {problem}\n{USAGE}");
    ExitCode::from(2)
}
