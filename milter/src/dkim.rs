//! The DKIM policy: which headers outgoing signatures cover, and what the
//! outcome of checking an incoming message's signatures means for it.
//! Pure: the signature checks themselves (crypto, DNS) happen in
//! `dkim_io`, which hands their results in as [`SignatureCheck`]s.

use crate::policy::Reply;

/// Headers every outgoing signature covers. Each is also over-signed
/// (listed once more than it occurs), so nobody can add a second From,
/// Subject, … on the way without breaking the signature.
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "Autocrypt",
    "Content-Type",
    "MIME-Version",
];

/// The header list handed to the signer: each name twice. A present header
/// is signed once per occurrence plus one empty instance; an absent one is
/// signed as absent.
pub fn oversigned_headers() -> Vec<String> {
    SIGNED_HEADERS.iter().chain(SIGNED_HEADERS.iter()).map(|h| (*h).to_owned()).collect()
}

/// What checking one DKIM-Signature header found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The signature's `d=` domain, lowercase (`None` if the header did
    /// not even parse).
    pub domain: Option<String>,
    pub outcome: CheckOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Pass,
    /// Broken, tampered with, expired, key not published, …: `why` for the log.
    Invalid { why: String },
    /// The key could not be fetched (timeout, server failure): nobody knows
    /// yet whether the signature is good.
    DnsFailure { why: String },
}

/// What the DKIM checks mean for an incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimVerdict {
    /// A valid signature of the From domain.
    Pass { domain: String },
    /// From is a domain literal (`user@[192.0.2.1]`): there is no domain
    /// that could sign, so no signature is asked for.
    Exempt,
    /// Not a single DKIM-Signature header.
    Missing,
    /// Signatures, but none valid and aligned; `details` for the log.
    Invalid { details: String },
    /// The only aligned signatures could not be checked for lack of DNS
    /// answers: try again later, neither accept nor reject now.
    TempFail { details: String },
}

impl DkimVerdict {
    /// Short form for the log's `reason=` field.
    pub fn log_name(&self) -> String {
        match self {
            DkimVerdict::Pass { domain } => format!("dkim-pass:{domain}"),
            DkimVerdict::Exempt => "dkim-exempt-domain-literal".into(),
            DkimVerdict::Missing => "dkim-missing".into(),
            DkimVerdict::Invalid { details } => format!("dkim-invalid:{details}"),
            DkimVerdict::TempFail { details } => format!("dkim-dns-failure:{details}"),
        }
    }

    /// The SMTP reply for a verdict that refuses the message (`None`: it passes).
    pub fn reply(&self) -> Option<Reply> {
        match self {
            DkimVerdict::Pass { .. } | DkimVerdict::Exempt => None,
            DkimVerdict::Missing => Some(Reply { code: "554", xcode: Some("5.7.1"), text: "No DKIM signature found".into() }),
            DkimVerdict::Invalid { .. } => Some(Reply { code: "554", xcode: Some("5.7.1"), text: "No valid DKIM signature found".into() }),
            DkimVerdict::TempFail { .. } => Some(Reply {
                code: "451",
                xcode: Some("4.7.5"),
                text: "DKIM key lookup failed temporarily, try again later".into(),
            }),
        }
    }
}

/// The domain part of an address if it is a domain literal, e.g. `[192.0.2.1]`.
pub fn is_domain_literal(domain: &str) -> bool {
    domain.starts_with('[') && domain.ends_with(']')
}

/// Judges an incoming message from the domain of its (single) From address
/// and the checks of its signatures. Alignment is strict: only a signature
/// whose `d=` equals the From domain counts.
pub fn judge(from_domain: Option<&str>, checks: &[SignatureCheck]) -> DkimVerdict {
    if from_domain.is_some_and(is_domain_literal) {
        return DkimVerdict::Exempt;
    }
    if checks.is_empty() {
        return DkimVerdict::Missing;
    }
    let aligned = |check: &&SignatureCheck| match (from_domain, check.domain.as_deref()) {
        (Some(from), Some(d)) => from.eq_ignore_ascii_case(d),
        _ => false,
    };
    if let Some(pass) = checks.iter().filter(aligned).find(|c| c.outcome == CheckOutcome::Pass) {
        return DkimVerdict::Pass { domain: pass.domain.clone().unwrap_or_default() };
    }
    let describe = |check: &SignatureCheck| {
        let domain = check.domain.as_deref().unwrap_or("?");
        let outcome = match &check.outcome {
            CheckOutcome::Pass => "pass-but-not-aligned".to_owned(),
            CheckOutcome::Invalid { why } | CheckOutcome::DnsFailure { why } => why.clone(),
        };
        format!("d={domain}:{outcome}").replace(' ', "_")
    };
    let details = checks.iter().map(describe).collect::<Vec<_>>().join(",");
    if checks.iter().filter(aligned).any(|c| matches!(c.outcome, CheckOutcome::DnsFailure { .. })) {
        return DkimVerdict::TempFail { details };
    }
    let details = match from_domain {
        Some(from) => format!("from={from}:{details}"),
        None => format!("no-single-from:{details}"),
    };
    DkimVerdict::Invalid { details }
}

#[cfg(test)]
mod tests;
