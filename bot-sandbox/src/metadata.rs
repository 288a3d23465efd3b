//! `bot.toml`: what a bot package says about itself.
//!
//! ```toml
//! name = "echo"
//! description = "Repeats what you write"
//! author = "mailto:alice@example.org"     # required: how to reach the author
//!
//! [limits]                  # per sender; defaults shown
//! mails_per_hour = 60
//! mails_per_day = 120
//! cpu_seconds_per_hour = 60
//! bytes_per_hour = "60M"
//! sends_per_hour = 60       # messages the bot sends to one contact
//!
//! [schedule]                # optional: also run without a mail
//! every_minutes = 60
//!
//! network = ["https://api.example.org"]   # optional, narrowed by the operator's list
//! storage = "1M"                           # optional per-bot storage quota
//! ```
//!
//! Unknown keys are errors (a typo must not silently drop a limit).

use serde::{Deserialize, Serialize};

/// Per-sender limits of a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderLimits {
    pub mails_per_hour: u32,
    pub mails_per_day: u32,
    pub cpu_seconds_per_hour: u32,
    /// Bytes of mail a sender may feed the bot per hour.
    pub bytes_per_hour: u64,
    /// Messages the bot may send to one contact per hour (a group message
    /// counts for each member).
    pub sends_per_hour: u32,
}

impl Default for SenderLimits {
    fn default() -> SenderLimits {
        SenderLimits { mails_per_hour: 60, mails_per_day: 120, cpu_seconds_per_hour: 60, bytes_per_hour: 60 * 1024 * 1024, sends_per_hour: 60 }
    }
}

/// A checked `bot.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub description: String,
    pub author: String,
    pub limits: SenderLimits,
    /// Minutes between scheduled runs.
    pub schedule_minutes: Option<u32>,
    pub network: Vec<String>,
    /// Bytes.
    pub storage: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    mails_per_hour: Option<u32>,
    mails_per_day: Option<u32>,
    cpu_seconds_per_hour: Option<u32>,
    bytes_per_hour: Option<Size>,
    sends_per_hour: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    every_minutes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: Option<String>,
    description: Option<String>,
    author: Option<String>,
    limits: Option<RawLimits>,
    schedule: Option<RawSchedule>,
    network: Option<Vec<String>>,
    storage: Option<Size>,
}

fn size(value: Size, key: &str, problems: &mut Vec<String>) -> Option<u64> {
    match value {
        Size::Bytes(n) => Some(n),
        Size::Text(text) => match chatmail_config::parse_size(&text, chatmail_config::BareNumber::Bytes) {
            Ok(n) => Some(n),
            Err(e) => {
                problems.push(format!("bot.toml: {key}: {e}"));
                None
            }
        },
    }
}

/// Whether `origin` is `https://host[:port]` (no path): what a bot may name
/// as a network origin.
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://") else { return false };
    let (host, port) = rest.split_once(':').map_or((rest, None), |(h, p)| (h, Some(p)));
    !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
}

