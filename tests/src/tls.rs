//! The relay's self-signed certificate, and TLS client settings that trust
//! exactly that certificate (pinning, not "accept anything").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::{Context, Error, Result};

/// Paths of a generated certificate and its key.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub cert_der: Vec<u8>,
}

/// Generates a self-signed ECDSA P-256 certificate for `domain` (and
/// 127.0.0.1) into `dir`, valid for ten years.
pub fn generate(dir: &Path, domain: &str) -> Result<Certificate> {
    let cert_pem = dir.join("cert.pem");
    let key_pem = dir.join("key.pem");
    let cert_der_path = dir.join("cert.der");
    run_openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-sha256",
        "-days",
        "3650",
        "-nodes",
        "-subj",
        &format!("/CN={domain}"),
        "-addext",
        &format!("subjectAltName=DNS:{domain},DNS:*.{domain},IP:127.0.0.1"),
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        path_str(&key_pem)?,
        "-out",
        path_str(&cert_pem)?,
    ])?;
    run_openssl(&["x509", "-in", path_str(&cert_pem)?, "-outform", "DER", "-out", path_str(&cert_der_path)?])?;
    let cert_der = std::fs::read(&cert_der_path).context(|| format!("reading {}", cert_der_path.display()))?;
    Ok(Certificate { cert_pem, key_pem, cert_der })
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::new(format!("path {} is not UTF-8", path.display())))
}

fn run_openssl(args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context(|| "running openssl (is the openssl package installed? run scripts/setup-host.sh)".into())?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// rustls client settings that accept only the certificate `cert_der`.
pub fn pinned_client_config(cert_der: &[u8]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate { cert_der: cert_der.to_vec(), provider: provider.clone() });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
    // The ring provider supports the default protocol versions; failing here
    // would be a build misconfiguration, not a runtime condition.
    #[allow(clippy::expect_used)]
    Arc::new(config.expect("ring supports TLS 1.2 and 1.3"))
}

#[derive(Debug)]
struct PinnedCertificate {
    cert_der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert_der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("server certificate is not the test relay's".into()))
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
