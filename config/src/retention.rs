//! Which mails to delete, and when: the adaptive quota (chatmail's rule)
//! and the expiry of old mail. Pure: the mails' metadata and the clock are
//! passed in. Shared by the Dovecot plugin (during sessions) and the sweep
//! command (all accounts, daily).

/// Cleanup starts when usage passes this share of the quota …
pub const CLEANUP_START_PERCENT: u64 = 75;
/// … and deletes oldest mail until usage is at most this share.
pub const CLEANUP_TARGET_PERCENT: u64 = 70;
/// Mail younger than this is never deleted to make room: a client that was
/// offline for a few hours still gets its recent messages.
pub const MIN_AGE_SECS: i64 = 24 * 3600;
/// chatmail's threshold for "large" mail, which `delete_large_after` expires sooner.
pub const LARGE_MAIL_BYTES: u64 = 200 * 1024;
const DAY_SECS: i64 = 86_400;

/// One stored mail: its UID, when it arrived (received date, Unix seconds:
/// for maildir the file's mtime, which chatmail's expiry also goes by), its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailMeta {
    pub uid: u32,
    pub saved: i64,
    pub size: u64,
}

/// Quota usage in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub limit: u64,
}

/// How many bytes the adaptive quota wants freed, if usage is past the
/// start threshold; `None` when nothing needs doing (or there is no limit).
pub fn bytes_to_free(usage: Usage) -> Option<u64> {
    if usage.limit == 0 {
        return None;
    }
    // Compare in u128: limit × percent must not overflow for huge limits.
    let used = u128::from(usage.used) * 100;
    if used <= u128::from(usage.limit) * u128::from(CLEANUP_START_PERCENT) {
        return None;
    }
    let target = u128::from(usage.limit) * u128::from(CLEANUP_TARGET_PERCENT) / 100;
    u64::try_from(u128::from(usage.used) - target).ok()
}

/// The mails to delete to free `to_free` bytes: oldest first (by received
/// date, then UID), never one younger than MIN_AGE_SECS at `now`. May free less
/// than asked if too much of the mail is young.
pub fn select_oldest(mails: &[MailMeta], to_free: u64, now: i64) -> Vec<u32> {
    let mut candidates: Vec<&MailMeta> = mails.iter().filter(|m| now - m.saved >= MIN_AGE_SECS).collect();
    candidates.sort_by_key(|m| (m.saved, m.uid));
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    for mail in candidates {
        if freed >= to_free {
            break;
        }
        freed = freed.saturating_add(mail.size);
        chosen.push(mail.uid);
    }
    chosen
}

/// Expiry settings from chatmail.ini (days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub delete_mails_after_days: u32,
    pub delete_large_after_days: u32,
}

impl Expiry {
    /// Whether one mail, received at `saved` (Unix seconds) and `size` bytes
    /// large, is past its retention at `now`: older than `delete_mails_after`
    /// days, or larger than 200 KiB and older than `delete_large_after` days.
    pub fn is_expired(&self, saved: i64, size: u64, now: i64) -> bool {
        let age = now.saturating_sub(saved);
        age > i64::from(self.delete_mails_after_days) * DAY_SECS
            || (size > LARGE_MAIL_BYTES && age > i64::from(self.delete_large_after_days) * DAY_SECS)
    }
}

