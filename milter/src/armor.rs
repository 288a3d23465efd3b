//! Streaming check of an ASCII-armored OpenPGP message (RFC 9580 section 6):
//! `-----BEGIN PGP MESSAGE-----`, optional armor headers, a blank line,
//! base64 lines, an optional `=XXXX` checksum line, and
//! `-----END PGP MESSAGE-----`. The decoded bytes go straight into the
//! packet check; nothing is stored.

use std::fmt;

use crate::openpgp::{PacketChecker, PacketProblem};

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Why an armored message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmorProblem {
    /// Something other than blank lines before the BEGIN line.
    NoBegin,
    /// An armor header line that is not `Key: value`.
    BadHeader,
    /// A character outside the base64 alphabet, or data after padding.
    BadBase64,
    /// The checksum line is not `=` and four base64 characters.
    BadChecksum,
    /// The data ended before the END line.
    NoEnd,
    /// Something other than blank lines after the END line.
    DataAfterEnd,
    /// The decoded packets are not an encrypted message.
    Packets(PacketProblem),
}

impl fmt::Display for ArmorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArmorProblem::NoBegin => f.write_str("no '-----BEGIN PGP MESSAGE-----' line"),
            ArmorProblem::BadHeader => f.write_str("malformed armor header line"),
            ArmorProblem::BadBase64 => f.write_str("invalid base64 in the armor"),
            ArmorProblem::BadChecksum => f.write_str("malformed armor checksum line"),
            ArmorProblem::NoEnd => f.write_str("no '-----END PGP MESSAGE-----' line"),
            ArmorProblem::DataAfterEnd => f.write_str("data after the armor's END line"),
            ArmorProblem::Packets(p) => write!(f, "{p}"),
        }
    }
}

impl std::error::Error for ArmorProblem {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    BeforeBegin,
    Headers,
    Data,
    AfterChecksum,
    AfterEnd,
}

/// What the armor said about itself, for policy decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmorSummary {
    /// The armor had a `Version:` header (outgoing mail must not).
    pub has_version_header: bool,
    /// PKESK and SKESK packets in the message.
    pub key_packets: u32,
}

/// Incremental checker: feed the lines of the armored text (without line
/// endings), then call [`ArmorChecker::finish`].
#[derive(Debug, Clone)]
pub struct ArmorChecker {
    state: State,
    has_version_header: bool,
    base64: Base64Decoder,
    packets: PacketChecker,
}

impl Default for ArmorChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl ArmorChecker {
    pub fn new() -> ArmorChecker {
        ArmorChecker {
            state: State::BeforeBegin,
            has_version_header: false,
            base64: Base64Decoder::default(),
            packets: PacketChecker::new(),
        }
    }

    /// Checks one line.
    pub fn line(&mut self, line: &[u8]) -> Result<(), ArmorProblem> {
        let line = trim_end(line);
        match self.state {
            State::BeforeBegin => {
                if line == BEGIN {
                    self.state = State::Headers;
                } else if !line.is_empty() {
                    return Err(ArmorProblem::NoBegin);
                }
            }
            State::Headers => {
                if line.is_empty() {
                    self.state = State::Data;
                } else {
                    let Some(colon) = line.windows(2).position(|w| w == b": ") else {
                        return Err(ArmorProblem::BadHeader);
                    };
                    let key = &line[..colon];
                    if key.is_empty() || !key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
                        return Err(ArmorProblem::BadHeader);
                    }
                    if key.eq_ignore_ascii_case(b"Version") {
                        self.has_version_header = true;
                    }
                }
            }
            State::Data => {
                if line == END {
                    self.end_of_data()?;
                    self.state = State::AfterEnd;
                } else if let Some(crc) = line.strip_prefix(b"=") {
                    if crc.len() != 4 || !crc.iter().all(|&b| base64_value(b).is_some()) {
                        return Err(ArmorProblem::BadChecksum);
                    }
                    self.end_of_data()?;
                    self.state = State::AfterChecksum;
                } else {
                    let mut out = [0u8; 96];
                    for piece in line.chunks(64) {
                        let n = self.base64.decode(piece, &mut out)?;
                        self.packets.feed(&out[..n]).map_err(ArmorProblem::Packets)?;
                    }
                }
            }
            State::AfterChecksum => {
                if line == END {
                    self.state = State::AfterEnd;
                } else {
                    return Err(ArmorProblem::NoEnd);
                }
            }
            State::AfterEnd => {
                if !line.is_empty() {
                    return Err(ArmorProblem::DataAfterEnd);
                }
            }
        }
        Ok(())
    }

    fn end_of_data(&mut self) -> Result<(), ArmorProblem> {
        self.base64.finish()?;
        self.packets.finish().map_err(ArmorProblem::Packets)
    }

    /// Checks that the armor was complete.
    pub fn finish(&self) -> Result<ArmorSummary, ArmorProblem> {
        match self.state {
            State::AfterEnd => Ok(ArmorSummary {
                has_version_header: self.has_version_header,
                key_packets: self.packets.key_packets(),
            }),
            State::BeforeBegin => Err(ArmorProblem::NoBegin),
            _ => Err(ArmorProblem::NoEnd),
        }
    }
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')).map_or(0, |i| i + 1);
    &line[..end]
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Base64 decoder that keeps at most three pending 6-bit groups between calls.
#[derive(Debug, Clone, Copy, Default)]
struct Base64Decoder {
    bits: u32,
    count: u8,
    padding: u8,
}

impl Base64Decoder {
    /// Decodes `input` into `out` (which must hold `input.len() * 3 / 4 + 3`
    /// bytes) and returns how many bytes were written.
    fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<usize, ArmorProblem> {
        let mut n = 0;
        for &b in input {
            if b == b'=' {
                // Padding completes a group of 2 or 3 characters.
                if self.count < 2 {
                    return Err(ArmorProblem::BadBase64);
                }
                self.padding += 1;
                if usize::from(self.count) + usize::from(self.padding) > 4 {
                    return Err(ArmorProblem::BadBase64);
                }
                continue;
            }
            let value = base64_value(b).ok_or(ArmorProblem::BadBase64)?;
            if self.padding > 0 {
                return Err(ArmorProblem::BadBase64);
            }
            self.bits = (self.bits << 6) | u32::from(value);
            self.count += 1;
            if self.count == 4 {
                out[n..n + 3].copy_from_slice(&self.bits.to_be_bytes()[1..]);
                n += 3;
                self.bits = 0;
                self.count = 0;
            }
        }
        if self.padding > 0 && usize::from(self.count) + usize::from(self.padding) == 4 {
            // A padded final group: emit its 1 or 2 bytes now.
            let bits = self.bits << (6 * (4 - u32::from(self.count)));
            let bytes = bits.to_be_bytes();
            let len = usize::from(self.count) - 1;
            out[n..n + len].copy_from_slice(&bytes[1..1 + len]);
            n += len;
            self.count = 0;
            self.bits = 0;
            // Keep `padding` set: nothing but the end may follow.
            self.padding = 4;
        }
        Ok(n)
    }

    fn finish(&self) -> Result<(), ArmorProblem> {
        // Unpadded leftovers or incomplete padding are malformed.
        if self.count != 0 || (self.padding != 0 && self.padding != 4) {
            return Err(ArmorProblem::BadBase64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
