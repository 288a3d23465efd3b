//! The daemons' Prometheus files through a real relay: what users do moves
//! the counters, and `chatmail-relay metrics` prints every daemon's file.

use std::process::Command;
use std::time::Duration;

use chatmail_testrelay::{eventually, Relay, RelayOptions};

/// A daemon rewrites its file every 5 seconds.
const METRICS_TIMEOUT: Duration = Duration::from_secs(20);

fn metrics(relay: &Relay) -> (bool, String, String) {
    let program = chatmail_testrelay::sibling_binary("chatmail-relay", "CHATMAIL_RELAY_BIN").expect("chatmail-relay binary");
    let output = Command::new(program).arg("--config").arg(&relay.config_path).arg("metrics").output().expect("run chatmail-relay metrics");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The value of the sample `series` (name and labels, as printed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn mail_and_logins_move_the_counters() {
    let relay = Relay::start(RelayOptions::default()).unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let alice = relay.new_account().expect("alice");
    let bob = relay.new_account().expect("bob");
    relay.submit(&alice, &[&bob.addr], &chatmail_testrelay::mail::encrypted(&alice.addr, &bob.addr, "counted")).expect("encrypted mail accepted");
    let refused = relay
        .submit_as(&alice, &alice.addr, &[&bob.addr], &chatmail_testrelay::mail::cleartext(&alice.addr, &bob.addr, "refused"))
        .expect("an answer");
    assert_eq!(refused.code, 523, "{refused:?}");
    relay.wait_for_message(&bob, "counted", Duration::from_secs(20)).expect("delivered");

    let text = eventually("the milter's and chatmail-auth's counts in chatmail-relay metrics", METRICS_TIMEOUT, || {
        let (ok, text, stderr) = metrics(&relay);
        let milter = |labels: &str| sample(&text, &format!("chatmail_milter_messages_total{{{labels}}}")).unwrap_or(0.0);
        let counted = ok
            && milter(r#"direction="outgoing",decision="accept",reason="encrypted""#) >= 1.0
            && milter(r#"direction="outgoing",decision="reject",reason="cleartext""#) >= 1.0
            && sample(&text, "chatmail_accounts_created_total").unwrap_or(0.0) >= 2.0;
        if !counted {
            eprintln!("not yet counted (stderr: {stderr}):\n{text}");
        }
        counted.then_some(text)
    });
    // One file per running daemon, each introduced by its name.
    for daemon in ["chatmail-auth", "chatmail-metadata", "chatmail-milter"] {
        assert!(text.contains(&format!("# chatmail-relay: {daemon}.prom, written ")), "{daemon} in\n{text}");
    }
    assert!(text.contains("# TYPE chatmail_push_notifications_total counter"), "{text}");
    assert!(!text.contains("chatmail_auth_errors_total{"), "an auth error was counted:\n{text}");
}

#[test]
fn metrics_command_says_what_is_missing() {
    let mut options = RelayOptions::default();
    options.params.push(("metrics_dir".into(), String::new()));
    let relay = Relay::start(options).unwrap_or_else(|e| panic!("relay did not start: {e}"));
    let (ok, _, stderr) = metrics(&relay);
    assert!(!ok);
    assert!(stderr.contains("metrics_dir is empty in chatmail.ini"), "{stderr}");
}
