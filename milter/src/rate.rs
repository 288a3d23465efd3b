//! Send-rate limits per account: the generic cell rate algorithm (GCRA), as
//! chatmail uses, with an account rating that gives new accounts and
//! accounts that recently tried to send cleartext a lower rate.
//!
//! Pure: the caller passes the time (milliseconds on any monotonic clock),
//! so tests drive it with an injected clock. Memory is bounded: an account's
//! state is dropped once it has been idle long enough to be back to a full
//! burst, which is exactly when forgetting it changes nothing.

use std::collections::HashMap;

/// A rate: `per_minute` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    fn emission_interval_ms(self) -> u64 {
        60_000 / u64::from(self.per_minute.max(1))
    }

    fn tolerance_ms(self) -> u64 {
        self.emission_interval_ms() * u64::from(self.burst.max(1) - 1)
    }
}

/// Which rate an account gets, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatingRules {
    /// Established accounts.
    pub full: Rate,
    /// New accounts and accounts that recently tried cleartext.
    pub reduced: Rate,
    /// Accounts younger than this get the reduced rate.
    pub new_account_ms: u64,
    /// After a refused cleartext message, the reduced rate applies this long.
    pub cleartext_penalty_ms: u64,
}

/// What is known about an account when it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFacts {
    /// Age of the account; `None` if unknown (treated as established, so a
    /// missing timestamp never throttles a real user).
    pub age_ms: Option<u64>,
}

impl RatingRules {
    /// The rate for an account, and the rating's name for the log.
    pub fn rate_for(&self, facts: AccountFacts, last_cleartext_ms: Option<u64>, now_ms: u64) -> (Rate, &'static str) {
        if last_cleartext_ms.is_some_and(|t| now_ms.saturating_sub(t) < self.cleartext_penalty_ms) {
            return (self.reduced, "recent-cleartext");
        }
        if facts.age_ms.is_some_and(|age| age < self.new_account_ms) {
            return (self.reduced, "new-account");
        }
        (self.full, "established")
    }
}

/// Refused: the account may send again after `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_ms: u64,
    pub rating: &'static str,
}

#[derive(Debug, Clone, Copy, Default)]
struct AccountState {
    /// GCRA's theoretical arrival time.
    tat_ms: u64,
    last_cleartext_ms: Option<u64>,
}

/// Per-account send-rate state.
#[derive(Debug)]
pub struct SendRateLimiter {
    rules: RatingRules,
    accounts: HashMap<String, AccountState>,
    checks_since_prune: u32,
}

/// How many checks happen between sweeps over idle accounts.
const PRUNE_EVERY: u32 = 1024;

impl SendRateLimiter {
    pub fn new(rules: RatingRules) -> SendRateLimiter {
        SendRateLimiter { rules, accounts: HashMap::new(), checks_since_prune: 0 }
    }

    /// Counts one message from `account` at `now_ms`, or refuses it.
    pub fn check(&mut self, account: &str, facts: AccountFacts, now_ms: u64) -> Result<(), Limited> {
        self.checks_since_prune += 1;
        if self.checks_since_prune >= PRUNE_EVERY {
            self.prune(now_ms);
        }
        let state = self.accounts.entry(account.to_owned()).or_default();
        let (rate, rating) = self.rules.rate_for(facts, state.last_cleartext_ms, now_ms);
        let tat = state.tat_ms.max(now_ms);
        let ahead = tat - now_ms;
        if ahead > rate.tolerance_ms() {
            return Err(Limited { retry_after_ms: ahead - rate.tolerance_ms(), rating });
        }
        state.tat_ms = tat + rate.emission_interval_ms();
        Ok(())
    }

    /// Records a refused cleartext message from `account`.
    pub fn note_cleartext_attempt(&mut self, account: &str, now_ms: u64) {
        self.accounts.entry(account.to_owned()).or_default().last_cleartext_ms = Some(now_ms);
    }

