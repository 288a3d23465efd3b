//! The real `chatmail-web` binary over HTTPS, and the `chatmail-account`
//! command.

#![allow(clippy::unwrap_used)]

mod web_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chatmail_accounts::AccountPolicy;
use chatmail_config::Config;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use web_support::{decode_qr, Server, Setup, DOMAIN};

fn policy(setup: &Setup) -> AccountPolicy {
    AccountPolicy::from_config(&Config::load(&setup.config).unwrap().config)
}

#[test]
fn new_hands_out_valid_credentials_up_to_the_per_ip_limit() {
    let setup = Setup::new("new_accounts_per_ip_per_hour = 3\n");
    let server = Server::start(&setup, &[]);
    let policy = policy(&setup);
    let mut passwords = Vec::new();
    for _ in 0..3 {
        let r = server.request("POST", "/new");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let value = r.json();
        let email = value["email"].as_str().unwrap();
        let password = value["password"].as_str().unwrap();
        assert!(email.ends_with(&format!("@{DOMAIN}")), "{email}");
        assert!(policy.check_address(email).is_ok(), "{email}");
        assert!(policy.check_new_password(password.as_bytes()).is_ok(), "{password}");
        passwords.push(password.to_owned());
    }
    let r = server.request("POST", "/new");
    assert_eq!(r.status, 429, "{r:?}");
    // Delta Chat shows `reason` to the user.
    assert_eq!(r.json()["error"], "ip-limit", "{r:?}");
    assert!(r.json()["reason"].as_str().unwrap().contains("Too many new accounts"), "{r:?}");
    // The pages stay reachable for a client over the limit.
    assert_eq!(server.request("GET", "/").status, 200);

    let log = server.wait_for_log("status=429");
    assert_eq!(log.matches("chatmail-web: method=POST path=/new status=200 ip=127.0.0.1\n").count(), 3, "{log}");
    assert!(log.contains("chatmail-web: method=POST path=/new status=429 ip=127.0.0.1 reason=ip-limit\n"), "{log}");
    for password in passwords {
        assert!(!log.contains(&password), "password in the log:\n{log}");
    }
}

#[test]
fn nocreate_file_switches_new_off() {
    let setup = Setup::new("");
    let server = Server::start(&setup, &[]);
    std::fs::write(setup.nocreate_file(), "").unwrap();
    let r = server.request("POST", "/new");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "creation-off", "{r:?}");
    std::fs::remove_file(setup.nocreate_file()).unwrap();
    assert_eq!(server.request("POST", "/new").status, 200);
}

