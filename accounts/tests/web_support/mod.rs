//! Shared by the web tests: a temporary relay configuration and
//! certificate, a running `chatmail-web`, and a small HTTPS client that
//! trusts exactly that certificate.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

pub const DOMAIN: &str = "chat.example";

/// A scratch directory with chatmail.ini and a self-signed certificate.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Setup {
    /// `extra` lines go into `[params]` after mail_domain.
    pub fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("chatmail.ini");
        let nocreate = dir.path().join("nocreate");
        std::fs::write(
            &config,
            format!("[params]\nmail_domain = {DOMAIN}\nnocreate_file = {}\n{extra}", nocreate.display()),
        )
        .unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        make_certificate(&cert, &key);
        Setup { dir, config, cert, key }
    }

    pub fn nocreate_file(&self) -> PathBuf {
        self.dir.path().join("nocreate")
    }
}

/// A self-signed ECDSA certificate for DOMAIN and 127.0.0.1, by the openssl CLI.
pub fn make_certificate(cert: &Path, key: &Path) {
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256", "-days", "30"])
        .args(["-nodes", "-subj", &format!("/CN={DOMAIN}")])
        .args(["-addext", &format!("subjectAltName=DNS:{DOMAIN},IP:127.0.0.1")])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("running openssl (install the openssl package: scripts/setup-host.sh)");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
}

/// A running `chatmail-web`; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    pub cert_der: Vec<u8>,
}

impl Server {
    /// Starts the binary on a free loopback port with `args` added.
    pub fn start(setup: &Setup, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatmail-web"))
            .arg("--config")
            .arg(&setup.config)
            .arg("--cert")
            .arg(&setup.cert)
            .arg("--key")
            .arg(&setup.key)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("chatmail-web: listening on ") {
                    let addr = rest.split(',').next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chatmail-web did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        let cert_der = CertificateDer::from_pem_file(&setup.cert).unwrap().as_ref().to_vec();
        Server { child, addr, log, cert_der }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (log lines are written by
    /// another thread), up to 5 s.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) || start.elapsed() > Duration::from_secs(5) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Sends `request` as is over TLS and reads the answer until the
    /// server closes the connection.
    pub fn send(&self, request: &[u8]) -> HttpResponse {
        let mut tls = self.connect();
        tls.write_all(request).unwrap();
        tls.flush().unwrap();
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // A server that closes without close_notify still sent its answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("reading the answer: {e} (got {:?})", String::from_utf8_lossy(&raw)),
        }
        HttpResponse::parse(&raw)
    }

    /// `METHOD path` with a Host header and an empty body.
    pub fn request(&self, method: &str, path: &str) -> HttpResponse {
        self.send(format!("{method} {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 0\r\n\r\n").as_bytes())
    }

    pub fn connect(&self) -> StreamOwned<ClientConnection, TcpStream> {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let config = pinned_client_config(&self.cert_der);
        let conn = ClientConnection::new(config, ServerName::try_from(DOMAIN).unwrap()).unwrap();
        StreamOwned::new(conn, tcp)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn parse(raw: &[u8]) -> HttpResponse {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
            panic!("no complete response head in {:?}", String::from_utf8_lossy(raw));
        });
        let head = String::from_utf8(raw[..end].to_vec()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        HttpResponse { status, head, body: raw[end + 4..].to_vec() }
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.text()))
    }
}

/// rustls client settings that accept only the certificate `cert_der`.
pub fn pinned_client_config(cert_der: &[u8]) -> Arc<ClientConfig> {
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(Pinned { cert_der: cert_der.to_vec(), provider: provider.clone() });
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct Pinned {
    cert_der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert_der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the test certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Decodes every QR code found in a greyscale image.
pub fn decode_qr(width: usize, height: usize, grey: &[u8]) -> Vec<String> {
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| grey[y * width + x]);
    prepared.detect_grids().into_iter().filter_map(|grid| grid.decode().ok().map(|(_, text)| text)).collect()
}
