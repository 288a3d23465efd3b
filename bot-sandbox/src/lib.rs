//! Daemon that runs WebAssembly Delta Chat bots per delivered mail.
//!
//! Not implemented yet: arrives with its own issue.
