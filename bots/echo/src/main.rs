//! The echo bot: a chatmail bot in plain Rust for `wasm32-wasip1`.
//!
//! A bot is a program: the relay starts it for each mail its account
//! receives, gives it the mail on stdin and the sender in the environment
//! variable `CHATMAIL_SENDER`, and takes what it writes to stdout as its
//! answer. This one answers with the text of the mail (the body, after the
//! header block), prefixed by who sent it.

use std::io::{self, Read, Write};

fn main() -> io::Result<()> {
    let mut mail = Vec::new();
    io::stdin().read_to_end(&mut mail)?;
    let text = String::from_utf8_lossy(&mail);
    // The body starts after the first empty line (CRLF or LF).
    let body = text.split_once("\r\n\r\n").or_else(|| text.split_once("\n\n")).map_or("", |(_, body)| body);
    let sender = std::env::var("CHATMAIL_SENDER").unwrap_or_default();
    let mut out = io::stdout().lock();
    writeln!(out, "echo for {sender}:")?;
    out.write_all(body.trim_end().as_bytes())?;
    writeln!(out)
}
