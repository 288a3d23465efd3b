//! The relay's one HTTPS client (`HttpsClient`) against the real
//! `chatmail-web`: the answer as sent, redirects not followed, the size
//! cap, certificates checked.

#![allow(clippy::unwrap_used)]

mod web_support;

use std::time::Duration;

use chatmail_accounts::{https_tls_config, HttpsClient};
use web_support::{Server, Setup};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// A self-signed certificate that is not a CA's (webpki refuses a CA
/// certificate as the server's own), so that it can be its own trust anchor.
fn leaf_certificate(setup: &Setup) {
    let output = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256", "-days", "2"])
        .args(["-nodes", "-subj", "/CN=chat.example", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&setup.key)
        .arg("-out")
        .arg(&setup.cert)
        .output()
        .unwrap();
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn gets_answers_as_they_are_up_to_the_cap() {
    let setup = Setup::new("");
    leaf_certificate(&setup);
    let server = Server::start(&setup, &[]);
    let client = HttpsClient::new(https_tls_config(Some(&setup.cert)).unwrap(), Duration::from_secs(10));
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", server.addr.port());

    let info = block_on(client.get(&url("/info.html"), &[("user-agent", "test")], 1 << 20)).unwrap();
    assert_eq!((info.status, info.oversize), (200, false));
    assert!(String::from_utf8_lossy(&info.body).contains("chat.example"));
    // The redirect comes back as it is.
    let redirect = block_on(client.get(&url("/new"), &[], 1 << 20)).unwrap();
    assert_eq!(redirect.status, 303);
    // Over the cap: reported, and nothing past the cap is kept.
    let capped = block_on(client.get(&url("/info.html"), &[], 100)).unwrap();
    assert_eq!(capped.status, 200);
    assert!(capped.oversize && capped.body.len() <= 100, "{capped:?}");

    // Without the server's certificate as a CA: refused, and saying why.
    let other = Setup::new("");
    leaf_certificate(&other);
    let stranger = HttpsClient::new(https_tls_config(Some(&other.cert)).unwrap(), Duration::from_secs(10));
    let e = block_on(stranger.get(&url("/"), &[], 1 << 20)).unwrap_err();
    assert!(e.to_ascii_lowercase().contains("certificate"), "{e}");
    let e = block_on(client.get(&url("/").replace("https:", "http:"), &[], 1 << 20)).unwrap_err();
    assert!(e.contains("unsupported scheme http"), "{e}");
}
