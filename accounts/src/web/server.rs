//! The HTTPS side: TLS with a certificate that is reloaded when its files
//! change (or on SIGHUP), connection limits, timeouts, one request per
//! connection served by hyper behind a gate for the request head
//! (`http.rs`), one log line per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::rustls::crypto::ring::{default_provider, sign::any_supported_type};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::app::{canonical_ip, App, Outcome};
use super::http::{check_request, head_complete, HeadError, Request, Response, MAX_BODY, MAX_HEAD, MAX_HEADERS};

/// Time a client has for the TLS handshake and its request head together.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has, once its request head is in, to send the rest of
/// the request (a body of at most 16 KiB) and to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After answering, unread request bytes are drained (so that closing does
/// not reset the connection before the client has read the answer), for at
/// most this long and this many bytes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections one client address may hold at once; more are closed at once.
pub const MAX_CONNECTIONS_PER_IP: u32 = 32;
/// How often the certificate files are checked for changes.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A certificate chain and key from PEM files, with what identifies the
/// files' current version.
fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("reading certificate {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("reading key {}: {e}", key.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("certificate {}: no CERTIFICATE block in the file", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("key {}: {e}", key.display()))?;
    let signing = any_supported_type(&private).map_err(|e| format!("key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| format!("certificate {} and key {} do not belong together: {e}", cert.display(), key.display()))?;
    Ok(certified)
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

type Stamps = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

/// The server certificate, reloaded when its files change: certificates
/// are renewed every few weeks, and the server should not need a restart.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    checked: Mutex<(Instant, Stamps)>,
}

impl CertStore {
    /// Loads the certificate; an error here should stop the program.
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, String> {
        let stamps = (file_stamp(cert), file_stamp(key));
        let certified = load_certified_key(cert, key)?;
        Ok(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            checked: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// Reloads if the files changed since the last look, at most once per
    /// check interval unless `force`. A broken new certificate is logged
    /// and the old one stays in use.
    pub fn refresh(&self, force: bool) {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if !force && checked.0.elapsed() < CERT_CHECK_INTERVAL {
            return;
        }
        let stamps = (file_stamp(&self.cert), file_stamp(&self.key));
        checked.0 = Instant::now();
        if !force && stamps == checked.1 {
            return;
        }
        checked.1 = stamps;
        match load_certified_key(&self.cert, &self.key) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
                eprintln!("chatmail-web: loaded certificate {}", self.cert.display());
            }
            Err(e) => eprintln!("chatmail-web: warning: keeping the old certificate: {e}"),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// TLS settings: TLS 1.2 and 1.3 with ring, HTTP/1.1 via ALPN.
pub fn tls_config(certs: Arc<CertStore>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Counts open connections per client address.
#[derive(Debug, Default)]
struct PerIp(Mutex<HashMap<IpAddr, u32>>);

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpGuard> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = table.entry(ip).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        *count += 1;
        Some(PerIpGuard { table: self.clone(), ip })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Serves HTTPS on `listeners` until `shutdown` completes, then waits a
/// little for connections in progress. SIGHUP makes the certificate be
/// read again at once.
pub async fn serve(
    listeners: Vec<TcpListener>,
    app: Arc<App>,
    certs: Arc<CertStore>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let acceptor = TlsAcceptor::from(tls_config(certs.clone())?);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_ip = Arc::new(PerIp::default());
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, app.clone(), acceptor.clone(), certs.clone(), slots.clone(), per_ip.clone()));
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => certs.refresh(true),
            done = tasks.join_next() => {
                match done {
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(e)) => return Err(format!("listener task failed: {e}")),
                    Some(Ok(Ok(()))) | None => return Ok(()),
                }
            }
        }
    }
    tasks.abort_all();
    // Let requests in progress finish (they are short).
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
) -> Result<(), String> {
    loop {
        let permit = slots.clone().acquire_owned().await.map_err(|e| format!("connection slots: {e}"))?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                eprintln!("chatmail-web: warning: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical_ip(peer.ip());
        let Some(guard) = per_ip.enter(ip) else {
            eprintln!("chatmail-web: ip={ip} refused=too-many-connections");
            continue;
        };
        certs.refresh(false);
        let (app, acceptor) = (app.clone(), acceptor.clone());
        tokio::spawn(async move {
            handle_connection(app, &acceptor, stream, peer).await;
            drop(guard);
            drop(permit);
        });
    }
}

/// Reads until the request head is complete, under the gate's limits.
/// `Ok(None)`: the client went away before sending a request.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<Option<Result<usize, HeadError>>> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(if buf.iter().all(|b| b.is_ascii_whitespace()) {
                None
            } else {
                Some(Err(HeadError::Malformed("incomplete-head")))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        match head_complete(buf) {
            Ok(Some(end)) => return Ok(Some(Ok(end))),
            Ok(None) => {}
            Err(e) => return Ok(Some(Err(e))),
        }
    }
}

/// Only printable ASCII without spaces or quotes, at most `max` characters:
/// what a client sends cannot forge or break a log line.
fn log_safe(text: &str, max: usize) -> String {
    let mut out: String =
        text.chars().take(max).map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '?' }).collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// The one line per request.
fn log_request(method: &str, path: &str, status: u16, ip: IpAddr, reason: Option<&str>) {
    let reason = reason.map(|r| format!(" reason={}", log_safe(r, 40))).unwrap_or_default();
    eprintln!("chatmail-web: method={} path={} status={status} ip={ip}{reason}", log_safe(method, 16), log_safe(path, 200));
}

