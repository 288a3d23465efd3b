use super::*;

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    Config::parse(text, Path::new("/etc/chatmail/chatmail.ini"))
}

fn with_params(lines: &str) -> String {
    format!("[params]\nmail_domain = chat.example.org\n{lines}")
}

#[test]
fn defaults_apply_when_only_the_domain_is_set() {
    let loaded = parse(&with_params("")).expect("valid");
    assert!(loaded.warnings.is_empty());
    let c = loaded.config;
    assert_eq!(c.mail_domain, "chat.example.org");
    assert_eq!(c.max_user_send_per_minute, 60);
    assert_eq!(c.max_user_send_burst_size, 10);
    assert_eq!(c.max_mailbox_size, 100 * 1024 * 1024);
    assert_eq!(c.max_message_size, 31_457_280);
    assert_eq!(c.delete_mails_after, 40);
    assert_eq!(c.delete_large_after, 7);
    assert_eq!(c.delete_inactive_users_after, 90);
    assert_eq!((c.username_min_length, c.username_max_length, c.password_min_length), (9, 9, 9));
    assert_eq!(c.mailboxes_dir, PathBuf::from("/home/vmail/mail/chat.example.org"));
    assert!(c.passthrough_senders.is_empty());
    assert_eq!(c.max_load_1m, 5.0);
    assert_eq!(c.min_available_memory, 200 << 20);
    assert_eq!(c.min_free_disk_space, 1 << 30);
    assert_eq!(c.dkim_selector, "opendkim");
    assert_eq!(c.dkim_key_file, PathBuf::from("/etc/dkimkeys/opendkim.private"));
    assert_eq!(c.dkim_ed25519_key_file, None);
    assert!(c.dns_servers.is_empty());
    assert_eq!(c.dns_timeout, 5);
}

#[test]
fn dkim_and_dns_settings() {
    let text = with_params(
        "dkim_selector = 2026.relay\ndkim_ed25519_key_file = /etc/dkimkeys/ed.private\n\
         dns_servers = 127.0.0.1:5353 9.9.9.9 [::1]:53\ndns_timeout = 2\n",
    );
    let c = parse(&text).expect("valid").config;
    assert_eq!(c.dkim_selector, "2026.relay");
    assert_eq!(c.dkim_ed25519_key_file, Some(PathBuf::from("/etc/dkimkeys/ed.private")));
    let servers: Vec<String> = c.dns_servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["127.0.0.1:5353", "9.9.9.9:53", "[::1]:53"]);
    assert_eq!(c.dns_timeout, 2);
}

#[test]
fn every_documented_default_parses() {
    // The KEYS table is documentation; a default it states must be valid.
    for key in KEYS {
        if let Some(default) = key.default {
            let text = if key.name == "mail_domain" {
                "[params]\nmail_domain = a.b\n".to_owned()
            } else {
                format!("[params]\nmail_domain = a.b\n{} = {default}\n", key.name)
            };
            parse(&text).unwrap_or_else(|e| panic!("default of {} does not parse: {e}", key.name));
        }
    }
}

#[test]
fn values_from_the_file_win() {
    let text = with_params(
        "max_user_send_per_minute = 30\nmax_mailbox_size = 1G\nmax_message_size = 10M\n\
         delete_mails_after = 20\npassthrough_recipients = echo@{mail_domain} @other.example\n\
         mailboxes_dir = /srv/mail/{mail_domain}\nmax_load_1m = 2.5\nusername_min_length = 3\n",
    );
    let c = parse(&text).expect("valid").config;
    assert_eq!(c.max_user_send_per_minute, 30);
    assert_eq!(c.max_mailbox_size, 1 << 30);
    assert_eq!(c.max_message_size, 10 << 20);
    assert_eq!(c.delete_mails_after, 20);
    assert_eq!(c.passthrough_recipients, vec!["echo@chat.example.org", "@other.example"]);
    assert_eq!(c.mailboxes_dir, PathBuf::from("/srv/mail/chat.example.org"));
    assert_eq!(c.max_load_1m, 2.5);
    assert_eq!(c.username_min_length, 3);
}

#[test]
fn unknown_keys_warn_and_chatmail_only_keys_are_silent() {
    let text = with_params("filtermail_smtp_port = 10080\nprivacy_mail = a#b@example.org\nmax_user_sned_per_minute = 5\n[extra]\nx = 1\n");
    let loaded = parse(&text).expect("valid");
    let messages: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], "/etc/chatmail/chatmail.ini:5: unknown key \"max_user_sned_per_minute\" in [params] is ignored");
    assert!(messages[1].contains(":7: key \"x\" in section [extra] is ignored"), "{}", messages[1]);
}

