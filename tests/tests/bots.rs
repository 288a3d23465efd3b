//! The bot daemon in a whole relay: a package mail stored in the DeltaBot
//! folder installs a bot (the install report arrives), mail delivered to
//! the bot account runs it, the spool empties, and jobs survive a stopped
//! daemon. (Delta Chat encryption and replies come with the next layer; here
//! the bot's output is read from the daemon's outbox.)

use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_testrelay::{Account, Relay, RelayOptions};

const ECHO_TOML: &str = "name = \"echo\"\ndescription = \"Answers with the text\"\nauthor = \"mailto:bots@chatmail.test\"\n";

fn echo_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots/echo/bot.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn wat_bot(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bot-sandbox/tests/bots").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn start() -> Relay {
    Relay::start(RelayOptions::default()).unwrap_or_else(|e| panic!("relay did not start: {e}"))
}

fn mail(from: &str, to: &str, text: &str) -> String {
    format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: test\r\nMessage-ID: <{}@chatmail.test>\r\n\r\n{text}\r\n", chatmail_testrelay::token(12))
}

/// Waits until `check` holds, or panics with the relay's logs.
fn wait_until(relay: &Relay, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}\n{}", relay.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
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
    wait_until(relay, "an empty spool after the install", Duration::from_secs(30), || relay.bot_spool_len() == 0);
}

#[test]
fn a_package_installs_the_echo_bot_and_mail_runs_it() {
    let relay = start();
    let bot = relay.new_account().expect("bot account");
    install_echo(&relay, &bot);
    // The install report itself never ran the bot.
    assert!(relay.bot_outputs(&bot.addr).is_empty(), "{:?}", relay.bot_outputs(&bot.addr));

    let reply = relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, "hello, bot")).expect("deliver");
    assert!(reply.starts_with("250"), "{reply}");
    wait_until(&relay, "the echo bot's run", Duration::from_secs(30), || !relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["echo for alice@example.org:\nhello, bot\n".to_owned()]);
    wait_until(&relay, "an empty spool", Duration::from_secs(10), || relay.bot_spool_len() == 0);
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
    relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, "spin")).expect("deliver");
    wait_until(&relay, "the spinner stopped by metering", Duration::from_secs(30), || bots_log(&relay).contains("outcome=out-of-cpu"));
    // The next run gets only what is left of the sender's CPU second for
    // the hour; once it is used up, mail from that sender is dropped, not
    // queued.
    for text in ["spin again", "and again"] {
        relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, text)).expect("deliver");
    }
    wait_until(&relay, "the over-limit drop", Duration::from_secs(30), || bots_log(&relay).contains("reason=sender-cpu-per-hour"));
    // The daemon still serves: a new package replaces the bot and runs.
    install_echo(&relay, &bot);
    relay.lmtp_deliver(&bot.addr, &mail("bob@example.org", &bot.addr, "still there?")).expect("deliver");
    wait_until(&relay, "the echo run", Duration::from_secs(30), || !relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["echo for bob@example.org:\nstill there?\n".to_owned()]);
    wait_until(&relay, "an empty spool", Duration::from_secs(10), || relay.bot_spool_len() == 0);
}

#[test]
fn jobs_wait_for_a_stopped_daemon_and_each_runs_once() {
    let mut relay = start();
    let bot = relay.new_account().expect("bot account");
    install_echo(&relay, &bot);
    relay.stop_bots();
    for i in 0..20 {
        let reply = relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, &format!("mail {i}"))).expect("deliver");
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert_eq!(relay.bot_spool_len(), 20, "all 20 wait in the spool");
    assert!(relay.bot_outputs(&bot.addr).is_empty());
    relay.start_bots().expect("restart");
    wait_until(&relay, "20 runs", Duration::from_secs(120), || relay.bot_outputs(&bot.addr).len() >= 20);
    wait_until(&relay, "an empty spool", Duration::from_secs(10), || relay.bot_spool_len() == 0);
    let mut outputs = relay.bot_outputs(&bot.addr);
    assert_eq!(outputs.len(), 20, "{outputs:?}");
    outputs.sort();
    outputs.dedup();
    assert_eq!(outputs.len(), 20, "each mail ran once");
    for i in 0..20 {
        assert!(outputs.contains(&format!("echo for alice@example.org:\nmail {i}\n")), "mail {i} missing: {outputs:?}");
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
    // Mail no longer runs anything.
    relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, "anyone?")).expect("deliver");
    std::thread::sleep(Duration::from_millis(500));
    assert!(relay.bot_outputs(&bot.addr).is_empty());
    assert_eq!(relay.bot_spool_len(), 0, "no job for an account without a bot");
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
        relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, &format!("mail {i}"))).expect("deliver");
        wait_until(&relay, "a counter run", Duration::from_secs(30), || relay.bot_outputs(&bot.addr).len() >= i);
    }
    assert_eq!(relay.bot_outputs(&bot.addr), vec!["mail number 1\n", "mail number 2\n", "mail number 3\n"]);
    let stored = relay.config.bot_state_dir.join("bots").join(&bot.addr).join("storage").join("count");
    assert_eq!(std::fs::read_to_string(stored).expect("storage file"), "3");
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
    relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, "one")).expect("deliver");
    wait_until(&relay, "a run", Duration::from_secs(30), || relay.bot_outputs(&bot.addr).len() == 1);
    let (ok, listing) = bots_command(&relay, &["list"]);
    assert!(ok, "{listing}");
    assert!(listing.contains(&format!("{}: echo (Answers with the text) by mailto:bots@chatmail.test", bot.addr)), "{listing}");
    assert!(listing.contains("runs: 1 in the last hour"), "{listing}");
    let (ok, out) = bots_command(&relay, &["disable", &bot.addr]);
    assert!(ok, "{out}");
    assert!(bots_command(&relay, &["list"]).1.contains("[DISABLED]"));
    relay.lmtp_deliver(&bot.addr, &mail("alice@example.org", &bot.addr, "two")).expect("deliver");
    wait_until(&relay, "the skip", Duration::from_secs(30), || bots_log(&relay).contains("reason=disabled-by-operator"));
    assert_eq!(relay.bot_outputs(&bot.addr).len(), 1, "a disabled bot does not run");
    let (ok, out) = bots_command(&relay, &["disable", "nobody@chatmail.test"]);
    assert!(!ok && out.contains("no bot for nobody@chatmail.test"), "{out}");
}
