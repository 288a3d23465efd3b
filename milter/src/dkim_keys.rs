//! DKIM key files and their DNS records: loading the signing keys the
//! milter uses, making new ones (`chatmail-milter dkim-keygen`), the TXT
//! record to publish, and comparing a published record with a key
//! (`chatmail-milter dkim-check`).
//!
//! Key files are PEM: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
//! OpenDKIM's tools write, so a chatmail relay's existing key works) or
//! PKCS#8; Ed25519 as PKCS#8.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::dkim::oversigned_headers;

/// RSA modulus size of generated keys (RFC 8301: at least 1024, 2048 is
/// what everybody publishes and every verifier handles).
pub const RSA_BITS: usize = 2048;

/// The two key types DKIM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ed25519,
}

impl KeyKind {
    /// The `k=` tag value.
    pub fn tag(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

/// The signers outgoing mail goes through: the RSA key always, the
/// Ed25519 key when configured.
pub struct Signers {
    pub rsa: DkimSigner<RsaKey<Sha256>, Done>,
    pub ed25519: Option<DkimSigner<Ed25519Key, Done>>,
}

impl std::fmt::Debug for Signers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signers").field("ed25519", &self.ed25519.is_some()).finish_non_exhaustive()
    }
}

/// Where a key lives and under which selector it is published.
#[derive(Debug, Clone)]
pub struct KeySource<'a> {
    pub path: &'a Path,
    pub selector: &'a str,
}

fn read_key_der(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the DKIM key {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{} holds no PEM private key: {e}", path.display()))
}

/// Loads the signers for `domain`: relaxed header and simple body
/// canonicalization, SHA-256, the [`crate::dkim::SIGNED_HEADERS`] over-signed.
pub fn load_signers(domain: &str, rsa: KeySource<'_>, ed25519: Option<KeySource<'_>>) -> Result<Signers, String> {
    let rsa_key = RsaKey::<Sha256>::from_key_der(read_key_der(rsa.path)?)
        .map_err(|e| format!("{} is not a usable RSA key: {e}", rsa.path.display()))?;
    let rsa_signer = DkimSigner::from_key(rsa_key)
        .domain(domain)
        .selector(rsa.selector)
        .headers(oversigned_headers())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Simple);
    let ed25519_signer = match ed25519 {
        None => None,
        Some(source) => {
            let key = read_ed25519_key(source.path)?;
            Some(
                DkimSigner::from_key(key)
                    .domain(domain)
                    .selector(source.selector)
                    .headers(oversigned_headers())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Simple),
            )
        }
    };
    Ok(Signers { rsa: rsa_signer, ed25519: ed25519_signer })
}

/// The public key in the form a DKIM record's `p=` holds: for RSA the DER
/// SubjectPublicKeyInfo (as OpenDKIM publishes it), for Ed25519 the 32 raw bytes.
pub fn public_key(path: &Path, kind: KeyKind) -> Result<Vec<u8>, String> {
    match kind {
        KeyKind::Rsa => {
            let key = match &read_key_der(path)? {
                PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der()).map_err(|e| e.to_string()),
                PrivateKeyDer::Pkcs8(k) => rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der()).map_err(|e| e.to_string()),
                _ => Err("not PKCS#1 or PKCS#8".into()),
            }
            .map_err(|e| format!("{} is not a usable RSA key: {e}", path.display()))?;
            let spki = key.to_public_key().to_public_key_der().map_err(|e| format!("encoding the public key: {e}"))?;
            Ok(spki.as_bytes().to_vec())
        }
        KeyKind::Ed25519 => Ok(read_ed25519_key(path)?.public_key()),
    }
}

fn read_ed25519_key(path: &Path) -> Result<Ed25519Key, String> {
    let PrivateKeyDer::Pkcs8(pkcs8) = read_key_der(path)? else {
        return Err(format!("{}: an Ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY)", path.display()));
    };
    // "maybe unchecked": OpenSSL writes PKCS#8 v1 without the public key.
    Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()).map_err(|e| format!("{} is not a usable Ed25519 key: {e}", path.display()))
}

/// The TXT record value: `v=DKIM1; k=…; p=…`.
pub fn record_value(kind: KeyKind, public_key: &[u8]) -> String {
    format!("v=DKIM1; k={}; p={}", kind.tag(), chatmail_config::base64::encode(public_key))
}

/// The DNS name the record goes under.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// The record in zone-file syntax. A TXT string holds at most 255 bytes, so
/// a long value (any RSA-2048 key) is split into several quoted strings,
/// which DNS joins again.
pub fn zone_record(selector: &str, domain: &str, value: &str) -> String {
    let strings: Vec<String> = value.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    let name = record_name(selector, domain);
    if strings.len() == 1 {
        format!("{name}. 3600 IN TXT {}", strings[0])
    } else {
        format!("{name}. 3600 IN TXT ( {} )", strings.join(" "))
    }
}