#[test]
fn invalid_values_name_file_line_key_and_problem() {
    let cases: &[(&str, &str)] = &[
        ("max_message_size = 30 megabytes", "/etc/chatmail/chatmail.ini:3: max_message_size: \"30 megabytes\" is not a size"),
        ("max_user_send_per_minute = -5", ":3: max_user_send_per_minute: \"-5\" is not a whole number"),
        ("max_user_send_per_minute = 0", ":3: max_user_send_per_minute: 0 is out of range"),
        ("delete_mails_after = 1.5", ":3: delete_mails_after: \"1.5\" is not a whole number"),
        ("max_load_1m = high", ":3: max_load_1m: \"high\" is not a non-negative number"),
        ("mailboxes_dir = mail/here", ":3: mailboxes_dir: \"mail/here\" is not an absolute path"),
        ("username_min_length = 10", ":3: username_min_length: 10 is larger than username_max_length (9)"),
        ("max_mailbox_size = 1M", ":3: max_mailbox_size: 1048576 bytes is smaller than max_message_size"),
        ("max_message_size = 0", ":3: max_message_size: must be larger than 0"),
        ("max_message_size", ":3: expected 'key = value'"),
        ("dkim_selector = open dkim", ":3: dkim_selector: \"open dkim\" is not a DKIM selector"),
        ("dkim_selector = a..b", ":3: dkim_selector: \"a..b\" is not a DKIM selector"),
        ("dkim_key_file = dkim.private", ":3: dkim_key_file: \"dkim.private\" is not an absolute path"),
        ("dns_servers = localhost", ":3: dns_servers: \"localhost\" is not a name server address"),
        ("dns_timeout = 0", ":3: dns_timeout: 0 is out of range"),
    ];
    for (line, want) in cases {
        let err = parse(&with_params(&format!("{line}\n"))).expect_err(line).to_string();
        assert!(err.contains(want), "{line:?}: got {err:?}, want {want:?}");
    }
}

#[test]
fn mail_domain_is_required_and_checked() {
    let err = parse("[params]\nmax_message_size = 1000\n").expect_err("no domain").to_string();
    assert_eq!(err, "/etc/chatmail/chatmail.ini: mail_domain: is required but missing from [params]");
    let err = parse("[params]\nmail_domain = Chat.Example\n").expect_err("uppercase").to_string();
    assert!(err.contains(":2: mail_domain: invalid domain"), "{err}");
    let err = parse("").expect_err("empty file").to_string();
    assert!(err.contains("mail_domain: is required"), "{err}");
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let err = Config::load(Path::new("/nonexistent/chatmail.ini")).expect_err("missing").to_string();
    assert!(err.starts_with("/nonexistent/chatmail.ini: cannot read the file"), "{err}");
}

/// Every file in tests/fixtures/good loads; every file in tests/fixtures/bad
/// fails with the text its first line announces (`# expect: ...`).
#[test]
fn fixture_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for (kind, should_load) in [("good", true), ("bad", false)] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(kind))
            .expect("fixture dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "ini"))
            .collect();
        paths.sort();
        for path in paths {
            seen += 1;
            let text = std::fs::read_to_string(&path).expect("fixture");
            let result = Config::load(&path);
            if should_load {
                let loaded = result.unwrap_or_else(|e| panic!("{} should load: {e}", path.display()));
                let want_warnings = text.lines().filter(|l| l.starts_with("# warns: ")).count();
                assert_eq!(loaded.warnings.len(), want_warnings, "{}: {:?}", path.display(), loaded.warnings);
            } else {
                let expect = text
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("# expect: "))
                    .unwrap_or_else(|| panic!("{} lacks '# expect: ' on line 1", path.display()));
                let err = result.expect_err(&path.display().to_string()).to_string();
                assert!(err.contains(expect), "{}: got {err:?}, want {expect:?}", path.display());
            }
        }
    }
    assert!(seen >= 4, "fixtures missing");
}

/// The configuration reference (docs/configuration.md) is this crate's KEYS
/// table; keep them equal.
#[test]
fn config_reference_lists_every_key() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/configuration.md");
    let table = reference_table();
    assert!(
        doc.contains(&table),
        "docs/configuration.md is out of date; replace its table with:\n\n{table}"
    );
    for ignored in CHATMAIL_IGNORED_KEYS {
        assert!(doc.contains(&format!("`{ignored}`")), "docs/configuration.md does not mention ignored key {ignored}");
    }
}

/// What the package's scripts read through `chatmail-relay value`: the
/// units chatmail means (a plain mailbox size is megabytes, a plain
/// message size bytes), never the text as written.
#[test]
fn values_for_scripts_are_converted() {
    let table = [
        ("max_mailbox_size = 500", "max_mailbox_size", "524288000"),
        ("max_mailbox_size = 5\nmax_message_size = 2M", "max_mailbox_size", "5242880"),
        ("max_mailbox_size = 1G", "max_mailbox_size", "1073741824"),
        ("max_message_size = 30M", "max_message_size", "31457280"),
        ("max_message_size = 31457280", "max_message_size", "31457280"),
        ("", "mailboxes_dir", "/home/vmail/mail/chat.example.org"),
        ("", "turn_server", ""),
        ("turn_server = turn.example.org:3478", "turn_server", "turn.example.org:3478"),
        ("", "push_spool_dir", "/var/spool/chatmail-push"),
        ("", "max_recipients_per_message", "1000"),
    ];
    for (line, key, want) in table {
        let loaded = parse(&with_params(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(loaded.config.value_text(key).as_deref(), Some(want), "{line} -> {key}");
    }
    let loaded = parse(&with_params("")).expect("defaults");
    assert_eq!(loaded.config.value_text("no_such_key"), None);
    // Every key scripts may ask for is a documented key.
    for key in ["mail_domain", "bot_spool_dir", "bot_submission_socket", "dkim_key_file", "turn_secret_file", "push_notification_url", "nocreate_file", "lmtp_socket"] {
        assert!(KEYS.iter().any(|k| k.name == key), "{key}");
        assert!(loaded.config.value_text(key).is_some(), "{key}");
    }
}
