//! The wiring the Debian package writes, checked by the installed Debian
//! Postfix and Dovecot: for every chatmail.ini of the golden cases
//! (config/tests/render), `chatmail-relay render dovecot` into a copy of
//! Debian's /etc/dovecot must satisfy `doveconf -n` without a warning, and
//! the package's own chatmail-postfix-wiring (which runs `chatmail-relay
//! render postfix`) on Debian's stock main.cf and master.cf must give a
//! configuration `postconf` reads without a warning, and `remove` must
//! restore both files exactly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chatmail_testrelay::{sibling_binary, MAIL_USER};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository")
        .to_path_buf()
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(repo().join("config/tests/render"))
        .expect("config/tests/render")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "render cases missing");
    cases
}

fn relay_binary() -> PathBuf {
    sibling_binary("chatmail-relay", "CHATMAIL_RELAY_BIN")
        .expect("chatmail-relay (cargo build --workspace)")
}

/// Runs `command`, returning stdout; panics with its output unless it
/// succeeds with nothing on stderr but `note:` lines.
fn run_clean(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints = stderr
        .lines()
        .any(|l| !l.trim().is_empty() && !l.starts_with("note: "));
    assert!(
        out.status.success() && !complaints,
        "{what}: {}\nstderr:\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    stdout
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A value as doveconf -n prints it (`  name = value` in some block).
fn doveconf_has(output: &str, line: &str) -> bool {
    output.lines().any(|l| l.trim() == line)
}

#[test]
fn debian_dovecot_accepts_every_rendering() {
    let relay = relay_binary();
    for case in cases() {
        let ini = case.join("chatmail.ini");
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("dovecot");
        copy_dir(Path::new("/etc/dovecot"), &etc);
        run_clean(
            Command::new(&relay)
                .arg("--config")
                .arg(&ini)
                .args(["render", "dovecot", "--mail-user", MAIL_USER, "--dir"])
                .arg(&etc),
            &format!("render dovecot for {}", case.display()),
        );
        let shown = run_clean(
            Command::new("doveconf")
                .arg("-n")
                .arg("-c")
                .arg(etc.join("dovecot.conf")),
            &format!("doveconf -n with the rendering of {}", ini.display()),
        );
        // chatmail-auth before Debian's PAM passdb (which fails an unknown
        // address only after two seconds).
        let first_driver = shown.lines().map(str::trim).find(|l| *l == "driver = dict" || *l == "driver = pam");
        assert_eq!(first_driver, Some("driver = dict"), "{}: PAM is asked first:\n{shown}", case.display());
        let config = chatmail_config::Config::load(&ini).expect("ini").config;
        for want in [
            format!("quota_rule = *:storage={}B", config.max_mailbox_size),
            format!("quota_max_mail_size = {}B", config.max_message_size),
            format!(
                "mail_location = maildir:{}/%u",
                config.mailboxes_dir.display()
            ),
            "mail_plugins = \" quota notify chatmail imap_quota\"".to_owned(),
            format!("args = {}", etc.join("chatmail-auth.conf.ext").display()),
            format!("postmaster_address = postmaster@{}", config.mail_domain),
        ] {
            assert!(
                doveconf_has(&shown, &want),
                "{}: doveconf -n lacks {want:?}:\n{shown}",
                case.display()
            );
        }
    }
}

#[test]
fn debian_postfix_takes_every_rendering_and_gets_its_own_back() {
    let relay = relay_binary();
    let wiring = repo().join("packaging/chatmail-relay/chatmail-postfix-wiring");
    let bin_dir = relay.parent().expect("target dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // postconf waits ~2 s before reading a just-changed main.cf: the cases
    // run side by side.
    let (wiring, path) = (&wiring, &path);
    std::thread::scope(|scope| {
        for case in cases() {
            scope.spawn(move || postfix_case(&case, wiring, path));
        }
    });
}

fn postfix_case(case: &Path, wiring: &Path, path: &str) {
    {
        let ini = case.join("chatmail.ini");
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("postfix");
        fs::create_dir_all(&etc).expect("mkdir");
        // Debian's stock files, with what postfix's postinst adds to main.cf
        // on an "Internet Site" (the relay's own values replace some of
        // them; remove must give them back).
        let stock =
            fs::read_to_string("/usr/share/postfix/main.cf.debian").expect("main.cf.debian");
        let postinst = "myhostname = host.example.net\nalias_maps = hash:/etc/aliases\n\
                        mydestination = $myhostname, host.example.net, localhost\nrelayhost =\n\
                        mynetworks = 127.0.0.0/8\nmailbox_size_limit = 0\nrecipient_delimiter = +\n\
                        inet_interfaces = all\ninet_protocols = all\n";
        fs::write(etc.join("main.cf"), format!("{stock}{postinst}")).expect("main.cf");
        fs::copy("/usr/share/postfix/master.cf.dist", etc.join("master.cf"))
            .expect("master.cf.dist");
        let before =
            ["main.cf", "master.cf"].map(|f| fs::read_to_string(etc.join(f)).expect("read"));
        let wire = |action: &str| {
            run_clean(
                Command::new(wiring)
                    .arg(action)
                    .arg(&etc)
                    .env("PATH", path)
                    .env("CHATMAIL_INI", &ini)
                    .env("CHATMAIL_POSTFIX_STATE", dir.path().join("state")),
                &format!("chatmail-postfix-wiring {action} for {}", case.display()),
            )
        };
        wire("add");
        wire("check");
        let shown = run_clean(
            Command::new("postconf").arg("-c").arg(&etc).arg("-n"),
            "postconf -n",
        );
        let services = run_clean(
            Command::new("postconf").arg("-c").arg(&etc).arg("-M"),
            "postconf -M",
        );
        let config = chatmail_config::Config::load(&ini).expect("ini").config;
        let value = |name: &str| {
            shown
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("{name} unset:\n{shown}"))
                .to_owned()
        };
        // Numbers Postfix can use (it checks them only when a daemon starts).
        assert_eq!(
            value("message_size_limit").parse::<u64>().ok(),
            Some(config.max_message_size),
            "{}",
            case.display()
        );
        assert_eq!(
            value("smtpd_recipient_limit").parse::<u32>().ok(),
            Some(config.max_recipients_per_message)
        );
        assert_eq!(value("mydestination"), config.mail_domain);
        assert!(value("smtpd_milters")
            .split([' ', ','])
            .any(|w| w == "unix:/chatmail-milter/milter.sock"));
        for service in ["submission inet", "submissions inet"] {
            assert!(
                services.lines().any(|l| l.starts_with(service)),
                "{service} missing:\n{services}"
            );
        }
        let bots_in_public = config
            .bot_submission_socket
            .starts_with("/var/spool/postfix/public");
        assert_eq!(
            services
                .lines()
                .any(|l| l.starts_with("chatmail-bots unix")),
            bots_in_public,
            "{}",
            case.display()
        );
        wire("add");
        wire("remove");
        let after =
            ["main.cf", "master.cf"].map(|f| fs::read_to_string(etc.join(f)).expect("read"));
        assert_eq!(
            before,
            after,
            "{}: remove did not restore Debian's files",
            case.display()
        );
    }
}
