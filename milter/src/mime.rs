//! Streaming check that a message body is an RFC 3156 encrypted message:
//! `multipart/encrypted; protocol="application/pgp-encrypted"` with exactly
//! two parts — `application/pgp-encrypted` holding `Version: 1`, then
//! `application/octet-stream` holding the ASCII-armored OpenPGP message.
//! Only part headers and the tiny first part are kept (both bounded); the
//! armored data streams through [`ArmorChecker`].

use std::fmt;

use crate::armor::{ArmorChecker, ArmorProblem, ArmorSummary};

/// Longest header block of a part that is kept for inspection.
const MAX_PART_HEADERS: usize = 16 * 1024;
/// Longest first-part body (it should be `Version: 1`).
const MAX_VERSION_PART: usize = 1024;

/// A parsed Content-Type value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// Lowercase `type/subtype`.
    pub mime_type: String,
    /// Parameters with lowercase names, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses a Content-Type header value (folded lines allowed). Returns `None`
/// when it has no `type/subtype`.
pub fn parse_content_type(value: &str) -> Option<ContentType> {
    let unfolded: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let mut rest = unfolded.trim();
    let end = rest.find(';').unwrap_or(rest.len());
    let mime_type = rest[..end].trim().to_ascii_lowercase();
    let (main, sub) = mime_type.split_once('/')?;
    if main.is_empty() || sub.is_empty() || mime_type.contains(char::is_whitespace) {
        return None;
    }
    rest = &rest[end..];
    let mut params = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start();
        let Some(eq) = after.find('=') else { break };
        let name = after[..eq].trim().to_ascii_lowercase();
        let value_start = after[eq + 1..].trim_start();
        let (value, remainder) = if let Some(quoted) = value_start.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => value.push(c),
                }
            }
            let end = end?;
            (value, quoted[end..].trim_start())
        } else {
            let end = value_start.find(';').unwrap_or(value_start.len());
            (value_start[..end].trim().to_owned(), &value_start[end..])
        };
        if !name.is_empty() {
            params.push((name, value));
        }
        rest = remainder;
    }
    Some(ContentType { mime_type, params })
}

/// Why a body is not an acceptable encrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MimeProblem {
    NotMultipartEncrypted,
    WrongProtocol,
    BadBoundary,
    /// The first part is not `application/pgp-encrypted` with `Version: 1`.
    BadVersionPart,
    /// The second part is not `application/octet-stream` in 7bit/8bit.
    BadDataPart,
    /// A part header block beyond the size limit or malformed.
    BadPartHeaders,
    /// More than two parts.
    ExtraPart,
    /// The body ended before the closing boundary.
    Unterminated,
    Armor(ArmorProblem),
}

impl fmt::Display for MimeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MimeProblem::NotMultipartEncrypted => f.write_str("not multipart/encrypted"),
            MimeProblem::WrongProtocol => f.write_str("multipart/encrypted without protocol application/pgp-encrypted"),
            MimeProblem::BadBoundary => f.write_str("missing or invalid MIME boundary"),
            MimeProblem::BadVersionPart => f.write_str("first part is not application/pgp-encrypted 'Version: 1'"),
            MimeProblem::BadDataPart => f.write_str("second part is not a 7bit application/octet-stream"),
            MimeProblem::BadPartHeaders => f.write_str("malformed or oversized part headers"),
            MimeProblem::ExtraPart => f.write_str("more than two parts"),
            MimeProblem::Unterminated => f.write_str("missing part or closing MIME boundary"),
            MimeProblem::Armor(p) => write!(f, "{p}"),
        }
    }
}

impl std::error::Error for MimeProblem {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    VersionHeaders,
    VersionBody,
    DataHeaders,
    DataBody,
    Epilogue,
}

/// Incremental checker over body lines (without line endings).
#[derive(Debug, Clone)]
pub struct EncryptedBodyChecker {
    delimiter: Vec<u8>,
    state: State,
    kept: Vec<u8>,
    armor: ArmorChecker,
}

enum Boundary {
    None,
    Next,
    Close,
}