async fn handle_connection(app: Arc<App>, acceptor: &TlsAcceptor, stream: TcpStream, peer: SocketAddr) {
    let ip = canonical_ip(peer.ip());
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let mut tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            eprintln!("chatmail-web: ip={ip} tls-error=\"{}\"", log_safe(&e.to_string().replace(' ', "_"), 120));
            return;
        }
        Err(_) => {
            eprintln!("chatmail-web: ip={ip} tls-error=handshake-timeout");
            return;
        }
    };
    let mut buf = Vec::with_capacity(2048);
    let (refusal, reason) = match tokio::time::timeout_at(deadline, read_head(&mut tls, &mut buf)).await {
        Err(_) => (Response::text(408, "request timeout"), "timeout"),
        Ok(Err(_)) | Ok(Ok(None)) => return,
        Ok(Ok(Some(Err(e)))) => (Response::text(e.status(), "bad request"), e.reason()),
        Ok(Ok(Some(Ok(_)))) => {
            serve_request(app, Prefixed { prefix: buf, inner: tls }, ip).await;
            return;
        }
    };
    // The gate refused the head: answer without hyper.
    log_request("-", "-", refusal.status, ip, Some(reason));
    let written = timeout(WRITE_TIMEOUT, async {
        tls.write_all(&refusal.serialize_refusal()).await?;
        tls.flush().await?;
        tls.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        drain(&mut tls).await;
    }
}

/// hyper serves the one request whose head the gate let through (one
/// request per connection: no idle connections to keep or limit). The
/// rest of the request and the answer get [`WRITE_TIMEOUT`] together.
async fn serve_request<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(app: Arc<App>, stream: S, ip: IpAddr) {
    let answered = Arc::new(AtomicBool::new(false));
    let service = {
        let answered = answered.clone();
        service_fn(move |request| {
            let (app, answered) = (app.clone(), answered.clone());
            async move {
                let response = answer(&app, request, ip).await;
                answered.store(true, Ordering::Relaxed);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = http1::Builder::new()
        .keep_alive(false)
        // Head and body in one buffer: one TLS record and one write for
        // the small pages, not one per piece.
        .writev(false)
        // The gate has read the head within HEAD_TIMEOUT already, and the
        // whole exchange is under WRITE_TIMEOUT: no timer of hyper's own.
        .header_read_timeout(None)
        // Backstops: the gate has already held the head to these limits.
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD + 8192)
        .serve_connection(TokioIo::new(stream), service);
    match timeout(WRITE_TIMEOUT, connection).await {
        // hyper refused the head itself and answered 400 or 431: log it
        // like every answer.
        Ok(Err(e)) if !answered.load(Ordering::Relaxed) && e.is_parse() => {
            let (status, reason) = if e.is_parse_too_large() { (431, "head-too-large") } else { (400, "malformed") };
            log_request("-", "-", status, ip, Some(reason));
        }
        // The client went away or was too slow: nothing more to do.
        Ok(_) | Err(_) => {}
    }
}

/// The answer to one request hyper parsed, logged.
async fn answer(app: &App, request: hyper::Request<Incoming>, ip: IpAddr) -> hyper::Response<Full<Bytes>> {
    let (head, body) = request.into_parts();
    let request = Request::from_hyper(&head);
    let head_only = head.method == hyper::Method::HEAD;
    let outcome = match check_request(&head) {
        Err(e) => Outcome { response: Response::text(e.status(), "bad request"), reason: Some(e.reason()) },
        // The body is never needed (the only POST, `/new`, ignores it),
        // but it is read, up to the limit, so that the connection closes
        // cleanly after the answer instead of being reset with unread data.
        Ok(()) => match Limited::new(body, usize::try_from(MAX_BODY).unwrap_or(usize::MAX)).collect().await {
            Ok(_) => app.respond(&request, ip),
            Err(e) if e.is::<LengthLimitError>() => {
                let e = HeadError::BodyTooLarge;
                Outcome { response: Response::text(e.status(), "bad request"), reason: Some(e.reason()) }
            }
            Err(_) => Outcome { response: Response::text(400, "bad request"), reason: Some("bad-body") },
        },
    };
    log_request(&request.method, &request.path, outcome.response.status, ip, outcome.reason);
    outcome.response.into_hyper(head_only)
}

/// The bytes the gate has already read, then the rest of the stream:
/// what hyper reads from.
struct Prefixed<S> {
    prefix: Vec<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Reads and drops what the client still sends (a request body), briefly.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = timeout(LINGER_TIME, async {
        let mut chunk = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_values_cannot_break_the_line() {
        assert_eq!(log_safe("/new", 200), "/new");
        assert_eq!(log_safe("a b\"c\\d\ne", 200), "a?b?c?d?e");
        assert_eq!(log_safe("abcdef", 3), "abc...");
    }

    #[test]
    fn per_ip_connections_are_bounded_and_released() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let guards: Vec<_> = (0..MAX_CONNECTIONS_PER_IP).map(|_| table.enter(ip).unwrap()).collect();
        assert!(table.enter(ip).is_none());
        assert!(table.enter("192.0.2.2".parse().unwrap()).is_some());
        drop(guards);
        assert!(table.enter(ip).is_some());
        assert!(table.0.lock().unwrap().len() <= 1);
    }

    #[test]
    fn certificate_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = CertStore::load(&cert, &key).unwrap_err();
        assert!(e.contains("reading certificate") && e.contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = CertStore::load(&cert, &key).unwrap_err();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
    }
}
