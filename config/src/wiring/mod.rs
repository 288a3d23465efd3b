//! The relay's Postfix and Dovecot wiring, rendered from chatmail.ini and
//! the few facts of the host that chatmail.ini does not hold (paths of
//! sockets, service names, the mail user's uid).
//!
//! This is the one place that writes that configuration: the Debian
//! package's maintainer scripts call it through `chatmail-relay render`
//! (keeping only the Debian plumbing: postconf with exact restore, ucf) and
//! the test harness calls it as a library, so the end-to-end tests run the
//! configuration the package ships. Pure: text in, text out, no I/O.
//!
//! What is *not* here is the part a host already has: Debian's
//! `dovecot.conf` and `main.cf` (TLS certificates, listeners, logging), or
//! the harness's own per-instance base config.

mod dovecot;
mod postfix;

pub use dovecot::{render_dovecot, DovecotFiles, DovecotHost, DovecotRelease, Logins, PluginPlace};
pub use postfix::{bots_service_name, render_postfix, MasterService, PostfixHost, PostfixWiring};
