//! The echo bot: a chatmail bot in plain Rust for `wasm32-wasip1`.
//!
//! A bot is a program: the relay runs it for each encrypted message its
//! account receives, with the message text on stdin and who sent it, from
//! which chat, in environment variables (`CHATMAIL_SENDER`, `CHATMAIL_CHAT`:
//! `single` or a group id). What it prints are actions, one JSON object
//! per line; the relay turns them into encrypted Delta Chat messages.
//! This one answers every message with its text, in the same chat, and
//! every webxdc status update with an update carrying it back. `/delete`,
//! quoting one of its messages, deletes that message; `/raw LINE` makes it
//! print LINE itself, to try the relay's checks.

use std::io::{self, Read, Write};

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> io::Result<()> {
    let mut text = String::new();
    io::stdin().read_to_string(&mut text)?;
    let mut out = io::stdout().lock();
    match std::env::var("CHATMAIL_EVENT").as_deref() {
        Ok("message") => {}
        // A webxdc app's status update (its JSON on stdin): answered with
        // an update to the same app instance that carries it back.
        Ok("webxdc-update") => {
            let instance = std::env::var("CHATMAIL_WEBXDC_INSTANCE").unwrap_or_default();
            let update = text.trim();
            if instance.is_empty() || !update.starts_with('{') {
                return Ok(());
            }
            return writeln!(out, "{{\"action\":\"webxdc-update\",\"instance\":{},\"update\":{{\"echo\":{update}}}}}", json_string(&instance));
        }
        _ => return Ok(()),
    }
    let text = text.replace("\r\n", "\n");
    let text = text.trim();
    if text.is_empty() {
        return Ok(());
    }
    // `/delete`, quoting one of the bot's messages: deletes it for everyone.
    if text == "/delete" {
        if let Ok(parent) = std::env::var("CHATMAIL_IN_REPLY_TO") {
            return writeln!(out, "{{\"action\":\"delete\",\"message_id\":{}}}", json_string(&parent));
        }
    }
    // `/raw LINE` prints LINE as the action: shows that the relay, not the
    // bot, decides what happens (anything outside its set is refused).
    if let Some(line) = text.strip_prefix("/raw ") {
        return writeln!(out, "{line}");
    }
    // In a group, the bot first accepts the invitation (once is enough;
    // accepting again does no harm).
    if std::env::var("CHATMAIL_CHAT").is_ok_and(|chat| chat != "single") {
        writeln!(out, "{{\"action\":\"accept\"}}")?;
    }
    writeln!(out, "{{\"action\":\"reply\",\"text\":{}}}", json_string(&format!("echo: {text}")))
}
