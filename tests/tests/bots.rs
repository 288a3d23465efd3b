//! The bot daemon in a whole relay: a package mail stored in the DeltaBot
//! folder installs a bot (the install report arrives), mail delivered to
//! the bot account runs it, the spool empties, and jobs survive a stopped
//! daemon. The mail is a Delta Chat message encrypted to the bot's key;
//! the bot's output is read from the daemon's outbox (Delta Chat clients
//! and the replies are tests/e2e/test_bots.py's).

use std::path::Path;
use std::time::Duration;

use chatmail_testrelay::{Account, Relay, RelayOptions, MAIL_USER};

const ECHO_TOML: &str = "name = \"echo\"\ndescription = \"Answers with the text\"\nauthor = \"mailto:bots@chatmail.test\"\n";

fn echo_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots/echo/bot.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn wat_bot(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bot-sandbox/tests/bots").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A relay whose mail for example.org (the test senders' domain) goes to a
/// closed loopback port: the bot's replies to alice@example.org wait in
/// Postfix's queue instead of bouncing back into the bot's INBOX at a time
/// set by the DNS resolver (a bounce is one more run of the gate, and made
/// the counts these tests check depend on the machine's network).
fn start() -> Relay {
    let relay = Relay::start(RelayOptions::default()).unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let closed = chatmail_testrelay::free_port().expect("a free port");
    relay.route(&[("example.org".to_string(), closed)]).unwrap_or_else(|e| panic!("route example.org: {e}"));
    relay
}

/// A Delta Chat message to the bot `to`: encrypted to its key and signed
/// by a fresh key of `from` (the gate lets only such mail run a bot).
fn mail(relay: &Relay, from: &str, to: &str, text: &str) -> String {
    let bytes = chatmail_bot_sandbox::mail_to_bot(&relay.config.bot_state_dir, to, from, text).unwrap_or_else(|e| panic!("mail to the bot: {e}"));
    String::from_utf8(bytes).expect("ASCII mail")
}

/// Waits until `check` holds (a timeout panics; the relay then prints its logs).
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    chatmail_testrelay::eventually(what, timeout, || check().then_some(()));
}

fn bots_log(relay: &Relay) -> String {
    std::fs::read_to_string(relay.log_dir.join("bots.log")).unwrap_or_default()
}

fn install_echo(relay: &Relay, bot: &Account) {
    relay.install_bot(bot, &echo_wasm(), ECHO_TOML).expect("install");
    let report = relay.wait_for_message(bot, "Subject: Bot installed: echo", Duration::from_secs(60)).expect("install report");
    assert!(report.contains("Author: mailto:bots@chatmail.test"), "{report}");
    assert!(relay.config.mailboxes_dir.join(&bot.addr).join("chatmail-bot").exists(), "marker for the plugin");
    // The report's own delivery job (skipped: own report) is gone too.
    wait_until("an empty spool after the install", Duration::from_secs(30), || relay.bot_spool_len() == 0);
}

#[test]
fn a_package_installs_the_echo_bot_and_mail_runs_it() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    install_echo(&relay, &bot);
    // The install report itself never ran the bot.
    assert!(relay.bot_outputs(&bot.addr).is_empty(), "{:?}", relay.bot_outputs(&bot.addr));

    let reply = relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "hello, bot")).expect("deliver");
    assert!(reply.starts_with("250"), "{reply}");
    wait_until("the echo bot's run", Duration::from_secs(30), || !relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["{\"action\":\"reply\",\"text\":\"echo: hello, bot\"}\n".to_owned()]);
    wait_until("an empty spool", Duration::from_secs(10), || relay.bot_spool_len() == 0);
    let log = bots_log(&relay);
    assert!(log.contains("op=run") && log.contains("result=ran outcome=exited"), "{log}");
}

#[test]
fn a_broken_package_is_refused_with_every_problem_named() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    relay.install_bot(&bot, &wat_bot("forbidden-import"), "name = \"x\"\n").expect("store package");
    let report = relay.wait_for_message(&bot, "Subject: Bot not installed", Duration::from_secs(60)).expect("report");
    assert!(report.contains("author is required"), "{report}");
    relay.install_bot(&bot, &wat_bot("forbidden-import"), ECHO_TOML).expect("store package");
    let report = relay
        .wait_for_message(&bot, "bots may import only from", Duration::from_secs(60))
        .expect("second report names the import");
    assert!(report.contains("system"), "{report}");
    assert!(!relay.config.mailboxes_dir.join(&bot.addr).join("chatmail-bot").exists(), "nothing installed");
}