impl EncryptedBodyChecker {
    /// Starts a check for a message with the given top-level Content-Type.
    pub fn new(content_type: &ContentType) -> Result<EncryptedBodyChecker, MimeProblem> {
        if content_type.mime_type != "multipart/encrypted" {
            return Err(MimeProblem::NotMultipartEncrypted);
        }
        if !content_type.param("protocol").is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-encrypted")) {
            return Err(MimeProblem::WrongProtocol);
        }
        let boundary = content_type.param("boundary").ok_or(MimeProblem::BadBoundary)?;
        // RFC 2046: 1 to 70 characters, not ending in a space.
        if boundary.is_empty() || boundary.len() > 70 || boundary.ends_with(' ') || !boundary.is_ascii() {
            return Err(MimeProblem::BadBoundary);
        }
        let mut delimiter = b"--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(EncryptedBodyChecker { delimiter, state: State::Preamble, kept: Vec::new(), armor: ArmorChecker::new() })
    }

    fn boundary(&self, line: &[u8]) -> Boundary {
        let Some(rest) = line.strip_prefix(self.delimiter.as_slice()) else { return Boundary::None };
        let (close, rest) = match rest.strip_prefix(b"--") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        // Transport padding (trailing whitespace) is allowed after a delimiter.
        if rest.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            if close {
                Boundary::Close
            } else {
                Boundary::Next
            }
        } else {
            Boundary::None
        }
    }

    /// Checks one body line.
    pub fn line(&mut self, line: &[u8]) -> Result<(), MimeProblem> {
        let boundary = if self.state == State::Epilogue { Boundary::None } else { self.boundary(line) };
        match (self.state, boundary) {
            (State::Preamble, Boundary::Next) => self.state = State::VersionHeaders,
            (State::Preamble, Boundary::Close) => return Err(MimeProblem::Unterminated),
            (State::Preamble, Boundary::None) => {}
            (State::VersionHeaders | State::DataHeaders, Boundary::None) => {
                if trim(line).is_empty() {
                    let headers = std::mem::take(&mut self.kept);
                    if self.state == State::VersionHeaders {
                        check_part_headers(&headers, "application/pgp-encrypted").map_err(|_| MimeProblem::BadVersionPart)?;
                        self.state = State::VersionBody;
                    } else {
                        check_part_headers(&headers, "application/octet-stream")?;
                        self.state = State::DataBody;
                    }
                } else {
                    self.keep(line, MAX_PART_HEADERS).map_err(|_| MimeProblem::BadPartHeaders)?;
                }
            }
            (State::VersionHeaders | State::DataHeaders, _) => return Err(MimeProblem::BadPartHeaders),
            (State::VersionBody, Boundary::None) => {
                self.keep(line, MAX_VERSION_PART).map_err(|_| MimeProblem::BadVersionPart)?;
            }
            (State::VersionBody, Boundary::Next) => {
                let body = std::mem::take(&mut self.kept);
                if trim(&body) != b"Version: 1" {
                    return Err(MimeProblem::BadVersionPart);
                }
                self.state = State::DataHeaders;
            }
            (State::VersionBody, Boundary::Close) => return Err(MimeProblem::Unterminated),
            (State::DataBody, Boundary::None) => self.armor.line(line).map_err(MimeProblem::Armor)?,
            (State::DataBody, Boundary::Next) => return Err(MimeProblem::ExtraPart),
            (State::DataBody, Boundary::Close) => {
                self.armor.finish().map_err(MimeProblem::Armor)?;
                self.state = State::Epilogue;
            }
            (State::Epilogue, _) => {}
        }
        Ok(())
    }

    fn keep(&mut self, line: &[u8], limit: usize) -> Result<(), ()> {
        if self.kept.len() + line.len() + 2 > limit {
            return Err(());
        }
        self.kept.extend_from_slice(line);
        self.kept.extend_from_slice(b"\n");
        Ok(())
    }

    /// Checks that the body was complete.
    pub fn finish(&self) -> Result<ArmorSummary, MimeProblem> {
        if self.state != State::Epilogue {
            return Err(MimeProblem::Unterminated);
        }
        self.armor.finish().map_err(MimeProblem::Armor)
    }
}

/// Checks a whole message held in memory (headers and body): for tests,
/// fixtures and the fuzzer; the milter itself streams.
pub fn check_message(raw: &[u8]) -> Result<ArmorSummary, MimeProblem> {
    let mut lines = raw.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut header_block = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        header_block.extend_from_slice(line);
        header_block.push(b'\n');
    }
    let text = String::from_utf8_lossy(&header_block);
    let headers = unfold_headers(&text).map_err(|_| MimeProblem::NotMultipartEncrypted)?;
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, value)| parse_content_type(value))
        .ok_or(MimeProblem::NotMultipartEncrypted)?;
    let mut checker = EncryptedBodyChecker::new(&content_type)?;
    for line in lines {
        checker.line(line)?;
    }
    checker.finish()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Checks a part's header block: its Content-Type is `want`, and any
/// Content-Transfer-Encoding is 7bit or 8bit (armor is plain text).
fn check_part_headers(block: &[u8], want: &str) -> Result<(), MimeProblem> {
    let text = std::str::from_utf8(block).map_err(|_| MimeProblem::BadPartHeaders)?;
    let mut content_type = None;
    let mut encoding_ok = true;
    for (name, value) in unfold_headers(text)? {
        if name.eq_ignore_ascii_case("content-type") {
            if content_type.is_some() {
                return Err(MimeProblem::BadPartHeaders);
            }
            content_type = Some(parse_content_type(&value).ok_or(MimeProblem::BadPartHeaders)?);
        } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
            encoding_ok = matches!(value.trim().to_ascii_lowercase().as_str(), "7bit" | "8bit");
        }
    }
    match content_type {
        Some(ct) if ct.mime_type == want && encoding_ok => Ok(()),
        _ => Err(MimeProblem::BadDataPart),
    }
}

/// Splits a header block into (name, unfolded value) pairs.
fn unfold_headers(text: &str) -> Result<Vec<(String, String)>, MimeProblem> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().ok_or(MimeProblem::BadPartHeaders)?;
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').ok_or(MimeProblem::BadPartHeaders)?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(MimeProblem::BadPartHeaders);
            }
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