#[test]
fn pages() {
    let setup = Setup::new("delete_mails_after = 23\ndelete_large_after = 4\nmax_mailbox_size = 250M\nmax_user_send_per_minute = 33\n");
    let server = Server::start(&setup, &[]);

    let index = server.request("GET", "/");
    assert_eq!(index.status, 200);
    assert_eq!(index.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(index.header("Content-Security-Policy").unwrap().contains("default-src 'none'"));
    let html = index.text();
    assert!(html.contains("href=\"dcaccount:https://chat.example/new\""), "{html}");
    assert!(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{html}");
    assert!(html.contains("name=\"viewport\""), "{html}");

    let info = server.request("GET", "/info.html");
    assert_eq!(info.status, 200);
    let html = info.text();
    for expected in ["at most 23 days", "at most 4 days", "250 MiB", "33 messages per minute", "30 MiB"] {
        assert!(html.contains(expected), "{expected:?} missing in {html}");
    }
    let privacy = server.request("GET", "/privacy.html");
    assert_eq!(privacy.status, 200);
    assert!(privacy.text().contains("Privacy policy of chat.example"));

    let head = server.request("HEAD", "/info.html");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("Content-Length"), Some(info.body.len().to_string().as_str()));

    let redirect = server.request("GET", "/new");
    assert_eq!((redirect.status, redirect.header("Location")), (303, Some("/")));
    let absolute = server.send(b"GET https://chat.example/info.html HTTP/1.1\r\nHost: chat.example\r\n\r\n");
    assert_eq!(absolute.status, 200);
    let old = server.send(b"GET /privacy.html HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200);
}

#[test]
fn not_found_and_wrong_methods() {
    let setup = Setup::new("");
    let server = Server::start(&setup, &[]);
    let table = [
        ("GET", "/favicon.ico", 404, None),
        ("GET", "/new/../etc/passwd", 404, None),
        ("POST", "/", 405, Some("GET, HEAD")),
        ("DELETE", "/info.html", 405, Some("GET, HEAD")),
        ("PUT", "/new", 405, Some("GET, HEAD, POST")),
        ("OPTIONS", "/new", 405, Some("GET, HEAD, POST")),
    ];
    for (method, path, status, allow) in table {
        let r = server.request(method, path);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        assert_eq!(r.header("Allow"), allow, "{method} {path}");
    }
    let log = server.wait_for_log("method=OPTIONS");
    assert!(log.contains("method=GET path=/favicon.ico status=404 ip=127.0.0.1 reason=not-found"), "{log}");
}

#[test]
fn oversize_and_malformed_requests_are_refused() {
    let setup = Setup::new("");
    let mut server = Server::start(&setup, &[]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    let big_head = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(400));
    let many_headers = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(100));
    let table: Vec<(Vec<u8>, u16)> = vec![
        (long_target.into_bytes(), 414),
        (big_head.into_bytes(), 431),
        (many_headers.into_bytes(), 431),
        (b"HELLO\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n".to_vec(), 400),
        (b"POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
        (b"POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n".to_vec(), 413),
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
    ];
    for (request, status) in table {
        let r = server.send(&request);
        assert_eq!(r.status, status, "{:?}: {r:?}", String::from_utf8_lossy(&request[..request.len().min(60)]));
        assert_eq!(r.header("Connection"), Some("close"));
    }
    // A request with a small body the server never needs still gets its answer.
    let r = server.send(b"POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\": \"b\"}\n");
    assert_eq!(r.status, 200, "{r:?}");
    let r = server.send(b"POST /new HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");

    // Plain HTTP on the TLS port: the handshake fails, nothing else happens.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);
    assert!(!String::from_utf8_lossy(&sink).contains("HTTP/1.1 200"));
    // A client that leaves after half a request.
    let mut half = server.connect();
    half.write_all(b"GET / HTT").unwrap();
    half.flush().unwrap();
    drop(half);
    // A 100 KB flood without a line end.
    let mut flood = server.connect();
    let _ = flood.write_all(&vec![b'A'; 100_000]);
    let mut raw = Vec::new();
    let _ = flood.read_to_end(&mut raw);
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 414 "), "{:?}", String::from_utf8_lossy(&raw));

    assert!(server.running());
    assert_eq!(server.request("GET", "/").status, 200);
    let log = server.wait_for_log("tls-error");
    assert!(log.contains("method=- path=- status=414 ip=127.0.0.1 reason=request-line-too-long"), "{log}");
    assert!(log.contains("status=431 ip=127.0.0.1 reason=head-too-large"), "{log}");
    assert!(log.contains("ip=127.0.0.1 tls-error="), "{log}");
}

#[test]
fn dclogin_onboarding_for_a_test_relay() {
    let setup = Setup::new("new_accounts_per_ip_per_hour = 2\n");
    let args = [
        "--onboarding", "dclogin", "--host", "127.0.0.1", "--imap-port", "2993", "--smtp-port", "2465", "--security",
        "ssl", "--accept-invalid-certs",
    ];
    let server = Server::start(&setup, &args);
    let policy = policy(&setup);
    let html = server.request("GET", "/").text();
    let start = html.find("href=\"dclogin:").unwrap() + "href=\"".len();
    let link = html[start..].split('"').next().unwrap().replace("&amp;", "&");
    let (addr, query) = link.strip_prefix("dclogin:").unwrap().split_once('?').unwrap();
    assert!(policy.check_address(addr).is_ok(), "{link}");
    let password = query.strip_prefix("p=").unwrap().split('&').next().unwrap();
    assert!(policy.check_new_password(password.as_bytes()).is_ok(), "{link}");
    assert!(query.ends_with("&v=1&ih=127.0.0.1&ip=2993&is=ssl&sh=127.0.0.1&sp=2465&ss=ssl&ic=3&sc=3"), "{link}");
    // Page views count against the same per-IP limit as /new.
    assert_eq!(server.request("POST", "/new").status, 200);
    assert_eq!(server.request("GET", "/").status, 429);
    let log = server.wait_for_log("status=429");
    assert!(!log.contains(password), "{log}");
}

/// Slow clients (a request head that never ends, a TCP connection without
/// a TLS handshake) are cut off after 10 s.
#[test]
fn slow_clients_time_out() {
    let setup = Setup::new("");
    let server = Server::start(&setup, &[]);
    let start = std::time::Instant::now();
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut slow = server.connect();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.flush().unwrap();
    let mut raw = Vec::new();
    let _ = slow.read_to_end(&mut raw);
    let answer = String::from_utf8_lossy(&raw).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    let mut sink = Vec::new();
    assert_eq!(idle.read_to_end(&mut sink).map_err(|e| e.kind()), Ok(0));
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(20), "{elapsed:?}");
    let log = server.wait_for_log("handshake-timeout");
    assert!(log.contains("status=408 ip=127.0.0.1 reason=timeout"), "{log}");
    assert!(log.contains("tls-error=handshake-timeout"), "{log}");
}

#[test]
fn sighup_reloads_a_renewed_certificate_and_keeps_a_good_one_over_a_broken_one() {
    let setup = Setup::new("");
    let mut server = Server::start(&setup, &[]);
    assert_eq!(server.request("GET", "/").status, 200);
    let hup = |server: &Server| {
        Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    };
    // A broken renewal: the old certificate stays in use.
    std::fs::write(&setup.cert, "broken").unwrap();
    hup(&server);
    let log = server.wait_for_log("keeping the old certificate");
    assert!(log.contains("keeping the old certificate"), "{log}");
    assert_eq!(server.request("GET", "/").status, 200);
    // A good renewal: new connections get the new certificate.
    web_support::make_certificate(&setup.cert, &setup.key);
    hup(&server);
    server.wait_for_log("loaded certificate");
    server.cert_der = rustls::pki_types::CertificateDer::from_pem_file(&setup.cert).unwrap().to_vec();
    assert_eq!(server.request("GET", "/").status, 200);
    assert!(server.running());
}

fn run_web(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chatmail-web")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn bad_arguments_configuration_and_certificates_exit_2() {
    let setup = Setup::new("");
    let config = setup.config.to_str().unwrap();
    let (cert, key) = (setup.cert.to_str().unwrap(), setup.key.to_str().unwrap());
    let bad_ini = setup.dir.path().join("bad.ini");
    std::fs::write(&bad_ini, "[params]\nmail_domain = chat.example\nmax_mailbox_size = lots\n").unwrap();
    let garbage = setup.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "garbage").unwrap();
    let other = setup.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    web_support::make_certificate(&other.join("cert.pem"), &other.join("key.pem"));
    let other_key = other.join("key.pem");
    let table: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", config], "--cert and --key are required"),
        (vec!["--bogus"], "unknown argument"),
        (vec!["--config", "/nonexistent.ini", "--cert", cert, "--key", key], "cannot read the file"),
        (vec!["--config", bad_ini.to_str().unwrap(), "--cert", cert, "--key", key], "max_mailbox_size"),
        (vec!["--config", config, "--cert", garbage.to_str().unwrap(), "--key", key], "no CERTIFICATE block"),
        (vec!["--config", config, "--cert", cert, "--key", garbage.to_str().unwrap()], "garbage.pem"),
        (vec!["--config", config, "--cert", cert, "--key", other_key.to_str().unwrap()], "do not belong together"),
        (vec!["--config", config, "--cert", cert, "--key", key, "--imap-port", "1"], "--onboarding dclogin"),
    ];
    for (args, expected) in table {
        let (code, output) = run_web(&args);
        assert_eq!(code, Some(2), "{args:?}: {output}");
        assert!(output.contains(expected), "{args:?}: {expected:?} not in {output}");
    }
    let (code, output) = run_web(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(output.contains("--onboarding MODE"), "{output}");
    // A port in use is a runtime failure.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let (code, output) = run_web(&["--config", config, "--cert", cert, "--key", key, "--listen", &port]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("binding"), "{output}");
}