#[test]
fn a_misbehaving_bot_is_stopped_and_the_daemon_keeps_serving() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    let looping = "name = \"spinner\"\nauthor = \"a@chatmail.test\"\n[limits]\ncpu_seconds_per_hour = 1\n";
    relay.install_bot(&bot, &wat_bot("loop"), looping).expect("install");
    relay.wait_for_message(&bot, "Subject: Bot installed: spinner", Duration::from_secs(60)).expect("report");
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "spin")).expect("deliver");
    wait_until("the spinner stopped by metering", Duration::from_secs(30), || bots_log(&relay).contains("outcome=out-of-cpu"));
    // The next run gets only what is left of the sender's CPU second for
    // the hour; once it is used up, mail from that sender is dropped, not
    // queued.
    for text in ["spin again", "and again"] {
        relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, text)).expect("deliver");
    }
    wait_until("the over-limit drop", Duration::from_secs(30), || bots_log(&relay).contains("reason=sender-cpu-per-hour"));
    // The daemon still serves: a new package replaces the bot and runs.
    install_echo(&relay, &bot);
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "bob@example.org", &bot.addr, "still there?")).expect("deliver");
    wait_until("the echo run", Duration::from_secs(30), || !relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["{\"action\":\"reply\",\"text\":\"echo: still there?\"}\n".to_owned()]);
    wait_until("an empty spool", Duration::from_secs(10), || relay.bot_spool_len() == 0);
}

#[test]
fn jobs_wait_for_a_stopped_daemon_and_each_runs_once() {
    let mut relay = start();
    let bot = relay.new_account().expect("bot account");
    install_echo(&relay, &bot);
    relay.stop_bots();
    for i in 0..20 {
        let reply = relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, &format!("mail {i}"))).expect("deliver");
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert_eq!(relay.bot_spool_len(), 20, "all 20 wait in the spool");
    assert!(relay.bot_outputs(&bot.addr).is_empty());
    relay.start_bots().expect("restart");
    wait_until("20 runs", Duration::from_secs(120), || relay.bot_outputs(&bot.addr).len() >= 20);
    wait_until("an empty spool", Duration::from_secs(10), || relay.bot_spool_len() == 0);
    let mut outputs = relay.bot_outputs(&bot.addr);
    assert_eq!(outputs.len(), 20, "{outputs:?}");
    outputs.sort();
    outputs.dedup();
    assert_eq!(outputs.len(), 20, "each mail ran once");
    for i in 0..20 {
        assert!(outputs.contains(&format!("{{\"action\":\"reply\",\"text\":\"echo: mail {i}\"}}\n")), "mail {i} missing: {outputs:?}");
    }
}

#[test]
fn emptying_the_bot_folder_uninstalls_the_bot() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    install_echo(&relay, &bot);
    let mut imap = relay.imap_login(&bot).expect("login");
    imap.command(&format!("SELECT {}", relay.config.bot_install_folder)).expect("select").ok().expect("selected");
    imap.command("STORE 1:* +FLAGS.SILENT (\\Deleted)").expect("store").ok().expect("flagged");
    imap.command("EXPUNGE").expect("expunge").ok().expect("expunged");
    imap.logout();
    relay.wait_for_message(&bot, "Subject: Bot uninstalled", Duration::from_secs(60)).expect("uninstall report");
    assert!(!relay.config.mailboxes_dir.join(&bot.addr).join("chatmail-bot").exists(), "marker removed");
    // Mail no longer makes a job. The plugin writes a job before Dovecot
    // answers the delivery; with the daemon stopped nothing could take one
    // away, so an empty spool right after the answer means none was written.
    let mut relay = relay;
    relay.stop_bots();
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "anyone?")).expect("deliver");
    assert_eq!(relay.bot_spool_len(), 0, "no job for an account without a bot");
    assert!(relay.bot_outputs(&bot.addr).is_empty());
}

