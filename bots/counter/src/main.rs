//! The counter bot: shows a bot's storage. Its bot.toml asks for
//! `storage = "1K"`, so the relay gives it the directory `/data`, kept
//! between runs; it counts the messages it got there and answers each
//! with the count, in the chat the message came from.

use std::fs;

fn main() {
    // Only chat messages count; other events (webxdc status updates) are
    // mail too, but not messages a person wrote.
    if std::env::var("CHATMAIL_EVENT").as_deref() != Ok("message") {
        return;
    }
    let count: u64 = fs::read_to_string("/data/count").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0) + 1;
    // The text has no characters JSON would need escaped, so the action
    // line is written as is.
    let text = match fs::write("/data/count", count.to_string()) {
        Ok(()) => format!("message number {count}"),
        Err(_) => format!("message number {count} (the count could not be stored)"),
    };
    println!("{{\"action\":\"reply\",\"text\":\"{text}\"}}");
}
