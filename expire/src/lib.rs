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
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), by
    // counting 400-year eras that start on March 1st.
    let days = secs.div_euclid(86_400);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
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
