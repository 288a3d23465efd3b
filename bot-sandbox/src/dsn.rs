//! Delivery status notifications (RFC 3464) to a bot account: the bounce
//! a mail server sends when the bot's message could not be delivered.
//! They are not encrypted, so the gate would refuse them as
//! `not-encrypted`, which tells the operator that someone wrote to the
//! bot in cleartext. They are read here instead, for the recipients the
//! bot's message did not reach.

use mail_parser::{MessageParser, MimeHeaders};

/// One recipient's entry in a delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecipientStatus {
    /// The address the report is about (`Final-Recipient`), lowercase.
    pub recipient: String,
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded`
    /// (lowercase; empty if the report has none).
    pub action: String,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The remote server's or the reporting MTA's words, unfolded to one
    /// line, without the type (`smtp;`, `X-Postfix;`).
    pub diagnostic: String,
}

impl RecipientStatus {
    /// The message will not reach this recipient (no more tries).
    pub fn failed(&self) -> bool {
        self.action == "failed"
    }
}

/// Whether `message` (its headers suffice) is a delivery status
/// notification (`multipart/report; report-type=delivery-status`).
pub(crate) fn is_delivery_report(message: &mail_parser::Message<'_>) -> bool {
    message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct.attribute("report-type").is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    })
}

/// The recipients a delivery status notification (see
/// [`is_delivery_report`]) reports on; none if it has no readable status
/// part.
pub(crate) fn recipient_statuses(mail: &[u8]) -> Vec<RecipientStatus> {
    let Some(message) = MessageParser::default().parse(mail) else { return Vec::new() };
    let status_part = message.parts.iter().find(|part| {
        part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("delivery-status") || s.eq_ignore_ascii_case("global-delivery-status"))
        })
    });
    status_part.map(|part| recipient_fields(&String::from_utf8_lossy(part.contents()))).unwrap_or_default()
}

/// The per-recipient field groups of a `message/delivery-status` body:
/// groups of header-like fields separated by blank lines; the first
/// (per-message) group has no `Final-Recipient` and is skipped.
fn recipient_fields(body: &str) -> Vec<RecipientStatus> {
    let mut reports = Vec::new();
    for group in body.replace("\r\n", "\n").split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in group.lines() {
            if line.starts_with([' ', '\t']) {
                // A folded line continues the field before it.
                if let Some((_, value)) = fields.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let Some(recipient) = field("final-recipient").or(field("original-recipient")) else { continue };
        reports.push(RecipientStatus {
            recipient: without_type(recipient).trim_matches(['<', '>']).to_ascii_lowercase(),
            action: field("action").unwrap_or("").to_ascii_lowercase(),
            status: field("status").unwrap_or("").to_owned(),
            diagnostic: field("diagnostic-code").map(without_type).unwrap_or("").to_owned(),
        });
    }
    reports
}

/// A typed field's value without its type: `rfc822; a@b` → `a@b`.
fn without_type(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, rest)| rest).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reports").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn status(recipient: &str, action: &str, status: &str, diagnostic: &str) -> RecipientStatus {
        RecipientStatus { recipient: recipient.into(), action: action.into(), status: status.into(), diagnostic: diagnostic.into() }
    }

    /// The recipients if `mail` is a delivery report, as the daemon reads it.
    fn delivery_report(mail: &[u8]) -> Option<Vec<RecipientStatus>> {
        let headers = MessageParser::default().parse_headers(mail);
        headers.is_some_and(|h| is_delivery_report(&h)).then(|| recipient_statuses(mail))
    }

    #[test]
    fn reports_are_read_and_other_mail_is_not_one() {
        let cases: &[(&str, Option<Vec<RecipientStatus>>)] = &[
            (
                "failed-one.eml",
                Some(vec![status(
                    "alice@example.org",
                    "failed",
                    "5.4.4",
                    "Host or domain name not found. Name service error for name=example.org type=A: Host not found",
                )]),
            ),
            (
                "delayed-failed-delivered.eml",
                Some(vec![
                    status("bob@example.net", "delayed", "4.2.2", "452 4.2.2 Mailbox full"),
                    status("carol@example.net", "failed", "5.1.1", "550 5.1.1 <carol@example.net>: Recipient address rejected: User unknown"),
                    status("dave@example.net", "delivered", "2.0.0", ""),
                ]),
            ),
            ("no-status-part.eml", Some(Vec::new())),
            // A read receipt is a report too, but not about delivery.
            ("read-receipt.eml", None),
        ];
        for (name, expected) in cases {
            assert_eq!(&delivery_report(&fixture(name)), expected, "{name}");
        }
        let plain = b"From: alice@example.org\r\nTo: bot@chatmail.test\r\nSubject: hi\r\n\r\nhello\r\n";
        assert_eq!(delivery_report(plain), None);
        assert_eq!(delivery_report(b""), None);
        assert_eq!(delivery_report(b"\x00\xff garbage"), None);
    }

    #[test]
    fn only_a_failed_action_is_a_failure() {
        for (action, failed) in [("failed", true), ("delayed", false), ("delivered", false), ("relayed", false), ("", false)] {
            assert_eq!(status("a@b", action, "", "").failed(), failed, "{action}");
        }
    }
}
