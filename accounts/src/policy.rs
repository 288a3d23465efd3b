//! Who may get an account: address and password rules, reserved names, the
//! resource gate, and the per-IP limit on new accounts. Pure: measurements
//! and the clock are passed in.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use chatmail_config::{AccountAddressRules, AddressProblem, Config};

/// Local parts that name roles, not people: refused even when they fit the
/// length rules (RFC 2142 role names and what mail software treats as special).
pub const RESERVED_LOCAL_PARTS: &[&str] = &[
    "abuse", "admin", "administrator", "daemon", "hostmaster", "info", "mailer-daemon", "no-reply", "noc",
    "nobody", "noreply", "postmaster", "root", "security", "support", "sysadmin", "vmail", "webmaster", "www",
];

/// Longest local part of any account (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;

/// Longest password accepted. SHA512-CRYPT's cost grows with the password's
/// length, so an unbounded one would let a client burn CPU at will.
pub const MAX_PASSWORD_LEN: usize = 256;

/// Why a login cannot create (or be) an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadAddress(AddressProblem),
    ReservedName,
    PasswordTooShort { min: usize },
    PasswordTooLong,
    PasswordCharacters,
    NoCreateFile,
    Load { load: String, max: String },
    Memory { available: u64, min: u64 },
    Disk { free: u64, min: u64 },
    TooManyFromIp { per_hour: u32 },
}

impl Refusal {
    /// A short word for the logs (`reason=`), one per kind.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadAddress(_) => "bad-address",
            Refusal::ReservedName => "reserved-name",
            Refusal::PasswordTooShort { .. } => "password-too-short",
            Refusal::PasswordTooLong => "password-too-long",
            Refusal::PasswordCharacters => "password-characters",
            Refusal::NoCreateFile => "nocreate-file",
            Refusal::Load { .. } => "load-too-high",
            Refusal::Memory { .. } => "memory-too-low",
            Refusal::Disk { .. } => "disk-too-full",
            Refusal::TooManyFromIp { .. } => "ip-limit",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadAddress(p) => write!(f, "{p}"),
            Refusal::ReservedName => f.write_str("the name is reserved"),
            Refusal::PasswordTooShort { min } => write!(f, "the password must have at least {min} characters"),
            Refusal::PasswordTooLong => write!(f, "the password is longer than {MAX_PASSWORD_LEN} bytes"),
            Refusal::PasswordCharacters => f.write_str("the password contains control characters or is not UTF-8"),
            Refusal::NoCreateFile => f.write_str("account creation is switched off (nocreate file exists)"),
            Refusal::Load { load, max } => write!(f, "load {load} is above max_load_1m {max}"),
            Refusal::Memory { available, min } => write!(f, "available memory {available} bytes is below {min}"),
            Refusal::Disk { free, min } => write!(f, "free disk space {free} bytes is below {min}"),
            Refusal::TooManyFromIp { per_hour } => write!(f, "more than {per_hour} new accounts from this address in an hour"),
        }
    }
}

/// Address and password rules from chatmail.ini.
#[derive(Debug, Clone)]
pub struct AccountPolicy {
    pub address: AccountAddressRules,
    pub password_min_len: usize,
}

impl AccountPolicy {
    pub fn from_config(config: &Config) -> AccountPolicy {
        AccountPolicy {
            address: AccountAddressRules {
                mail_domain: config.mail_domain.clone(),
                min_local_len: config.username_min_length,
                max_local_len: config.username_max_length,
            },
            password_min_len: config.password_min_length,
        }
    }

    /// Checks that `addr` may name an existing account: safe as a single
    /// directory name (`[a-z0-9._-]`, no dot at either end, no `..`, then `@`
    /// and the mail domain), whatever the length rules are now — accounts
    /// made under earlier rules keep working.
    pub fn check_existing_address(&self, addr: &str) -> Result<(), Refusal> {
        let any_length = AccountAddressRules { min_local_len: 1, max_local_len: MAX_LOCAL_LEN, ..self.address.clone() };
        any_length.check(addr).map(|_| ()).map_err(Refusal::BadAddress)
    }

