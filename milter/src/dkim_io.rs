//! The I/O side of DKIM: signing a message as it streams through the
//! milter, and checking an incoming message's signatures with keys from DNS.

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::dkim::DkimSigningStream;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::{AuthenticatedMessage, DkimResult, DnsError, Error, MessageAuthenticator};

use crate::dkim::{CheckOutcome, SignatureCheck};
use crate::dkim_keys::Signers;

/// Tries per name server before a lookup counts as failed.
const DNS_ATTEMPTS: usize = 2;
/// Answers kept (for their TTL): enough for the domains a relay hears
/// from in a while, small enough not to matter.
const DNS_CACHE_ENTRIES: u64 = 1024;

/// Resolver settings: `servers` (empty: /etc/resolv.conf), `timeout` per try.
pub fn authenticator(servers: &[SocketAddr], timeout: Duration) -> Result<MessageAuthenticator, String> {
    let (config, mut opts) = if servers.is_empty() {
        mail_auth::hickory_resolver::system_conf::read_system_conf().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        (ResolverConfig::from_name_servers(name_servers), ResolverOpts::default())
    };
    opts.timeout = timeout;
    opts.attempts = DNS_ATTEMPTS;
    opts.cache_size = DNS_CACHE_ENTRIES;
    MessageAuthenticator::new(config, opts).map_err(|e| format!("setting up the DNS resolver: {e}"))
}

/// Checks every DKIM signature of `raw` (the whole message, CRLF line ends).
pub async fn check_signatures(authenticator: &MessageAuthenticator, raw: &[u8]) -> Vec<SignatureCheck> {
    let Some(message) = AuthenticatedMessage::parse(raw) else {
        // Not even a header: nothing signed it.
        return Vec::new();
    };
    let outputs = authenticator.verify_dkim(&message).await;
    outputs
        .iter()
        .map(|output| SignatureCheck {
            domain: output.signature().map(|s| s.d.to_ascii_lowercase()),
            outcome: match output.result() {
                DkimResult::Pass => CheckOutcome::Pass,
                DkimResult::TempError(e) => CheckOutcome::DnsFailure { why: describe(e) },
                DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) => CheckOutcome::Invalid { why: describe(e) },
                DkimResult::None => CheckOutcome::Invalid { why: "no result".into() },
            },
        })
        .collect()
}

fn describe(error: &Error) -> String {
    match error {
        Error::Dns(DnsError::RecordNotFound(code)) => format!("no key in DNS ({code})"),
        other => other.to_string(),
    }
}

/// The signatures of one outgoing message, computed while its body streams by.
pub struct MessageSigning {
    rsa: DkimSigningStream<'static, RsaKey<Sha256>>,
    ed25519: Option<DkimSigningStream<'static, Ed25519Key>>,
}

impl std::fmt::Debug for MessageSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSigning").field("ed25519", &self.ed25519.is_some()).finish_non_exhaustive()
    }
}

/// The TXT records published at `name` (each record's strings joined).
pub async fn txt_records(authenticator: &MessageAuthenticator, name: &str) -> Result<Vec<String>, String> {
    use mail_auth::hickory_resolver::proto::rr::{Name, RData};
    let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
    let name = Name::from_str_relaxed(&fqdn).map_err(|e| format!("{fqdn:?} is not a DNS name: {e}"))?;
    let lookup = authenticator.resolver().txt_lookup(name).await.map_err(|e| e.to_string())?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>()),
            _ => None,
        })
        .collect())
}

impl MessageSigning {
    /// Starts signing with `signers` (which live as long as the milter).
    pub fn start(signers: &'static Signers) -> MessageSigning {
        MessageSigning { rsa: signers.rsa.sign_streaming(), ed25519: signers.ed25519.as_ref().map(|s| s.sign_streaming()) }
    }

    /// Feeds message bytes: the header section, the empty line, then the body.
    pub fn write(&mut self, bytes: &[u8]) {
        self.rsa.write(bytes);
        if let Some(ed25519) = &mut self.ed25519 {
            ed25519.write(bytes);
        }
    }

    /// The DKIM-Signature header values (without the name), Ed25519 first
    /// when present, so the RSA one ends up on top.
    pub fn finish(self) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        if let Some(ed25519) = self.ed25519 {
            values.push(header_value(&ed25519.finish().map_err(|e| format!("ed25519: {e}"))?.to_header()));
        }
        values.push(header_value(&self.rsa.finish().map_err(|e| format!("rsa: {e}"))?.to_header()));
        Ok(values)
    }
}

/// The value of a `DKIM-Signature: …` header line, folded with bare LF as
/// milter header values are.
fn header_value(header: &str) -> String {
    let value = header.split_once(':').map_or(header, |(_, v)| v);
    value.trim_start_matches(' ').trim_end_matches("\r\n").replace("\r\n", "\n")
}
