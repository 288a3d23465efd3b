//! Limits over time, pure arithmetic: the per-sender limits of a bot's
//! metadata and the operator's CPU budget per bot (percent of one core per
//! hour and per day). Usage is a list of past runs; a job over a limit is
//! dropped (logged), not queued.

use serde::{Deserialize, Serialize};

use crate::metadata::SenderLimits;

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// One past run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unix seconds.
    pub at: u64,
    /// Lower-cased sender address; empty for scheduled runs.
    pub sender: String,
    pub cpu_micros: u64,
    pub bytes: u64,
}

/// The operator's budget for one bot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuBudget {
    pub percent_per_hour: f64,
    pub percent_per_day: f64,
}

impl CpuBudget {
    fn micros(percent: f64, window: u64) -> u64 {
        // percent of one core over the window, in microseconds
        (percent.max(0.0) / 100.0 * window as f64 * 1e6) as u64
    }
    pub fn hour_micros(&self) -> u64 {
        CpuBudget::micros(self.percent_per_hour, HOUR)
    }
    pub fn day_micros(&self) -> u64 {
        CpuBudget::micros(self.percent_per_day, DAY)
    }
}

/// Why a job may not run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverLimit {
    SenderMailsPerHour(u32),
    SenderMailsPerDay(u32),
    SenderCpuPerHour(u32),
    SenderBytesPerHour(u64),
    BotCpuPerHour,
    BotCpuPerDay,
}

impl OverLimit {
    /// A word for log lines.
    pub fn code(&self) -> &'static str {
        match self {
            OverLimit::SenderMailsPerHour(_) => "sender-mails-per-hour",
            OverLimit::SenderMailsPerDay(_) => "sender-mails-per-day",
            OverLimit::SenderCpuPerHour(_) => "sender-cpu-per-hour",
            OverLimit::SenderBytesPerHour(_) => "sender-bytes-per-hour",
            OverLimit::BotCpuPerHour => "bot-cpu-per-hour",
            OverLimit::BotCpuPerDay => "bot-cpu-per-day",
        }
    }
}

/// What a run that may go ahead may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// CPU microseconds left in the tightest window.
    pub cpu_micros: u64,
}

fn within(record: &RunRecord, now: u64, window: u64) -> bool {
    record.at.saturating_add(window) > now
}

/// Whether a run for `sender` (empty: scheduled) with `bytes` of input may
/// start at `now`, given the bot's `history`.
pub fn check(history: &[RunRecord], sender: &str, bytes: u64, now: u64, limits: &SenderLimits, budget: &CpuBudget) -> Result<Allowance, OverLimit> {
    let cpu_in = |window: u64, sender: Option<&str>| -> u64 {
        history.iter().filter(|r| within(r, now, window) && sender.is_none_or(|s| r.sender == s)).map(|r| r.cpu_micros).sum()
    };
    let bot_hour = cpu_in(HOUR, None);
    let bot_day = cpu_in(DAY, None);
    if bot_hour >= budget.hour_micros() {
        return Err(OverLimit::BotCpuPerHour);
    }
    if bot_day >= budget.day_micros() {
        return Err(OverLimit::BotCpuPerDay);
    }
    let mut left = (budget.hour_micros() - bot_hour).min(budget.day_micros() - bot_day);
    if !sender.is_empty() {
        let mine = |window: u64| history.iter().filter(move |r| r.sender == sender && within(r, now, window));
        let mails_hour = mine(HOUR).count() as u64;
        let mails_day = mine(DAY).count() as u64;
        let bytes_hour: u64 = mine(HOUR).map(|r| r.bytes).sum();
        let cpu_hour = cpu_in(HOUR, Some(sender));
        let cpu_limit = u64::from(limits.cpu_seconds_per_hour) * 1_000_000;
        if mails_hour >= u64::from(limits.mails_per_hour) {
            return Err(OverLimit::SenderMailsPerHour(limits.mails_per_hour));
        }
        if mails_day >= u64::from(limits.mails_per_day) {
            return Err(OverLimit::SenderMailsPerDay(limits.mails_per_day));
        }
        if bytes_hour.saturating_add(bytes) > limits.bytes_per_hour {
            return Err(OverLimit::SenderBytesPerHour(limits.bytes_per_hour));
        }
        if cpu_hour >= cpu_limit {
            return Err(OverLimit::SenderCpuPerHour(limits.cpu_seconds_per_hour));
        }
        left = left.min(cpu_limit - cpu_hour);
    }
    Ok(Allowance { cpu_micros: left })
}

