//! The notification queue: one entry per (account, device token) that has
//! a notification to send, as a file in `{push_spool_dir}/queue/`, and the
//! retry policy. Pure: the notifier does the I/O.
//!
//! An entry's file name is derived from account and token
//! ([`entry_id`]), so a second delivery while a notification is pending
//! finds the entry there and adds nothing: a flood of mail to one account
//! is at most one pending notification per device. Content (`key: value`
//! lines, the token last since it is the long one):
//!
//! ```text
//! account: alice@chat.example
//! created: 1733300000
//! attempts: 0
//! next: 1733300000
//! token: openpgp:…
//! ```
//!
//! Outcome of a POST (chatmail's rules): 2xx → done; 410 Gone → the token
//! is forgotten by its account; anything else, or no answer within
//! [`REQUEST_TIMEOUT_SECS`] → retried after 8 s, 64 s, 512 s, then every
//! 30 minutes, and dropped once [`MAX_AGE_SECS`] have passed since the
//! entry was made.

use std::fmt;

/// Time one POST may take.
pub const REQUEST_TIMEOUT_SECS: u64 = 60;
/// An entry is dropped when a retry would come later than this after it was made.
pub const MAX_AGE_SECS: u64 = 5 * 3600;
/// Longest wait between two tries.
pub const MAX_RETRY_DELAY_SECS: u64 = 1800;

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub account: String,
    pub token: String,
    /// Unix seconds the entry was made.
    pub created: u64,
    /// Failed tries so far.
    pub attempts: u32,
    /// Unix seconds of the next try.
    pub next: u64,
}

/// A queue file that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError(pub String);

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file name of the entry for `account` and `token`: hex of the first
/// 16 bytes of SHA-256 over both (the token never appears in a name or log).
pub fn entry_id(account: &str, token: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so no two (account, token) pairs hash the same bytes.
    context.update(&(account.len() as u64).to_be_bytes());
    context.update(account.as_bytes());
    context.update(token.as_bytes());
    context.finish().as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// How a token is named in logs: the first 8 hex digits of its entry id.
pub fn token_label(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

impl Entry {
    /// A new entry, due now.
    pub fn new(account: &str, token: &str, now: u64) -> Entry {
        Entry { account: account.to_owned(), token: token.to_owned(), created: now, attempts: 0, next: now }
    }

    pub fn id(&self) -> String {
        entry_id(&self.account, &self.token)
    }

    pub fn to_text(&self) -> String {
        format!(
            "account: {}\ncreated: {}\nattempts: {}\nnext: {}\ntoken: {}\n",
            self.account, self.created, self.attempts, self.next, self.token
        )
    }

    pub fn parse(text: &str) -> Result<Entry, EntryError> {
        let mut fields = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once(": ").ok_or_else(|| EntryError(format!("line without ': ': {:?}", line.get(..40).unwrap_or(line))))?;
            if fields.insert(key, value).is_some() {
                return Err(EntryError(format!("{key} given twice")));
            }
        }
        let need = |key: &str| fields.get(key).copied().ok_or_else(|| EntryError(format!("{key} missing")));
        let number = |key: &str| -> Result<u64, EntryError> { need(key)?.parse().map_err(|_| EntryError(format!("{key} is not a number"))) };
        let entry = Entry {
            account: need("account")?.to_owned(),
            token: need("token")?.to_owned(),
            created: number("created")?,
            attempts: u32::try_from(number("attempts")?).map_err(|_| EntryError("attempts too large".into()))?,
            next: number("next")?,
        };
        if entry.account.is_empty() || entry.token.is_empty() {
            return Err(EntryError("empty account or token".into()));
        }
        Ok(entry)
    }
}

/// What became of one POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// HTTP status.
    Status(u16),
    /// No answer (connection, TLS, timeout).
    Failed,
}

/// What to do with the entry after a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Delivered: remove the entry.
    Sent,
    /// The service no longer knows the token: remove it from the account too.
    Gone,
    /// Try again at `next` (the entry with its counters updated).
    Retry(Entry),
    /// Given up: too old.
    Dropped,
}

/// The delay before try number `attempts + 1` (after `attempts` failures).
pub fn retry_delay(attempts: u32) -> u64 {
    8u64.checked_pow(attempts).unwrap_or(u64::MAX).min(MAX_RETRY_DELAY_SECS)
}

/// Decides about `entry` after `outcome` at `now`.
pub fn after(entry: &Entry, outcome: Outcome, now: u64) -> Next {
    match outcome {
        Outcome::Status(200..=299) => Next::Sent,
        Outcome::Status(410) => Next::Gone,
        Outcome::Status(_) | Outcome::Failed => {
            let attempts = entry.attempts.saturating_add(1);
            let next = now.saturating_add(retry_delay(attempts));
            if next > entry.created.saturating_add(MAX_AGE_SECS) {
                Next::Dropped
            } else {
                Next::Retry(Entry { attempts, next, ..entry.clone() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn entries_round_trip() {
        let entry = Entry { account: "a@x.example".into(), token: "openpgp:abc def".into(), created: NOW, attempts: 2, next: NOW + 64 };
        assert_eq!(Entry::parse(&entry.to_text()), Ok(entry.clone()));
        for bad in ["", "account: a\n", "account: a\ncreated: x\nattempts: 0\nnext: 0\ntoken: t\n", "junk\n", "account: a\naccount: b\n"] {
            assert!(Entry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_depend_on_account_and_token() {
        let id = entry_id("a@x", "t");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, entry_id("a@x", "t"));
        assert_ne!(id, entry_id("a@x", "u"));
        assert_ne!(id, entry_id("b@x", "t"));
        assert_ne!(entry_id("a@x\0", "t"), entry_id("a@x", "\0t"));
        assert_eq!(token_label(&id).len(), 8);
    }

    #[test]
    fn outcomes() {
        let entry = Entry::new("a@x", "t", NOW);
        let table = [
            (Outcome::Status(200), Next::Sent),
            (Outcome::Status(204), Next::Sent),
            (Outcome::Status(410), Next::Gone),
            (Outcome::Status(500), Next::Retry(Entry { attempts: 1, next: NOW + 8, ..entry.clone() })),
            (Outcome::Status(404), Next::Retry(Entry { attempts: 1, next: NOW + 8, ..entry.clone() })),
            (Outcome::Failed, Next::Retry(Entry { attempts: 1, next: NOW + 8, ..entry.clone() })),
        ];
        for (outcome, want) in table {
            assert_eq!(after(&entry, outcome, NOW), want, "{outcome:?}");
        }
    }

    #[test]
    fn back_off_then_drop_after_five_hours() {
        let delays: Vec<u64> = (1..=6).map(retry_delay).collect();
        assert_eq!(delays, [8, 64, 512, 1800, 1800, 1800]);
        let mut entry = Entry::new("a@x", "t", NOW);
        let mut now = NOW;
        let mut tries = 1;
        loop {
            match after(&entry, Outcome::Failed, now) {
                Next::Retry(next) => {
                    assert!(next.next <= NOW + MAX_AGE_SECS);
                    now = next.next;
                    entry = next;
                    tries += 1;
                }
                Next::Dropped => break,
                other => panic!("{other:?}"),
            }
        }
        // 0, 8, 72, 584, then every 30 minutes up to 5 hours.
        assert_eq!(tries, 13);
        assert!(now > NOW + MAX_AGE_SECS - MAX_RETRY_DELAY_SECS);
    }
}