    /// Drops accounts that are back to a full burst and have no penalty running.
    pub fn prune(&mut self, now_ms: u64) {
        self.checks_since_prune = 0;
        let penalty = self.rules.cleartext_penalty_ms;
        self.accounts.retain(|_, s| s.tat_ms > now_ms || s.last_cleartext_ms.is_some_and(|t| now_ms.saturating_sub(t) < penalty));
    }

    /// Accounts currently tracked.
    pub fn tracked(&self) -> usize {
        self.accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn rules() -> RatingRules {
        RatingRules {
            full: Rate { per_minute: 60, burst: 10 },
            reduced: Rate { per_minute: 10, burst: 3 },
            new_account_ms: 24 * 60 * MINUTE,
            cleartext_penalty_ms: 60 * MINUTE,
        }
    }

    const OLD: AccountFacts = AccountFacts { age_ms: Some(30 * 24 * 60 * MINUTE) };

    #[test]
    fn burst_then_rate() {
        let mut limiter = SendRateLimiter::new(rules());
        let t0 = 1_000_000;
        for i in 0..10 {
            assert_eq!(limiter.check("a", OLD, t0), Ok(()), "message {i} of the burst");
        }
        let refused = limiter.check("a", OLD, t0).expect_err("11th at once");
        assert_eq!(refused, Limited { retry_after_ms: 1000, rating: "established" });
        // One message per second after that.
        assert!(limiter.check("a", OLD, t0 + 999).is_err());
        assert_eq!(limiter.check("a", OLD, t0 + 1000), Ok(()));
        assert!(limiter.check("a", OLD, t0 + 1000).is_err());
        // Other accounts are independent.
        assert_eq!(limiter.check("b", OLD, t0), Ok(()));
        // After 10 quiet seconds the full burst is back.
        for _ in 0..10 {
            assert_eq!(limiter.check("a", OLD, t0 + 11_000), Ok(()));
        }
    }

    #[test]
    fn rating_table() {
        let r = rules();
        let now = 100 * 24 * 60 * MINUTE;
        let cases = [
            (AccountFacts { age_ms: None }, None, "established"),
            (OLD, None, "established"),
            (AccountFacts { age_ms: Some(MINUTE) }, None, "new-account"),
            (OLD, Some(now - MINUTE), "recent-cleartext"),
            (OLD, Some(now - 61 * MINUTE), "established"),
            (AccountFacts { age_ms: Some(MINUTE) }, Some(now - MINUTE), "recent-cleartext"),
        ];
        for (facts, last_cleartext, want) in cases {
            assert_eq!(r.rate_for(facts, last_cleartext, now).1, want, "{facts:?} {last_cleartext:?}");
        }
    }

    #[test]
    fn cleartext_attempt_lowers_the_rate() {
        let mut limiter = SendRateLimiter::new(rules());
        let t0 = 5 * MINUTE;
        limiter.note_cleartext_attempt("a", t0);
        for _ in 0..3 {
            assert_eq!(limiter.check("a", OLD, t0), Ok(()));
        }
        let refused = limiter.check("a", OLD, t0).expect_err("reduced burst is 3");
        assert_eq!(refused.rating, "recent-cleartext");
        assert_eq!(refused.retry_after_ms, 6000);
    }

    #[test]
    fn idle_accounts_are_forgotten() {
        let mut limiter = SendRateLimiter::new(rules());
        for i in 0..5000 {
            limiter.check(&format!("user{i}"), OLD, 0).expect("first message");
        }
        // 1 s later every account is idle again (one message costs 1 s).
        limiter.prune(1000);
        assert_eq!(limiter.tracked(), 0);
        limiter.note_cleartext_attempt("x", 1000);
        limiter.prune(2000);
        assert_eq!(limiter.tracked(), 1, "penalty still running");
        limiter.prune(1000 + 60 * MINUTE);
        assert_eq!(limiter.tracked(), 0);
    }
}