    /// Checks that `addr` may name a new account: the existing-account
    /// rules, the configured lengths, and no reserved name.
    pub fn check_address(&self, addr: &str) -> Result<(), Refusal> {
        let local = self.address.check(addr).map_err(Refusal::BadAddress)?;
        if RESERVED_LOCAL_PARTS.contains(&local) {
            return Err(Refusal::ReservedName);
        }
        Ok(())
    }

    /// Checks the password a first login would create an account with.
    pub fn check_new_password<'a>(&self, password: &'a [u8]) -> Result<&'a str, Refusal> {
        let password = check_password_bytes(password)?;
        if password.chars().count() < self.password_min_len {
            return Err(Refusal::PasswordTooShort { min: self.password_min_len });
        }
        Ok(password)
    }
}

/// What any password must be, new or not: UTF-8 without control
/// characters, at most MAX_PASSWORD_LEN bytes.
pub fn check_password_bytes(password: &[u8]) -> Result<&str, Refusal> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Refusal::PasswordTooLong);
    }
    let text = std::str::from_utf8(password).map_err(|_| Refusal::PasswordCharacters)?;
    if text.chars().any(char::is_control) {
        return Err(Refusal::PasswordCharacters);
    }
    Ok(text)
}

/// What the machine has left, measured when an account is about to be made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    pub load_1m: f64,
    pub available_memory: u64,
    pub free_disk: u64,
}

/// chatmail's resource gate: no new accounts on a machine that is busy or
/// nearly out of memory or disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceGate {
    pub max_load_1m: f64,
    pub min_available_memory: u64,
    pub min_free_disk: u64,
}

impl ResourceGate {
    pub fn from_config(config: &Config) -> ResourceGate {
        ResourceGate {
            max_load_1m: config.max_load_1m,
            min_available_memory: config.min_available_memory,
            min_free_disk: config.min_free_disk_space,
        }
    }

    pub fn check(&self, r: &Resources) -> Result<(), Refusal> {
        if r.load_1m > self.max_load_1m {
            return Err(Refusal::Load { load: format!("{:.2}", r.load_1m), max: format!("{:.2}", self.max_load_1m) });
        }
        if r.available_memory < self.min_available_memory {
            return Err(Refusal::Memory { available: r.available_memory, min: self.min_available_memory });
        }
        if r.free_disk < self.min_free_disk {
            return Err(Refusal::Disk { free: r.free_disk, min: self.min_free_disk });
        }
        Ok(())
    }
}

const HOUR_MS: u64 = 3_600_000;
/// Client addresses remembered at most; beyond this, the oldest-idle are
/// dropped first (their windows are the likeliest to have expired anyway).
const MAX_TRACKED_IPS: usize = 100_000;

/// At most `per_hour` new accounts per client IP address in any sliding
/// hour. Memory is bounded: expired entries are pruned, and the number of
/// tracked addresses is capped.
#[derive(Debug)]
pub struct NewAccountLimiter {
    per_hour: u32,
    recent: HashMap<String, VecDeque<u64>>,
}

impl NewAccountLimiter {
    pub fn new(per_hour: u32) -> NewAccountLimiter {
        NewAccountLimiter { per_hour, recent: HashMap::new() }
    }

    /// Whether `ip` may have one more new account at `now_ms`.
    pub fn check(&mut self, ip: &str, now_ms: u64) -> Result<(), Refusal> {
        let refused = Err(Refusal::TooManyFromIp { per_hour: self.per_hour });
        if self.per_hour == 0 {
            return refused;
        }
        let Some(times) = self.recent.get_mut(ip) else { return Ok(()) };
        while times.front().is_some_and(|&t| now_ms.saturating_sub(t) >= HOUR_MS) {
            times.pop_front();
        }
        if times.len() >= self.per_hour as usize {
            return refused;
        }
        Ok(())
    }

