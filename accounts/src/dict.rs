//! Dovecot's dict protocol (2.3's version 3 and 2.4's version 4), server
//! side: lookups for chatmail-auth's
//! passdb/userdb, and the transactions (begin, set, unset, commit) through
//! which chatmail-metadata stores IMAP METADATA.
//!
//! The client (Dovecot's `proxy:` dict driver, `src/lib-dict/dict-client.c`)
//! sends one command per line, fields separated by tabs; tabs, newlines and
//! the escape byte inside a field are escaped with `\x01` (`str_tabescape`).
//! The first line is the handshake `H<major>\t<minor>\t<value type>\t<user>\t<dict name>`,
//! which gets no reply. A lookup is `L<key>\t<user>` and is answered with
//! `O<value>` (found), `N` (not found) or `F<error>` (failure), in order.
//! A transaction is `B<id>\t<user>`, then `S<id>\t<key>\t<value>`,
//! `U<id>\t<key>`, … (no replies), then `C<id>` (answered `O<id>` or
//! `F<id>\t<error>`) or `R<id>` (no reply).
//!
//! Version 4 (Dovecot 2.4, `src/lib-dict-extra/dict-client.c`) differs only
//! where this server does not look: its handshake's value type is always 0,
//! `B` carries a third field (an expiry in seconds, for dicts that expire
//! keys), `V<id>\t<flag>` (hide values from logs) may come within a
//! transaction, and `D` (asynchronous commit) is gone.

use std::fmt;

/// The protocol major versions this server speaks (Dovecot 2.3's client
/// sends 3, 2.4's sends 4).
pub const MAJOR_VERSIONS: [u32; 2] = [3, 4];
/// Longest line the client sends or accepts (`DICT_CLIENT_MAX_LINE_LENGTH`).
pub const MAX_LINE: usize = 64 * 1024;

/// Undoes `str_tabescape`: `\x01` followed by `0`, `1`, `t`, `r` or `n`
/// stands for NUL, `\x01`, tab, CR and LF. A dangling or unknown escape is an
/// error rather than guessed at.
pub fn unescape(field: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != 0x01 {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'0') => 0,
            Some(b'1') => 0x01,
            Some(b't') => b'\t',
            Some(b'r') => b'\r',
            Some(b'n') => b'\n',
            _ => return Err(ProtocolError("bad escape sequence")),
        });
    }
    Ok(out)
}

/// `str_tabescape`: makes `value` safe as one field of a line.
pub fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\0' => out.push_str("\x010"),
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            c => out.push(c),
        }
    }
}

/// A line the client sent that is not valid protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// One command from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Hello { major: u32, minor: u32, dict_name: String },
    /// `key` as sent (e.g. `shared/passdb/…`); bytes, since a password inside
    /// it need not be UTF-8. `user`: the user the lookup is for (may be empty).
    Lookup { key: Vec<u8>, user: Vec<u8> },
    /// Iteration (`I`): neither dict lists its entries.
    Iterate,
    /// `B`: a transaction of `user` begins.
    Begin { id: String, user: Vec<u8> },
    /// `S`: sets `key` to `value` in transaction `id`.
    Set { id: String, key: Vec<u8>, value: Vec<u8> },
    /// `U`: removes `key` in transaction `id`.
    Unset { id: String, key: Vec<u8> },
    /// `C` (or `D`, asynchronous): needs a reply naming the transaction.
    Commit { id: String },
    /// `R`: the transaction is dropped; no reply.
    Rollback { id: String },
    /// Atomic increment (`A`), timestamp (`T`) and hiding values from logs
    /// (`V`, version 4): part of a transaction, no reply; neither dict here
    /// supports counters, and neither logs values.
    OtherWrite { id: String },
}

/// Parses one line (without its `\n`).
pub fn parse_line(line: &[u8]) -> Result<Command, ProtocolError> {
    let (&kind, rest) = line.split_first().ok_or(ProtocolError("empty line"))?;
    let mut fields = rest.split(|&b| b == b'\t');
    match kind {
        b'H' => {
            let number = |f: Option<&[u8]>| -> Result<u32, ProtocolError> {
                std::str::from_utf8(f.ok_or(ProtocolError("short handshake"))?)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(ProtocolError("handshake version is not a number"))
            };
            let major = number(fields.next())?;
            let minor = number(fields.next())?;
            let _value_type = fields.next().ok_or(ProtocolError("short handshake"))?;
            let _user = fields.next().ok_or(ProtocolError("short handshake"))?;
            let name = unescape(fields.next().ok_or(ProtocolError("short handshake"))?)?;
            Ok(Command::Hello { major, minor, dict_name: String::from_utf8_lossy(&name).into_owned() })
        }
        b'L' => {
            let key = unescape(fields.next().unwrap_or_default())?;
            let user = unescape(fields.next().unwrap_or_default())?;
            Ok(Command::Lookup { key, user })
        }
        b'I' => Ok(Command::Iterate),
        b'B' | b'C' | b'D' | b'R' | b'S' | b'U' | b'A' | b'T' | b'V' => {
            let id = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
            let mut field = |what: &'static str| -> Result<Vec<u8>, ProtocolError> { unescape(fields.next().ok_or(ProtocolError(what))?) };
            Ok(match kind {
                b'B' => Command::Begin { id, user: field("begin without user").unwrap_or_default() },
                b'C' | b'D' => Command::Commit { id },
                b'R' => Command::Rollback { id },
                b'S' => {
                    let key = field("set without key")?;
                    Command::Set { id, key, value: field("set without value")? }
                }
                b'U' => Command::Unset { id, key: field("unset without key")? },
                _ => Command::OtherWrite { id },
            })
        }
        _ => Err(ProtocolError("unknown command")),
    }
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Found(String),
    NotFound,
    Failed(String),
}

