//! Dovecot plugin for a chatmail relay, loaded by Dovecot as
//! `mail_plugins = … chatmail` from `lib90_chatmail_plugin.so`.
//!
//! The C shim (`c-shim/`) registers Dovecot's hooks and calls into Rust;
//! `exports` holds every symbol Dovecot or the shim calls, and no panic
//! crosses that boundary. Decisions are plain Rust functions, unit-tested
//! without Dovecot (`login`).
//!
//! Instant IMAP IDLE wake-up (`idle`): new mail reaches an IDLE-ing client
//! at once instead of after Dovecot's 500 ms delay.
//!
//! Also: last-login recording for logins Dovecot's auth cache answered (which
//! chatmail-auth never sees); when a session ends, the adaptive quota
//! (past 75 % of the quota, oldest mail older than 24 h goes until 70 %)
//! and, hourly per account, the expiry of old mail. Dovecot's own quota
//! plugin enforces the hard limit. Per-account connection limits
//! (`connections`); the delivery hook (`delivery`) hands mail to the bot
//! daemon's spool and records push arrivals for chatmail-metadata.

mod bindings;
pub mod connections;
pub mod delivery;
mod exports;
pub mod idle;
mod log;
pub mod login;
mod maintenance;
mod settings;
