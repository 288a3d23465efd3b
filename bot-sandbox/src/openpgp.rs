//! The bots' OpenPGP: keys like Delta Chat's (v4, Ed25519 signing primary,
//! Curve25519 encryption subkey), one-pass signed and encrypted messages
//! (SEIPD v1, AES-128), and decryption that says who signed. Secure-Join
//! v3's first two messages are encrypted with a shared secret instead
//! (SKESK v6, SEIPD v2 with AES-128/OCB, salted S2K), as core does.
//!
//! rPGP (the `pgp` crate), as Delta Chat core uses. Notes on its API:
//! the `*Legacy` key types are the v4 encodings other clients read;
//! encrypting must name an encryption *subkey* (a public key as a whole
//! encrypts to its primary); parsing does not check self-signatures
//! (`verify_bindings` does); signatures are known only once the data is
//! read to the end.

use std::io::BufReader;

use pgp::composed::{
    ArmorOptions, Deserializable, EncryptionCaps, KeyType, Message, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey,
    SignedPublicSubKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::composed::Esk;
use pgp::crypto::aead::{AeadAlgorithm, ChunkSize};
use pgp::crypto::{ecc_curve::ECCCurve, hash::HashAlgorithm, sym::SymmetricKeyAlgorithm};
use pgp::ser::Serialize as _;
use pgp::types::{CompressionAlgorithm, KeyDetails as _, KeyVersion, Password, StringToKey};

/// A bot's secret key.
#[derive(Debug, Clone)]
pub struct SecretKey(SignedSecretKey);

/// Someone's public key (a certificate with its self-signatures checked).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKey(SignedPublicKey);

/// Most bytes of plaintext a message may decrypt to.
pub const MAX_PLAINTEXT: u64 = 64 * 1024 * 1024;

impl SecretKey {
    /// A new key for `addr`, shaped like the ones Delta Chat makes.
    pub fn generate(addr: &str) -> Result<SecretKey, String> {
        let mut subkey = SubkeyParamsBuilder::default();
        subkey
            .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
            .can_sign(false)
            .can_authenticate(false)
            .can_encrypt(EncryptionCaps::All);
        let subkey = subkey.build().map_err(|e| format!("key parameters: {e}"))?;
        let mut params = SecretKeyParamsBuilder::default();
        params
            .version(KeyVersion::V4)
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id(format!("<{addr}>"))
            .preferred_symmetric_algorithms(vec![SymmetricKeyAlgorithm::AES128, SymmetricKeyAlgorithm::AES256].into())
            .preferred_hash_algorithms(vec![HashAlgorithm::Sha256, HashAlgorithm::Sha512].into())
            .preferred_compression_algorithms(vec![CompressionAlgorithm::Uncompressed, CompressionAlgorithm::ZLIB].into())
            .subkey(subkey);
        let params = params.build().map_err(|e| format!("key parameters: {e}"))?;
        params.generate(rand::thread_rng()).map(SecretKey).map_err(|e| format!("generating a key: {e}"))
    }

    /// Reads an ASCII-armored secret key (as Delta Chat exports it); it
    /// must be unprotected, able to sign, and have an encryption subkey.
    pub fn from_armor(text: &str) -> Result<SecretKey, String> {
        let (key, _) = SignedSecretKey::from_string(text).map_err(|e| format!("not an OpenPGP secret key: {e}"))?;
        key.verify_bindings().map_err(|e| format!("the key's self-signatures do not verify: {e}"))?;
        let key = SecretKey(key);
        if encryption_subkeys(&key.public().0).is_empty() {
            return Err("the key has no encryption subkey".into());
        }
        // A test signature proves the key is usable without a password.
        let mut probe = MessageBuilder::from_bytes("", b"probe".to_vec());
        probe.sign(&key.0.primary_key, Password::empty(), HashAlgorithm::Sha256);
        probe.to_vec(rand::thread_rng()).map_err(|_| "the key cannot sign (is it protected by a password?)".to_owned())?;
        Ok(key)
    }

    pub fn to_armor(&self) -> String {
        // Serialising into a String cannot fail.
        self.0.to_armored_string(ArmorOptions::default()).unwrap_or_default()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.to_public_key())
    }

    /// The plaintext of `message` (armored or binary), which must be
    /// encrypted to this key, and what its signature says.
    pub fn decrypt(&self, message: &[u8]) -> Result<Decrypted, String> {
        let (message, _) = Message::from_reader(BufReader::new(message)).map_err(|e| format!("not an OpenPGP message: {e}"))?;
        if !message.is_encrypted() {
            return Err("the message is not encrypted".into());
        }
        let message = message.decrypt(&Password::empty(), &self.0).map_err(|e| format!("cannot decrypt: {e}"))?;
        read_decrypted(message)
    }

    /// `data` signed with this key and encrypted to `recipients` and to
    /// this key itself, ASCII-armored without a `Version:` line.
    pub fn sign_and_encrypt(&self, data: &[u8], recipients: &[&PublicKey]) -> Result<String, String> {
        let mut rng = rand::thread_rng();
        let mut builder = MessageBuilder::from_bytes("", data.to_vec()).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES128);
        let own = self.public();
        for key in recipients.iter().copied().chain(std::iter::once(&own)) {
            let subkeys = encryption_subkeys(&key.0);
            if subkeys.is_empty() {
                return Err(format!("key {} has no encryption subkey", key.fingerprint()));
            }
            for subkey in subkeys {
                builder.encrypt_to_key(&mut rng, subkey).map_err(|e| format!("encrypting to {}: {e}", key.fingerprint()))?;
            }
        }
        builder.sign(&self.0.primary_key, Password::empty(), HashAlgorithm::Sha256);
        builder.to_armored_string(&mut rng, ArmorOptions::default()).map_err(|e| format!("building the message: {e}"))
    }
}

