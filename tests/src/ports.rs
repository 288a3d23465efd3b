//! Free loopback ports for test relays.
//!
//! A port is found by binding 127.0.0.1:0 and reading what the kernel chose.
//! The listener is closed before the server binds, so another process could
//! take the port in between; within this process a registry makes sure two
//! relays started in parallel never get the same port.

use std::collections::BTreeSet;
use std::io;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a loopback TCP port that was free a moment ago and that this
/// process has not handed out before.
pub fn free_port() -> io::Result<u16> {
    loop {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}

/// The TCP ports one relay listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Incoming SMTP from other servers (port 25 on a real relay).
    pub smtp: u16,
    /// Submission with STARTTLS (587 on a real relay).
    pub submission: u16,
    /// Submission with implicit TLS (465 on a real relay).
    pub smtps: u16,
    /// IMAP with STARTTLS (143 on a real relay).
    pub imap: u16,
    /// IMAP with implicit TLS (993 on a real relay).
    pub imaps: u16,
    /// HTTPS: onboarding (`/new`) and the web pages (443 on a real relay).
    pub https: u16,
}

/// Which ports a relay should use: a fixed number, or `None` for a free one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortChoice {
    pub smtp: Option<u16>,
    pub submission: Option<u16>,
    pub smtps: Option<u16>,
    pub imap: Option<u16>,
    pub imaps: Option<u16>,
    pub https: Option<u16>,
}

impl PortChoice {
    /// Defaults of `make run`: the usual ports plus 2000 (2025, 2587, 2465, 2143, 2993, 2443),
    /// high enough to need no privileges and to stay clear of a system mail server.
    pub const LOCAL_DEFAULTS: PortChoice = PortChoice {
        smtp: Some(2025),
        submission: Some(2587),
        smtps: Some(2465),
        imap: Some(2143),
        imaps: Some(2993),
        https: Some(2443),
    };

    /// Resolves every `None` to a free port.
    pub fn resolve(&self) -> io::Result<Ports> {
        let pick = |choice: Option<u16>| match choice {
            Some(port) => Ok(port),
            None => free_port(),
        };
        Ok(Ports {
            smtp: pick(self.smtp)?,
            submission: pick(self.submission)?,
            smtps: pick(self.smtps)?,
            imap: pick(self.imap)?,
            imaps: pick(self.imaps)?,
            https: pick(self.https)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port().expect("port")).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn fixed_choices_are_kept() {
        let choice = PortChoice { smtp: Some(12345), ..PortChoice::default() };
        let ports = choice.resolve().expect("ports");
        assert_eq!(ports.smtp, 12345);
        assert_ne!(ports.imap, 0);
    }
}
