//! What a bot may do: its stdout, one JSON object per line, read as a
//! list of actions from a fixed set. Anything else is refused (with a
//! reason for the log line); the accepted actions are carried out by the
//! host (see `delta`), never by the bot.
//!
//! ```text
//! {"action": "reply", "text": "hi"}                      to the chat the mail came from, quoting it
//! {"action": "send", "text": "hi", "to": "sender"}       "to": "chat" (default) or "sender" (1:1),
//!                                                        or a chat by name, also in scheduled runs:
//!                                                        "ADDR" (1:1 with a contact who consented)
//!                                                        or "group:ID" (a group the bot accepted)
//!     optional "file": {"name": "a.txt", "base64": "…"}  a small attachment (send and reply)
//! {"action": "accept"}                                   accept the group invitation the mail came with
//! {"action": "delete", "message_id": "…"}                delete one of the bot's own messages for everyone
//! {"action": "webxdc-update", "instance": "…", "update": {…}}   a status update to a webxdc app in the chat
//! {"action": "add-member", "contact": "addr"}            add a contact to this group (needs its consent)
//! ```
//!
//! Small state is the bot's storage (files), not an action.

use serde::Deserialize;

/// Longest text a bot may send in one message.
pub const MAX_TEXT: usize = 64 * 1024;
/// Most actions one run may ask for.
pub const MAX_ACTIONS: usize = 20;
/// Largest attachment, after decoding.
pub const MAX_FILE: usize = 256 * 1024;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The chat the incoming mail belongs to (1:1 or group).
    Chat,
    /// The sender, 1:1.
    Sender,
    /// A contact by address, 1:1 (only one who wrote to the bot 1:1 and
    /// did not send `/stop` since).
    Contact(String),
    /// A group by id (only one whose invitation the bot accepted).
    Group(String),
}

/// A group id as Delta Chat makes them (`Chat-Group-ID`).
pub fn valid_group_id(id: &str) -> bool {
    (11..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `addr` is one plain address (`local@domain`, no spaces, lists
/// or display-name syntax).
fn plain_address(addr: &str) -> bool {
    chatmail_config::split_address(addr).is_ok_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control() || ",;<>()[]\"\\".contains(c))
}

/// Reads a `"to"` value.
fn target(to: Option<&str>) -> Result<Target, String> {
    match to {
        None | Some("chat") => Ok(Target::Chat),
        Some("sender") => Ok(Target::Sender),
        Some(other) => {
            if let Some(id) = other.strip_prefix("group:") {
                return if valid_group_id(id) { Ok(Target::Group(id.to_owned())) } else { Err(format!("\"to\": {other:?} has no valid group id")) };
            }
            let addr = other.trim().to_ascii_lowercase();
            if plain_address(&addr) {
                Ok(Target::Contact(addr))
            } else {
                Err(format!("\"to\": {other:?} is none of \"chat\", \"sender\", an address, \"group:ID\""))
            }
        }
    }
}

/// A file to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub data: Vec<u8>,
}

/// One accepted action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send { text: String, to: Target, quote: bool, file: Option<File> },
    Accept,
    Delete { message_id: String },
    WebxdcUpdate { instance: String, update: serde_json::Value },
    AddMember { contact: String },
}

impl Action {
    /// The action's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Send { quote: true, .. } => "reply",
            Action::Send { .. } => "send",
            Action::Accept => "accept",
            Action::Delete { .. } => "delete",
            Action::WebxdcUpdate { .. } => "webxdc-update",
            Action::AddMember { .. } => "add-member",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    base64: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
enum Raw {
    Reply { text: String, file: Option<RawFile> },
    Send { text: String, to: Option<String>, file: Option<RawFile> },
    Accept {},
    Delete { message_id: String },
    WebxdcUpdate { instance: String, update: serde_json::Value },
    AddMember { contact: String },
}

/// Whether `name` is a plain file name a recipient can save as is.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control() || c == '"')
}

fn file(raw: Option<RawFile>) -> Result<Option<File>, String> {
    let Some(raw) = raw else { return Ok(None) };
    if !valid_file_name(&raw.name) {
        return Err(format!("file name {:?} is not a plain name (1-100 characters, no slashes, quotes or controls)", raw.name));
    }
    let data = chatmail_config::base64::decode(raw.base64.as_bytes()).map_err(|e| format!("file {:?}: base64: {e}", raw.name))?;
    if data.len() > MAX_FILE {
        return Err(format!("file {:?} has {} bytes, more than {MAX_FILE}", raw.name, data.len()));
    }
    Ok(Some(File { name: raw.name, data }))
}

fn text(text: String) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("empty text".into())
    } else if text.len() > MAX_TEXT {
        Err(format!("text of {} bytes, more than {MAX_TEXT}", text.len()))
    } else {
        Ok(text)
    }
}

/// Reads one output line as an action; `Err` says why it is refused.
pub fn parse_line(line: &str) -> Result<Action, String> {
    let raw: Raw = serde_json::from_str(line).map_err(|e| {
        let message = e.to_string();
        if message.contains("unknown variant") {
            format!("not an action this relay allows ({message})")
        } else {
            format!("not a valid action line ({message})")
        }
    })?;
    Ok(match raw {
        Raw::Reply { text: t, file: f } => Action::Send { text: text(t)?, to: Target::Chat, quote: true, file: file(f)? },
        Raw::Send { text: t, to, file: f } => {
            Action::Send { text: text(t)?, to: target(to.as_deref())?, quote: false, file: file(f)? }
        }
        Raw::Accept {} => Action::Accept,
        Raw::Delete { message_id } => {
            let id = message_id.trim().trim_start_matches('<').trim_end_matches('>');
            if id.is_empty() || id.len() > 250 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("message id {message_id:?} is not one"));
            }
            Action::Delete { message_id: id.to_owned() }
        }
        Raw::WebxdcUpdate { instance, update } => {
            let size = update.to_string().len();
            if size > MAX_TEXT {
                return Err(format!("webxdc update of {size} bytes, more than {MAX_TEXT}"));
            }
            Action::WebxdcUpdate { instance: instance.trim().trim_start_matches('<').trim_end_matches('>').to_owned(), update }
        }
        Raw::AddMember { contact } => {
            let contact = contact.trim().to_ascii_lowercase();
            if !plain_address(&contact) {
                return Err(format!("{contact:?} is not an address"));
            }
            Action::AddMember { contact }
        }
    })
}