/// Whether `message` (armored or binary) is encrypted with a password
/// only: one SKESK with a salted S2K (cheap to try, unlike iterated or
/// Argon2 ones an attacker could choose to make every try expensive),
/// and no PKESK.
pub fn is_password_encrypted(message: &[u8]) -> bool {
    Message::from_reader(BufReader::new(message)).is_ok_and(|(message, _)| one_salted_skesk(&message))
}

fn one_salted_skesk(message: &Message<'_>) -> bool {
    match message {
        Message::Encrypted { esk, .. } => {
            matches!(esk.as_slice(), [Esk::SymKeyEncryptedSessionKey(skesk)] if matches!(skesk.s2k(), Some(StringToKey::Salted { .. })))
        }
        _ => false,
    }
}

/// The plaintext of `message`, encrypted with `password` (see
/// [`is_password_encrypted`]), and what its signature says.
pub fn decrypt_with_password(message: &[u8], password: &str) -> Result<Decrypted, String> {
    let (message, _) = Message::from_reader(BufReader::new(message)).map_err(|e| format!("not an OpenPGP message: {e}"))?;
    if !one_salted_skesk(&message) {
        return Err("not encrypted with one salted password".into());
    }
    let message = message.decrypt_with_password(&Password::from(password)).map_err(|e| format!("cannot decrypt: {e}"))?;
    read_decrypted(message)
}

impl SecretKey {
    /// `data` signed with this key and encrypted with `password`
    /// (SEIPD v2, AES-128, OCB; SKESK v6 with a salted SHA-256 S2K), not
    /// compressed; ASCII-armored.
    pub fn sign_and_encrypt_with_password(&self, data: &[u8], password: &str) -> Result<String, String> {
        let mut rng = rand::thread_rng();
        let mut salt = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rng, &mut salt);
        let s2k = StringToKey::Salted { hash_alg: HashAlgorithm::Sha256, salt };
        let mut builder = MessageBuilder::from_bytes("", data.to_vec()).seipd_v2(&mut rng, SymmetricKeyAlgorithm::AES128, AeadAlgorithm::Ocb, ChunkSize::C8KiB);
        builder.encrypt_with_password(&mut rng, s2k, &Password::from(password)).map_err(|e| format!("encrypting with the password: {e}"))?;
        builder.sign(&self.0.primary_key, Password::empty(), HashAlgorithm::Sha256);
        builder.to_armored_string(&mut rng, ArmorOptions::default()).map_err(|e| format!("building the message: {e}"))
    }
}

/// Reads a decrypted message to its end (which checks its integrity and
/// completes the signature hashes), decompressing if needed.
fn read_decrypted(mut message: Message<'_>) -> Result<Decrypted, String> {
    while message.is_compressed() {
        message = message.decompress().map_err(|e| format!("decompressing: {e}"))?;
    }
    let mut data = Vec::new();
    // Reading to the end checks the integrity code and completes the
    // signature hashes.
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut message, MAX_PLAINTEXT + 1), &mut data)
        .map_err(|e| format!("reading the plaintext: {e}"))?;
    if data.len() as u64 > MAX_PLAINTEXT {
        return Err(format!("the plaintext is larger than {MAX_PLAINTEXT} bytes"));
    }
    let signatures = message_signatures(&message);
    Ok(Decrypted { data, signatures })
}

fn message_signatures(message: &Message<'_>) -> Vec<pgp::packet::Signature> {
    let mut signatures = Vec::new();
    if let Message::Signed { reader, .. } = message {
        for i in 0..reader.num_signatures() {
            if let Some(signature) = reader.signature(i) {
                signatures.push(signature.clone());
            }
        }
    }
    signatures
}

/// A decrypted message.
#[derive(Debug)]
pub struct Decrypted {
    pub data: Vec<u8>,
    /// The signatures it carried, kept to check against keys.
    signatures: Vec<pgp::packet::Signature>,
}

impl Decrypted {
    pub fn signed(&self) -> bool {
        !self.signatures.is_empty()
    }

