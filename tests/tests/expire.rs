//! The daily sweep (`chatmail-expire`) against the harness's real Dovecot:
//! it deletes expired mail files behind Dovecot's back, Dovecot notices at
//! its next sync (IMAP no longer shows them, the quota usage goes down),
//! and inactive accounts go as a whole.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use chatmail_testrelay::mail::imap_date;
use chatmail_testrelay::{Account, ImapClient, Relay, RelayOptions, MAIL_USER};

const DAY: u64 = 86_400;

/// target/debug/chatmail-expire, beside this test's directory.
fn expire_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHATMAIL_EXPIRE") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("chatmail-expire"))
        .find(|p| p.is_file())
        .expect("chatmail-expire not built: cargo build -p chatmail-expire (or set CHATMAIL_EXPIRE)")
}

/// Runs the sweep as the mail user, as the systemd timer does.
fn sweep(relay: &Relay, args: &[&str]) -> Output {
    let user = nix::unistd::User::from_name(MAIL_USER).expect("lookup").expect("mail user");
    let output = Command::new(expire_binary())
        .arg("--config")
        .arg(&relay.config_path)
        .args(args)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .output()
        .expect("run chatmail-expire");
    eprintln!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0));
    output
}

fn summary_field(output: &Output, key: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("chatmail-expire: summary ")).expect("summary");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

fn message(to: &str, subject: &str, size: usize) -> String {
    let mut text = format!("From: <sender@other.example>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\n");
    while text.len() < size {
        text.push_str("expire me, or not; that is the question the sweep answers\r\n");
    }
    text
}


fn append(imap: &mut ImapClient, mailbox: &str, text: &str, secs_ago: u64) {
    let reply = imap.command(&format!("APPEND {mailbox} \"{}\" {{{}+}}\r\n{text}", imap_date(secs_ago), text.len())).expect("append");
    assert_eq!(reply.status, "OK", "{}", reply.text);
}

/// Subjects in `mailbox`, sorted, and the account's quota usage in KiB.
fn look(relay: &Relay, account: &Account, mailbox: &str) -> (Vec<String>, u64) {
    let mut imap = relay.imap_login(account).expect("login");
    imap.command(&format!("SELECT {mailbox}")).expect("select").ok().expect("OK");
    let reply = imap.command("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])").expect("fetch");
    let mut subjects: Vec<String> =
        reply.untagged.iter().flat_map(|l| l.lines()).filter_map(|l| l.strip_prefix("Subject: ")).map(str::to_owned).collect();
    subjects.sort();
    let quota = imap.command("GETQUOTAROOT INBOX").expect("getquotaroot").ok().expect("OK");
    let line = quota.untagged.iter().find(|l| l.starts_with("* QUOTA ")).expect("QUOTA line").clone();
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().expect("number")).collect();
    imap.logout();
    (subjects, numbers[numbers.len() - 2])
}

#[test]
fn the_sweep_deletes_expired_mail_and_inactive_accounts_and_dovecot_follows() {
    // Defaults: delete_mails_after 40 days, delete_large_after 7, delete_inactive_users_after 90.
    let relay = Relay::start(RelayOptions::default()).unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let carol = relay.new_account().expect("carol");
    let dave = relay.new_account().expect("dave");

    // The account's first session (above) ran the plugin's own expiry,
    // which then waits an hour: what goes below is the sweep's doing.
    let mut imap = relay.imap_login(&carol).expect("login");
    append(&mut imap, "INBOX", &message(&carol.addr, "41 days", 1_000), 41 * DAY);
    append(&mut imap, "INBOX", &message(&carol.addr, "39 days", 1_000), 39 * DAY);
    append(&mut imap, "INBOX", &message(&carol.addr, "8 days large", 250_000), 8 * DAY);
    append(&mut imap, "INBOX", &message(&carol.addr, "6 days large", 250_000), 6 * DAY);
    imap.command("CREATE Archive").expect("create").ok().expect("OK");
    append(&mut imap, "Archive", &message(&carol.addr, "archived 50 days", 2_000), 50 * DAY);
    append(&mut imap, "Archive", &message(&carol.addr, "archived 1 day", 2_000), DAY);
    imap.logout();
    let (subjects, used_before) = look(&relay, &carol, "INBOX");
    assert_eq!(subjects.len(), 4);
    assert!(used_before > 490, "{used_before} KiB");

    // Dave last logged in 91 days ago.
    let dave_dir = relay.config.mailboxes_dir.join(&dave.addr);
    let long_ago = SystemTime::now() - Duration::from_secs(91 * DAY);
    std::fs::File::options()
        .write(true)
        .open(dave_dir.join("password"))
        .expect("password")
        .set_times(std::fs::FileTimes::new().set_modified(long_ago))
        .expect("age the password");

    let dry = sweep(&relay, &[]);
    assert_eq!(summary_field(&dry, "messages"), 3);
    assert_eq!(summary_field(&dry, "inactive"), 1);
    assert!(String::from_utf8_lossy(&dry.stdout).contains(&format!("would remove account {} reason=inactive", dave.addr)));
    assert!(dave_dir.exists());
    assert_eq!(look(&relay, &carol, "INBOX").0.len(), 4);

    let removed = sweep(&relay, &["--remove"]);
    assert_eq!(summary_field(&removed, "messages"), 3);
    assert_eq!(summary_field(&removed, "inactive"), 1);
    assert_eq!(summary_field(&removed, "errors"), 0);
    assert!(!dave_dir.exists());

    assert_eq!(look(&relay, &carol, "Archive").0, ["archived 1 day"]);
    let (subjects, used_after) = look(&relay, &carol, "INBOX");
    assert_eq!(subjects, ["39 days", "6 days large"]);
    // About 250 KB + 3 KB less.
    assert!(used_before - used_after >= 240, "quota usage went from {used_before} to {used_after} KiB");

    let log = std::fs::read_to_string(relay.log_dir.join("dovecot.log")).expect("dovecot log");
    assert!(!log.contains(" expired and "), "the plugin expunged mail itself:\n{log}");
    for bad in ["Error:", "Panic:"] {
        assert!(!log.contains(bad), "{bad} in the Dovecot log:\n{log}");
    }
}