impl Reply {
    /// The reply line, with its `\n`.
    pub fn line(&self) -> String {
        let mut out = String::new();
        match self {
            Reply::Found(value) => {
                out.push('O');
                escape(value, &mut out);
            }
            Reply::NotFound => out.push('N'),
            Reply::Failed(error) => {
                out.push('F');
                escape(error, &mut out);
            }
        }
        out.push('\n');
        out
    }
}

/// The reply to a commit that failed with `error`.
pub fn commit_failed(id: &str, error: &str) -> String {
    let mut out = format!("F{id}\t");
    escape(error, &mut out);
    out.push('\n');
    out
}

/// The reply to a commit that succeeded.
pub fn commit_ok(id: &str) -> String {
    format!("O{id}\n")
}

/// The reply to a commit on chatmail-auth's read-only dict.
pub fn commit_refused(id: &str) -> String {
    commit_failed(id, "chatmail auth dict is read-only")
}

/// A client connection's commands: reads lines (at most [`MAX_LINE`]),
/// checks the handshake and hands out the commands after it.
#[derive(Debug)]
pub struct CommandReader<R> {
    reader: tokio::io::BufReader<R>,
    line: Vec<u8>,
    greeted: bool,
    dict_name: String,
}

impl<R: tokio::io::AsyncRead + Unpin> CommandReader<R> {
    pub fn new(read: R) -> Self {
        CommandReader { reader: tokio::io::BufReader::new(read), line: Vec::new(), greeted: false, dict_name: String::new() }
    }

    /// The dict name the client's handshake gave (empty before it).
    pub fn dict_name(&self) -> &str {
        &self.dict_name
    }

    /// The next command after the handshake; `None` when the client closed
    /// the connection. A line too long or cut off, one that is not
    /// protocol, a command before the handshake and another major version
    /// are errors (the connection is then dropped; Dovecot reconnects).
    pub async fn next(&mut self) -> std::io::Result<Option<Command>> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        loop {
            self.line.clear();
            let n = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Ok(None);
            }
            if self.line.last() != Some(&b'\n') {
                return Err(invalid(if self.line.len() > MAX_LINE { "line too long".into() } else { "connection closed mid-line".into() }));
            }
            self.line.pop();
            match parse_line(&self.line).map_err(|e| invalid(e.to_string()))? {
                Command::Hello { major, .. } if !MAJOR_VERSIONS.contains(&major) => {
                    return Err(invalid(format!("dict protocol major version {major}, expected 3 (Dovecot 2.3) or 4 (Dovecot 2.4)")));
                }
                Command::Hello { dict_name, .. } => {
                    self.greeted = true;
                    self.dict_name = dict_name;
                }
                _ if !self.greeted => return Err(invalid("command before handshake".into())),
                command => return Ok(Some(command)),
            }
        }
    }
}

