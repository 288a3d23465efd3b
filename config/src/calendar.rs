//! Calendar arithmetic for dates in log lines and mail headers (UTC,
//! proleptic Gregorian), so that no component needs a date library.

/// English month abbreviations, as RFC 5322 and IMAP dates use them.
pub const MONTH_ABBREVIATIONS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Year, month (1–12) and day of month (1–31) of the day `days` after
/// 1970-01-01 (negative: before it).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count 400-year eras that start on March 1st, so the leap day is the
    // last day of an era's year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_to_dates() {
        let table = [
            (0, (1970, 1, 1)),
            (1, (1970, 1, 2)),
            (-1, (1969, 12, 31)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (19_782, (2024, 2, 29)),
            (20_780, (2026, 11, 23)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
        ];
        for (days, want) in table {
            assert_eq!(civil_from_days(days), want, "{days}");
        }
    }
}