#[test]
fn a_bot_keeps_its_storage_between_runs() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots/counter");
    let wasm = std::fs::read(root.join("bot.wasm")).expect("counter bot");
    let toml = std::fs::read_to_string(root.join("bot.toml")).expect("counter toml");
    relay.install_bot(&bot, &wasm, &toml).expect("install");
    relay.wait_for_message(&bot, "Subject: Bot installed: counter", Duration::from_secs(60)).expect("report");
    for i in 1..=3 {
        relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, &format!("mail {i}"))).expect("deliver");
        wait_until("a counter run", Duration::from_secs(30), || relay.bot_outputs(&bot.addr).len() >= i);
    }
    let expected: Vec<String> = (1..=3).map(|i| format!("{{\"action\":\"reply\",\"text\":\"message number {i}\"}}\n")).collect();
    assert_eq!(relay.bot_outputs(&bot.addr), expected);
    // Each count is an action the relay carries out (a reply to alice).
    wait_until("three replies sent", Duration::from_secs(30), || bots_log(&relay).matches("action=reply result=done").count() == 3);
    let stored = relay.config.bot_state_dir.join("bots").join(&bot.addr).join("storage").join("count");
    assert_eq!(std::fs::read_to_string(stored).expect("storage file"), "3");
}

#[test]
fn a_scheduled_run_writes_only_to_a_contact_who_wrote_first() {
    let mut relay = start();
    let bot = relay.new_account().expect("bot account");
    // The bot prints the same action in every run: a message to alice by
    // address.
    relay.install_bot(&bot, &wat_bot("announce"), &format!("{ECHO_TOML}[schedule]\nevery_minutes = 5\n")).expect("install");
    relay.wait_for_message(&bot, "Subject: Bot installed: echo", Duration::from_secs(60)).expect("install report");
    // The daemon looks at schedules when it starts: with the last tick
    // long ago, a scheduled run follows at once.
    let last_tick = relay.config.bot_state_dir.join("bots").join(&bot.addr).join("last-tick");
    let tick_now = |relay: &mut Relay| {
        relay.stop_bots();
        std::fs::write(&last_tick, "0").expect("last-tick");
        relay.start_bots().expect("restart");
    };
    let sent = |relay: &Relay| bots_log(relay).matches("action=send result=done").count();
    tick_now(&mut relay);
    wait_until("the scheduled run's refusal", Duration::from_secs(30), || {
        bots_log(&relay).contains("alice@example.org has not written to the bot directly")
    });
    assert_eq!(sent(&relay), 0, "no message to someone who never wrote to the bot");
    // Alice writes 1:1: her consent; that run's message by address is sent.
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "hi")).expect("deliver");
    wait_until("the message run's send", Duration::from_secs(30), || sent(&relay) == 1);
    tick_now(&mut relay);
    wait_until("the scheduled run's send", Duration::from_secs(30), || sent(&relay) == 2);
    let log = bots_log(&relay);
    assert_eq!(log.lines().filter(|l| l.contains("op=submit ") && l.contains(" result=sent ")).count(), 2, "both went through the relay:\n{log}");
}

