//! Password hashes as chatmail stores them: `{SHA512-CRYPT}$6$salt$hash`
//! (glibc crypt(3) format, 5000 rounds), which Dovecot also understands.

use sha_crypt::{sha512_crypt_b64, sha512_simple, Sha512Params, ROUNDS_DEFAULT, ROUNDS_MAX, ROUNDS_MIN};

/// The scheme prefix Dovecot uses for these hashes.
pub const SCHEME_PREFIX: &str = "{SHA512-CRYPT}";

/// Schemes a stored password may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordScheme {
    Sha512Crypt,
}

/// Hashes `password` for storage, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let params = Sha512Params::new(ROUNDS_DEFAULT).map_err(|e| format!("SHA512-CRYPT parameters: {e:?}"))?;
    let hash = sha512_simple(password, &params).map_err(|e| format!("SHA512-CRYPT: {e:?}"))?;
    Ok(format!("{SCHEME_PREFIX}{hash}"))
}

/// Checks `password` against a stored value. `Err` means the stored value
/// is not something this relay can check (an operator should look at it);
/// `Ok(false)` is a plain mismatch.
pub fn verify_password(password: &str, stored: &str) -> Result<bool, String> {
    let Some(crypt) = stored.strip_prefix(SCHEME_PREFIX) else {
        return Err(format!("unsupported password scheme in {:?}", stored.split('}').next().unwrap_or_default()));
    };
    let (params, salt, hash) = parse_crypt(crypt)?;
    let computed = sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params).map_err(|e| format!("SHA512-CRYPT: {e:?}"))?;
    Ok(constant_time_eq(computed.as_bytes(), hash.as_bytes()))
}

/// Splits `$6$[rounds=N$]salt$hash` (crypt(3)); rounds are clamped to the
/// allowed range as glibc does.
fn parse_crypt(crypt: &str) -> Result<(Sha512Params, &str, &str), String> {
    let malformed = |why: &str| Err(format!("malformed SHA512-CRYPT hash: {why}"));
    let Some(rest) = crypt.strip_prefix("$6$") else { return malformed("does not start with $6$") };
    let mut fields: Vec<&str> = rest.split('$').collect();
    let mut rounds = ROUNDS_DEFAULT;
    if let Some(spec) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        let Ok(n) = spec.parse::<u64>() else { return malformed("rounds is not a number") };
        rounds = usize::try_from(n.clamp(ROUNDS_MIN as u64, ROUNDS_MAX as u64)).unwrap_or(ROUNDS_MAX);
        fields.remove(0);
    }
    let [salt, hash] = fields[..] else { return malformed("expected salt and hash") };
    if hash.len() != 86 {
        return malformed("hash is not 86 characters");
    }
    let params = Sha512Params::new(rounds).map_err(|e| format!("SHA512-CRYPT rounds: {e:?}"))?;
    Ok((params, salt, hash))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let stored = hash_password("correct horse").expect("hash");
        assert!(stored.starts_with("{SHA512-CRYPT}$6$"), "{stored}");
        assert_eq!(verify_password("correct horse", &stored), Ok(true));
        assert_eq!(verify_password("correct hors", &stored), Ok(false));
        // A fresh salt each time.
        assert_ne!(stored, hash_password("correct horse").expect("hash"));
    }

    #[test]
    fn verifies_glibc_hashes() {
        // The crypt(3) format glibc writes and chatmail's doveauth stores; made with
        // `openssl passwd -6 -salt saltsalt hunter22` (Python's crypt.crypt gives the same).
        let glibc = "{SHA512-CRYPT}$6$saltsalt$5mR43xQaRO8UqNJiGE2zcmprBTlO9lTdMHosy2oRT70EPekI6VsnFfjuo.EkgAwlkxAXJglqAax0P4w5f3EVa.";
        assert_eq!(verify_password("hunter22", glibc), Ok(true));
        assert_eq!(verify_password("hunter23", glibc), Ok(false));
        // With an explicit round count (`openssl passwd -6 -salt 'rounds=1000$saltsalt' hunter22`).
        let rounds = "{SHA512-CRYPT}$6$rounds=1000$saltsalt$P1IgregtMMBNCqv0LYCJbVaqln7rI8K/XOJaLCDmTGb3VF1yqblPWvPyS2V3KXi5J5gqlEW.ueinmZIMj4Lpv1";
        assert_eq!(verify_password("hunter22", rounds), Ok(true));
    }

    #[test]
    fn unusable_stored_values_are_errors() {
        for stored in ["{PLAIN}secret", "$6$nohashprefix", "{SHA512-CRYPT}garbage", "{SHA512-CRYPT}$6$salt"] {
            assert!(verify_password("x", stored).is_err(), "{stored}");
        }
    }
}
