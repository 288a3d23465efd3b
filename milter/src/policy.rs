//! The encryption and sender policy: given what the milter learned about a
//! message, accept or reject it. Pure: no I/O, no clock; the caller looks up
//! which recipients enforce encryption and passes the answers in.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::armor::ArmorSummary;

/// Longest cleartext message (headers and body) kept to test the
/// exceptions for unencrypted mail; those messages are all tiny.
pub const CLEARTEXT_KEEP_LIMIT: usize = 64 * 1024;

/// Where a message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Submitted by a logged-in account (the SASL login, lowercase).
    Outgoing { login: String },
    /// From another server.
    Incoming,
    /// Made on the relay itself (Postfix's bounces, `sendmail` on the host),
    /// seen through `non_smtpd_milters`: not checked, only signed.
    Local,
}

impl Direction {
    pub fn name(&self) -> &'static str {
        match self {
            Direction::Outgoing { .. } => "outgoing",
            Direction::Incoming => "incoming",
            Direction::Local => "local",
        }
    }
}

/// The SMTP envelope, addresses lowercase; `mail_from` is empty for `<>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub direction: Direction,
    pub mail_from: String,
    pub rcpts: Vec<String>,
}

/// What the body check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A valid RFC 3156 encrypted message.
    Encrypted(ArmorSummary),
    /// Anything else; `why` says what is wrong, for the log.
    NotEncrypted { why: String },
}

/// An SMTP reply for a refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: &'static str,
    pub xcode: Option<&'static str>,
    pub text: String,
}

/// The reply chatmail clients know for unencrypted mail.
pub fn encryption_needed() -> Reply {
    Reply { code: "523", xcode: None, text: "Encryption Needed: Invalid Unencrypted Mail".into() }
}

/// Why a message was accepted (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptReason {
    Encrypted,
    SecureJoin,
    AutocryptSetupMessage,
    DeliveryStatusNotification,
    PassthroughSender,
    PassthroughRecipients,
    NoRecipientEnforcesEncryption,
    Local,
}

impl AcceptReason {
    pub fn name(self) -> &'static str {
        match self {
            AcceptReason::Encrypted => "encrypted",
            AcceptReason::SecureJoin => "securejoin",
            AcceptReason::AutocryptSetupMessage => "autocrypt-setup-message",
            AcceptReason::DeliveryStatusNotification => "dsn",
            AcceptReason::PassthroughSender => "passthrough-sender",
            AcceptReason::PassthroughRecipients => "passthrough-recipients",
            AcceptReason::NoRecipientEnforcesEncryption => "cleartext-allowed-by-recipients",
            AcceptReason::Local => "local",
        }
    }
}

/// The outcome for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept {
        reason: AcceptReason,
        /// Incoming mail whose From differs from the envelope sender gets
        /// the null sender, so no bounce goes to a possibly forged address.
        reset_sender: bool,
    },
    Reject {
        reply: Reply,
        /// Short reason for the log.
        reason: String,
    },
}

/// Addresses allowed to send or receive cleartext (chatmail's
/// `passthrough_senders` / `passthrough_recipients`; `@domain` entries match a domain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passthrough {
    pub senders: Vec<String>,
    pub recipients: Vec<String>,
}

fn matches_list(list: &[String], addr: &str) -> bool {
    list.iter().any(|entry| {
        if let Some(domain) = entry.strip_prefix('@') {
            addr.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
        } else {
            entry.eq_ignore_ascii_case(addr)
        }
    })
}

/// The single address in a From header value, lowercase; `None` when there
/// is not exactly one.
pub fn from_address(value: &str) -> Option<String> {
    let raw = format!("From: {value}\r\n\r\n");
    let message = MessageParser::default().parse(raw.as_bytes())?;
    let from = message.from()?;
    let mut addresses = from.iter();
    let first = addresses.next()?.address()?.trim().to_ascii_lowercase();
    if addresses.next().is_some() || !first.contains('@') {
        return None;
    }
    Some(first)
}

/// Everything the decision needs besides the envelope.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// Address in the From header, if there was exactly one.
    pub header_from: Option<&'a str>,
    pub body: &'a Body,
    /// The whole message, if it is cleartext and within [`CLEARTEXT_KEEP_LIMIT`].
    pub cleartext: Option<&'a [u8]>,
}

