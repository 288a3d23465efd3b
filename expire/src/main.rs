//! `chatmail-expire`: the daily sweep over all accounts of a chatmail relay.
//! See `chatmail-expire --help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chatmail_config::metrics::{FamilyDoc, Kind, MetricsFile, Registry};
use chatmail_expire::{utc_date, Event, FileKind, LastLogin, Policy, Sink, Sweep, Totals};

const HELP: &str = "\
NAME
    chatmail-expire - daily expiry sweep over all accounts of a chatmail relay

SYNOPSIS
    chatmail-expire [--config FILE] [--remove] [--verbose] [--jobs N]

DESCRIPTION
    Walks every account directory in mailboxes_dir ({mailboxes_dir}/{address},
    chatmail's layout) and deletes what is past its retention:

    - message files in cur/ and new/ of every maildir folder (INBOX is the
      account directory, other folders are its .Name/ subdirectories) whose
      mtime (the received date) is older than delete_mails_after days, or
      that are larger than 200 KiB and older than delete_large_after days;
    - files in tmp/ older than 36 hours (abandoned deliveries);
    - accounts whose last login (mtime of the password file) is older than
      delete_inactive_users_after days: the whole directory;
    - account directories without a password file that hold no mail and
      have not changed for a day (leftovers).

    Without --remove nothing is deleted: the report says what --remove would
    delete. Dovecot is not needed; it notices the removed files at its next
    sync of the folder. Entries of mailboxes_dir that are not directories
    named like an address are left alone; symlinks are neither followed nor
    deleted. Run it as the mail user (vmail), daily.

OPTIONS
    --config FILE   chatmail.ini to read (default /etc/chatmail/chatmail.ini):
                    mailboxes_dir, delete_mails_after, delete_large_after,
                    delete_inactive_users_after
    --remove        delete; without it this is a dry run
    --verbose, -v   also print every file deleted (or to be deleted) and every
                    entry of mailboxes_dir that is skipped
    --jobs N        sweep N accounts at a time (default 1)
    --help, -h      this text

OUTPUT
    One line per account removed as a whole, on stdout:
        chatmail-expire: removed account ADDR reason=inactive|leftover last_login=DATE|none files=N bytes=N
    (\"would remove\" in a dry run), then one summary line:
        chatmail-expire: summary mode=remove|dry-run accounts=N messages=N message_bytes=N
        tmp_files=N tmp_bytes=N accounts_removed=N inactive=N leftover=N account_files=N
        account_bytes=N skipped=N errors=N seconds=S
    messages and message_bytes are the expired mail (outside removed accounts),
    account_files and account_bytes what the removed accounts held besides.
    Errors go to stderr, one line each; a failure on one file or account
    never stops the sweep.

EXIT STATUS
    0   done, no errors
    1   done, but something could not be read or deleted (see stderr), or
        mailboxes_dir could not be read
    2   bad arguments or configuration
";

struct Args {
    config: PathBuf,
    remove: bool,
    verbose: bool,
    jobs: usize,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut parsed = Args { config: PathBuf::from("/etc/chatmail/chatmail.ini"), remove: false, verbose: false, jobs: 1 };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => parsed.config = PathBuf::from(value()?),
            "--remove" => parsed.remove = true,
            "--verbose" | "-v" => parsed.verbose = true,
            "--jobs" => {
                let text = value()?;
                parsed.jobs = text.parse().ok().filter(|n| (1..=64).contains(n)).ok_or_else(|| format!("--jobs {text:?}: expected 1 to 64"))?;
            }
            "--help" | "-h" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Parsed::Run(parsed))
}

/// Prints events as they come: report lines on stdout, errors on stderr.
struct Printer {
    remove: bool,
    verbose: bool,
    now: i64,
}

impl Sink for Printer {
    fn event(&self, event: Event<'_>) {
        let done = |yes: &'static str, would: &'static str| if self.remove { yes } else { would };
        let line = match event {
            Event::Account { addr, fate, last_login, files, bytes } => {
                let login = match last_login {
                    LastLogin::At(t) => utc_date(t),
                    LastLogin::Missing | LastLogin::Unknown => "none".into(),
                };
                let verb = done("removed", "would remove");
                format!("{verb} account {addr} reason={} last_login={login} files={files} bytes={bytes}", fate.reason())
            }
            Event::File { path, kind, size, mtime } => {
                let what = match kind {
                    FileKind::Message => "message",
                    FileKind::Tmp => "tmp file",
                };
                let age_days = (self.now - mtime) / 86_400;
                format!("{} {what} {} size={size} age_days={age_days}", done("deleted", "would delete"), path.display())
            }
            Event::Skipped { path, why } => {
                if !self.verbose {
                    return;
                }
                format!("skipped {}: {why}", path.display())
            }
            Event::Error { path, doing, error } => {
                eprintln!("chatmail-expire: error: {doing} {}: {error}", path.display());
                return;
            }
        };
        // A closed stdout must not stop the sweep.
        let _ = writeln!(std::io::stdout().lock(), "chatmail-expire: {line}");
    }

    fn wants_files(&self) -> bool {
        self.verbose
    }
}

fn summary(totals: &Totals, remove: bool, seconds: f64) -> String {
    let t = totals;
    format!(
        "chatmail-expire: summary mode={} accounts={} messages={} message_bytes={} tmp_files={} tmp_bytes={} accounts_removed={} inactive={} leftover={} account_files={} account_bytes={} skipped={} errors={} seconds={seconds:.2}",
        if remove { "remove" } else { "dry-run" },
        t.accounts,
        t.messages,
        t.message_bytes,
        t.tmp_files,
        t.tmp_bytes,
        t.inactive_accounts + t.leftover_accounts,
        t.inactive_accounts,
        t.leftover_accounts,
        t.account_files,
        t.account_bytes,
        t.skipped,
        t.errors,
    )
}

/// The metric families of a sweep (see the operator guide's metrics section).
const METRICS: &[FamilyDoc] = &[
    FamilyDoc { name: "chatmail_accounts", kind: Kind::Gauge, labels: &[], help: "Accounts after the last expiry sweep." },
    FamilyDoc {
        name: "chatmail_accounts_logged_in",
        kind: Kind::Gauge,
        labels: &["within"],
        help: "Accounts (after the last sweep) whose last login is at most 1d, 7d or 30d old.",
    },
    FamilyDoc { name: "chatmail_mailbox_messages", kind: Kind::Gauge, labels: &[], help: "Messages stored in all accounts after the last sweep." },
    FamilyDoc { name: "chatmail_mailbox_bytes", kind: Kind::Gauge, labels: &[], help: "Bytes of the messages stored in all accounts after the last sweep." },
    FamilyDoc {
        name: "chatmail_expire_removed_messages",
        kind: Kind::Gauge,
        labels: &[],
        help: "Messages the last sweep deleted (past delete_mails_after or delete_large_after).",
    },
    FamilyDoc { name: "chatmail_expire_removed_bytes", kind: Kind::Gauge, labels: &[], help: "Bytes of the messages the last sweep deleted." },
    FamilyDoc {
        name: "chatmail_expire_removed_accounts",
        kind: Kind::Gauge,
        labels: &["reason"],
        help: "Accounts the last sweep removed: inactive (no login for delete_inactive_users_after days) or leftover.",
    },
    FamilyDoc { name: "chatmail_expire_errors", kind: Kind::Gauge, labels: &[], help: "Files or accounts the last sweep could not read or delete (stderr says which)." },
    FamilyDoc { name: "chatmail_expire_duration_seconds", kind: Kind::Gauge, labels: &[], help: "How long the last sweep took." },
    FamilyDoc { name: "chatmail_expire_last_sweep_timestamp_seconds", kind: Kind::Gauge, labels: &[], help: "When the last sweep ended (Unix time): alert when it is more than two days old." },
];

fn sweep_metrics(t: &Totals, now: i64, seconds: f64) -> Registry {
    let r = Registry::new(METRICS);
    r.set("chatmail_accounts", &[], (t.accounts - t.inactive_accounts - t.leftover_accounts) as f64);
    r.set("chatmail_accounts_logged_in", &["1d"], t.logged_in_1d as f64);
    r.set("chatmail_accounts_logged_in", &["7d"], t.logged_in_7d as f64);
    r.set("chatmail_accounts_logged_in", &["30d"], t.logged_in_30d as f64);
    r.set("chatmail_mailbox_messages", &[], t.kept_messages as f64);
    r.set("chatmail_mailbox_bytes", &[], t.kept_bytes as f64);
    r.set("chatmail_expire_removed_messages", &[], t.messages as f64);
    r.set("chatmail_expire_removed_bytes", &[], t.message_bytes as f64);
    r.set("chatmail_expire_removed_accounts", &["inactive"], t.inactive_accounts as f64);
    r.set("chatmail_expire_removed_accounts", &["leftover"], t.leftover_accounts as f64);
    r.set("chatmail_expire_errors", &[], t.errors as f64);
    r.set("chatmail_expire_duration_seconds", &[], (seconds * 1000.0).round() / 1000.0);
    r.set("chatmail_expire_last_sweep_timestamp_seconds", &[], now as f64 + seconds.round());
    r
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("chatmail-expire: {problem}\nusage: chatmail-expire [--config FILE] [--remove] [--verbose] [--jobs N] (--help explains)");
            return ExitCode::from(2);
        }
    };
    let config = match chatmail_config::load_for("chatmail-expire", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let sweep = Sweep {
        root: config.mailboxes_dir.clone(),
        policy: Policy::from_config(&config, now),
        remove: args.remove,
        jobs: args.jobs,
    };
    let printer = Printer { remove: args.remove, verbose: args.verbose, now };
    let started = Instant::now();
    let totals = match sweep.run(&printer) {
        Ok(totals) => totals,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("chatmail-expire: mailboxes_dir {} does not exist (yet): no accounts", sweep.root.display());
            Totals::default()
        }
        Err(e) => {
            eprintln!("chatmail-expire: error: listing mailboxes_dir {}: {e}", sweep.root.display());
            return ExitCode::from(1);
        }
    };
    if !args.remove {
        println!("chatmail-expire: dry run: nothing was deleted; the counts are what --remove would delete");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", summary(&totals, args.remove, seconds));
    // A dry run changes nothing, so the gauges of the last real sweep stay.
    if let (true, Some(file)) = (args.remove, MetricsFile::new(config.metrics_dir.as_deref(), "chatmail-expire")) {
        if let Err(e) = file.write(&sweep_metrics(&totals, now, seconds)) {
            eprintln!("chatmail-expire: warning: metrics not written: {e} (check metrics_dir in chatmail.ini)");
        }
    }
    if totals.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        let Ok(Parsed::Run(a)) = parse(&[]) else { panic!("defaults") };
        assert_eq!((a.config, a.remove, a.verbose, a.jobs), (PathBuf::from("/etc/chatmail/chatmail.ini"), false, false, 1));
        let Ok(Parsed::Run(a)) = parse(&["--remove", "--config", "/x.ini", "-v", "--jobs", "2"]) else { panic!("all") };
        assert_eq!((a.config, a.remove, a.verbose, a.jobs), (PathBuf::from("/x.ini"), true, true, 2));
        assert!(matches!(parse(&["--help"]), Ok(Parsed::Help)));
        for bad in [&["--config"][..], &["--jobs", "0"], &["--jobs", "x"], &["--now", "5"], &["remove"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summary_line() {
        let totals = Totals { accounts: 3, messages: 2, message_bytes: 10, inactive_accounts: 1, leftover_accounts: 1, ..Totals::default() };
        let line = summary(&totals, false, 0.5);
        assert!(line.starts_with("chatmail-expire: summary mode=dry-run accounts=3 messages=2 message_bytes=10 "), "{line}");
        assert!(line.contains(" accounts_removed=2 inactive=1 leftover=1 "), "{line}");
        assert!(line.ends_with(" errors=0 seconds=0.50"), "{line}");
    }

    #[test]
    fn sweep_gauges() {
        let totals = Totals {
            accounts: 5,
            inactive_accounts: 1,
            leftover_accounts: 1,
            kept_messages: 7,
            kept_bytes: 7000,
            logged_in_1d: 1,
            logged_in_7d: 2,
            logged_in_30d: 3,
            messages: 4,
            ..Totals::default()
        };
        let text = sweep_metrics(&totals, 1_000, 2.4).render();
        for line in [
            "chatmail_accounts 3\n",
            "chatmail_accounts_logged_in{within=\"7d\"} 2\n",
            "chatmail_mailbox_bytes 7000\n",
            "chatmail_expire_removed_messages 4\n",
            "chatmail_expire_removed_accounts{reason=\"inactive\"} 1\n",
            "chatmail_expire_last_sweep_timestamp_seconds 1002\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
