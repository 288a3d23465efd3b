//! What the metadata dict answers besides device tokens: the keys Dovecot
//! passes for IMAP METADATA, and the server metadata Delta Chat reads.
//!
//! Dovecot stores an attribute of a mailbox under `priv/{mailbox GUID}/{key}`
//! (`/private/…`) or `shared/{mailbox GUID}/{key}` (`/shared/…`); server
//! metadata (`GETMETADATA "" (/shared/…)`) is an attribute of the INBOX
//! below `vendor/vendor.dovecot/pvt/server/`. Delta Chat reads
//! `/shared/vendor/deltachat/{maxsmtprecipients,irohrelay,turn}` there.
//!
//! Pure: the TURN secret and the time come from the caller.

use chatmail_config::base64;

use crate::tokens::DEVICETOKEN_KEY;

/// Where Dovecot keeps server metadata inside the INBOX's attributes.
const SERVER_PREFIX: &str = "vendor/vendor.dovecot/pvt/server/";
/// Delta Chat's own server metadata, below [`SERVER_PREFIX`].
const DELTACHAT_PREFIX: &str = "vendor/deltachat/";

/// TURN credentials are valid this long (a client fetches new ones at
/// every connection).
pub const TURN_CREDENTIAL_LIFETIME_SECS: u64 = 5 * 86_400;

/// What a dict key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataKey {
    /// `/private/devicetoken` of a mailbox (Delta Chat sets it on INBOX).
    DeviceToken,
    /// `/shared/vendor/deltachat/{name}` of the server.
    DeltaChatServer(String),
    /// Any other server metadata (`/shared/comment`, `/shared/admin`, …).
    OtherServer,
    /// Any other private or shared mailbox attribute.
    Other,
}

/// Classifies a key as Dovecot sends it (`priv/{guid}/…`, `shared/{guid}/…`).
pub fn classify(key: &str) -> MetadataKey {
    let mut parts = key.splitn(3, '/');
    let (scope, _guid, name) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or(""));
    match scope {
        "priv" if name == DEVICETOKEN_KEY => MetadataKey::DeviceToken,
        "shared" => match name.strip_prefix(SERVER_PREFIX) {
            Some(server) => match server.strip_prefix(DELTACHAT_PREFIX) {
                Some(item) if !item.is_empty() && !item.contains('/') => MetadataKey::DeltaChatServer(item.to_owned()),
                _ => MetadataKey::OtherServer,
            },
            None => MetadataKey::Other,
        },
        _ => MetadataKey::Other,
    }
}

/// A TURN server and the secret it shares with this relay.
#[derive(Clone, PartialEq, Eq)]
pub struct Turn {
    /// `HOST:PORT`.
    pub server: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn").field("server", &self.server).field("secret", &"…").finish()
    }
}

/// Credentials in the TURN REST API scheme (coturn's `use-auth-secret`):
/// the user name is the Unix time the credentials expire, the password the
/// base64 HMAC-SHA1 of the user name keyed with the shared secret. Expiry
/// is rounded up to the hour, so lookups within an hour give the same
/// answer (clients and caches see no churn).
pub fn turn_credentials(secret: &[u8], now: u64) -> (String, String) {
    let expiry = (now + TURN_CREDENTIAL_LIFETIME_SECS).div_ceil(3600) * 3600;
    let username = expiry.to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let password = base64::encode(ring::hmac::sign(&key, username.as_bytes()).as_ref());
    (username, password)
}

/// The server metadata this relay serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    pub max_recipients_per_message: u32,
    pub iroh_relay: Option<String>,
    pub turn: Option<Turn>,
}

impl ServerMetadata {
    /// The value of `/shared/vendor/deltachat/{name}`; `None`: no value
    /// (Dovecot answers NIL, never an error).
    pub fn value(&self, name: &str, now: u64) -> Option<String> {
        match name {
            "maxsmtprecipients" => Some(self.max_recipients_per_message.to_string()),
            "irohrelay" => self.iroh_relay.clone(),
            "turn" => self.turn.as_ref().map(|turn| {
                let (username, password) = turn_credentials(&turn.secret, now);
                format!("{}:{username}:{password}", turn.server)
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let guid = "43f5f508a7ea0366dff30200c15250e3";
        let table = [
            (format!("priv/{guid}/devicetoken"), MetadataKey::DeviceToken),
            (format!("priv/{guid}/other"), MetadataKey::Other),
            (format!("priv/{guid}/devicetoken/x"), MetadataKey::Other),
            (format!("shared/{guid}/devicetoken"), MetadataKey::Other),
            (format!("shared/{guid}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/turn"), MetadataKey::DeltaChatServer("turn".into())),
            (format!("shared/{guid}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/irohrelay"), MetadataKey::DeltaChatServer("irohrelay".into())),
            (format!("shared/{guid}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/a/b"), MetadataKey::OtherServer),
            (format!("shared/{guid}/vendor/vendor.dovecot/pvt/server/comment"), MetadataKey::OtherServer),
            (format!("shared/{guid}/comment"), MetadataKey::Other),
            ("devicetoken".to_owned(), MetadataKey::Other),
            (String::new(), MetadataKey::Other),
        ];
        for (key, want) in table {
            assert_eq!(classify(&key), want, "{key}");
        }
    }

    #[test]
    fn turn_credentials_follow_the_rest_api_scheme() {
        // HMAC-SHA1 of "1800432000" keyed "secret", from Python's hmac module.
        let (user, password) = turn_credentials(b"secret", 1_800_000_000);
        assert_eq!(user, "1800432000");
        assert_eq!(password, "RAfJBbwdCc2h3zziiACwnYP+oTk=");
        // Stable within the hour, then moving on.
        assert_eq!(turn_credentials(b"secret", 1_800_000_000 - 3599).0, user);
        assert_eq!(turn_credentials(b"secret", 1_800_003_600).0, "1800435600");
        assert_eq!(turn_credentials(b"secret", 1_800_003_601).0, "1800439200");
        assert_ne!(turn_credentials(b"other", 1_800_000_000).1, password);
    }

    #[test]
    fn values() {
        let mut server = ServerMetadata { max_recipients_per_message: 1000, iroh_relay: None, turn: None };
        assert_eq!(server.value("maxsmtprecipients", 0).as_deref(), Some("1000"));
        assert_eq!(server.value("irohrelay", 0), None);
        assert_eq!(server.value("turn", 0), None);
        assert_eq!(server.value("appversions", 0), None);
        server.iroh_relay = Some("https://iroh.example.org".into());
        server.turn = Some(Turn { server: "turn.example.org:3478".into(), secret: b"secret".to_vec() });
        assert_eq!(server.value("irohrelay", 0).as_deref(), Some("https://iroh.example.org"));
        assert_eq!(server.value("turn", 1_800_000_000).as_deref(), Some("turn.example.org:3478:1800432000:RAfJBbwdCc2h3zziiACwnYP+oTk="));
    }
}
