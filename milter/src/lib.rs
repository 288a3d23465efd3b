//! Postfix milter for a chatmail relay.
//!
//! Not implemented yet: the encryption policy, sender checks, send-rate
//! limits and DKIM arrive with their own issues. The crate exists so the
//! workspace layout is settled from the start.
