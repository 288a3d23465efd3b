//! The I/O side of DKIM: signing a message as it streams through the
//! milter, and checking an incoming message's signatures with keys from DNS.

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::common::crypto::{Ed25519Key, HashAlgorithm, HashContext, HashImpl, RsaKey, Sha1, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::canonicalize::BodyHasher;
use mail_auth::dkim::{Canonicalization, DkimSigningStream};
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
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
    let Some(split) = find_body(raw) else {
        // Not even a header: nothing signed it.
        return Vec::new();
    };
    let mut check = IncomingCheck::start(raw[..split].to_vec());
    check.write(&raw[split..]);
    check.finish(authenticator).await
}

/// Where the body starts: just past the first empty line.
fn find_body(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

enum AnyBodyHasher {
    Sha1(BodyHasher<<Sha1 as HashImpl>::Context>),
    Sha256(BodyHasher<<Sha256 as HashImpl>::Context>),
}

/// The signatures of one incoming message, checked while its body streams
/// by: the header section is kept, the body only hashed (once per
/// canonicalization and hash algorithm its signatures use), so a large
/// message costs no memory.
pub struct IncomingCheck {
    header_section: Vec<u8>,
    hashers: Vec<(Canonicalization, HashAlgorithm, u64, AnyBodyHasher)>,
}

impl std::fmt::Debug for IncomingCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingCheck").field("body_hashes", &self.hashers.len()).finish_non_exhaustive()
    }
}

impl IncomingCheck {
    /// Starts with the header section, up to and including the empty line.
    pub fn start(header_section: Vec<u8>) -> IncomingCheck {
        let hashers = match AuthenticatedMessage::parse(&header_section) {
            None => Vec::new(),
            Some(message) => message
                .body_hashes
                .iter()
                .map(|(canonicalization, algorithm, length, _)| {
                    let hasher = match algorithm {
                        HashAlgorithm::Sha1 => AnyBodyHasher::Sha1(BodyHasher::new(Sha1::hasher(), *canonicalization, *length)),
                        HashAlgorithm::Sha256 => AnyBodyHasher::Sha256(BodyHasher::new(Sha256::hasher(), *canonicalization, *length)),
                    };
                    (*canonicalization, *algorithm, *length, hasher)
                })
                .collect(),
        };
        IncomingCheck { header_section, hashers }
    }

    /// Feeds body bytes.
    pub fn write(&mut self, body: &[u8]) {
        for (_, _, _, hasher) in &mut self.hashers {
            match hasher {
                AnyBodyHasher::Sha1(h) => h.write(body),
                AnyBodyHasher::Sha256(h) => h.write(body),
            }
        }
    }

    /// Checks every signature, fetching keys from DNS.
    pub async fn finish(self, authenticator: &MessageAuthenticator) -> Vec<SignatureCheck> {
        let Some(mut message) = AuthenticatedMessage::parse(&self.header_section) else {
            return Vec::new();
        };
        let hashes: Vec<(Canonicalization, HashAlgorithm, u64, Vec<u8>)> = self
            .hashers
            .into_iter()
            .map(|(c, a, l, hasher)| {
                let digest = match hasher {
                    AnyBodyHasher::Sha1(h) => h.finish().0.complete().as_ref().to_vec(),
                    AnyBodyHasher::Sha256(h) => h.finish().0.complete().as_ref().to_vec(),
                };
                (c, a, l, digest)
            })
            .collect();
        // The parse above saw an empty body; put in the hashes of the real one.
        for (c, a, l, digest) in &mut message.body_hashes {
            if let Some((.., hash)) = hashes.iter().find(|(hc, ha, hl, _)| hc == c && ha == a && hl == l) {
                digest.clone_from(hash);
            }
        }
        verify(authenticator, &message).await
    }
}

async fn verify(authenticator: &MessageAuthenticator, message: &AuthenticatedMessage<'_>) -> Vec<SignatureCheck> {
    let outputs = authenticator.verify_dkim(message).await;
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