/// Drops records older than a day.
pub fn prune(history: &mut Vec<RunRecord>, now: u64) {
    history.retain(|r| within(r, now, DAY));
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: CpuBudget = CpuBudget { percent_per_hour: 1.0, percent_per_day: 0.1 };

    fn run(at: u64, sender: &str, cpu_ms: u64, bytes: u64) -> RunRecord {
        RunRecord { at, sender: sender.into(), cpu_micros: cpu_ms * 1000, bytes }
    }

    #[test]
    fn budget_arithmetic() {
        assert_eq!(BUDGET.hour_micros(), 36_000_000, "1 % of an hour = 36 s");
        assert_eq!(BUDGET.day_micros(), 86_400_000, "0.1 % of a day = 86.4 s");
    }

    #[test]
    fn table() {
        let limits = SenderLimits { mails_per_hour: 2, mails_per_day: 3, cpu_seconds_per_hour: 10, bytes_per_hour: 1000, sends_per_hour: 60 };
        let now = 100_000;
        let a = "a@x.org";
        type Case<'a> = (&'a str, Vec<RunRecord>, &'a str, u64, Result<u64, OverLimit>);
        let cases: Vec<Case> = vec![
            ("fresh", vec![], a, 10, Ok(10_000_000)),
            ("scheduled run: only the bot budget", vec![], "", 0, Ok(36_000_000)),
            ("two this hour", vec![run(now - 10, a, 1, 1), run(now - 20, a, 1, 1)], a, 1, Err(OverLimit::SenderMailsPerHour(2))),
            ("an hour ago no longer counts per hour", vec![run(now - 3600, a, 1, 1), run(now - 20, a, 1, 1)], a, 1, Ok(9_999_000)),
            ("three today", vec![run(now - 7200, a, 1, 1), run(now - 8000, a, 1, 1), run(now - 20, a, 1, 1)], a, 1, Err(OverLimit::SenderMailsPerDay(3))),
            ("bytes", vec![run(now - 10, a, 1, 900)], a, 101, Err(OverLimit::SenderBytesPerHour(1000))),
            ("bytes exactly at the limit", vec![run(now - 10, a, 1, 900)], a, 100, Ok(9_999_000)),
            ("sender cpu", vec![run(now - 10, a, 10_000, 1)], a, 1, Err(OverLimit::SenderCpuPerHour(10))),
            ("others do not count for a sender", vec![run(now - 10, "b@x.org", 5_000, 1), run(now - 11, "b@x.org", 1, 1)], a, 1, Ok(10_000_000)),
            ("bot hour budget", vec![run(now - 10, "b@x.org", 36_000, 1)], a, 1, Err(OverLimit::BotCpuPerHour)),
            ("bot day budget", vec![run(now - 7200, "b@x.org", 50_000, 1), run(now - 9000, "c@x.org", 40_000, 1)], a, 1, Err(OverLimit::BotCpuPerDay)),
            ("day budget left is the tightest", vec![run(now - 7200, "b@x.org", 80_000, 1)], a, 1, Ok(6_400_000)),
        ];
        for (name, history, sender, bytes, want) in cases {
            let got = check(&history, sender, bytes, now, &limits, &BUDGET).map(|a| a.cpu_micros);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn pruning_keeps_a_day() {
        let mut history = vec![run(0, "a", 1, 1), run(50_000, "a", 1, 1), run(90_000, "a", 1, 1)];
        prune(&mut history, 100_000);
        assert_eq!(history.len(), 2);
    }
}