/// Decides about one message. `enforces_encryption(rcpt)` says whether a
/// local recipient's mailbox refuses cleartext (the `enforceE2EEincoming` marker).
pub fn decide(
    envelope: &Envelope,
    facts: MessageFacts<'_>,
    passthrough: &Passthrough,
    enforces_encryption: &dyn Fn(&str) -> bool,
) -> Decision {
    let accept = |reason| Decision::Accept { reason, reset_sender: false };
    match &envelope.direction {
        // Mail the relay makes itself has no client to answer to, and
        // refusing a bounce would only lose it.
        Direction::Local => accept(AcceptReason::Local),
        Direction::Outgoing { login } => {
            if !envelope.mail_from.eq_ignore_ascii_case(login) {
                return Decision::Reject {
                    reply: Reply {
                        code: "553",
                        xcode: Some("5.7.1"),
                        text: format!("Sender address <{}> is not the logged-in account {login}", envelope.mail_from),
                    },
                    reason: "envelope-sender-mismatch".into(),
                };
            }
            if !facts.header_from.is_some_and(|from| from.eq_ignore_ascii_case(login)) {
                return Decision::Reject {
                    reply: Reply {
                        code: "553",
                        xcode: Some("5.7.1"),
                        text: format!("From header does not match the logged-in account {login}"),
                    },
                    reason: "from-header-mismatch".into(),
                };
            }
            match facts.body {
                Body::Encrypted(summary) if summary.has_version_header => Decision::Reject {
                    reply: encryption_needed(),
                    reason: "armor-has-version-header".into(),
                },
                Body::Encrypted(_) => accept(AcceptReason::Encrypted),
                Body::NotEncrypted { why } => {
                    if matches_list(&passthrough.senders, &envelope.mail_from) {
                        return accept(AcceptReason::PassthroughSender);
                    }
                    if !envelope.rcpts.is_empty() && envelope.rcpts.iter().all(|r| matches_list(&passthrough.recipients, r)) {
                        return accept(AcceptReason::PassthroughRecipients);
                    }
                    let message = facts.cleartext.and_then(|raw| MessageParser::default().parse(raw));
                    if let Some(message) = &message {
                        if is_secure_join(message) {
                            return accept(AcceptReason::SecureJoin);
                        }
                        if is_autocrypt_setup_message(message, envelope, login) {
                            return accept(AcceptReason::AutocryptSetupMessage);
                        }
                    }
                    Decision::Reject { reply: encryption_needed(), reason: format!("cleartext: {why}") }
                }
            }
        }
        Direction::Incoming => {
            let reset_sender =
                !envelope.mail_from.is_empty() && !facts.header_from.is_some_and(|from| from.eq_ignore_ascii_case(&envelope.mail_from));
            let accept = |reason| Decision::Accept { reason, reset_sender };
            match facts.body {
                Body::Encrypted(_) => accept(AcceptReason::Encrypted),
                Body::NotEncrypted { why } => {
                    let message = facts.cleartext.and_then(|raw| MessageParser::default().parse(raw));
                    if let Some(message) = &message {
                        if is_delivery_status_notification(message, facts.header_from) {
                            return accept(AcceptReason::DeliveryStatusNotification);
                        }
                        if is_secure_join(message) {
                            return accept(AcceptReason::SecureJoin);
                        }
                    }
                    let enforcing: Vec<&String> = envelope
                        .rcpts
                        .iter()
                        .filter(|r| !matches_list(&passthrough.recipients, r) && enforces_encryption(r))
                        .collect();
                    if enforcing.is_empty() {
                        return accept(AcceptReason::NoRecipientEnforcesEncryption);
                    }
                    Decision::Reject {
                        reply: encryption_needed(),
                        reason: format!("cleartext to {} enforcing recipient(s): {why}", enforcing.len()),
                    }
                }
            }
        }
    }
}

/// A Secure-Join request: header `Secure-Join: vc-request` or `vg-request`,
/// and a multipart body with exactly one text/plain part whose text is that
/// same request.
pub fn is_secure_join(message: &mail_parser::Message<'_>) -> bool {
    let Some(kind) = message.header_raw("Secure-Join").map(|v| v.trim().to_ascii_lowercase()) else {
        return false;
    };
    if kind != "vc-request" && kind != "vg-request" {
        return false;
    }
    let PartType::Multipart(children) = &message.root_part().body else { return false };
    let [only] = children.as_slice() else { return false };
    let Some(part) = message.parts.get(*only as usize) else { return false };
    let is_text_plain = part
        .content_type()
        .is_none_or(|ct| ct.ctype().eq_ignore_ascii_case("text") && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("plain")));
    let PartType::Text(text) = &part.body else { return false };
    let text = text.trim().to_ascii_lowercase();
    is_text_plain && (text == "secure-join: vc-request" || text == "secure-join: vg-request")
}

/// An Autocrypt Setup Message a user sends to themselves: one recipient,
/// which is the sender, Subject `Autocrypt Setup Message`, multipart/mixed.
fn is_autocrypt_setup_message(message: &mail_parser::Message<'_>, envelope: &Envelope, login: &str) -> bool {
    let [rcpt] = envelope.rcpts.as_slice() else { return false };
    if !rcpt.eq_ignore_ascii_case(login) {
        return false;
    }
    if message.subject().map(str::trim) != Some("Autocrypt Setup Message") {
        return false;
    }
    message
        .content_type()
        .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart") && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("mixed")))
}

/// A delivery status notification from a mail server: From
/// `mailer-daemon@…`, an `Auto-Submitted` header other than `no`, and
/// `multipart/report; report-type=delivery-status` (an MDN has
/// report-type=disposition-notification and does not count).
fn is_delivery_status_notification(message: &mail_parser::Message<'_>, header_from: Option<&str>) -> bool {
    let from_daemon = header_from.and_then(|f| f.split_once('@')).is_some_and(|(local, _)| local.eq_ignore_ascii_case("mailer-daemon"));
    let auto_submitted = message.header_raw("Auto-Submitted").map(|v| v.trim().to_ascii_lowercase()).is_some_and(|v| !v.is_empty() && v != "no");
    let report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct.attribute("report-type").is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    from_daemon && auto_submitted && report
}

#[cfg(test)]
mod tests;
