//! Dovecot plugin for a chatmail relay (quota, expiry, per-account
//! connection limits, delivery hook).
//!
//! Not implemented yet: arrives with its own issue, built as a cdylib with
//! the C shim in `c-shim/`.
