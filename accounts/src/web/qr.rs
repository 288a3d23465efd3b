//! QR codes for onboarding links: as inline SVG for the web page and as
//! Unicode half blocks for a terminal.

use qrcode::{Color, EcLevel, QrCode};

/// Light modules around the code, as the QR standard asks.
const QUIET_ZONE: usize = 4;

/// The modules of one QR code, row by row; `true` is dark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    width: usize,
    dark: Vec<bool>,
}

impl Matrix {
    /// Encodes `text` with medium error correction (about 15% of the code
    /// may be damaged or hidden and it still reads).
    pub fn encode(text: &str) -> Result<Matrix, String> {
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
            .map_err(|e| format!("cannot encode {} bytes as a QR code: {e}", text.len()))?;
        let width = code.width();
        let dark = code.to_colors().into_iter().map(|c| c == Color::Dark).collect();
        Ok(Matrix { width, dark })
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the module at column `x`, row `y` is dark; positions in the
    /// quiet zone (negative or beyond the width) are light.
    pub fn is_dark(&self, x: isize, y: isize) -> bool {
        let w = self.width as isize;
        (0..w).contains(&x) && (0..w).contains(&y) && self.dark[(y * w + x) as usize]
    }

    /// An SVG image that scales to its container: one unit per module, the
    /// quiet zone included, dark runs of each row as one path segment.
    pub fn svg(&self, label: &str) -> String {
        let size = self.width + 2 * QUIET_ZONE;
        let mut path = String::new();
        for y in 0..self.width {
            let mut x = 0;
            while x < self.width {
                if !self.dark[y * self.width + x] {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < self.width && self.dark[y * self.width + x] {
                    x += 1;
                }
                let run = x - start;
                path.push_str(&format!("M{} {}h{run}v1h-{run}z", start + QUIET_ZONE, y + QUIET_ZONE));
            }
        }
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" class=\"qr\" role=\"img\" \
             aria-label=\"{}\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
             <path fill=\"#000\" d=\"{path}\"/></svg>",
            super::pages::escape(label)
        )
    }

    /// The code as lines of Unicode half blocks (two module rows per text
    /// line), quiet zone included. With `dark_terminal`, light modules are
    /// drawn (a terminal's text is light on dark); otherwise dark ones.
    pub fn terminal(&self, dark_terminal: bool) -> String {
        let q = QUIET_ZONE as isize;
        let w = self.width as isize;
        let drawn = |x: isize, y: isize| self.is_dark(x, y) != dark_terminal;
        let mut out = String::new();
        let mut y = -q;
        while y < w + q {
            for x in -q..w + q {
                let top = drawn(x, y);
                // The last text line may have only a top row; below it is
                // the terminal's own background.
                let bottom = y + 1 < w + q && drawn(x, y + 1);
                out.push(match (top, bottom) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                });
            }
            out.push('\n');
            y += 2;
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_every_dark_module() {
        let m = Matrix::encode("dcaccount:https://chat.example/new").unwrap();
        let svg = m.svg("QR <code>");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.contains("aria-label=\"QR &lt;code&gt;\""), "{svg}");
        let size = m.width() + 8;
        assert!(svg.contains(&format!("viewBox=\"0 0 {size} {size}\"")), "{svg}");
        // Sum of the runs equals the number of dark modules.
        let runs: usize = svg
            .split('h')
            .skip(1)
            .filter_map(|part| part.split('v').next()?.parse::<usize>().ok())
            .sum();
        let dark = (0..m.width() as isize)
            .flat_map(|y| (0..m.width() as isize).map(move |x| (x, y)))
            .filter(|&(x, y)| m.is_dark(x, y))
            .count();
        assert_eq!(runs, dark);
    }

    #[test]
    fn terminal_rendering_covers_the_code() {
        let m = Matrix::encode("dclogin:a@b?p=c&v=1").unwrap();
        for dark_terminal in [true, false] {
            let text = m.terminal(dark_terminal);
            let lines: Vec<&str> = text.lines().collect();
            let side = m.width() + 8;
            assert_eq!(lines.len(), side.div_ceil(2));
            assert!(lines.iter().all(|l| l.chars().count() == side));
            // Decode the half blocks back into modules and compare.
            for (row, line) in lines.iter().enumerate() {
                for (col, ch) in line.chars().enumerate() {
                    let (x, y) = (col as isize - 4, 2 * row as isize - 4);
                    let (top, bottom) = match ch {
                        '█' => (true, true),
                        '▀' => (true, false),
                        '▄' => (false, true),
                        _ => (false, false),
                    };
                    assert_eq!(top, m.is_dark(x, y) != dark_terminal, "{x},{y}");
                    if y + 1 < m.width() as isize + 4 {
                        assert_eq!(bottom, m.is_dark(x, y + 1) != dark_terminal, "{x},{}", y + 1);
                    }
                }
            }
        }
    }

    #[test]
    fn long_text_still_encodes_and_too_long_fails() {
        assert!(Matrix::encode(&"x".repeat(1000)).is_ok());
        assert!(Matrix::encode(&"x".repeat(5000)).is_err());
    }
}
