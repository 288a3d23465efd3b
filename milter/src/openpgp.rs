//! Streaming check of an OpenPGP message's packet sequence (RFC 9580 / RFC 4880).
//!
//! An encrypted chatmail message is one or more key packets — PKESK (tag 1)
//! or SKESK (tag 3) — followed by exactly one encrypted data packet, SEIPD
//! (tag 18), which ends the data. Nothing else may appear: no literal data,
//! no compressed data, no trailing bytes. Packet bodies are skipped, not
//! stored, so memory stays constant however large the message is.
//!
//! Both packet header formats are accepted: new format (one-, two- and
//! five-octet lengths, and partial lengths for the encrypted data) and
//! legacy format with length types 0–2. Legacy length type 3
//! ("indeterminate") is refused: it lets a packet run to an unknown end.

use std::fmt;

const TAG_PKESK: u8 = 1;
const TAG_SKESK: u8 = 3;
const TAG_SEIPD: u8 = 18;

/// Why a packet sequence is not an acceptable encrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketProblem {
    /// A packet header's first octet lacks the always-set bit 7.
    NotAPacket { offset: u64 },
    /// A packet other than PKESK, SKESK or SEIPD.
    ForbiddenPacket { tag: u8, offset: u64 },
    /// SEIPD without a key packet before it.
    NoKeyPacket,
    /// A key packet with a partial length (only data packets may use them).
    PartialKeyPacket { tag: u8 },
    /// Legacy header with length type 3 (indeterminate length).
    IndeterminateLength { offset: u64 },
    /// SEIPD version octet other than 1 or 2.
    UnknownSeipdVersion(u8),
    /// An empty SEIPD packet.
    EmptySeipd,
    /// Bytes after the SEIPD packet.
    DataAfterSeipd { offset: u64 },
    /// The data ended inside a packet header or body, or before any SEIPD.
    Truncated,
}

impl fmt::Display for PacketProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketProblem::NotAPacket { offset } => write!(f, "no OpenPGP packet header at byte {offset}"),
            PacketProblem::ForbiddenPacket { tag, offset } => {
                write!(f, "OpenPGP packet with tag {tag} at byte {offset} (only PKESK, SKESK and one SEIPD are allowed)")
            }
            PacketProblem::NoKeyPacket => f.write_str("encrypted data without a PKESK or SKESK packet before it"),
            PacketProblem::PartialKeyPacket { tag } => write!(f, "key packet (tag {tag}) with a partial length"),
            PacketProblem::IndeterminateLength { offset } => {
                write!(f, "legacy packet header with indeterminate length at byte {offset}")
            }
            PacketProblem::UnknownSeipdVersion(v) => write!(f, "SEIPD packet of unknown version {v}"),
            PacketProblem::EmptySeipd => f.write_str("empty SEIPD packet"),
            PacketProblem::DataAfterSeipd { offset } => write!(f, "data after the SEIPD packet at byte {offset}"),
            PacketProblem::Truncated => f.write_str("OpenPGP data ends early (no complete SEIPD packet)"),
        }
    }
}

impl std::error::Error for PacketProblem {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the first octet of a packet header.
    HeaderStart,
    /// Reading the length octets of a header for packet `tag`, or of the
    /// next chunk of a partial-length packet (the same encoding).
    Length { tag: u8, kind: LengthKind, got: [u8; 4], have: u8, need: u8 },
    /// Skipping `remaining` body octets of packet `tag`; `partial` says more
    /// chunks (each with its own length header) follow.
    Body { tag: u8, remaining: u64, partial: bool },
    /// The SEIPD packet ended; only the end of data may follow.
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LengthKind {
    /// New format: the first length octet decides the form.
    New,
    /// Legacy format with a fixed number of length octets.
    Legacy,
}

/// Incremental checker: feed the decoded bytes in any chunking, then call
/// [`PacketChecker::finish`].
#[derive(Debug, Clone)]
pub struct PacketChecker {
    state: State,
    offset: u64,
    key_packets: u32,
    /// The next body octet is the first of a SEIPD packet (its version).
    seipd_version_pending: bool,
    seipd_seen_body: bool,
}

impl Default for PacketChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketChecker {
    pub fn new() -> PacketChecker {
        PacketChecker {
            state: State::HeaderStart,
            offset: 0,
            key_packets: 0,
            seipd_version_pending: false,
            seipd_seen_body: false,
        }
    }

    /// Number of PKESK and SKESK packets seen so far.
    pub fn key_packets(&self) -> u32 {
        self.key_packets
    }

