//! Postfix milter for a chatmail relay.
//!
//! In progress: the OpenPGP packet check (`openpgp`) is the first piece of
//! the encryption policy. The MIME structure check, sender checks, send-rate
//! limits, the milter glue and DKIM arrive with their issues.

mod armor;
mod mime;
mod openpgp;
mod policy;
mod rate;

pub use armor::{ArmorChecker, ArmorProblem, ArmorSummary};
pub use mime::{parse_content_type, ContentType, EncryptedBodyChecker, MimeProblem};
pub use policy::{
    decide, encryption_needed, from_address, is_secure_join, AcceptReason, Body, Decision, Direction, Envelope, MessageFacts,
    Passthrough, Reply, CLEARTEXT_KEEP_LIMIT,
};
pub use rate::{AccountFacts, Limited, Rate, RatingRules, SendRateLimiter};
pub use openpgp::{check_packets, PacketChecker, PacketProblem};
