//! A bot's Delta Chat identity and what it knows about the people it
//! talks to, in its state directory (mode 0700, the daemon's user only):
//!
//! ```text
//! key.asc        the bot account's OpenPGP secret key (0600)
//! submit-token   the token the daemon submits the bot's mail with (0600;
//!                its hash is `chatmail-bot-submit` in the account's home)
//! invite.json    the Secure-Join invite number and auth secret
//! peers.json     contacts (keys, verified, consent, sends) and groups
//! ```
//!
//! These files survive an uninstall, so a reinstalled bot keeps its key
//! and its contacts.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::openpgp::{PublicKey, SecretKey};
use crate::state::write_atomically;

/// How many of its own message ids a bot remembers per chat (what it may
/// delete).
pub const SENT_KEPT: usize = 100;

/// The Secure-Join tokens of the bot's invite link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub invite_number: String,
    pub auth: String,
}

/// Someone the bot has a key for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The binary public key, base64.
    pub key: String,
    pub fingerprint: String,
    /// Secure-Join with the bot completed with this key.
    #[serde(default)]
    pub verified: bool,
    /// Wrote to the bot 1:1 (and has not sent `/stop` since): consent to
    /// be added to groups by the bot.
    #[serde(default)]
    pub consent: bool,
    /// Unix seconds of the bot's messages to this contact in the last hour.
    #[serde(default)]
    pub sends: Vec<u64>,
}

/// A group the bot is a member of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    /// Everyone but the bot.
    pub members: Vec<String>,
    /// The bot accepted the invitation (an `accept` action): only then
    /// does it write to the group.
    #[serde(default)]
    pub accepted: bool,
}

/// What a bot knows about its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    #[serde(default)]
    pub contacts: BTreeMap<String, Contact>,
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    /// The bot's own message ids per chat (`single:{addr}` or the group id).
    #[serde(default)]
    pub sent: BTreeMap<String, Vec<String>>,
}

impl Peers {
    pub fn key_of(&self, addr: &str) -> Option<PublicKey> {
        let contact = self.contacts.get(addr)?;
        PublicKey::from_bytes(&chatmail_config::base64::decode(contact.key.as_bytes()).ok()?).ok()
    }

    /// Stores `key` for `addr`; a different key than before is no longer
    /// verified (Secure-Join vouched for the old one only).
    pub fn learn_key(&mut self, addr: &str, key: &PublicKey) {
        let fingerprint = key.fingerprint();
        let contact = self.contacts.entry(addr.to_owned()).or_default();
        if contact.fingerprint != fingerprint {
            contact.verified = false;
            contact.fingerprint = fingerprint;
            contact.key = chatmail_config::base64::encode(&key.to_bytes());
        }
    }

    pub fn remember_sent(&mut self, chat: &str, message_id: &str) {
        let ids = self.sent.entry(chat.to_owned()).or_default();
        ids.push(message_id.to_owned());
        if ids.len() > SENT_KEPT {
            ids.drain(..ids.len() - SENT_KEPT);
        }
    }

    pub fn has_sent(&self, chat: &str, message_id: &str) -> bool {
        self.sent.get(chat).is_some_and(|ids| ids.iter().any(|id| id == message_id))
    }

    /// Whether the bot may send one more message to `addr` at `now`, with
    /// `per_hour` allowed; counts it if so.
    pub fn count_send(&mut self, addr: &str, now: u64, per_hour: u32) -> bool {
        let contact = self.contacts.entry(addr.to_owned()).or_default();
        contact.sends.retain(|&at| at + 3600 > now);
        if contact.sends.len() >= per_hour as usize {
            return false;
        }
        contact.sends.push(now);
        true
    }
}

/// A bot's identity files.
#[derive(Debug, Clone)]
pub struct Identity {
    pub dir: PathBuf,
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(context(e, "reading", path)),
    }
}

impl Identity {
    pub fn new(dir: PathBuf) -> Identity {
        Identity { dir }
    }

    pub fn key(&self) -> io::Result<Option<SecretKey>> {
        let path = self.dir.join("key.asc");
        match read_optional(&path)? {
            Some(text) => SecretKey::from_armor(&text).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            None => Ok(None),
        }
    }

