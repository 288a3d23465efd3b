//! Push device tokens of one account, in chatmail's on-disk form
//! (`{mailboxes_dir}/{addr}/metadata.json`):
//!
//! ```json
//! {"devicetoken": {"openpgp:…": 1733300000, "…": 1733000000}}
//! ```
//!
//! Each token maps to the Unix time of its last SETMETADATA. A token lives
//! 90 days from then (Delta Chat sets its token again at every start); one
//! whose time lies more than a minute in the future is dropped too (a clock
//! that was wrong). Older chatmail relays kept a plain list of tokens; such
//! a file is read with every token as fresh, so migrated accounts keep
//! their push. Keys other than `devicetoken` are kept as they are.
//!
//! Pure: no I/O; the dict service reads and writes the file.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The metadata key (`/private/devicetoken` on INBOX) and the JSON field.
pub const DEVICETOKEN_KEY: &str = "devicetoken";
/// Longest token accepted (Delta Chat's are ~1 KB: 512 bytes padded, encrypted, armored).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// A token is forgotten this long after its last SET.
pub const TOKEN_LIFETIME_SECS: u64 = 90 * 86_400;
/// A token's time may lie this far in the future (clock differences).
pub const FUTURE_SLACK_SECS: u64 = 60;
/// Most tokens one account keeps (its devices); the oldest go first.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 32;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    Empty,
    TooLong(usize),
    NotText,
    /// Control characters (line breaks, tabs, NUL): a token is one line.
    ControlCharacter,
}

impl std::fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenProblem::Empty => f.write_str("device token is empty"),
            TokenProblem::TooLong(len) => write!(f, "device token is {len} bytes, more than {MAX_TOKEN_LEN}"),
            TokenProblem::NotText => f.write_str("device token is not UTF-8 text"),
            TokenProblem::ControlCharacter => f.write_str("device token contains a control character (it must be one line)"),
        }
    }
}

/// Checks a token as the client sent it.
pub fn check_token(value: &[u8]) -> Result<&str, TokenProblem> {
    if value.is_empty() {
        return Err(TokenProblem::Empty);
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(TokenProblem::TooLong(value.len()));
    }
    let text = std::str::from_utf8(value).map_err(|_| TokenProblem::NotText)?;
    if text.chars().any(char::is_control) {
        return Err(TokenProblem::ControlCharacter);
    }
    Ok(text)
}

/// The account's tokens, and whatever else its metadata file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    /// Token → Unix time of its last SET.
    tokens: BTreeMap<String, u64>,
    other: Map<String, Value>,
}

impl Tokens {
    /// Reads a metadata file's text (`now` stands in for the SET time of
    /// tokens from the older list form). `Err` for text that is not a JSON
    /// object; tokens that are not strings are skipped.
    pub fn parse(text: &str, now: u64) -> Result<Tokens, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut other) = value else { return Err("not a JSON object".into()) };
        let mut tokens = BTreeMap::new();
        match other.remove(DEVICETOKEN_KEY) {
            Some(Value::Object(map)) => {
                for (token, time) in map {
                    if let Some(time) = time.as_u64().or_else(|| time.as_f64().filter(|t| *t >= 0.0).map(|t| t as u64)) {
                        tokens.insert(token, time);
                    }
                }
            }
            Some(Value::Array(list)) => {
                for token in list.into_iter().filter_map(|t| t.as_str().map(str::to_owned)) {
                    tokens.insert(token, now);
                }
            }
            _ => {}
        }
        Ok(Tokens { tokens, other })
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let mut object = self.other.clone();
        let tokens: Map<String, Value> = self.tokens.iter().map(|(t, &time)| (t.clone(), Value::from(time))).collect();
        object.insert(DEVICETOKEN_KEY.into(), Value::Object(tokens));
        Value::Object(object).to_string()
    }

    /// Records a SET of `token` at `now`; over the per-account limit the
    /// token set longest ago is forgotten.
    pub fn add(&mut self, token: &str, now: u64) {
        self.tokens.insert(token.to_owned(), now);
        while self.tokens.len() > MAX_TOKENS_PER_ACCOUNT {
            let Some(oldest) = self.tokens.iter().min_by_key(|(_, &t)| t).map(|(k, _)| k.clone()) else { break };
            self.tokens.remove(&oldest);
        }
    }

    /// Forgets `token`; whether it was there.
    pub fn remove(&mut self, token: &str) -> bool {
        self.tokens.remove(token).is_some()
    }

    /// Forgets expired tokens; whether any went.
    pub fn prune(&mut self, now: u64) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|_, &mut time| is_live(time, now));
        self.tokens.len() != before
    }

    /// The live tokens, in a stable order.
    pub fn live(&self, now: u64) -> Vec<&str> {
        self.tokens.iter().filter(|(_, &time)| is_live(time, now)).map(|(t, _)| t.as_str()).collect()
    }
}