fn bots_command(relay: &Relay, args: &[&str]) -> (bool, String) {
    let exe = std::env::current_exe().expect("test binary");
    let binary = exe.ancestors().skip(1).take(2).map(|d| d.join("chatmail-bots")).find(|p| p.is_file()).expect("chatmail-bots built");
    let out = std::process::Command::new(binary).arg("--config").arg(&relay.config_path).args(args).output().expect("run chatmail-bots");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_operator_lists_and_disables_bots() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    install_echo(&relay, &bot);
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "one")).expect("deliver");
    wait_until("a run", Duration::from_secs(30), || relay.bot_outputs(&bot.addr).len() == 1);
    let cleartext = format!("From: <alice@example.org>\r\nTo: <{}>\r\nSubject: hi\r\n\r\nnot encrypted\r\n", bot.addr);
    relay.lmtp_deliver(&bot.addr, &cleartext).expect("deliver");
    wait_until("the gate's refusal", Duration::from_secs(30), || bots_log(&relay).contains("result=refused reason=not-encrypted"));
    // A bounce of the bot's message is cleartext too, but no one writing
    // in cleartext: noted as the bot's error, not a refusal.
    let bounce = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../bot-sandbox/tests/reports/failed-one.eml")).expect("bounce fixture");
    relay.lmtp_deliver(&bot.addr, &bounce.replace("bot@chatmail.test", &bot.addr)).expect("deliver");
    wait_until("the bounce noted", Duration::from_secs(30), || bots_log(&relay).contains("op=delivery-report"));
    let log = bots_log(&relay);
    assert!(log.contains("recipient=alice@example.org action=failed status=5.4.4"), "{log}");
    let (ok, listing) = bots_command(&relay, &["list"]);
    assert!(ok, "{listing}");
    assert!(listing.contains(&format!("{}: echo (Answers with the text) by mailto:bots@chatmail.test", bot.addr)), "{listing}");
    assert!(listing.contains("runs: 1 in the last hour"), "{listing}");
    assert!(listing.contains("refused by the gate: not-encrypted 1\n"), "{listing}");
    assert!(listing.contains("a message to alice@example.org was not delivered: 5.4.4 Host or domain name not found."), "{listing}");
    // What the daemon needs, checked as its user: every line ok.
    let (ok, report) = bots_command(&relay, &["--user", MAIL_USER, "check"]);
    assert!(ok, "{report}");
    for what in ["spool", "state", "mailboxes", "LMTP", "submission"] {
        assert!(report.lines().any(|l| l.starts_with(&format!("ok: {what} "))), "{what} in {report}");
    }
    let (ok, out) = bots_command(&relay, &["disable", &bot.addr]);
    assert!(ok, "{out}");
    assert!(bots_command(&relay, &["list"]).1.contains("[DISABLED]"));
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "two")).expect("deliver");
    wait_until("the skip", Duration::from_secs(30), || bots_log(&relay).contains("reason=disabled-by-operator"));
    assert_eq!(relay.bot_outputs(&bot.addr).len(), 1, "a disabled bot does not run");
    let (ok, out) = bots_command(&relay, &["disable", "nobody@chatmail.test"]);
    assert!(!ok && out.contains("no bot for nobody@chatmail.test"), "{out}");
}

/// A tiny HTTPS origin on 127.0.0.1:`port` with the relay's certificate:
/// answers every GET with `body`, and counts the requests.
fn https_origin(cert: &Path, key: &Path, port: u16, body: &'static str) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Write};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind origin");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(connection) = rustls::ServerConnection::new(std::sync::Arc::clone(&config)) else { continue };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(tls, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    count
}

/// A bot that fetches `allowed` and `refused` through the host and prints
/// both statuses and the first body.
fn fetching_bot(allowed: &str, refused: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "chatmail" "fetch" (func $fetch (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{allowed}")
  (data (i32.const 400) "{refused}")
  (func $num (param $at i32) (param $v i32) (result i32)
    (if (i32.lt_s (local.get $v) (i32.const 0))
      (then (i32.store8 (local.get $at) (i32.const 45))
            (local.set $at (i32.add (local.get $at) (i32.const 1)))
            (local.set $v (i32.sub (i32.const 0) (local.get $v)))))
    (if (i32.ge_u (local.get $v) (i32.const 100))
      (then (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $v) (i32.const 100))))
            (local.set $at (i32.add (local.get $at) (i32.const 1)))
            (local.set $v (i32.rem_u (local.get $v) (i32.const 100)))
            (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $v) (i32.const 10))))
            (local.set $at (i32.add (local.get $at) (i32.const 1)))
            (local.set $v (i32.rem_u (local.get $v) (i32.const 10)))))
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $v)))
    (i32.add (local.get $at) (i32.const 1)))
  (func (export "_start")
    (local $at i32)
    (local.set $at (call $num (i32.const 2000) (call $fetch (i32.const 100) (i32.const {allowed_len}) (i32.const 3000) (i32.const 1000) (i32.const 90))))
    (i32.store8 (local.get $at) (i32.const 32))
    (local.set $at (call $num (i32.add (local.get $at) (i32.const 1)) (call $fetch (i32.const 400) (i32.const {refused_len}) (i32.const 3000) (i32.const 0) (i32.const 94))))
    (i32.store8 (local.get $at) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 2000))
    (i32.store (i32.const 4) (i32.sub (i32.add (local.get $at) (i32.const 1)) (i32.const 2000)))
    (i32.store (i32.const 8) (i32.const 3000))
    (i32.store (i32.const 12) (i32.load (i32.const 90)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 2) (i32.const 16)))))"#,
        allowed_len = allowed.len(),
        refused_len = refused.len(),
    );
    wat::parse_str(&text).expect("fetching bot")
}