    pub fn store_key(&self, key: &SecretKey) -> io::Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| context(e, "creating", &self.dir))?;
        write_atomically(&self.dir.join("key.asc"), key.to_armor().as_bytes(), 0o600)
    }

    /// The submission token, made (random, 32 characters) if there is none.
    /// The second value says whether it is new.
    pub fn submit_token(&self) -> io::Result<(String, bool)> {
        let path = self.dir.join("submit-token");
        if let Some(token) = read_optional(&path)? {
            return Ok((token.trim().to_owned(), false));
        }
        let token = crate::delta::random_token(32);
        fs::create_dir_all(&self.dir).map_err(|e| context(e, "creating", &self.dir))?;
        write_atomically(&path, token.as_bytes(), 0o600)?;
        Ok((token, true))
    }

    /// The invite tokens, made if there are none.
    pub fn invite(&self) -> io::Result<Invite> {
        let path = self.dir.join("invite.json");
        if let Some(text) = read_optional(&path)? {
            if let Ok(invite) = serde_json::from_str(&text) {
                return Ok(invite);
            }
        }
        let invite = Invite { invite_number: crate::delta::random_token(24), auth: crate::delta::random_token(24) };
        fs::create_dir_all(&self.dir).map_err(|e| context(e, "creating", &self.dir))?;
        write_atomically(&path, &serde_json::to_vec_pretty(&invite).map_err(io::Error::other)?, 0o600)?;
        Ok(invite)
    }

    pub fn peers(&self) -> io::Result<Peers> {
        let path = self.dir.join("peers.json");
        match read_optional(&path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            None => Ok(Peers::default()),
        }
    }

    pub fn save_peers(&self, peers: &Peers) -> io::Result<()> {
        write_atomically(&self.dir.join("peers.json"), &serde_json::to_vec(peers).map_err(io::Error::other)?, 0o600)
    }
}

/// Percent-encodes `text` for the invite link (letters, digits, `.`, `_`
/// stay; a space becomes `+`, as Delta Chat writes names).
fn link_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The bot's invite link: scanning it in Delta Chat starts Secure-Join's
/// setup-contact protocol with the bot (answered by the host). `v=3`
/// offers protocol version 3 (the request encrypted with the invite's
/// secret); `i=` stays for clients that only know the legacy protocol.
pub fn invite_link(fingerprint: &str, addr: &str, name: &str, invite: &Invite) -> String {
    let name: String = name.chars().take(25).collect();
    format!(
        "https://i.delta.chat/#{fingerprint}&v=3&i={}&s={}&a={}&n={}",
        invite.invite_number,
        invite.auth,
        link_encode(addr),
        link_encode(&name)
    )
}

/// `text` as a QR code drawn with block characters (for a plain-text
/// report; dark modules are spaces on a light frame so it scans from a
/// dark-on-light or light-on-dark screen alike when shown as is).
pub fn qr_text(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::unicode::Dense1x2>().dark_color(qrcode::render::unicode::Dense1x2::Light).light_color(qrcode::render::unicode::Dense1x2::Dark).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_links() {
        let invite = Invite { invite_number: "INV_number-1".into(), auth: "AUTH_secret-2".into() };
        assert_eq!(
            invite_link("ABCD", "echo.bot1@chat.example", "Echo Bot ü", &invite),
            "https://i.delta.chat/#ABCD&v=3&i=INV_number-1&s=AUTH_secret-2&a=echo.bot1%40chat.example&n=Echo+Bot+%C3%BC"
        );
        assert!(qr_text("https://i.delta.chat/#ABCD").is_some_and(|q| q.lines().count() > 10));
    }

    #[test]
    fn files_and_peers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::new(dir.path().join("bot"));
        assert!(identity.key().expect("read").is_none());
        let key = SecretKey::generate("bot@chat.example").expect("key");
        identity.store_key(&key).expect("store");
        assert_eq!(identity.key().expect("read").map(|k| k.public()), Some(key.public()));
        let (token, new) = identity.submit_token().expect("token");
        assert!(new && token.len() == 32);
        assert_eq!(identity.submit_token().expect("token"), (token, false));
        assert_eq!(identity.invite().expect("invite"), identity.invite().expect("invite"));

        let mut peers = identity.peers().expect("peers");
        let alice = SecretKey::generate("alice@example.org").expect("key").public();
        peers.learn_key("alice@example.org", &alice);
        peers.contacts.get_mut("alice@example.org").expect("alice").verified = true;
        peers.learn_key("alice@example.org", &alice);
        assert!(peers.contacts["alice@example.org"].verified, "same key: still verified");
        let other = SecretKey::generate("alice@example.org").expect("key").public();
        peers.learn_key("alice@example.org", &other);
        assert!(!peers.contacts["alice@example.org"].verified, "a new key is not verified");
        assert_eq!(peers.key_of("alice@example.org"), Some(other));
        assert!(peers.count_send("alice@example.org", 1000, 2) && peers.count_send("alice@example.org", 1001, 2));
        assert!(!peers.count_send("alice@example.org", 1002, 2), "third in an hour");
        assert!(peers.count_send("alice@example.org", 4601, 2), "an hour later");
        for i in 0..SENT_KEPT + 5 {
            peers.remember_sent("g1", &format!("m{i}"));
        }
        assert!(!peers.has_sent("g1", "m0") && peers.has_sent("g1", &format!("m{}", SENT_KEPT + 4)));
        identity.save_peers(&peers).expect("save");
        assert_eq!(identity.peers().expect("peers"), peers);
    }
}
