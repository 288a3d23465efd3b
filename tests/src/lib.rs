//! Test harness for the chatmail relay: starts isolated local relays (a real
//! Postfix and a real Dovecot with their own config directories, loopback
//! ports and scratch directory) and tears them down, so tests run in
//! parallel and leave nothing running even when they fail. `make run` uses
//! the same code through the `chatmail-local-relay` binary.
//!
//! Needs root and the Debian packages installed by `scripts/setup-host.sh`.

mod client;
pub mod dkim;
pub mod dns;
mod dovecot;
mod error;
pub mod bench;
pub mod mail;
mod ports;
mod postfix;
mod process;
mod push_stub;
mod random;
mod relay;
mod tls;
mod wait;

pub use dns::{test_dns, TestDns};
pub use client::{ImapClient, ImapResponse, Security, SmtpClient, SmtpReply};
pub use error::{Context, Error, Result};
pub use ports::{free_port, PortChoice, Ports};
pub use push_stub::{PushStub, Received};
pub use random::token;
pub use wait::eventually;
pub use relay::{sibling_binary, Account, AccountBackend, Relay, RelayOptions, MAIL_USER};
