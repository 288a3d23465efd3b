//! Helpers shared by the unit tests.

/// Standard base64 with padding (RFC 4648), to build armored test input.
pub use chatmail_config::base64::encode as base64;
