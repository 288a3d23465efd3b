//! Address rules shared by the components: what a mail domain and a chatmail
//! account address may look like.
//!
//! chatmail accounts have deliberately plain addresses: the local part is
//! `[a-z0-9._-]` only, within the configured length bounds, so an address is
//! always safe as a directory name and needs no quoting in any protocol.

use std::fmt;

/// Why an address or domain is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressProblem {
    Empty,
    TooLong { max: usize },
    NoAt,
    WrongDomain { expected: String },
    BadDomain(String),
    LocalPartLength { min: usize, max: usize },
    LocalPartCharacters,
    LocalPartDots,
}

impl fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressProblem::Empty => f.write_str("address is empty"),
            AddressProblem::TooLong { max } => write!(f, "address is longer than {max} characters"),
            AddressProblem::NoAt => f.write_str("address has no '@'"),
            AddressProblem::WrongDomain { expected } => write!(f, "address is not in the domain {expected}"),
            AddressProblem::BadDomain(why) => write!(f, "invalid domain: {why}"),
            AddressProblem::LocalPartLength { min, max } if min == max => {
                write!(f, "the name before '@' must have exactly {min} characters")
            }
            AddressProblem::LocalPartLength { min, max } => {
                write!(f, "the name before '@' must have {min} to {max} characters")
            }
            AddressProblem::LocalPartCharacters => {
                f.write_str("the name before '@' may contain only a-z, 0-9, '.', '_' and '-'")
            }
            AddressProblem::LocalPartDots => {
                f.write_str("the name before '@' must not start or end with '.' or contain '..'")
            }
        }
    }
}

/// Longest domain name in DNS (RFC 1035, without the trailing dot).
const MAX_DOMAIN_LEN: usize = 253;
/// Longest address an SMTP path may carry (RFC 5321 4.5.3.1.3, minus the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Checks that `domain` is a plain lowercase DNS name such as `chat.example.org`
/// (letters, digits, hyphens; labels of 1 to 63 characters; at least one dot).
pub fn check_domain(domain: &str) -> Result<(), AddressProblem> {
    let bad = |why: &str| Err(AddressProblem::BadDomain(format!("{domain:?} {why}")));
    if domain.is_empty() {
        return bad("is empty");
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return bad("is longer than 253 characters");
    }
    if !domain.contains('.') {
        return bad("has no dot (use a full name such as chat.example.org)");
    }
    if domain.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return bad("looks like an IP address; IP-address relays are not supported yet");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return bad("has an empty label");
        }
        if label.len() > 63 {
            return bad("has a label longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return bad("may contain only lowercase a-z, 0-9, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("has a label starting or ending with '-'");
        }
    }
    Ok(())
}

/// Splits `addr` at its last `@` into local part and domain.
pub fn split_address(addr: &str) -> Result<(&str, &str), AddressProblem> {
    if addr.is_empty() {
        return Err(AddressProblem::Empty);
    }
    addr.rsplit_once('@').ok_or(AddressProblem::NoAt)
}

/// The rules for the address of an account on this relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountAddressRules {
    pub mail_domain: String,
    pub min_local_len: usize,
    pub max_local_len: usize,
}

impl AccountAddressRules {
    /// Checks that `addr` could be an account on this relay; returns the
    /// local part. Case matters: addresses are stored lowercase, and an
    /// uppercase letter is refused rather than silently folded.
    pub fn check<'a>(&self, addr: &'a str) -> Result<&'a str, AddressProblem> {
        if addr.len() > MAX_ADDRESS_LEN {
            return Err(AddressProblem::TooLong { max: MAX_ADDRESS_LEN });
        }
        let (local, domain) = split_address(addr)?;
        if domain != self.mail_domain {
            return Err(AddressProblem::WrongDomain { expected: self.mail_domain.clone() });
        }
        if !local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(AddressProblem::LocalPartCharacters);
        }
        if local.len() < self.min_local_len || local.len() > self.max_local_len {
            return Err(AddressProblem::LocalPartLength { min: self.min_local_len, max: self.max_local_len });
        }
        // A local part of dots only, or with "..", could name a parent
        // directory or confuse other mail software.
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddressProblem::LocalPartDots);
        }
        Ok(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for good in ["chatmail.test", "a.b", "nine.testrun.org", "x-1.example.org"] {
            assert_eq!(check_domain(good), Ok(()), "{good}");
        }
        let long_label = format!("{}.org", "a".repeat(64));
        let long_domain = format!("{}.org", ["a"; 130].join("."));
        for bad in ["", "localhost", "Example.org", "a..b", ".a.b", "a.b.", "-a.b", "a-.b", "a_b.c", "a b.c", "1.2.3.4", "ä.org", &long_label, &long_domain] {
            assert!(check_domain(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn account_addresses() {
        let rules = AccountAddressRules { mail_domain: "chat.example".into(), min_local_len: 3, max_local_len: 9 };
        let table: &[(&str, Result<&str, AddressProblem>)] = &[
            ("abc@chat.example", Ok("abc")),
            ("a.b_c-9@chat.example", Ok("a.b_c-9")),
            ("", Err(AddressProblem::Empty)),
            ("abc", Err(AddressProblem::NoAt)),
            ("abc@other.example", Err(AddressProblem::WrongDomain { expected: "chat.example".into() })),
            ("ab@chat.example", Err(AddressProblem::LocalPartLength { min: 3, max: 9 })),
            ("abcdefghij@chat.example", Err(AddressProblem::LocalPartLength { min: 3, max: 9 })),
            ("Abc@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("a/b@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("a\tb@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("a\0b@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("a\"b@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("äbc@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("a@b@chat.example", Err(AddressProblem::LocalPartCharacters)),
            ("...@chat.example", Err(AddressProblem::LocalPartDots)),
            ("a..b@chat.example", Err(AddressProblem::LocalPartDots)),
            (".abc@chat.example", Err(AddressProblem::LocalPartDots)),
        ];
        for (addr, want) in table {
            assert_eq!(&rules.check(addr), want, "{addr:?}");
        }
        let huge = format!("{}@chat.example", "a".repeat(10_000));
        assert_eq!(rules.check(&huge), Err(AddressProblem::TooLong { max: MAX_ADDRESS_LEN }));
    }
}