    /// Issuer fingerprints (upper-case hex) the signatures name.
    pub fn issuers(&self) -> Vec<String> {
        self.signatures.iter().flat_map(|s| s.issuer_fingerprint()).map(|f| format!("{f:X}")).collect()
    }
}

impl PublicKey {
    /// A binary transferable public key (Autocrypt `keydata`, decoded).
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, String> {
        let key = SignedPublicKey::from_bytes(bytes).map_err(|e| format!("not an OpenPGP public key: {e}"))?;
        key.verify_bindings().map_err(|e| format!("the key's self-signatures do not verify: {e}"))?;
        if encryption_subkeys(&key).is_empty() {
            return Err("the key has no encryption subkey".into());
        }
        Ok(PublicKey(key))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising into a Vec cannot fail.
        self.0.to_bytes().unwrap_or_default()
    }

    /// Upper-case hex, 40 digits.
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.0.fingerprint())
    }
}

/// Whether one of the signatures of `decrypted` is a valid one by `key`
/// (its primary or a signing subkey) over the data.
pub fn signed_by(decrypted: &Decrypted, key: &PublicKey) -> bool {
    decrypted.signatures.iter().any(|signature| {
        signature.verify(&key.0, &decrypted.data[..]).is_ok()
            || key.0.public_subkeys.iter().filter(|s| s.algorithm().can_sign()).any(|s| signature.verify(s, &decrypted.data[..]).is_ok())
    })
}

/// The encryption subkeys of `key`, by their newest binding's key flags.
fn encryption_subkeys(key: &SignedPublicKey) -> Vec<&SignedPublicSubKey> {
    key.public_subkeys
        .iter()
        .filter(|subkey| {
            subkey.algorithm().can_encrypt()
                && subkey.signatures.iter().max_by_key(|s| s.created()).is_some_and(|s| s.key_flags().encrypt_comms() || s.key_flags().encrypt_storage())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = SecretKey::generate("bot@chat.example").expect("key");
        let again = SecretKey::from_armor(&key.to_armor()).expect("armor");
        assert_eq!(again.public(), key.public());
        assert!(!key.to_armor().contains("Version:"));
        let public = PublicKey::from_bytes(&key.public().to_bytes()).expect("public");
        assert_eq!(public.fingerprint(), key.public().fingerprint());
        assert_eq!(public.fingerprint().len(), 40);
        assert!(SecretKey::from_armor("nonsense").is_err());
        assert!(PublicKey::from_bytes(b"\x99\x00").is_err());
    }

    #[test]
    fn sign_encrypt_decrypt_verify() {
        let bot = SecretKey::generate("bot@chat.example").expect("key");
        let alice = SecretKey::generate("alice@chat.example").expect("key");
        let mallory = SecretKey::generate("mallory@chat.example").expect("key");
        let armored = alice.sign_and_encrypt(b"hello bot", &[&bot.public()]).expect("encrypt");
        assert!(armored.starts_with("-----BEGIN PGP MESSAGE-----") && !armored.contains("Version:"));
        let decrypted = bot.decrypt(armored.as_bytes()).expect("decrypt");
        assert_eq!(decrypted.data, b"hello bot");
        assert!(decrypted.signed());
        assert_eq!(decrypted.issuers(), vec![alice.public().fingerprint()]);
        assert!(signed_by(&decrypted, &alice.public()));
        assert!(!signed_by(&decrypted, &mallory.public()));
        // The sender can read its own copy; others cannot.
        assert!(alice.decrypt(armored.as_bytes()).is_ok());
        assert!(mallory.decrypt(armored.as_bytes()).is_err());
        // A changed byte inside the armor breaks it.
        let mut tampered = armored.clone().into_bytes();
        let at = tampered.len() / 2;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        assert!(bot.decrypt(&tampered).is_err());
    }

    #[test]
    fn password_encryption_round_trip() {
        let bot = SecretKey::generate("bot@chat.example").expect("key");
        let armored = bot.sign_and_encrypt_with_password(b"Secure-Join: vc-pubkey", "securejoin/FP/auth").expect("encrypt");
        assert!(is_password_encrypted(armored.as_bytes()));
        let decrypted = decrypt_with_password(armored.as_bytes(), "securejoin/FP/auth").expect("decrypt");
        assert_eq!(decrypted.data, b"Secure-Join: vc-pubkey");
        assert!(signed_by(&decrypted, &bot.public()));
        assert!(decrypt_with_password(armored.as_bytes(), "securejoin/FP/other").is_err(), "wrong password");
        // A message to a key is not a password message, and the other way round.
        let to_key = bot.sign_and_encrypt(b"x", &[]).expect("encrypt");
        assert!(!is_password_encrypted(to_key.as_bytes()));
        assert!(decrypt_with_password(to_key.as_bytes(), "securejoin/FP/auth").is_err());
        assert!(bot.decrypt(armored.as_bytes()).is_err());
        assert!(!is_password_encrypted(b"nonsense"));
    }
}