/// Why a published record does not fit the key (or `Ok` if it does).
pub fn compare_record(published: &str, kind: KeyKind, public_key: &[u8]) -> Result<(), String> {
    let mut version = None;
    let mut key_type = "rsa".to_owned();
    let mut p = None;
    for tag in published.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            if tag.trim().is_empty() {
                continue;
            }
            return Err(format!("tag {:?} has no '='", tag.trim()));
        };
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match name.trim() {
            "v" => version = Some(value),
            "k" => key_type = value,
            "p" => p = Some(value),
            _ => {}
        }
    }
    if version.as_deref().is_some_and(|v| v != "DKIM1") {
        return Err(format!("v={} instead of v=DKIM1", version.unwrap_or_default()));
    }
    if key_type != kind.tag() {
        return Err(format!("k={key_type}, but the key file holds an {} key", kind.tag()));
    }
    match p.as_deref() {
        None => Err("no p= tag".into()),
        Some("") => Err("p= is empty: the key is revoked".into()),
        Some(p) if p == chatmail_config::base64::encode(public_key) => Ok(()),
        Some(_) => Err("p= holds a different public key than the key file".into()),
    }
}

/// Writes a new key of `kind` to `path` (readable by its owner only);
/// refuses to replace an existing file.
pub fn generate(path: &Path, kind: KeyKind) -> Result<(), String> {
    let pem = match kind {
        KeyKind::Rsa => {
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).map_err(|e| format!("generating an RSA key: {e}"))?;
            key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| format!("encoding the RSA key: {e}"))?.to_string()
        }
        KeyKind::Ed25519 => {
            let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|e| format!("generating an Ed25519 key: {e}"))?;
            pem("PRIVATE KEY", &pkcs8)
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!("{} exists already; not replacing a key that may be published", path.display()),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = chatmail_config::base64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_records_are_split_into_255_byte_strings() {
        let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
        let zone = zone_record("opendkim", "chat.example.org", &value);
        assert!(zone.starts_with("opendkim._domainkey.chat.example.org. 3600 IN TXT ( \""), "{zone}");
        let strings: Vec<&str> = zone.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), value);
        let short = zone_record("ed25519", "a.example", "v=DKIM1; k=ed25519; p=abc");
        assert_eq!(short, "ed25519._domainkey.a.example. 3600 IN TXT \"v=DKIM1; k=ed25519; p=abc\"");
    }

    #[test]
    fn published_records_compared_with_the_key() {
        let key = [1u8, 2, 3, 4, 5, 6];
        let p = chatmail_config::base64::encode(&key);
        let cases: Vec<(String, KeyKind, Result<(), &str>)> = vec![
            (format!("v=DKIM1; k=rsa; p={p}"), KeyKind::Rsa, Ok(())),
            (format!("v=DKIM1; p={p}"), KeyKind::Rsa, Ok(())),
            (format!("v=DKIM1;k=rsa;t=s;p={}  {}", &p[..4], &p[4..]), KeyKind::Rsa, Ok(())),
            (format!("v=DKIM1; k=ed25519; p={p}"), KeyKind::Ed25519, Ok(())),
            (format!("v=DKIM1; p={p}"), KeyKind::Ed25519, Err("k=rsa, but the key file holds an ed25519 key")),
            ("v=DKIM1; k=rsa; p=AAAA".into(), KeyKind::Rsa, Err("p= holds a different public key")),
            ("v=DKIM1; k=rsa; p=".into(), KeyKind::Rsa, Err("revoked")),
            ("v=DKIM1; k=rsa".into(), KeyKind::Rsa, Err("no p= tag")),
            (format!("v=DKIM2; p={p}"), KeyKind::Rsa, Err("v=DKIM2 instead of v=DKIM1")),
            (format!("v=DKIM1; garbage; p={p}"), KeyKind::Rsa, Err("tag \"garbage\" has no '='")),
        ];
        for (record, kind, want) in cases {
            let got = compare_record(&record, kind, &key);
            match want {
                Ok(()) => assert_eq!(got, Ok(()), "{record}"),
                Err(part) => assert!(got.as_ref().is_err_and(|e| e.contains(part)), "{record}: {got:?}"),
            }
        }
    }

    #[test]
    fn generated_keys_load_and_match_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (kind, name) in [(KeyKind::Rsa, "rsa.private"), (KeyKind::Ed25519, "ed.private")] {
            let path = dir.path().join(name);
            generate(&path, kind).expect("generate");
            let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).expect("stat").permissions());
            assert_eq!(mode & 0o777, 0o600, "{name}");
            let err = generate(&path, kind).expect_err("no overwrite");
            assert!(err.contains("exists already"), "{err}");
            let public = public_key(&path, kind).expect("public key");
            compare_record(&record_value(kind, &public), kind, &public).expect("own record matches");
        }
        let signers = load_signers(
            "a.example",
            KeySource { path: &dir.path().join("rsa.private"), selector: "opendkim" },
            Some(KeySource { path: &dir.path().join("ed.private"), selector: "ed25519" }),
        )
        .expect("signers");
        assert!(signers.ed25519.is_some());
        // The RSA public key in the record is SubjectPublicKeyInfo, as OpenDKIM publishes it.
        let spki = public_key(&dir.path().join("rsa.private"), KeyKind::Rsa).expect("public");
        assert!(chatmail_config::base64::encode(&spki).starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
    }

    #[test]
    fn unusable_key_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.private");
        let err = load_signers("a.example", KeySource { path: &missing, selector: "s" }, None).expect_err("missing");
        assert!(err.contains("cannot read the DKIM key") && err.contains("missing.private"), "{err}");
        let garbage = dir.path().join("garbage.private");
        std::fs::write(&garbage, "not a key\n").expect("write");
        let err = load_signers("a.example", KeySource { path: &garbage, selector: "s" }, None).expect_err("garbage");
        assert!(err.contains("garbage.private"), "{err}");
    }
}
