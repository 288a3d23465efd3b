//! A local HTTPS server standing in for Delta Chat's notification service:
//! it records the body of every POST and answers with the status a test
//! sets. It serves a self-signed certificate of its own (for 127.0.0.1),
//! which the relay under test trusts through `push_notification_ca_file`.
//! Connections are kept alive as a real service's are (the notifier reuses
//! them).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Context, Error, Result};

/// One POST the stub received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub body: String,
    /// The status it was answered with.
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    /// Statuses for the next requests, in order; then `status`.
    queued: VecDeque<u16>,
    status: u16,
    /// Delay before answering (a slow service).
    delay: Duration,
}

/// The running stub; stops when dropped.
#[derive(Debug)]
pub struct PushStub {
    pub port: u16,
    /// The stub's certificate (PEM): the relay's `push_notification_ca_file`.
    pub ca_file: PathBuf,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl PushStub {
    /// Makes a certificate in `dir` and starts the stub with it.
    pub fn start_in(dir: &Path) -> Result<PushStub> {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        let cert = crate::tls::generate(dir, "push.test")?;
        PushStub::start(&cert.cert_pem, &cert.key_pem)
    }

    /// Starts the stub on a free loopback port with the PEM certificate and key.
    pub fn start(cert_pem: &Path, key_pem: &Path) -> Result<PushStub> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
            .map_err(|e| Error::new(format!("{}: {e}", cert_pem.display())))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::new(format!("{}: {e}", cert_pem.display())))?;
        let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| Error::new(format!("{}: {e}", key_pem.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::new(format!("stub certificate: {e}")))?;
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").context(|| "binding the push stub".into())?;
        let port = listener.local_addr().context(|| "push stub address".into())?.port();
        let state = Arc::new((Mutex::new(State { status: 200, ..State::default() }), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stop) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (config, state, stop) = (Arc::clone(&config), Arc::clone(&thread_state), Arc::clone(&thread_stop));
                std::thread::spawn(move || {
                    let _ = serve(stream, config, &state, &stop);
                });
            }
        });
        Ok(PushStub { port, ca_file: cert_pem.to_owned(), state, stop })
    }

    /// The URL for `push_notification_url`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/notify", self.port)
    }

    /// Answers every request from now on with `status`.
    pub fn set_status(&self, status: u16) {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).status = status;
    }

    /// Answers the next requests with these statuses, in order.
    pub fn queue_statuses(&self, statuses: &[u16]) {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).queued.extend(statuses);
    }

    /// Waits this long before each answer.
    pub fn set_delay(&self, delay: Duration) {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).delay = delay;
    }

    /// Every POST so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner()).received.clone()
    }

    /// Waits until at least `count` POSTs arrived; all of them.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        let (lock, ready) = &*self.state;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        while state.received.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(format!("the push stub received {} POSTs within {timeout:?}, expected {count}", state.received.len())));
            }
            state = ready.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok(state.received.clone())
    }
}

impl Drop for PushStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves HTTP/1.1 requests on one connection until the client closes it.
fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>, state: &(Mutex<State>, Condvar), stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    // Answers go out at once (no Nagle wait for the client's delayed ACK).
    stream.set_nodelay(true)?;
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut reader = BufReader::new(rustls::StreamOwned::new(connection, stream));
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 || stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let at = Instant::now();
        let (status, delay) = {
            let mut s = state.0.lock().unwrap_or_else(|e| e.into_inner());
            let status = s.queued.pop_front().unwrap_or(s.status);
            (status, s.delay)
        };
        std::thread::sleep(delay);
        {
            let mut s = state.0.lock().unwrap_or_else(|e| e.into_inner());
            s.received.push(Received { at, path, body: String::from_utf8_lossy(&body).into_owned(), status });
            state.1.notify_all();
        }
        let stream = reader.get_mut();
        // One write: one TLS record.
        stream.write_all(format!("HTTP/1.1 {status} Stub\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
        stream.flush()?;
    }
}