fn is_live(set_at: u64, now: u64) -> bool {
    set_at <= now.saturating_add(FUTURE_SLACK_SECS) && now.saturating_sub(set_at) < TOKEN_LIFETIME_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    #[test]
    fn token_checks() {
        let long = "x".repeat(MAX_TOKEN_LEN);
        let too_long = "x".repeat(MAX_TOKEN_LEN + 1);
        let table: Vec<(&[u8], Result<&str, TokenProblem>)> = vec![
            (b"openpgp:abc", Ok("openpgp:abc")),
            (b"with spaces   ", Ok("with spaces   ")),
            (long.as_bytes(), Ok(long.as_str())),
            (too_long.as_bytes(), Err(TokenProblem::TooLong(MAX_TOKEN_LEN + 1))),
            (b"", Err(TokenProblem::Empty)),
            (b"a\r\nb", Err(TokenProblem::ControlCharacter)),
            (b"a\tb", Err(TokenProblem::ControlCharacter)),
            (b"a\0b", Err(TokenProblem::ControlCharacter)),
            (b"\xff\xfe", Err(TokenProblem::NotText)),
        ];
        for (value, want) in table {
            assert_eq!(check_token(value), want, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn reads_both_chatmail_forms() {
        let table = [
            (r#"{"devicetoken": {"a": 1799999000, "b": 1700000000}}"#, vec![("a", 1_799_999_000), ("b", 1_700_000_000)]),
            (r#"{"devicetoken": ["a", "b", 7]}"#, vec![("a", NOW), ("b", NOW)]),
            (r#"{"devicetoken": {"a": 1.5e9, "b": "x", "c": -3}}"#, vec![("a", 1_500_000_000)]),
            (r#"{}"#, vec![]),
            (r#"{"other": 1}"#, vec![]),
        ];
        for (text, want) in table {
            let tokens = Tokens::parse(text, NOW).expect(text);
            let got: Vec<(&str, u64)> = tokens.tokens.iter().map(|(k, &v)| (k.as_str(), v)).collect();
            assert_eq!(got, want, "{text}");
        }
        for bad in ["", "[1]", "{", "\"x\""] {
            assert!(Tokens::parse(bad, NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trip_keeps_other_keys() {
        let tokens = Tokens::parse(r#"{"devicetoken": ["a"], "future": {"x": 1}}"#, NOW).expect("parse");
        let text = tokens.to_json();
        assert_eq!(text, format!(r#"{{"devicetoken":{{"a":{NOW}}},"future":{{"x":1}}}}"#));
        assert_eq!(Tokens::parse(&text, 0).expect("again"), tokens);
    }

    #[test]
    fn lifetime() {
        let mut tokens = Tokens::default();
        tokens.add("fresh", NOW);
        tokens.add("old", NOW - 89 * DAY);
        tokens.add("expired", NOW - 90 * DAY);
        tokens.add("future-ok", NOW + FUTURE_SLACK_SECS);
        tokens.add("future-bad", NOW + FUTURE_SLACK_SECS + 1);
        assert_eq!(tokens.live(NOW), ["fresh", "future-ok", "old"]);
        assert!(tokens.prune(NOW));
        assert!(!tokens.prune(NOW));
        assert_eq!(tokens.live(NOW), ["fresh", "future-ok", "old"]);
        // A SET again renews the token.
        tokens.add("old", NOW);
        assert_eq!(tokens.live(NOW + 80 * DAY), ["fresh", "future-ok", "old"]);
        assert!(tokens.remove("fresh"));
        assert!(!tokens.remove("fresh"));
    }

    #[test]
    fn device_limit_forgets_the_oldest() {
        let mut tokens = Tokens::default();
        for i in 0..MAX_TOKENS_PER_ACCOUNT as u64 + 2 {
            tokens.add(&format!("t{i}"), NOW + i);
        }
        let live = tokens.live(NOW + 100);
        assert_eq!(live.len(), MAX_TOKENS_PER_ACCOUNT);
        assert!(!live.contains(&"t0") && !live.contains(&"t1") && live.contains(&"t2"));
    }
}
