//! DKIM for test relays and for the "other servers" tests play: one RSA key
//! for every test domain (a test-only key, committed with its DNS record),
//! published in the process's [`crate::test_dns`] under the selector the
//! relays use.

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::dns::TestDns;
use crate::error::{Error, Result};

/// The test key (PKCS#1 PEM, as `chatmail-milter dkim-keygen` writes it).
/// Test use only: it is public.
pub const TEST_KEY_PEM: &str = include_str!("dkim-test-key.pem");
/// Its TXT record value.
pub const TEST_KEY_RECORD: &str = include_str!("dkim-test-key.txt");
/// The selector test relays and signing helpers use (chatmail's).
pub const SELECTOR: &str = "opendkim";

/// Publishes the test key for `domain` under `selector` in `dns`.
pub fn publish(dns: &TestDns, selector: &str, domain: &str) {
    dns.set_txt(&format!("{selector}._domainkey.{domain}"), TEST_KEY_RECORD.trim());
}

/// How [`sign_with`] signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Valid for the current time.
    Valid,
    /// Valid for one second (`x=` one second after `t=`); the helper waits
    /// until it has expired before returning.
    Expired,
}

/// `message` (CRLF line ends) with a DKIM-Signature of `domain` on top, the
/// test key published for `domain` in the process's test DNS.
pub fn sign(message: &str, domain: &str) -> Result<String> {
    sign_with(message, domain, Signing::Valid)
}

pub fn sign_with(message: &str, domain: &str, how: Signing) -> Result<String> {
    publish(crate::dns::test_dns()?, SELECTOR, domain);
    let der = PrivateKeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes()).map_err(|e| Error::new(format!("test key: {e}")))?;
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| Error::new(format!("test key: {e}")))?;
    let mut signer = DkimSigner::from_key(key)
        .domain(domain)
        .selector(SELECTOR)
        .headers(["From", "To", "Subject", "Date", "Message-ID", "Content-Type", "MIME-Version"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    if how == Signing::Expired {
        signer = signer.expiration(1);
    }
    let signature = signer.sign(message.as_bytes()).map_err(|e| Error::new(format!("signing: {e}")))?;
    if how == Signing::Expired {
        std::thread::sleep(std::time::Duration::from_millis(2100));
    }
    Ok(format!("{}{message}", signature.to_header()))
}
