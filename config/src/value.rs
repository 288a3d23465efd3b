//! Parsers for the value forms chatmail.ini uses. Each returns a problem
//! description (without key or file; the caller adds those).

/// How a size without a unit is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNumber {
    /// A plain number is bytes (`max_message_size = 31457280`).
    Bytes,
    /// A plain number is megabytes, as chatmail reads `max_mailbox_size`,
    /// `min_available_memory` and `min_free_disk_space`.
    Megabytes,
}

/// Parses a byte size: a number with a binary unit suffix `K`, `M`, `G` or
/// `T` (case-insensitive, optionally followed by `B`, e.g. `100M`, `1G`,
/// `512k`, `10MB`), or a plain number read as `bare` says. Units are powers
/// of 1024, as in chatmail and Dovecot.
pub fn parse_size(text: &str, bare: BareNumber) -> Result<u64, String> {
    let value = text.trim();
    let problem = || format!("{value:?} is not a size (expected bytes or a number with K, M, G or T, e.g. 100M)");
    if value.is_empty() {
        return Err("empty value, expected a size such as 100M".into());
    }
    let upper = value.to_ascii_uppercase();
    let without_b = upper.strip_suffix('B').unwrap_or(&upper);
    let (digits, multiplier): (&str, u64) = match without_b.chars().last() {
        Some('K') => (&without_b[..without_b.len() - 1], 1 << 10),
        Some('M') => (&without_b[..without_b.len() - 1], 1 << 20),
        Some('G') => (&without_b[..without_b.len() - 1], 1 << 30),
        Some('T') => (&without_b[..without_b.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() && without_b.len() == upper.len() => match bare {
            BareNumber::Bytes => (without_b, 1),
            BareNumber::Megabytes => (without_b, 1 << 20),
        },
        _ => return Err(problem()),
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem());
    }
    let number: u64 = digits.parse().map_err(|_| problem())?;
    number.checked_mul(multiplier).ok_or_else(|| format!("{value:?} is too large"))
}

/// Parses a non-negative integer within `min..=max`.
pub fn parse_uint(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let value = text.trim();
    if value.is_empty() {
        return Err("empty value, expected a whole number".into());
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{value:?} is not a whole number"));
    }
    let number: u64 = value.parse().map_err(|_| format!("{value:?} is too large"))?;
    if number < min || number > max {
        return Err(format!("{number} is out of range ({min}..={max})"));
    }
    Ok(number)
}

/// Parses a non-negative decimal number such as `5` or `2.5`.
pub fn parse_decimal(text: &str) -> Result<f64, String> {
    let value = text.trim();
    let ok = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().filter(|&b| b == b'.').count() <= 1
        && value.bytes().any(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!("{value:?} is not a non-negative number"));
    }
    value.parse::<f64>().map_err(|_| format!("{value:?} is not a non-negative number"))
}

/// Parses a boolean: `true` or `false`, case-insensitive. chatmail treats
/// anything but `true` as false (so `yes` would silently mean false there);
/// refusing other words keeps a file from meaning different things on the
/// two relays.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (expected true or false)")),
    }
}

/// Splits a whitespace-separated list (chatmail writes lists this way, e.g.
/// `passthrough_recipients = echo@example.org privacy@example.org`).
pub fn parse_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A size in bytes for people: the largest binary unit that gives at least
/// 1, with one decimal where it matters (`30 MiB`, `1.5 GiB`, `512 bytes`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return if bytes == 1 { "1 byte".into() } else { format!("{bytes} bytes") };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let good: &[(&str, u64)] = &[
            ("0", 0),
            ("31457280", 31_457_280),
            ("100M", 100 << 20),
            ("100m", 100 << 20),
            ("100MB", 100 << 20),
            ("1G", 1 << 30),
            ("512k", 512 << 10),
            ("2T", 2 << 40),
            (" 7K ", 7 << 10),
            ("10 M", 10 << 20),
        ];
        for &(text, want) in good {
            assert_eq!(parse_size(text, BareNumber::Bytes), Ok(want), "{text:?}");
        }
        // chatmail reads a plain mailbox size as megabytes.
        assert_eq!(parse_size("256", BareNumber::Megabytes), Ok(256 << 20));
        assert_eq!(parse_size("2G", BareNumber::Megabytes), Ok(2 << 30));
        for bad in ["", "M", "1.5G", "-1", "10X", "ten", "1GG", "B", "99999999999999999999", "20000000T"] {
            assert!(parse_size(bad, BareNumber::Bytes).is_err(), "{bad:?} should fail");
            assert!(parse_size(bad, BareNumber::Megabytes).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn uints() {
        assert_eq!(parse_uint("60", 1, 100), Ok(60));
        assert_eq!(parse_uint(" 9 ", 0, 9), Ok(9));
        for bad in ["", "-1", "1.0", "abc", "0x10", "101", "99999999999999999999999"] {
            assert!(parse_uint(bad, 1, 100).is_err(), "{bad:?} should fail");
        }
        assert!(parse_uint("0", 1, 100).expect_err("below min").contains("out of range"));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("5"), Ok(5.0));
        assert_eq!(parse_decimal("2.5"), Ok(2.5));
        for bad in ["", ".", "-1", "1.2.3", "1e3", "nan", "inf"] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn bools() {
        for (text, want) in [("true", true), ("True", true), ("false", false), ("FALSE", false), (" false ", false)] {
            assert_eq!(parse_bool(text), Ok(want), "{text:?}");
        }
        for bad in ["maybe", "", "yes", "1", "on"] {
            assert!(parse_bool(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list(" a@x  b@y\tc@z "), vec!["a@x", "b@y", "c@z"]);
        assert!(parse_list("").is_empty());
    }

    #[test]
    fn sizes_for_people() {
        let table = [
            (0, "0 bytes"),
            (1, "1 byte"),
            (1023, "1023 bytes"),
            (1024, "1 KiB"),
            (200_000, "195.3 KiB"),
            (31_457_280, "30 MiB"),
            (100 << 20, "100 MiB"),
            (3 << 29, "1.5 GiB"),
            (1 << 30, "1 GiB"),
            (5 << 40, "5 TiB"),
            (5000 << 40, "5000 TiB"),
        ];
        for (bytes, text) in table {
            assert_eq!(format_size(bytes), text, "{bytes}");
        }
    }
}