/// The reply that ends an iteration: this dict lists nothing (an empty line
/// means "finished" to the client).
pub const ITERATION_FINISHED: &str = "\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        let cases = ["", "plain", "tab\there", "nl\nand\rcr", "esc\x01ape", "nul\0byte", "ümlaut/und\\back"];
        for case in cases {
            let mut escaped = String::new();
            escape(case, &mut escaped);
            assert!(!escaped.contains(['\t', '\n', '\r', '\0']), "{escaped:?}");
            assert_eq!(unescape(escaped.as_bytes()).expect("valid"), case.as_bytes(), "{case:?}");
        }
    }

    #[test]
    fn bad_escapes_are_errors() {
        for bad in [&b"\x01"[..], b"a\x01x", b"end\x01"] {
            assert!(unescape(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands() {
        let table: Vec<(&[u8], Result<Command, ProtocolError>)> = vec![
            (b"H3\t2\t0\t\tchatmail", Ok(Command::Hello { major: 3, minor: 2, dict_name: "chatmail".into() })),
            // Dovecot 2.4's handshake and transaction lines (version 4).
            (b"H4\t0\t0\t\tmetadata", Ok(Command::Hello { major: 4, minor: 0, dict_name: "metadata".into() })),
            (b"B7\tuser\t0", Ok(Command::Begin { id: "7".into(), user: b"user".to_vec() })),
            (b"V7\t1", Ok(Command::OtherWrite { id: "7".into() })),
            (b"H3\t2", Err(ProtocolError("short handshake"))),
            (b"Hx\t2\t0\t\tn", Err(ProtocolError("handshake version is not a number"))),
            (b"Lshared/userdb/a@b\ta@b", Ok(Command::Lookup { key: b"shared/userdb/a@b".to_vec(), user: b"a@b".to_vec() })),
            (b"Lshared/passdb/1.2.3.4/a@b/p\x01tw\ta@b", Ok(Command::Lookup { key: b"shared/passdb/1.2.3.4/a@b/p\tw".to_vec(), user: b"a@b".to_vec() })),
            (b"L", Ok(Command::Lookup { key: Vec::new(), user: Vec::new() })),
            (b"Lbad\x01", Err(ProtocolError("bad escape sequence"))),
            (b"I0\t0\tshared/userdb/\t", Ok(Command::Iterate)),
            (b"C7", Ok(Command::Commit { id: "7".into() })),
            (b"D8", Ok(Command::Commit { id: "8".into() })),
            (b"R7", Ok(Command::Rollback { id: "7".into() })),
            (b"B7\tuser", Ok(Command::Begin { id: "7".into(), user: b"user".to_vec() })),
            (b"B7", Ok(Command::Begin { id: "7".into(), user: Vec::new() })),
            (b"S7\tk\tv\x01n2", Ok(Command::Set { id: "7".into(), key: b"k".to_vec(), value: b"v\n2".to_vec() })),
            (b"S7\tk", Err(ProtocolError("set without value"))),
            (b"U7\tk", Ok(Command::Unset { id: "7".into(), key: b"k".to_vec() })),
            (b"A7\tk\t1", Ok(Command::OtherWrite { id: "7".into() })),
            (b"T7\t1\t0", Ok(Command::OtherWrite { id: "7".into() })),
            (b"", Err(ProtocolError("empty line"))),
            (b"Zwhat", Err(ProtocolError("unknown command"))),
        ];
        for (line, want) in table {
            assert_eq!(parse_line(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn replies() {
        assert_eq!(Reply::Found("{\"a\":\"x\ty\"}".into()).line(), "O{\"a\":\"x\x01ty\"}\n");
        assert_eq!(Reply::NotFound.line(), "N\n");
        assert_eq!(Reply::Failed("disk\nbroken".into()).line(), "Fdisk\x01nbroken\n");
        assert_eq!(commit_refused("7"), "F7\tchatmail auth dict is read-only\n");
        assert_eq!(commit_ok("7"), "O7\n");
        assert_eq!(commit_failed("3", "no\tway"), "F3\tno\x01tway\n");
    }

    /// The commands a connection sends, or the error that ends it.
    type Read = Result<Vec<Command>, String>;

    async fn read_all(input: &[u8]) -> Read {
        let mut reader = CommandReader::new(input);
        let mut commands = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => return Ok(commands),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    #[tokio::test]
    async fn command_reader() {
        let long = format!("H3\t2\t0\t\tm\nL{}\n", "k".repeat(MAX_LINE));
        let table: Vec<(&[u8], Read)> = vec![
            (b"H3\t2\t0\t\tmetadata\nLk\tu\nC1\n", Ok(vec![Command::Lookup { key: b"k".to_vec(), user: b"u".to_vec() }, Command::Commit { id: "1".into() }])),
            (b"", Ok(vec![])),
            (b"H3\t2\t0\t\tm\n", Ok(vec![])),
            (b"Lk\tu\n", Err("command before handshake".into())),
            (b"H4\t0\t0\t\tm\nB1\tu\t0\nSk\tv\n", Err("set without value".into())),
            (b"H4\t0\t0\t\tm\nB1\tu\t0\nS1\tk\tv\nC1\n", Ok(vec![
                Command::Begin { id: "1".into(), user: b"u".to_vec() },
                Command::Set { id: "1".into(), key: b"k".to_vec(), value: b"v".to_vec() },
                Command::Commit { id: "1".into() },
            ])),
            (b"H5\t0\t0\t\tm\n", Err("dict protocol major version 5, expected 3 (Dovecot 2.3) or 4 (Dovecot 2.4)".into())),
            (b"H3\t2\t0\t\tm\nLk", Err("connection closed mid-line".into())),
            (long.as_bytes(), Err("line too long".into())),
            (b"H3\t2\t0\t\tm\nZ\n", Err("unknown command".into())),
        ];
        for (input, want) in table {
            assert_eq!(read_all(input).await, want, "{:?}", String::from_utf8_lossy(&input[..input.len().min(60)]));
        }
    }
}
