//! Postfix milter for a chatmail relay.
//!
//! Inline in Postfix's `smtpd_milters`, it lets through only OpenPGP-encrypted
//! mail (and chatmail's few cleartext exceptions), checks that senders are
//! who they log in as, limits send rates, signs outgoing mail with DKIM
//! and checks incoming mail's DKIM signatures. Pure checks and policy live in
//! their own modules (`openpgp`, `armor`, `mime`, `policy`, `rate`); the
//! milter glue (`milter`) does the I/O. DKIM: the policy in `dkim`, key
//! files and DNS records in `dkim_keys`, signing and checking in `dkim_io`.

mod armor;
mod dkim;
mod dkim_io;
mod dkim_keys;
mod lines;
mod milter;
mod mime;
mod openpgp;
mod policy;
mod rate;
#[cfg(test)]
mod test_support;

pub use armor::{ArmorChecker, ArmorProblem, ArmorSummary};
pub use dkim::{judge, oversigned_headers, CheckOutcome, DkimVerdict, SignatureCheck, SIGNED_HEADERS};
pub use dkim_io::{authenticator, check_signatures, txt_records, IncomingCheck, MessageSigning};
pub use dkim_keys::{compare_record, generate, load_signers, public_key, record_name, record_value, zone_record, KeyKind, KeySource, Signers};
pub use milter::{run, DkimSettings, MailOrigin, MilterSettings, METRICS};
pub use mime::{check_message, parse_content_type, ContentType, EncryptedBodyChecker, MimeProblem};
pub use policy::{
    decide, encryption_needed, from_address, is_secure_join, AcceptReason, Body, Decision, Direction, Envelope, MessageFacts,
    Passthrough, Reply, CLEARTEXT_KEEP_LIMIT,
};
pub use rate::{AccountFacts, Limited, Rate, RatingRules, SendRateLimiter};
pub use openpgp::{check_packets, PacketChecker, PacketProblem};