#[test]
fn network_requests_go_through_the_host_to_allowed_origins_only() {
    let run_dir = tempfile::tempdir().expect("run dir");
    let port = chatmail_testrelay::free_port().expect("port");
    let origin = format!("https://127.0.0.1:{port}");
    let cert = run_dir.path().join("tls").join("cert.pem");
    let options = RelayOptions {
        run_dir: Some(run_dir.path().to_path_buf()),
        params: vec![("bot_allowed_origins".into(), origin.clone()), ("bot_network_ca_file".into(), cert.display().to_string())],
        ..RelayOptions::default()
    };
    let relay = Relay::start(options).unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let requests = https_origin(&cert, &run_dir.path().join("tls").join("key.pem"), port, "hello from the origin");
    let bot = relay.new_account().expect("bot account");
    // Named in bot.toml and allowed by the operator: reached. Not in both
    // lists (here: only in bot.toml): refused without a request.
    let toml = format!("name = \"fetcher\"\nauthor = \"a@chatmail.test\"\nnetwork = [\"{origin}\", \"https://127.0.0.2:{port}\"]\n");
    let wasm = fetching_bot(&format!("{origin}/status"), &format!("https://127.0.0.2:{port}/x"));
    relay.install_bot(&bot, &wasm, &toml).expect("install");
    relay.wait_for_message(&bot, "Subject: Bot installed: fetcher", Duration::from_secs(60)).expect("report");
    wait_until("an empty spool", Duration::from_secs(30), || relay.bot_spool_len() == 0);
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "fetch")).expect("deliver");
    wait_until("the fetching run", Duration::from_secs(30), || !relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["200 -1\nhello from the origin".to_owned()], "{}", bots_log(&relay));
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1, "only the allowed request was made");
    let log = bots_log(&relay);
    assert!(log.contains("op=fetch job=") && log.contains("status=200"), "{log}");
    assert!(log.contains("is not an allowed origin"), "{log}");
}

#[test]
fn a_javascript_bot_is_checked_at_install_and_its_errors_carry_lines() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    let toml = "name = \"js\"\nauthor = \"mailto:bots@chatmail.test\"\n";
    // A syntax error: refused, the report names the line.
    relay.install_bot_code(&bot, "bot.js", b"chatmail.reply('hi');\nlet x = (;\n", toml).expect("store package");
    let report = relay.wait_for_message(&bot, "Subject: Bot not installed", Duration::from_secs(90)).expect("report");
    assert!(report.contains("bot.js:2:") && report.contains("SyntaxError"), "{report}");
    assert!(!relay.config.mailboxes_dir.join(&bot.addr).join("chatmail-bot").exists(), "nothing installed");

    // A script that throws: installed; the run fails with its line, which
    // the operator's listing shows among the bot's errors.
    let throwing = b"if (chatmail.text.includes('boom')) {\n  null.boom;\n}\nchatmail.reply('js: ' + chatmail.text.trim());\n";
    relay.install_bot_code(&bot, "bot.js", throwing, toml).expect("store package");
    let report = relay.wait_for_message(&bot, "Subject: Bot installed: js", Duration::from_secs(90)).expect("install report");
    assert!(report.contains("Script (bot.js"), "{report}");
    wait_until("an empty spool after the install", Duration::from_secs(30), || relay.bot_spool_len() == 0);
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "hello, js")).expect("deliver");
    wait_until("the script's run", Duration::from_secs(30), || !relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["{\"action\":\"reply\",\"text\":\"js: hello, js\"}\n".to_owned()]);
    relay.lmtp_deliver(&bot.addr, &mail(&relay, "alice@example.org", &bot.addr, "boom")).expect("deliver");
    wait_until("the failed run", Duration::from_secs(30), || bots_log(&relay).contains("outcome=exited-1"));
    let (ok, listing) = bots_command(&relay, &["list"]);
    assert!(ok, "{listing}");
    assert!(listing.contains("code: bot.js"), "{listing}");
    assert!(listing.contains("bot.js:2:") && listing.contains("Uncaught TypeError"), "{listing}");
}
