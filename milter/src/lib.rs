//! Postfix milter for a chatmail relay.
//!
//! Inline in Postfix's `smtpd_milters`, it lets through only OpenPGP-encrypted
//! mail (and chatmail's few cleartext exceptions), checks that senders are
//! who they log in as, and limits send rates. Pure checks and policy live in
//! their own modules (`openpgp`, `armor`, `mime`, `policy`, `rate`); the
//! milter glue (`milter`) does the I/O. DKIM arrives with its own issue.

mod armor;
mod lines;
mod milter;
mod mime;
mod openpgp;
mod policy;
mod rate;
#[cfg(test)]
mod test_support;

pub use armor::{ArmorChecker, ArmorProblem, ArmorSummary};
pub use milter::{run, MilterSettings};
pub use mime::{check_message, parse_content_type, ContentType, EncryptedBodyChecker, MimeProblem};
pub use policy::{
    decide, encryption_needed, from_address, is_secure_join, AcceptReason, Body, Decision, Direction, Envelope, MessageFacts,
    Passthrough, Reply, CLEARTEXT_KEEP_LIMIT,
};
pub use rate::{AccountFacts, Limited, Rate, RatingRules, SendRateLimiter};
pub use openpgp::{check_packets, PacketChecker, PacketProblem};
