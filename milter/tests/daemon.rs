//! The `chatmail-milter` binary: arguments, configuration errors, and both
//! socket kinds serving the milter protocol.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indymilter_test::{MacroStage, Status, TestConnection};

const BIN: &str = env!("CARGO_BIN_EXE_chatmail-milter");

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("chatmail.ini");
    let key = dir.join("dkim.private");
    std::fs::write(&key, chatmail_testrelay::dkim::TEST_KEY_PEM).expect("key");
    let dns = chatmail_testrelay::test_dns().expect("dns").addr();
    let key_line = if extra.contains("dkim_key_file") { String::new() } else { format!("dkim_key_file = {}\n", key.display()) };
    std::fs::write(&path, format!("[params]\nmail_domain = chat.example\nmailboxes_dir = {}\n{key_line}dns_servers = {dns}\n{extra}", dir.display()))
        .expect("ini");
    path
}

#[test]
fn bad_arguments_and_config_exit_with_2_and_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN).arg("--bogus").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument \"--bogus\""));

    let config = write_config(dir.path(), "max_message_size = lots\n");
    let out = Command::new(BIN).arg("--config").arg(&config).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":6: max_message_size: \"lots\" is not a size"), "{stderr}");

    // No DKIM key: refuses to start, and says how to make one.
    let config = write_config(dir.path(), &format!("dkim_key_file = {}/missing.private\n", dir.path().display()));
    let out = Command::new(BIN).arg("--config").arg(&config).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the DKIM key") && stderr.contains("missing.private"), "{stderr}");
    assert!(stderr.contains("chatmail-milter dkim-keygen"), "{stderr}");

    let config = write_config(dir.path(), "");
    let out = Command::new(BIN).arg("--config").arg(&config).args(["--socket", "tcp:1.2.3.4"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with unix: or inet:"));
}

async fn one_encrypted_message(conn: &mut TestConnection) -> Status {
    conn.macros(MacroStage::Mail, [("{auth_authen}", "alice0001@chat.example")]).await.expect("macros");
    assert_eq!(conn.mail(["<alice0001@chat.example>"]).await.expect("mail"), Status::Continue);
    assert_eq!(conn.rcpt(["<bob000001@chat.example>"]).await.expect("rcpt"), Status::Noreply);
    conn.header("From", "<alice0001@chat.example>").await.expect("header");
    conn.header("Content-Type", "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"B\"").await.expect("header");
    let body = "--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--B\r\n\
                Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n\
                wQIDA9IDAaq7\r\n-----END PGP MESSAGE-----\r\n\r\n--B--\r\n";
    conn.body(body.as_bytes().to_vec()).await.expect("body");
    conn.eom().await.expect("eom").1
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serves_on_unix_and_inet_sockets_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let socket = dir.path().join("milter.sock");
    for spec in [format!("unix:{}", socket.display()), format!("inet:127.0.0.1:{port}")] {
        let mut child = KillOnDrop(
            Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .args(["--socket", &spec, "--local-socket", "none"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start"),
        );
        let mut conn = if spec.starts_with("unix:") {
            wait_until("unix socket", || socket.exists());
            TestConnection::configure().open_unix(&socket).await.expect("open")
        } else {
            wait_until("listening", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            TestConnection::open(("127.0.0.1", port)).await.expect("open")
        };
        assert_eq!(one_encrypted_message(&mut conn).await, Status::Continue, "{spec}");
        conn.close().await.expect("close");
        nix_kill(child.0.id());
        let status = child.0.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "{spec}: exit after SIGTERM");
        if spec.starts_with("unix:") {
            assert!(!socket.exists(), "socket removed on shutdown");
        }
    }
}

/// A daemon under test that is killed if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}