    /// Checks the next bytes of the packet stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), PacketProblem> {
        while !data.is_empty() {
            match self.state {
                State::Body { tag, remaining, partial } => {
                    if remaining == 0 {
                        self.end_of_body(tag, partial)?;
                        continue;
                    }
                    if tag == TAG_SEIPD && self.seipd_version_pending {
                        let version = data[0];
                        if version != 1 && version != 2 {
                            return Err(PacketProblem::UnknownSeipdVersion(version));
                        }
                        self.seipd_version_pending = false;
                        self.seipd_seen_body = true;
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(data.len());
                    data = &data[take..];
                    self.offset += take as u64;
                    let remaining = remaining - take as u64;
                    self.state = State::Body { tag, remaining, partial };
                    if remaining == 0 {
                        self.end_of_body(tag, partial)?;
                    }
                }
                State::Complete => return Err(PacketProblem::DataAfterSeipd { offset: self.offset }),
                _ => {
                    let byte = data[0];
                    data = &data[1..];
                    self.header_byte(byte)?;
                    self.offset += 1;
                }
            }
        }
        Ok(())
    }

    /// Checks that the data ended right after a complete SEIPD packet.
    pub fn finish(&self) -> Result<(), PacketProblem> {
        match self.state {
            State::Complete => Ok(()),
            _ => Err(PacketProblem::Truncated),
        }
    }

    fn end_of_body(&mut self, tag: u8, partial: bool) -> Result<(), PacketProblem> {
        if partial {
            self.state = State::Length { tag, kind: LengthKind::New, got: [0; 4], have: 0, need: 1 };
        } else if tag == TAG_SEIPD {
            if !self.seipd_seen_body {
                return Err(PacketProblem::EmptySeipd);
            }
            self.state = State::Complete;
        } else {
            self.state = State::HeaderStart;
        }
        Ok(())
    }

    fn header_byte(&mut self, byte: u8) -> Result<(), PacketProblem> {
        match self.state {
            State::HeaderStart => {
                if byte & 0x80 == 0 {
                    return Err(PacketProblem::NotAPacket { offset: self.offset });
                }
                let (tag, kind, need) = if byte & 0x40 != 0 {
                    (byte & 0x3f, LengthKind::New, 1)
                } else {
                    let need = match byte & 0x03 {
                        0 => 1,
                        1 => 2,
                        2 => 4,
                        _ => return Err(PacketProblem::IndeterminateLength { offset: self.offset }),
                    };
                    ((byte >> 2) & 0x0f, LengthKind::Legacy, need)
                };
                match tag {
                    TAG_PKESK | TAG_SKESK => self.key_packets += 1,
                    TAG_SEIPD if self.key_packets == 0 => return Err(PacketProblem::NoKeyPacket),
                    TAG_SEIPD => {
                        self.seipd_version_pending = true;
                        self.seipd_seen_body = false;
                    }
                    _ => return Err(PacketProblem::ForbiddenPacket { tag, offset: self.offset }),
                }
                self.state = State::Length { tag, kind, got: [0; 4], have: 0, need };
                Ok(())
            }
            State::Length { tag, kind, got, have, need } => self.length_byte(tag, kind, got, have, need, byte),
            State::Body { .. } | State::Complete => Ok(()),
        }
    }

    fn length_byte(
        &mut self,
        tag: u8,
        kind: LengthKind,
        mut got: [u8; 4],
        have: u8,
        mut need: u8,
        byte: u8,
    ) -> Result<(), PacketProblem> {
        got[usize::from(have)] = byte;
        let have = have + 1;
        if kind == LengthKind::New && have == 1 {
            // The first octet of a new-format length decides how many follow.
            match byte {
                0..=191 => return self.start_body(tag, u64::from(byte), false),
                192..=223 => need = 2,
                224..=254 => {
                    if tag != TAG_SEIPD {
                        return Err(PacketProblem::PartialKeyPacket { tag });
                    }
                    return self.start_body(tag, 1u64 << (byte & 0x1f), true);
                }
                255 => {
                    // Five-octet form: 0xff, then four octets read like a
                    // legacy four-octet length.
                    self.state = State::Length { tag, kind: LengthKind::Legacy, got: [0; 4], have: 0, need: 4 };
                    return Ok(());
                }
            }
        }
        if have < need {
            self.state = State::Length { tag, kind, got, have, need };
            return Ok(());
        }
        let length = match (kind, need) {
            (LengthKind::New, 2) => ((u64::from(got[0]) - 192) << 8) + u64::from(got[1]) + 192,
            (_, 1) => u64::from(got[0]),
            (_, 2) => (u64::from(got[0]) << 8) | u64::from(got[1]),
            _ => u64::from(u32::from_be_bytes(got)),
        };
        self.start_body(tag, length, false)
    }

    fn start_body(&mut self, tag: u8, length: u64, partial: bool) -> Result<(), PacketProblem> {
        self.state = State::Body { tag, remaining: length, partial };
        if length == 0 {
            self.end_of_body(tag, partial)?;
        }
        Ok(())
    }
}

/// Checks a complete packet sequence held in memory.
pub fn check_packets(data: &[u8]) -> Result<(), PacketProblem> {
    let mut checker = PacketChecker::new();
    checker.feed(data)?;
    checker.finish()
}

#[cfg(test)]
mod tests;