#[test]
fn sigterm_stops_the_server() {
    let setup = Setup::new("");
    let mut server = Server::start(&setup, &[]);
    assert_eq!(server.request("GET", "/").status, 200);
    Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    for _ in 0..100 {
        if !server.running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.running(), "still running after SIGTERM");
    assert!(server.log().contains("shutting down"));
}

/// Turns the half-block QR code back into pixels and decodes it.
fn decode_terminal_qr(text: &str, dark_terminal: bool) -> Vec<String> {
    let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
    let (cols, rows) = (lines[0].len(), lines.len() * 2);
    let scale = 4;
    let (w, h) = (cols * scale, rows * scale);
    let mut grey = vec![255u8; w * h];
    for (row, line) in lines.iter().enumerate() {
        for (col, ch) in line.iter().enumerate() {
            let (top, bottom) = match ch {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            for (half, drawn) in [(0, top), (1, bottom)] {
                let dark = drawn != dark_terminal;
                for dy in 0..scale {
                    for dx in 0..scale {
                        grey[((row * 2 + half) * scale + dy) * w + col * scale + dx] = if dark { 0 } else { 255 };
                    }
                }
            }
        }
    }
    decode_qr(w, h, &grey)
}

fn run_account(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chatmail-account")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn account_command_prints_a_dclogin_link_and_its_qr_code() {
    let setup = Setup::new("");
    let policy = policy(&setup);
    let config = setup.config.to_str().unwrap();
    let args = [
        "new-login", "--config", config, "--host", "127.0.0.1", "--imap-port", "2993", "--smtp-port", "2465",
        "--security", "ssl", "--accept-invalid-certs",
    ];
    for light in [false, true] {
        let mut args = args.to_vec();
        if light {
            args.push("--light-terminal");
        }
        let (code, stdout, stderr) = run_account(&args);
        assert_eq!(code, Some(0), "{stderr}");
        let (link, qr) = stdout.split_once("\n\n").unwrap();
        let (addr, query) = link.strip_prefix("dclogin:").unwrap().split_once('?').unwrap();
        assert!(policy.check_address(addr).is_ok(), "{link}");
        let password = query.strip_prefix("p=").unwrap().split('&').next().unwrap();
        assert!(policy.check_new_password(password.as_bytes()).is_ok(), "{link}");
        assert!(query.ends_with("&v=1&ih=127.0.0.1&ip=2993&is=ssl&sh=127.0.0.1&sp=2465&ss=ssl&ic=3&sc=3"), "{link}");
        assert_eq!(decode_terminal_qr(qr, !light), vec![link.to_owned()], "{qr}");
    }
    // Without hints: only address and password; --no-qr: only the link.
    let (code, stdout, _) = run_account(&["new-login", "--config", config, "--no-qr"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.trim_end().ends_with("&v=1") && stdout.contains(&format!("@{DOMAIN}?p=")), "{stdout}");
    // Two runs, two accounts; nothing is written next to the config.
    let (_, again, _) = run_account(&["new-login", "--config", config, "--no-qr"]);
    assert_ne!(stdout, again);
    let mut files: Vec<_> = std::fs::read_dir(setup.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert_eq!(files, ["cert.pem", "chatmail.ini", "key.pem"]);

    let (code, _, stderr) = run_account(&["new-login", "--config", "/nonexistent.ini"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot read the file"), "{stderr}");
    let (code, _, stderr) = run_account(&["new-login", "--security", "plain"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not ssl or starttls"), "{stderr}");
    let (code, stdout, _) = run_account(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("new-login"), "{stdout}");
    assert!(Path::new(env!("CARGO_BIN_EXE_chatmail-account")).exists());
}