/// The bot's output read as actions: the accepted ones, in order, and one
/// refusal reason per refused line (empty lines are skipped).
pub fn parse(output: &[u8]) -> (Vec<Action>, Vec<String>) {
    let text = String::from_utf8_lossy(output);
    let mut actions = Vec::new();
    let mut refused = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        if actions.len() == MAX_ACTIONS {
            refused.push(format!("line {number}: more than {MAX_ACTIONS} actions in one run"));
            continue;
        }
        match parse_line(line) {
            Ok(action) => actions.push(action),
            Err(reason) => refused.push(format!("line {number}: {reason}")),
        }
    }
    (actions, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_lines() {
        let table: &[(&str, Action)] = &[
            (r#"{"action":"reply","text":"hi"}"#, Action::Send { text: "hi".into(), to: Target::Chat, quote: true, file: None }),
            (r#"{"action":"send","text":"hi","to":"sender"}"#, Action::Send { text: "hi".into(), to: Target::Sender, quote: false, file: None }),
            (r#"{"action":"send","text":"hi","to":"chat"}"#, Action::Send { text: "hi".into(), to: Target::Chat, quote: false, file: None }),
            (
                r#"{"action":"send","text":"hi","to":"Carol@Example.org"}"#,
                Action::Send { text: "hi".into(), to: Target::Contact("carol@example.org".into()), quote: false, file: None },
            ),
            (
                r#"{"action":"send","text":"hi","to":"group:Ab-cd_EF123"}"#,
                Action::Send { text: "hi".into(), to: Target::Group("Ab-cd_EF123".into()), quote: false, file: None },
            ),
            (
                r#"{"action":"send","text":"see file","file":{"name":"a.txt","base64":"aGk="}}"#,
                Action::Send { text: "see file".into(), to: Target::Chat, quote: false, file: Some(File { name: "a.txt".into(), data: b"hi".to_vec() }) },
            ),
            (r#"{"action":"accept"}"#, Action::Accept),
            (r#"{"action":"delete","message_id":"<abc@x>"}"#, Action::Delete { message_id: "abc@x".into() }),
            (
                r#"{"action":"webxdc-update","instance":"i@x","update":{"payload":1}}"#,
                Action::WebxdcUpdate { instance: "i@x".into(), update: serde_json::json!({"payload": 1}) },
            ),
            (r#"{"action":"add-member","contact":"Bob@Example.org"}"#, Action::AddMember { contact: "bob@example.org".into() }),
        ];
        for (line, want) in table {
            assert_eq!(parse_line(line).as_ref(), Ok(want), "{line}");
        }
    }

    #[test]
    fn refused_lines() {
        let big = format!(r#"{{"action":"send","text":"{}"}}"#, "x".repeat(MAX_TEXT + 1));
        let table: &[(&str, &str)] = &[
            ("hello", "not a valid action line"),
            (r#"{"action":"forward","to":"x@y"}"#, "not an action this relay allows"),
            (r#"{"action":"send","text":"hi","to":"everyone"}"#, "is none of"),
            (r#"{"action":"send","text":"hi","to":"a@b, c@d"}"#, "is none of"),
            (r#"{"action":"send","text":"hi","to":"group:short"}"#, "no valid group id"),
            (r#"{"action":"send","text":"hi","to":"group:../../etc/passwd"}"#, "no valid group id"),
            (r#"{"action":"send","text":"  "}"#, "empty text"),
            (r#"{"action":"send","text":"hi","bcc":"x@y"}"#, "not a valid action line"),
            (r#"{"action":"send","text":"hi","file":{"name":"../etc/passwd","base64":""}}"#, "not a plain name"),
            (r#"{"action":"send","text":"hi","file":{"name":"a","base64":"!!"}}"#, "base64"),
            (r#"{"action":"delete","message_id":"a b"}"#, "is not one"),
            (r#"{"action":"add-member","contact":"nobody"}"#, "not an address"),
            (r#"{"action":"add-member","contact":"a@b c@d"}"#, "not an address"),
            (r#"{"action":"add-member","contact":"@example.org"}"#, "not an address"),
            (&big, "more than"),
        ];
        for (line, reason) in table {
            let refusal = parse_line(line).expect_err(line);
            assert!(refusal.contains(reason), "{line}: {refusal}");
        }
    }

    #[test]
    fn output_as_a_list() {
        let output = b"{\"action\":\"accept\"}\n\nnonsense\n{\"action\":\"reply\",\"text\":\"ok\"}\n";
        let (actions, refused) = parse(output);
        assert_eq!(actions.len(), 2);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].starts_with("line 3:"), "{refused:?}");
        let many = "{\"action\":\"accept\"}\n".repeat(MAX_ACTIONS + 2);
        let (actions, refused) = parse(many.as_bytes());
        assert_eq!((actions.len(), refused.len()), (MAX_ACTIONS, 2));
    }
}
