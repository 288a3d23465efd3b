//! `chatmail-expire`: the daily expiry sweep of a chatmail relay. It works
//! on the maildir files directly, without Dovecot (which notices removed
//! files at its next sync): expired mail (received date = file mtime), stale
//! `tmp/` files, inactive accounts and empty leftover account directories.
//!
//! [`policy`] decides (pure, no I/O); [`sweep`] walks mailboxes_dir and acts.

pub mod policy;
pub mod sweep;

pub use policy::{AccountFate, LastLogin, Policy};
pub use sweep::{Event, FileKind, Sink, Sweep, Totals};

/// `YYYY-MM-DD` (UTC) of a Unix time, for log lines.
pub fn utc_date(secs: i64) -> String {
    let (year, month, day) = chatmail_config::calendar::civil_from_days(secs.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        let table = [
            (0, "1970-01-01"),
            (86_399, "1970-01-01"),
            (86_400, "1970-01-02"),
            (951_782_400, "2000-02-29"),
            (1_709_164_800, "2024-02-29"),
            (1_798_675_200, "2026-12-31"),
            (-1, "1969-12-31"),
        ];
        for (secs, want) in table {
            assert_eq!(super::utc_date(secs), want, "{secs}");
        }
    }
}