/// Mails past their retention at `now` (see [`Expiry::is_expired`]).
pub fn select_expired(mails: &[MailMeta], expiry: Expiry, now: i64) -> Vec<u32> {
    mails.iter().filter(|m| expiry.is_expired(m.saved, m.size, now)).map(|m| m.uid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn thresholds() {
        let limit = 100 * MB;
        let table = [
            (Usage { used: 0, limit }, None),
            (Usage { used: 75 * MB, limit }, None),
            (Usage { used: 75 * MB + 1, limit }, Some(5 * MB + 1)),
            (Usage { used: 90 * MB, limit }, Some(20 * MB)),
            (Usage { used: 120 * MB, limit }, Some(50 * MB)),
            (Usage { used: 50 * MB, limit: 0 }, None),
        ];
        for (usage, want) in table {
            assert_eq!(bytes_to_free(usage), want, "{usage:?}");
        }
        // Huge values do not overflow.
        let huge = Usage { used: u64::MAX, limit: u64::MAX / 2 };
        assert!(bytes_to_free(huge).is_some_and(|g| g > huge.used / 2));
    }

    fn mail(uid: u32, hours_ago: i64, size: u64) -> MailMeta {
        MailMeta { uid, saved: NOW - hours_ago * 3600, size }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn oldest_first_and_never_young_mail() {
        let mails = [mail(5, 100, 10), mail(1, 200, 10), mail(7, 30, 10), mail(3, 200, 10), mail(9, 23, 1000), mail(8, 1, 1000)];
        let table: &[(u64, &[u32])] = &[
            (0, &[]),
            (1, &[1]),
            (10, &[1]),
            (11, &[1, 3]),
            (25, &[1, 3, 5]),
            (40, &[1, 3, 5, 7]),
            // More than the old mail holds: only what is at least 24 h old.
            (5000, &[1, 3, 5, 7]),
        ];
        for (to_free, want) in table {
            assert_eq!(select_oldest(&mails, *to_free, NOW), *want, "to_free {to_free}");
        }
        // Exactly 24 hours old counts as old enough.
        assert_eq!(select_oldest(&[mail(1, 24, 10)], 1, NOW), [1]);
    }

    #[test]
    fn expiry() {
        let expiry = Expiry { delete_mails_after_days: 40, delete_large_after_days: 7 };
        let day = 24;
        let mails = [
            mail(1, 41 * day, 1000),
            mail(2, 39 * day, 1000),
            mail(3, 8 * day, LARGE_MAIL_BYTES + 1),
            mail(4, 6 * day, LARGE_MAIL_BYTES + 1),
            mail(5, 8 * day, LARGE_MAIL_BYTES),
            mail(6, 0, 5 * MB),
        ];
        assert_eq!(select_expired(&mails, expiry, NOW), [1, 3]);
        assert!(select_expired(&[], expiry, NOW).is_empty());
    }
}

/// What one maintenance run deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Past retention (`delete_mails_after`, `delete_large_after`).
    pub expired: Vec<u32>,
    /// Oldest mail, to bring usage back under the cleanup target.
    pub for_quota: Vec<u32>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty() && self.for_quota.is_empty()
    }

    pub fn uids(&self) -> Vec<u32> {
        self.expired.iter().chain(&self.for_quota).copied().collect()
    }
}

/// Combines expiry (if due) and the adaptive quota (if `to_free` bytes must
/// go): expired mail goes first and counts towards what the quota needs.
pub fn plan(mails: &[MailMeta], to_free: Option<u64>, expiry: Option<Expiry>, now: i64) -> Plan {
    let expired = expiry.map(|e| select_expired(mails, e, now)).unwrap_or_default();
    let for_quota = match to_free {
        Some(bytes) => {
            let freed: u64 = mails.iter().filter(|m| expired.contains(&m.uid)).map(|m| m.size).sum();
            let rest: Vec<MailMeta> = mails.iter().filter(|m| !expired.contains(&m.uid)).copied().collect();
            select_oldest(&rest, bytes.saturating_sub(freed), now)
        }
        None => Vec::new(),
    };
    Plan { expired, for_quota }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    #[test]
    fn expired_mail_counts_towards_the_quota() {
        let expiry = Expiry { delete_mails_after_days: 40, delete_large_after_days: 7 };
        let mails = [
            MailMeta { uid: 1, saved: NOW - 50 * DAY, size: 100 },
            MailMeta { uid: 2, saved: NOW - 10 * DAY, size: 100 },
            MailMeta { uid: 3, saved: NOW - 5 * DAY, size: 100 },
            MailMeta { uid: 4, saved: NOW - 3600, size: 100 },
        ];
        assert_eq!(plan(&mails, None, None, NOW), Plan::default());
        assert_eq!(plan(&mails, None, Some(expiry), NOW), Plan { expired: vec![1], for_quota: vec![] });
        assert_eq!(plan(&mails, Some(100), Some(expiry), NOW), Plan { expired: vec![1], for_quota: vec![] });
        assert_eq!(plan(&mails, Some(150), Some(expiry), NOW), Plan { expired: vec![1], for_quota: vec![2] });
        assert_eq!(plan(&mails, Some(150), None, NOW), Plan { expired: vec![], for_quota: vec![1, 2] });
        // Never the mail from the last 24 hours.
        assert_eq!(plan(&mails, Some(10_000), None, NOW).for_quota, [1, 2, 3]);
    }
}
