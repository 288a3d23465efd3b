//! The one HTTPS client of the relay's programs: hyper-util's pooled
//! client over hyper-rustls, HTTP/1.1 only, `https://` only. The push
//! notifier POSTs to the notification service with it; the bots' network
//! helper GETs what bots fetch. Redirects are never followed (the caller
//! gets the 3xx); every exchange has a time limit, and a response body is
//! read only up to a size cap, so a huge or endless answer costs nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Where Debian keeps the system's CA certificates.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// How long an unused connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// TLS settings: the system's CA certificates, plus those in `extra_ca`
/// if given (a test relay's own CA, a private notification service).
pub fn https_tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let system = Path::new(SYSTEM_CAS);
    for path in [Some(system), extra_ca].into_iter().flatten() {
        let certs = match CertificateDer::pem_file_iter(path) {
            Ok(certs) => certs,
            Err(_) if path == system => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        let extra = extra_ca.map(|p| format!(" nor {}", p.display())).unwrap_or_default();
        return Err(format!("no CA certificates to check servers with (neither {SYSTEM_CAS}{extra})"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A status and as much of the body as was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsAnswer {
    pub status: u16,
    /// At most the `max_body` the request allowed.
    pub body: Vec<u8>,
    /// Whether the body was larger than `max_body` (reading stopped there;
    /// `body` is then cut short or empty).
    pub oversize: bool,
}

/// An HTTPS client with a pool of kept-alive connections. Cheap to clone
/// (clones share the pool). Needs a tokio runtime when used.
#[derive(Debug, Clone)]
pub struct HttpsClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpsClient {
    /// A client whose exchanges (connecting, sending, reading the answer)
    /// each take at most `timeout`.
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> HttpsClient {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // Requests are small and answered at once: without NODELAY, Nagle's
        // algorithm holds a POST's body until the headers are acknowledged
        // (a delayed ACK: ~40 ms per request).
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(connector);
        HttpsClient { client, timeout }
    }

    /// Sends `request` and reads the answer's body up to `max_body` bytes.
    /// Errors are one line: hyper's message and its causes, or the timeout.
    pub async fn send(&self, request: hyper::Request<Full<Bytes>>, max_body: usize) -> Result<HttpsAnswer, String> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let (body, oversize) = read_body(response.into_body(), max_body).await?;
            Ok::<_, String>(HttpsAnswer { status, body, oversize })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs())),
        }
    }

    /// A GET of `url` with `headers` added.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)], max_body: usize) -> Result<HttpsAnswer, String> {
        let mut request = hyper::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).map_err(|e| format!("{url}: {e}"))?;
        self.send(request, max_body).await
    }
}

/// Reads `body` until its end or until it is known to be larger than
/// `max` (by its declared length, or once more has arrived).
async fn read_body<B>(mut body: B, max: usize) -> Result<(Vec<u8>, bool), String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    if usize::try_from(body.size_hint().lower()).map_or(true, |declared| declared > max) {
        return Ok((Vec::new(), true));
    }
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {}", error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > max {
                read.extend_from_slice(&data[..max - read.len()]);
                return Ok((read.to_vec(), true));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok((read.to_vec(), false))
}

/// The error and its causes on one line (hyper's own message is terse).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
    }

    #[test]
    fn bodies_are_read_up_to_the_cap() {
        let read = |body: &'static [u8], max| block_on(read_body(Full::new(Bytes::from_static(body)), max)).unwrap();
        assert_eq!(read(b"hello", 5), (b"hello".to_vec(), false));
        // A declared length over the cap: nothing is read.
        assert_eq!(read(b"hello", 4), (Vec::new(), true));
        // A body without a declared length stops at the cap.
        assert_eq!(block_on(read_body(Chunks(vec![b"abc", b"def"]), 4)).unwrap(), (b"abcd".to_vec(), true));
        assert_eq!(block_on(read_body(Chunks(vec![b"abc", b"def"]), 6)).unwrap(), (b"abcdef".to_vec(), false));
    }

    /// A body of several frames without a declared length.
    struct Chunks(Vec<&'static [u8]>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            let next = (!self.0.is_empty()).then(|| self.0.remove(0));
            std::task::Poll::Ready(next.map(|chunk| Ok(hyper::body::Frame::data(Bytes::from_static(chunk)))))
        }
    }

    #[test]
    fn only_https_and_clear_errors() {
        let client = HttpsClient::new(https_tls_config(None).unwrap(), Duration::from_secs(5));
        let e = block_on(client.get("http://127.0.0.1:1/", &[], 10)).unwrap_err();
        assert!(e.contains("unsupported scheme http"), "{e}");
        let e = block_on(client.get("https://127.0.0.1:1/", &[], 10)).unwrap_err();
        assert!(e.contains("onnect"), "{e}");
        let e = https_tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
