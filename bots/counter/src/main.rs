//! The counter bot: shows a bot's storage. Its bot.toml asks for
//! `storage = "1K"`, so the relay gives it the directory `/data`, kept
//! between runs; it counts the mails it got there and answers with the
//! count.

use std::fs;

fn main() {
    let count: u64 = fs::read_to_string("/data/count").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0) + 1;
    match fs::write("/data/count", count.to_string()) {
        Ok(()) => println!("mail number {count}"),
        Err(e) => println!("mail number {count} (not stored: {e})"),
    }
}
