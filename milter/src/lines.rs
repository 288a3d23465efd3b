//! Splits a body arriving in arbitrary chunks into lines, with a bound on
//! the bytes held: a line longer than the bound is handed on in pieces
//! (marked as such), so a body without line breaks cannot grow memory.

/// Longest line kept whole. SMTP allows 1000 octets; armor lines are 76.
pub const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Calls `each(line, complete)` for every line finished by `chunk`
    /// (without CRLF / LF); `complete` is false for a piece of an overlong line.
    pub fn feed<E>(&mut self, mut chunk: &[u8], mut each: impl FnMut(&[u8], bool) -> Result<(), E>) -> Result<(), E> {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(pos);
            chunk = &rest[1..];
            if self.pending.is_empty() {
                each(strip_cr(head), true)?;
            } else {
                self.pending.extend_from_slice(head);
                let line = std::mem::take(&mut self.pending);
                each(strip_cr(&line), true)?;
            }
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() > MAX_LINE {
            let piece = std::mem::take(&mut self.pending);
            each(&piece, false)?;
        }
        Ok(())
    }

    /// Hands on a last line without a line break.
    pub fn finish<E>(&mut self, mut each: impl FnMut(&[u8], bool) -> Result<(), E>) -> Result<(), E> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            each(strip_cr(&line), true)?;
        }
        Ok(())
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut splitter = LineSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            splitter
                .feed::<()>(chunk, |l, c| {
                    out.push((String::from_utf8_lossy(l).into_owned(), c));
                    Ok(())
                })
                .expect("no error");
        }
        splitter
            .finish::<()>(|l, c| {
                out.push((String::from_utf8_lossy(l).into_owned(), c));
                Ok(())
            })
            .expect("no error");
        out
    }

    #[test]
    fn splits_across_chunks() {
        let got = split(&[b"ab", b"c\r\nde\r", b"\nf\n\r\n", b"last"]);
        let want: Vec<(String, bool)> = [("abc", true), ("de", true), ("f", true), ("", true), ("last", true)]
            .iter()
            .map(|(l, c)| (l.to_string(), *c))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn overlong_lines_come_in_pieces() {
        let long = vec![b'x'; MAX_LINE * 3];
        let got = split(&[&long[..MAX_LINE + 1], &long[MAX_LINE + 1..], b"\n"]);
        assert!(got.iter().all(|(l, _)| l.len() <= 2 * MAX_LINE + 1));
        assert!(got.iter().any(|(_, complete)| !complete));
    }
}