/// Parses and checks `text`; every problem is listed, in plain words.
pub fn parse(text: &str) -> Result<Metadata, Vec<String>> {
    let raw: RawMetadata = toml::from_str(text).map_err(|e| vec![format!("bot.toml: {}", e.to_string().trim())])?;
    let mut problems = Vec::new();
    let mut text_field = |value: Option<String>, key: &str, max: usize, required: bool| -> String {
        let value = value.unwrap_or_default().trim().to_owned();
        if value.is_empty() && required {
            problems.push(format!("bot.toml: {key} is required"));
        } else if value.chars().count() > max {
            problems.push(format!("bot.toml: {key} is longer than {max} characters"));
        } else if value.chars().any(|c| c.is_control()) {
            problems.push(format!("bot.toml: {key} contains control characters"));
        }
        value
    };
    let name = text_field(raw.name, "name", 64, true);
    let description = text_field(raw.description, "description", 500, false);
    let author = text_field(raw.author, "author", 200, true);
    if !(author.is_empty() || author.contains('@') || author.starts_with("https://")) {
        problems.push("bot.toml: author must be a way to reach the author: an email address (or mailto:) or an https:// link".into());
    }
    let defaults = SenderLimits::default();
    let limits = match raw.limits {
        None => defaults,
        Some(l) => SenderLimits {
            mails_per_hour: l.mails_per_hour.unwrap_or(defaults.mails_per_hour),
            mails_per_day: l.mails_per_day.unwrap_or(defaults.mails_per_day),
            sends_per_hour: l.sends_per_hour.unwrap_or(defaults.sends_per_hour),
            cpu_seconds_per_hour: l.cpu_seconds_per_hour.unwrap_or(defaults.cpu_seconds_per_hour),
            bytes_per_hour: match l.bytes_per_hour {
                Some(v) => size(v, "limits.bytes_per_hour", &mut problems).unwrap_or(defaults.bytes_per_hour),
                None => defaults.bytes_per_hour,
            },
        },
    };
    let schedule_minutes = match raw.schedule {
        Some(s) if s.every_minutes < 5 => {
            problems.push("bot.toml: schedule.every_minutes must be at least 5".into());
            None
        }
        Some(s) => Some(s.every_minutes),
        None => None,
    };
    let network = raw.network.unwrap_or_default();
    for origin in &network {
        if !is_origin(origin) {
            problems.push(format!("bot.toml: network: {origin:?} is not an origin like https://api.example.org"));
        }
    }
    let storage = raw.storage.and_then(|s| size(s, "storage", &mut problems));
    if problems.is_empty() {
        Ok(Metadata { name, description, author, limits, schedule_minutes, network, storage })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_full() {
        let minimal = parse("name = \"echo\"\nauthor = \"alice@example.org\"\n").expect("minimal");
        assert_eq!(minimal.limits, SenderLimits::default());
        assert_eq!((minimal.schedule_minutes, minimal.storage), (None, None));
        let full = parse(
            "name = \"echo\"\ndescription = \"Repeats\"\nauthor = \"https://example.org/me\"\nnetwork = [\"https://api.example.org\", \"https://x.example:8443\"]\nstorage = \"1M\"\n\
             [limits]\nmails_per_hour = 5\nbytes_per_hour = 1000\nsends_per_hour = 3\n[schedule]\nevery_minutes = 60\n",
        )
        .expect("full");
        assert_eq!(full.limits.mails_per_hour, 5);
        assert_eq!(full.limits.mails_per_day, 120);
        assert_eq!(full.limits.bytes_per_hour, 1000);
        assert_eq!(full.limits.sends_per_hour, 3);
        assert_eq!(full.schedule_minutes, Some(60));
        assert_eq!(full.storage, Some(1024 * 1024));
        assert_eq!(full.network.len(), 2);
    }

    #[test]
    fn problems_are_listed_in_words() {
        let table: &[(&str, &str)] = &[
            ("name = \"echo\"\n", "author is required"),
            ("author = \"a@b.c\"\n", "name is required"),
            ("name = \"echo\"\nauthor = \"somebody\"\n", "a way to reach the author"),
            ("name = \"echo\"\nauthor = \"a@b.c\"\nlimts = 1\n", "unknown field `limts`"),
            ("name = \"echo\"\nauthor = \"a@b.c\"\n[limits]\nmails_per_hour = -1\n", "mails_per_hour"),
            ("name = \"echo\"\nauthor = \"a@b.c\"\n[schedule]\nevery_minutes = 1\n", "at least 5"),
            ("name = \"echo\"\nauthor = \"a@b.c\"\nnetwork = [\"http://x.org\"]\n", "is not an origin"),
            ("name = \"echo\"\nauthor = \"a@b.c\"\nnetwork = [\"https://x.org/path\"]\n", "is not an origin"),
            ("name = \"echo\"\nauthor = \"a@b.c\"\nstorage = \"lots\"\n", "storage"),
            ("name = \"echo\nauthor", "bot.toml:"),
        ];
        for (text, want) in table {
            let problems = parse(text).err().unwrap_or_else(|| panic!("{text:?} passed"));
            assert!(problems.iter().any(|p| p.contains(want)), "{text:?}: {problems:?}");
        }
        let both = parse("description = 1\n").expect_err("refused");
        assert_eq!(both.len(), 1, "a type error stops parsing: {both:?}");
        let two = parse("name = \"\"\nauthor = \"\"\n").expect_err("refused");
        assert_eq!(two.len(), 2, "{two:?}");
    }
}