    /// Counts a new account for `ip` at `now_ms`.
    pub fn record(&mut self, ip: &str, now_ms: u64) {
        if self.recent.len() >= MAX_TRACKED_IPS && !self.recent.contains_key(ip) {
            self.recent.retain(|_, times| times.back().is_some_and(|&t| now_ms.saturating_sub(t) < HOUR_MS));
            if self.recent.len() >= MAX_TRACKED_IPS {
                // Still full of live windows: forget the one idle longest.
                if let Some(oldest) = self.recent.iter().min_by_key(|(_, t)| t.back().copied()).map(|(k, _)| k.clone()) {
                    self.recent.remove(&oldest);
                }
            }
        }
        let times = self.recent.entry(ip.to_owned()).or_default();
        times.push_back(now_ms);
        while times.len() > self.per_hour as usize {
            times.pop_front();
        }
    }

    /// Checks and counts in one step, so parallel first logins from one
    /// address cannot all pass before any is counted.
    pub fn acquire(&mut self, ip: &str, now_ms: u64) -> Result<(), Refusal> {
        self.check(ip, now_ms)?;
        self.record(ip, now_ms);
        Ok(())
    }

    /// Gives back what `acquire(ip, now_ms)` took (no account was made after all).
    pub fn release(&mut self, ip: &str, now_ms: u64) {
        if let Some(times) = self.recent.get_mut(ip) {
            if let Some(at) = times.iter().rposition(|&t| t == now_ms) {
                times.remove(at);
            }
            if times.is_empty() {
                self.recent.remove(ip);
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.recent.len()
    }
}

/// Characters of generated names and passwords (`dcaccount:` / `/new`).
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh random address and password that satisfy `policy`, as chatmail's
/// `/new` hands out: a local part of the longest allowed length and a
/// password three characters longer than the minimum. `random(n)` returns a
/// uniformly random number below `n`.
pub fn random_credentials(policy: &AccountPolicy, random: &mut dyn FnMut(u32) -> u32) -> (String, String) {
    let mut pick = |len: usize| -> String {
        (0..len).map(|_| char::from(ALPHABET[random(ALPHABET.len() as u32) as usize])).collect()
    };
    loop {
        let local = pick(policy.address.max_local_len);
        let addr = format!("{local}@{}", policy.address.mail_domain);
        if policy.check_address(&addr).is_ok() {
            let password = pick(policy.password_min_len.max(9) + 3);
            return (addr, password);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: usize, max: usize) -> AccountPolicy {
        AccountPolicy {
            address: AccountAddressRules { mail_domain: "chat.example".into(), min_local_len: min, max_local_len: max },
            password_min_len: 9,
        }
    }

    #[test]
    fn addresses() {
        let p = policy(3, 20);
        let long = format!("{}@chat.example", "a".repeat(10_000));
        let table: &[(&str, Option<&str>)] = &[
            ("abcdefghi@chat.example", None),
            ("a.b-c_d@chat.example", None),
            ("postmaster@chat.example", Some("reserved-name")),
            ("mailer-daemon@chat.example", Some("reserved-name")),
            ("root@chat.example", Some("reserved-name")),
            ("ab@chat.example", Some("bad-address")),
            ("Abcdefghi@chat.example", Some("bad-address")),
            ("abcdefghi@other.example", Some("bad-address")),
            ("abcdefghi", Some("bad-address")),
            ("", Some("bad-address")),
            ("abc\tdefgh@chat.example", Some("bad-address")),
            ("abc\ndefgh@chat.example", Some("bad-address")),
            ("abc\"defgh@chat.example", Some("bad-address")),
            ("abc\\defgh@chat.example", Some("bad-address")),
            ("abc/defgh@chat.example", Some("bad-address")),
            ("../../etc@chat.example", Some("bad-address")),
            ("..@chat.example", Some("bad-address")),
            ("abc..def@chat.example", Some("bad-address")),
            (".abcdefg@chat.example", Some("bad-address")),
            ("abc\0defg@chat.example", Some("bad-address")),
            ("äbcdefghi@chat.example", Some("bad-address")),
            ("abcdefghi@chat.example/../x", Some("bad-address")),
            ("abcdefghi@chat.example@chat.example", Some("bad-address")),
            (&long, Some("bad-address")),
        ];
        for (addr, want) in table {
            let got = p.check_address(addr).err().map(|r| r.code());
            assert_eq!(got, *want, "{addr:?}");
        }
    }

    #[test]
    fn existing_accounts_need_only_a_safe_name() {
        let p = policy(9, 9);
        assert!(p.check_existing_address("short@chat.example").is_ok());
        assert!(p.check_existing_address("postmaster@chat.example").is_ok());
        for bad in ["../x@chat.example", "a/b@chat.example", "a@other.example", "", &format!("{}@chat.example", "a".repeat(65))] {
            assert!(p.check_existing_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords() {
        let p = policy(9, 9);
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        let table: &[(&[u8], Option<&str>)] = &[
            (b"123456789", None),
            (b"pass word with spaces", None),
            ("pässwörter".as_bytes(), None),
            (b"12345678", Some("password-too-short")),
            (b"", Some("password-too-short")),
            (b"tab\there12345", Some("password-characters")),
            (b"newline\n12345", Some("password-characters")),
            (b"nul\0byte12345", Some("password-characters")),
            (b"\xff\xfe\xfd123456789", Some("password-characters")),
            (long.as_bytes(), Some("password-too-long")),
        ];
        for (pw, want) in table {
            let got = p.check_new_password(pw).err().map(|r| r.code());
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(pw));
        }
    }

    #[test]
    fn resource_gate() {
        let gate = ResourceGate { max_load_1m: 5.0, min_available_memory: 200 << 20, min_free_disk: 1 << 30 };
        let fine = Resources { load_1m: 0.5, available_memory: 1 << 30, free_disk: 10 << 30 };
        let table = [
            (fine, None),
            (Resources { load_1m: 5.0, ..fine }, None),
            (Resources { load_1m: 5.01, ..fine }, Some("load-too-high")),
            (Resources { available_memory: (200 << 20) - 1, ..fine }, Some("memory-too-low")),
            (Resources { free_disk: 0, ..fine }, Some("disk-too-full")),
        ];
        for (r, want) in table {
            assert_eq!(gate.check(&r).err().map(|e| e.code()), want, "{r:?}");
        }
    }

    #[test]
    fn per_ip_limit_slides_over_an_hour() {
        let mut limiter = NewAccountLimiter::new(3);
        for t in [0, 10, 20] {
            assert!(limiter.check("192.0.2.1", t).is_ok());
            limiter.record("192.0.2.1", t);
        }
        assert_eq!(limiter.check("192.0.2.1", 30).err().map(|r| r.code()), Some("ip-limit"));
        // Other addresses are not affected.
        assert!(limiter.check("192.0.2.2", 30).is_ok());
        // An hour after the first, one slot is free again.
        assert!(limiter.check("192.0.2.1", HOUR_MS - 1).is_err());
        assert!(limiter.check("192.0.2.1", HOUR_MS).is_ok());
    }

    #[test]
    fn acquire_and_release() {
        let mut limiter = NewAccountLimiter::new(1);
        assert!(limiter.acquire("192.0.2.1", 5).is_ok());
        assert!(limiter.acquire("192.0.2.1", 6).is_err());
        limiter.release("192.0.2.1", 5);
        assert_eq!(limiter.tracked(), 0);
        assert!(limiter.acquire("192.0.2.1", 7).is_ok());
    }

    #[test]
    fn zero_per_hour_refuses_everything() {
        let mut limiter = NewAccountLimiter::new(0);
        assert!(limiter.check("192.0.2.1", 0).is_err());
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let mut limiter = NewAccountLimiter::new(5);
        for i in 0..MAX_TRACKED_IPS + 10 {
            limiter.record(&format!("ip{i}"), i as u64);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_IPS);
        // Once their hour is over, old entries make room.
        limiter.record("late", 10 * HOUR_MS);
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn random_credentials_satisfy_the_policy() {
        let p = policy(9, 9);
        let mut state = 12345u32;
        let mut random = |n: u32| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 8) % n
        };
        for _ in 0..100 {
            let (addr, password) = random_credentials(&p, &mut random);
            assert!(p.check_address(&addr).is_ok(), "{addr}");
            assert!(p.check_new_password(password.as_bytes()).is_ok(), "{password}");
            assert_eq!(addr.len(), "123456789@chat.example".len());
            assert_eq!(password.len(), 12);
        }
    }
}
