//! Makes the OpenPGP fixture corpus of the milter's golden tests:
//! `milter/tests/fixtures/pgp/*.eml` and its manifest `expect.txt`.
//!
//! Every message is really encrypted (or signed, or compressed) with rPGP,
//! the `pgp` crate; packet framing that rPGP does not write itself (legacy
//! headers, chosen length forms, partial-length chunking) is made by taking
//! the packets apart and writing their unchanged bodies under new headers,
//! which does not touch the cryptography. Each message that the manifest
//! expects to pass is then read back from the finished `.eml` and decrypted
//! again with rPGP (and its inner signature verified): the generator stops
//! if any does not give back its plaintext. For refused messages, what rPGP
//! makes of them goes into the manifest's description column.
//!
//! Run by hand (not in CI), from the repository root:
//!
//! ```text
//! cargo run --release --manifest-path milter/fixture-gen/Cargo.toml -- milter/tests/fixtures/pgp
//! ```
//!
//! It replaces every `.eml` file and `expect.txt` in that directory. Keys,
//! session keys and signature times are new on every run, so the files
//! change; the manifest should not (only the chunk sizes quoted in a few
//! descriptions could move by an octet if a signature's length does).

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;

use chatmail_config::base64;
use pgp::composed::{
    EncryptionCaps, KeyType, Message, MessageBuilder, NoEncryption, SecretKeyParamsBuilder,
    SignedPublicKey, SignedPublicSubKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::aead::{AeadAlgorithm, ChunkSize};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{Padding, PublicKeyEncryptedSessionKey};
use pgp::ser::Serialize;
use pgp::types::{CompressionAlgorithm, KeyVersion, PacketHeaderVersion, Password, StringToKey, Timestamp};
use rand::{thread_rng, RngCore};

const TAG_PKESK: u8 = 1;
const TAG_SIGNATURE: u8 = 2;
const TAG_SKESK: u8 = 3;
const TAG_SED: u8 = 9;
const TAG_MARKER: u8 = 10;
const TAG_SEIPD: u8 = 18;
const TAG_PADDING: u8 = 21;

/// Shared secret of the password-encrypted (Secure-Join-like) messages.
const PASSWORD: &str = "securejoin-AUTH-token-3Dk9fQ";

fn main() {
    let out_dir = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: chatmail-fixture-gen OUTPUT_DIR   (normally milter/tests/fixtures/pgp)");
        std::process::exit(2);
    });
    let out_dir = Path::new(&out_dir);
    let started = std::time::Instant::now();
    let keys = Keys::generate();
    eprintln!("keys generated in {:.1?}", started.elapsed());
    let fixtures = corpus(&keys);
    write_out(out_dir, &fixtures);
    eprintln!("{} fixtures written to {} in {:.1?}", fixtures.len(), out_dir.display(), started.elapsed());
}

// ---------------------------------------------------------------- keys

struct Key {
    addr: &'static str,
    secret: SignedSecretKey,
    public: SignedPublicKey,
}

impl Key {
    fn generate(version: KeyVersion, primary: KeyType, encryption: KeyType, addr: &'static str) -> Key {
        let created = Timestamp::from_secs(1_767_225_600); // 2026-01-01
        let subkey = SubkeyParamsBuilder::default()
            .version(version)
            .key_type(encryption)
            .can_encrypt(EncryptionCaps::All)
            .created_at(created)
            .build()
            .expect("subkey parameters");
        let params = SecretKeyParamsBuilder::default()
            .version(version)
            .key_type(primary)
            .can_certify(true)
            .can_sign(true)
            .created_at(created)
            .feature_seipd_v2(true)
            .primary_user_id(format!("<{addr}>"))
            .subkey(subkey)
            .build()
            .expect("key parameters");
        let secret = params.generate(thread_rng()).expect("key generation");
        let public = secret.to_public_key();
        Key { addr, secret, public }
    }

    fn encryption_subkey(&self) -> &SignedPublicSubKey {
        &self.public.public_subkeys[0]
    }

    /// Autocrypt `keydata`: the certificate in binary, base64.
    fn keydata(&self) -> String {
        base64::encode(&self.public.to_bytes().expect("serialize certificate"))
    }
}

struct Keys {
    /// v4 RSA 2048 (as older GnuPG/Enigmail users have).
    rsa: Key,
    /// v4 Ed25519 + Curve25519 ECDH, Delta Chat's default key.
    bob: Key,
    /// A second v4 Curve25519 key.
    carol: Key,
    /// v6 (RFC 9580) Ed25519 + X25519.
    dave: Key,
}

impl Keys {
    fn generate() -> Keys {
        Keys {
            rsa: Key::generate(KeyVersion::V4, KeyType::Rsa(2048), KeyType::Rsa(2048), "alice@example.org"),
            bob: Key::generate(
                KeyVersion::V4,
                KeyType::Ed25519Legacy,
                KeyType::ECDH(ECCCurve::Curve25519Legacy),
                "bob@chatmail.example",
            ),
            carol: Key::generate(
                KeyVersion::V4,
                KeyType::Ed25519Legacy,
                KeyType::ECDH(ECCCurve::Curve25519Legacy),
                "carol@chatmail.example",
            ),
            dave: Key::generate(KeyVersion::V6, KeyType::Ed25519, KeyType::X25519, "dave@example.net"),
        }
    }
}

// ---------------------------------------------------------------- encryption with rPGP

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seipd {
    V1,
    V2,
}

/// What rPGP is asked to make.
struct Spec<'a> {
    seipd: Seipd,
    to: Vec<&'a Key>,
    /// Recipients whose PKESK has no key ID (wildcard).
    anonymous: bool,
    password: bool,
    signer: Option<&'a Key>,
    /// Stream the plaintext (unknown length), so rPGP writes partial
    /// lengths in chunks of this size.
    stream_chunk: Option<u32>,
}

impl<'a> Spec<'a> {
    fn to(seipd: Seipd, to: &[&'a Key]) -> Spec<'a> {
        Spec { seipd, to: to.to_vec(), anonymous: false, password: false, signer: None, stream_chunk: None }
    }
    fn password(seipd: Seipd) -> Spec<'a> {
        Spec { password: true, ..Spec::to(seipd, &[]) }
    }
    fn signed(mut self, signer: &'a Key) -> Spec<'a> {
        self.signer = Some(signer);
        self
    }
}

/// Encrypts `plain` per `spec`; returns the binary OpenPGP message.
fn encrypt(plain: &[u8], spec: &Spec<'_>) -> Vec<u8> {
    match spec.stream_chunk {
        Some(chunk) => {
            let mut builder = MessageBuilder::from_reader("", Cursor::new(plain.to_vec()));
            builder.partial_chunk_size(chunk).expect("chunk size");
            encrypt_with(builder, spec)
        }
        None => encrypt_with(MessageBuilder::from_bytes("", plain.to_vec()), spec),
    }
}

fn encrypt_with<'a, R: std::io::Read>(mut builder: MessageBuilder<'a, R, NoEncryption>, spec: &Spec<'a>) -> Vec<u8> {
    let mut rng = thread_rng();
    if let Some(signer) = spec.signer {
        builder.sign(&signer.secret.primary_key, Password::empty(), HashAlgorithm::Sha256);
    }
    let password = Password::from(PASSWORD);
    match spec.seipd {
        Seipd::V1 => {
            let mut builder = builder.seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
            if spec.password {
                let s2k = StringToKey::new_iterated(&mut rng, HashAlgorithm::Sha256, 224);
                builder.encrypt_with_password(s2k, &password).expect("SKESK v4");
            }
            for key in &spec.to {
                if spec.anonymous {
                    builder.encrypt_to_key_anonymous(&mut rng, key.encryption_subkey()).expect("PKESK v3");
                } else {
                    builder.encrypt_to_key(&mut rng, key.encryption_subkey()).expect("PKESK v3");
                }
            }
            builder.to_vec(&mut rng).expect("encrypt SEIPD v1")
        }
        Seipd::V2 => {
            let mut builder = builder.seipd_v2(&mut rng, SymmetricKeyAlgorithm::AES128, AeadAlgorithm::Ocb, ChunkSize::default());
            if spec.password {
                let s2k = StringToKey::new_iterated(&mut rng, HashAlgorithm::Sha256, 224);
                builder.encrypt_with_password(&mut rng, s2k, &password).expect("SKESK v6");
            }
            for key in &spec.to {
                if spec.anonymous {
                    builder.encrypt_to_key_anonymous(&mut rng, key.encryption_subkey()).expect("PKESK v6");
                } else {
                    builder.encrypt_to_key(&mut rng, key.encryption_subkey()).expect("PKESK v6");
                }
            }
            builder.to_vec(&mut rng).expect("encrypt SEIPD v2")
        }
    }
}

/// A message that is not encrypted: literal data, optionally one-pass
/// signed, optionally compressed.
fn plain_message(plain: &[u8], signer: Option<&Key>, compress: bool) -> Vec<u8> {
    let mut builder = MessageBuilder::from_bytes("", plain.to_vec());
    if let Some(signer) = signer {
        builder.sign(&signer.secret.primary_key, Password::empty(), HashAlgorithm::Sha256);
    }
    if compress {
        builder.compression(CompressionAlgorithm::ZLIB);
    }
    builder.to_vec(thread_rng()).expect("plain message")
}

/// The obsolete Symmetrically Encrypted Data packet (tag 9, no integrity
/// protection): PKESK v3 + SED around a literal data packet, with rPGP's
/// own OpenPGP-CFB encryption.
fn sed_message(plain: &[u8], to: &Key) -> Vec<u8> {
    let mut rng = thread_rng();
    let alg = SymmetricKeyAlgorithm::AES256;
    let session_key = alg.new_session_key(&mut rng);
    let pkesk = PublicKeyEncryptedSessionKey::from_session_key_v3(&mut rng, &session_key, alg, to.encryption_subkey())
        .expect("PKESK v3");
    let literal = plain_message(plain, None, false);
    let sed = alg.encrypt(&mut rng, session_key.as_ref(), &literal).expect("CFB encryption");
    let mut out = frame(TAG_PKESK, &pkesk.to_bytes().expect("serialize PKESK"), &Frame::Min);
    out.extend(frame(TAG_SED, &sed, &Frame::Min));
    out
}

// ---------------------------------------------------------------- packets and framing

/// One packet, its body reassembled from however it was framed.
#[derive(Clone)]
struct Packet {
    tag: u8,
    body: Vec<u8>,
    /// Chunk sizes if the source used partial lengths.
    partial: Option<Vec<usize>>,
}

/// Splits a binary OpenPGP message into packets (both header formats).
fn split(data: &[u8]) -> Vec<Packet> {
    let mut packets = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let first = data[i];
        assert!(first & 0x80 != 0, "not a packet header at {i}");
        i += 1;
        if first & 0x40 != 0 {
            let tag = first & 0x3f;
            let mut body = Vec::new();
            let mut chunks = Vec::new();
            loop {
                let (len, partial, used) = new_length(&data[i..]);
                i += used;
                body.extend_from_slice(&data[i..i + len]);
                i += len;
                chunks.push(len);
                if !partial {
                    break;
                }
            }
            let partial = (chunks.len() > 1).then_some(chunks);
            packets.push(Packet { tag, body, partial });
        } else {
            let tag = (first >> 2) & 0x0f;
            let (len, used) = match first & 3 {
                0 => (usize::from(data[i]), 1),
                1 => (usize::from(u16::from_be_bytes([data[i], data[i + 1]])), 2),
                2 => (u32::from_be_bytes(data[i..i + 4].try_into().expect("4 octets")) as usize, 4),
                _ => (data.len() - i, 0),
            };
            i += used;
            packets.push(Packet { tag, body: data[i..i + len].to_vec(), partial: None });
            i += len;
        }
    }
    packets
}

/// Reads a new-format length: (length, is partial, octets used).
fn new_length(data: &[u8]) -> (usize, bool, usize) {
    match data[0] {
        n @ 0..=191 => (usize::from(n), false, 1),
        n @ 192..=223 => (((usize::from(n) - 192) << 8) + usize::from(data[1]) + 192, false, 2),
        n @ 224..=254 => (1 << (n & 0x1f), true, 1),
        255 => (u32::from_be_bytes(data[1..5].try_into().expect("4 octets")) as usize, false, 5),
    }
}

/// How to write a packet header.
#[derive(Clone, Debug)]
enum Frame {
    /// New format, shortest length form.
    Min,
    /// New format, two-octet length (192..=8383).
    New2,
    /// New format, five-octet length.
    New5,
    /// Legacy (old) format with length type 0, 1 or 2.
    Legacy(u8),
    /// New format, partial lengths: chunks of 2^e octets for the exponents
    /// in turn (the last one repeating) while more than a chunk remains,
    /// then the rest with a definite length, in five-octet form if `last5`.
    Partial { exps: Vec<u8>, last5: bool },
    /// New format, partial lengths: a first chunk of 512 octets, then the
    /// rest as descending powers of two down to one octet, then a final
    /// zero-length chunk.
    PartialToZero,
}

fn frame(tag: u8, body: &[u8], how: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let len = body.len();
    match how {
        Frame::Legacy(kind) => {
            assert!(tag < 16, "legacy headers carry tags 0-15 only");
            out.push(0x80 | (tag << 2) | kind);
            match kind {
                0 => out.push(u8::try_from(len).expect("length type 0 holds < 256")),
                1 => out.extend(u16::try_from(len).expect("length type 1 holds < 65536").to_be_bytes()),
                2 => out.extend(u32::try_from(len).expect("length").to_be_bytes()),
                _ => panic!("legacy length type {kind}"),
            }
            out.extend_from_slice(body);
        }
        Frame::Min | Frame::New2 | Frame::New5 => {
            out.push(0xc0 | tag);
            match how {
                Frame::Min => push_length(&mut out, len, false),
                Frame::New2 => {
                    assert!((192..=8383).contains(&len), "two-octet length form holds 192..=8383, not {len}");
                    push_length(&mut out, len, false);
                }
                _ => push_length(&mut out, len, true),
            }
            out.extend_from_slice(body);
        }
        Frame::Partial { exps, last5 } => {
            out.push(0xc0 | tag);
            let mut rest = body;
            let mut n = 0;
            loop {
                let exp = exps[n.min(exps.len() - 1)];
                let size = 1usize << exp;
                if rest.len() <= size {
                    break;
                }
                out.push(0xe0 | exp);
                out.extend_from_slice(&rest[..size]);
                rest = &rest[size..];
                n += 1;
            }
            assert!(n > 0, "body of {len} octets too short for a partial chunk");
            push_length(&mut out, rest.len(), *last5);
            out.extend_from_slice(rest);
        }
        Frame::PartialToZero => {
            out.push(0xc0 | tag);
            assert!(len > 512, "first partial chunk must be at least 512 octets");
            out.push(0xe0 | 9);
            out.extend_from_slice(&body[..512]);
            let mut rest = &body[512..];
            for exp in (0..=30u8).rev() {
                let size = 1usize << exp;
                if rest.len() >= size {
                    out.push(0xe0 | exp);
                    out.extend_from_slice(&rest[..size]);
                    rest = &rest[size..];
                }
            }
            assert!(rest.is_empty());
            out.push(0);
        }
    }
    out
}

fn push_length(out: &mut Vec<u8>, len: usize, five: bool) {
    if five || len > 8383 {
        out.push(0xff);
        out.extend(u32::try_from(len).expect("length").to_be_bytes());
    } else if len < 192 {
        out.push(len as u8);
    } else {
        let v = len - 192;
        out.push((v >> 8) as u8 + 192);
        out.push((v & 0xff) as u8);
    }
}

/// Rewrites a message packet by packet: `how(index, packet)` picks each frame.
fn reframe(data: &[u8], how: impl Fn(usize, &Packet) -> Frame) -> Vec<u8> {
    split(data).iter().enumerate().flat_map(|(i, p)| frame(p.tag, &p.body, &how(i, p))).collect()
}

fn tags(data: &[u8]) -> Vec<u8> {
    split(data).iter().map(|p| p.tag).collect()
}

fn key_packets(data: &[u8]) -> u32 {
    split(data).iter().filter(|p| p.tag == TAG_PKESK || p.tag == TAG_SKESK).count() as u32
}

/// The framed bytes of the packets with the given tag.
fn packets_with_tag(data: &[u8], tag: u8) -> Vec<u8> {
    split(data)
        .iter()
        .filter(|p| p.tag == tag)
        .flat_map(|p| frame(p.tag, &p.body, &Frame::Min))
        .collect()
}

// ---------------------------------------------------------------- armor

struct Armor {
    headers: Vec<(&'static str, &'static str)>,
    checksum: bool,
    width: usize,
}

impl Armor {
    /// What rPGP (and so Delta Chat) writes: no headers, CRC, 64 columns.
    fn rpgp() -> Armor {
        Armor { headers: Vec::new(), checksum: true, width: 64 }
    }
}

fn armor(data: &[u8], opts: &Armor) -> String {
    let mut out = String::from("-----BEGIN PGP MESSAGE-----\n");
    for (k, v) in &opts.headers {
        let _ = writeln!(out, "{k}: {v}");
    }
    out.push('\n');
    let encoded = base64::encode(data);
    for line in encoded.as_bytes().chunks(opts.width) {
        out.push_str(std::str::from_utf8(line).expect("ASCII"));
        out.push('\n');
    }
    if opts.checksum {
        let crc = crc24(data).to_be_bytes();
        let _ = writeln!(out, "={}", base64::encode(&crc[1..]));
    }
    out.push_str("-----END PGP MESSAGE-----\n");
    out
}

/// The armor checksum (RFC 9580 section 6.1).
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xb7_04ce;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4cfb;
            }
        }
    }
    crc & 0xff_ffff
}

// ---------------------------------------------------------------- MIME

/// The plaintext inside the encryption: a MIME message with protected
/// headers, as Delta Chat and Thunderbird encrypt.
fn inner_mime(from: &str, to: &str, subject: &str, text: &str, attachment: Option<&[u8]>) -> Vec<u8> {
    let mut m = String::new();
    let b = "inner-7f3a2c91e4b05d68";
    let _ = write!(
        m,
        "Content-Type: multipart/mixed; boundary=\"{b}\"; protected-headers=\"v1\"\r\n\
         From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@example.org>\r\n\
         Chat-Version: 1.0\r\n\r\n--{b}\r\n\
         Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
        subject.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    for line in text.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    if let Some(data) = attachment {
        let _ = write!(
            m,
            "\r\n--{b}\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"data.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        );
        for line in base64::encode(data).as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).expect("ASCII"));
            m.push_str("\r\n");
        }
    }
    let _ = write!(m, "\r\n--{b}--\r\n");
    m.into_bytes()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Bare minimum PGP/MIME.
    Minimal,
    /// Delta Chat 1.x: real recipient, Autocrypt header, subject `...`.
    DeltaChat1,
    /// Delta Chat 2.x: hidden recipients, subject `[...]`.
    DeltaChat2,
    /// Thunderbird / Enigmail: preamble, part descriptions, `encrypted.asc`.
    Thunderbird,
    /// Inline PGP: the armor as a text/plain body, no PGP/MIME.
    Inline,
}

struct Mail<'a> {
    style: Style,
    from: &'a Key,
    to: &'a str,
    crlf: bool,
}

fn eml(mail: &Mail<'_>, name: &str, armored: &str) -> Vec<u8> {
    let from = mail.from.addr;
    let to = mail.to;
    let mut m = String::new();
    let b = format!("{:016x}_{}", crc24(name.as_bytes()) as u64 * 0x9e37_79b9, name.len());
    let _ = write!(m, "From: <{from}>\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <{name}@example.org>\nMIME-Version: 1.0\n");
    match mail.style {
        Style::Minimal => {
            let _ = write!(
                m,
                "To: <{to}>\nSubject: ...\n\
                 Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{b}\"\n\n\
                 --{b}\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n\
                 --{b}\nContent-Type: application/octet-stream\n\n{armored}\n--{b}--\n"
            );
        }
        Style::DeltaChat1 | Style::DeltaChat2 => {
            if mail.style == Style::DeltaChat1 {
                let _ = write!(m, "To: <{to}>\nSubject: ...\nChat-Version: 1.0\n");
                let keydata = mail.from.keydata();
                let _ = write!(m, "Autocrypt: addr={from}; prefer-encrypt=mutual;\n keydata=");
                for piece in keydata.as_bytes().chunks(76) {
                    m.push_str("\n ");
                    m.push_str(std::str::from_utf8(piece).expect("ASCII"));
                }
                m.push('\n');
            } else {
                m.push_str("To: \"hidden-recipients\": ;\nSubject: [...]\n");
            }
            let _ = write!(
                m,
                "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\n boundary=\"{b}\"\n\n\n\
                 --{b}\nContent-Type: application/pgp-encrypted; charset=\"utf-8\"\n\
                 Content-Description: PGP/MIME version identification\nContent-Transfer-Encoding: 7bit\n\n\
                 Version: 1\n\n\
                 --{b}\nContent-Type: application/octet-stream; name=\"encrypted.asc\"; charset=\"utf-8\"\n\
                 Content-Description: OpenPGP encrypted message\n\
                 Content-Disposition: inline; filename=\"encrypted.asc\";\nContent-Transfer-Encoding: 7bit\n\n\
                 {armored}\n--{b}--\n\n"
            );
        }
        Style::Thunderbird => {
            let b = format!("------------{}", &b[..24.min(b.len())]);
            let _ = write!(
                m,
                "User-Agent: Mozilla Thunderbird\nContent-Language: en-US\nTo: <{to}>\nSubject: ...\n\
                 Content-Type: multipart/encrypted;\n protocol=\"application/pgp-encrypted\";\n boundary=\"{b}\"\n\n\
                 This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\n\
                 --{b}\nContent-Type: application/pgp-encrypted\nContent-Description: PGP/MIME version identification\n\n\
                 Version: 1\n\n\
                 --{b}\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\
                 Content-Description: OpenPGP encrypted message\n\
                 Content-Disposition: inline; filename=\"encrypted.asc\"\n\n\
                 {armored}\n--{b}--\n"
            );
        }
        Style::Inline => {
            let _ = write!(
                m,
                "To: <{to}>\nSubject: inline\nContent-Type: text/plain; charset=\"us-ascii\"\n\
                 Content-Transfer-Encoding: 7bit\n\n{armored}"
            );
        }
    }
    if mail.crlf {
        m = m.replace('\n', "\r\n");
    }
    m.into_bytes()
}

// ---------------------------------------------------------------- read back with rPGP

/// How rPGP opens a fixture again.
enum Open<'a> {
    Key(&'a Key),
    Password,
    /// SED (tag 9): rPGP's hazardous legacy mode.
    Legacy(&'a Key),
    /// Not encrypted: parse, decompress, read.
    Plain,
}

/// The armored block of a finished `.eml`, line ends as they are.
fn armor_of(eml: &[u8]) -> &str {
    let text = std::str::from_utf8(eml).expect("ASCII message");
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("BEGIN line");
    let end = text.find("-----END PGP MESSAGE-----").expect("END line") + "-----END PGP MESSAGE-----".len();
    &text[start..end]
}

/// Opens the armored message with rPGP and returns its plaintext; checks
/// the signature when there is a signer.
fn open(armored: &str, how: &Open<'_>, signer: Option<&Key>) -> Result<Vec<u8>, String> {
    let err = |e: pgp::errors::Error| e.to_string();
    let (message, _headers) = Message::from_armor(Cursor::new(armored.as_bytes())).map_err(err)?;
    let mut message = match how {
        Open::Key(key) => message.decrypt(&Password::empty(), &key.secret).map_err(err)?,
        Open::Password => message.decrypt_with_password(&Password::from(PASSWORD)).map_err(err)?,
        Open::Legacy(key) => message.decrypt_legacy(&Password::empty(), &key.secret).map_err(err)?,
        Open::Plain => message,
    };
    if message.is_compressed() {
        message = message.decompress().map_err(err)?;
    }
    let data = message.as_data_vec().map_err(|e| e.to_string())?;
    if let Some(signer) = signer {
        message.verify(&signer.public.primary_key).map_err(err)?;
    }
    Ok(data)
}

// ---------------------------------------------------------------- the corpus

struct Fixture {
    name: String,
    eml: Vec<u8>,
    expect: String,
    what: String,
}

/// Collects fixtures; checks each against rPGP as it is added.
struct Corpus {
    fixtures: Vec<Fixture>,
}

impl Corpus {
    /// A message that must pass: rPGP must open it and give back `plain`.
    #[allow(clippy::too_many_arguments)]
    fn pass(&mut self, name: &str, what: &str, mail: &Mail<'_>, armor_opts: &Armor, data: &[u8], plain: &[u8], how: Open<'_>, signer: Option<&Key>) {
        let eml = eml(mail, name, &armor(data, armor_opts));
        match open(armor_of(&eml), &how, signer) {
            Ok(got) if got == plain => {}
            Ok(_) => panic!("{name}: rPGP decrypted it to something else"),
            Err(e) => panic!("{name}: rPGP cannot open it: {e}"),
        }
        let version = armor_opts.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("version"));
        let expect = format!("pass keys={} version={}", key_packets(data), if version { "yes" } else { "no" });
        self.add(name, eml, expect, what.to_owned());
    }

    /// A message that must be refused with an error containing `error`;
    /// the description records what rPGP makes of it.
    fn fail(&mut self, name: &str, what: &str, error: &str, eml: Vec<u8>, how: Open<'_>, plain: &[u8]) {
        let rpgp = match open(armor_of(&eml), &how, None) {
            Ok(got) if got == plain => "rPGP reads it".to_owned(),
            Ok(_) => "rPGP reads something else".to_owned(),
            Err(e) => {
                // First line, without the Debug dump of a packet some errors carry.
                let e = e.lines().next().unwrap_or("error");
                let e = e.split(" New {").next().unwrap_or(e).split(" Old {").next().unwrap_or(e);
                format!("rPGP: {}", e.trim_end_matches([' ', ':']))
            }
        };
        self.add(name, eml, format!("fail: {error}"), format!("{what} [{rpgp}]"));
    }

    /// The last fixture also opens another way.
    fn also_opens(&self, how: Open<'_>, plain: &[u8]) {
        let last = self.fixtures.last().expect("a fixture");
        match open(armor_of(&last.eml), &how, None) {
            Ok(got) if got == plain => {}
            Ok(_) => panic!("{}: opened to something else", last.name),
            Err(e) => panic!("{}: does not open: {e}", last.name),
        }
    }

    fn add(&mut self, name: &str, eml: Vec<u8>, expect: String, what: String) {
        assert!(!self.fixtures.iter().any(|f| f.name == name), "duplicate {name}");
        assert!(!what.contains('|') && !expect.contains('|'));
        eprintln!("{name:<40} {:>7} B  {expect}", eml.len());
        self.fixtures.push(Fixture { name: format!("{name}.eml"), eml, expect, what });
    }
}

fn text(n: usize) -> String {
    format!(
        "Hello from fixture {n}!\n\nThis message was encrypted with rPGP for the chatmail milter's golden tests.\n\
         It is a real, decryptable OpenPGP message.\n"
    )
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    thread_rng().fill_bytes(&mut data);
    data
}

/// Re-encrypts `plain` until rPGP's SEIPD body is exactly `target` octets.
fn seipd_of_length(target: usize, to: &Key) -> (Vec<u8>, Vec<u8>) {
    let mut len = target.saturating_sub(60).max(1);
    for _ in 0..20 {
        let plain: Vec<u8> = b"0123456789abcdef".iter().copied().cycle().take(len).collect();
        let data = encrypt(&plain, &Spec::to(Seipd::V1, &[to]));
        let got = split(&data).iter().find(|p| p.tag == TAG_SEIPD).expect("SEIPD").body.len();
        if got == target {
            return (data, plain);
        }
        len = (len as isize + target as isize - got as isize).max(1) as usize;
    }
    panic!("no SEIPD of {target} octets");
}

fn corpus(keys: &Keys) -> Vec<Fixture> {
    let Keys { rsa, bob, carol, dave } = keys;
    let mut c = Corpus { fixtures: Vec::new() };
    let min = Mail { style: Style::Minimal, from: bob, to: rsa.addr, crlf: false };
    let dc1 = Mail { style: Style::DeltaChat1, from: bob, to: carol.addr, crlf: false };
    let dc2 = Mail { style: Style::DeltaChat2, from: bob, to: carol.addr, crlf: false };
    let dc2_crlf = Mail { crlf: true, ..Mail { style: Style::DeltaChat2, from: bob, to: carol.addr, crlf: false } };
    let tb = Mail { style: Style::Thunderbird, from: rsa, to: bob.addr, crlf: false };
    let rpgp = Armor::rpgp();
    let mut count = 0;
    let mut plain = |from: &Key, to: &Key, attachment: Option<&[u8]>| {
        count += 1;
        inner_mime(from.addr, to.addr, &format!("Fixture {count}"), &text(count), attachment)
    };
    let seipd_min = |_: usize, _: &Packet| Frame::Min;

    // --- keys, recipients, SEIPD versions
    let p = plain(bob, rsa, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[rsa]).signed(bob));
    c.pass("pass-v4-rsa2048-seipd1", "one recipient, v4 RSA 2048: PKESK v3 + SEIPD v1 (AES-256), signed inside", &min, &rpgp, &d, &p, Open::Key(rsa), Some(bob));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]).signed(bob));
    c.pass("pass-v4-cv25519-seipd1", "one recipient, v4 Curve25519 ECDH: PKESK v3 + SEIPD v1; Delta Chat 1.x-like headers with Autocrypt", &dc1, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[carol]).signed(bob));
    c.pass("pass-v4-cv25519-seipd2", "one recipient, v4 Curve25519: PKESK v6 + SEIPD v2 (AES-128 OCB); Delta Chat 2.x-like headers", &dc2, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(dave, dave, None);
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[dave]).signed(dave));
    c.pass("pass-v6-x25519-seipd2", "one recipient, v6 key (Ed25519 + X25519): PKESK v6 + SEIPD v2, signed by the v6 key", &min, &rpgp, &d, &p, Open::Key(dave), Some(dave));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[rsa, carol, bob]).signed(bob));
    c.pass("pass-3-recipients-seipd1", "three PKESK v3 (RSA, Curve25519 x2) + SEIPD v1, group message with Autocrypt", &dc1, &rpgp, &d, &p, Open::Key(rsa), Some(bob));

    let p = plain(bob, dave, None);
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[rsa, bob, dave]).signed(bob));
    c.pass("pass-3-recipients-seipd2", "three PKESK v6 (v4 RSA, v4 Curve25519, v6 X25519) + SEIPD v2", &dc2, &rpgp, &d, &p, Open::Key(dave), Some(bob));

    let p = plain(rsa, bob, None);
    let d = encrypt(&p, &Spec { anonymous: true, ..Spec::to(Seipd::V1, &[bob]) });
    c.pass("pass-anonymous-recipient", "PKESK v3 with wildcard key ID (hidden recipient) + SEIPD v1", &min, &rpgp, &d, &p, Open::Key(bob), None);

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::password(Seipd::V1).signed(bob));
    c.pass("pass-skesk-only-seipd1", "password only: SKESK v4 (iterated+salted S2K) + SEIPD v1, like a Secure-Join message", &dc1, &rpgp, &d, &p, Open::Password, Some(bob));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::password(Seipd::V2).signed(bob));
    c.pass("pass-skesk-only-seipd2", "password only: SKESK v6 + SEIPD v2, as Delta Chat 2.x's Secure-Join", &dc2, &rpgp, &d, &p, Open::Password, Some(bob));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec { password: true, ..Spec::to(Seipd::V1, &[carol]) }.signed(bob));
    c.pass("pass-skesk-pkesk-seipd1", "SKESK v4 + PKESK v3 + SEIPD v1 (opens with the key and with the password)", &dc1, &rpgp, &d, &p, Open::Key(carol), Some(bob));
    c.also_opens(Open::Password, &p);

    let p = plain(bob, dave, None);
    let d = encrypt(&p, &Spec { password: true, ..Spec::to(Seipd::V2, &[dave, bob]) }.signed(bob));
    c.pass("pass-skesk-pkesk-seipd2", "SKESK v6 + 2 PKESK v6 + SEIPD v2 (opens with a key and with the password)", &dc2, &rpgp, &d, &p, Open::Key(dave), Some(bob));
    c.also_opens(Open::Password, &p);

    // --- rPGP's own partial lengths (streamed plaintext of unknown length)
    let attachment = random_bytes(3000);
    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec { stream_chunk: Some(512), ..Spec::to(Seipd::V1, &[carol]) }.signed(bob));
    assert!(split(&d).iter().any(|p| p.tag == TAG_SEIPD && p.partial.is_some()), "rPGP streamed without partial lengths");
    let what = format!("rPGP streaming: SEIPD v1 in partial-length chunks of 512 ({})", chunks_of(&d));
    c.pass("pass-rpgp-partial-seipd1", &what, &dc1, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec { stream_chunk: Some(1024), ..Spec::to(Seipd::V2, &[carol, bob]) }.signed(bob));
    assert!(split(&d).iter().any(|p| p.tag == TAG_SEIPD && p.partial.is_some()), "rPGP streamed without partial lengths");
    let what = format!("rPGP streaming: SEIPD v2 in partial-length chunks of 1024 ({})", chunks_of(&d));
    c.pass("pass-rpgp-partial-seipd2", &what, &dc2, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    // --- re-framed: the same packet bodies under other headers
    let attachment = random_bytes(10_000);
    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]).signed(bob));
    let d = reframe(&d, |_, p| if p.tag == TAG_SEIPD { Frame::Partial { exps: vec![9, 10, 12, 0, 11], last5: false } } else { Frame::Min });
    let what = format!("SEIPD v1 re-framed into partial chunks of mixed sizes including 1 octet ({})", chunks_of(&d));
    c.pass("pass-partial-mixed-chunks", &what, &dc1, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let attachment = random_bytes(2000);
    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[carol]).signed(bob));
    let d = reframe(&d, |_, p| if p.tag == TAG_SEIPD { Frame::PartialToZero } else { Frame::Min });
    let what = format!("SEIPD v2 re-framed: 512, then descending powers of two, then a zero-length final chunk ({})", chunks_of(&d));
    c.pass("pass-partial-zero-final", &what, &dc2, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]).signed(bob));
    let d = reframe(&d, |_, p| if p.tag == TAG_SEIPD { Frame::Partial { exps: vec![10], last5: true } } else { Frame::Min });
    let what = format!("SEIPD v1 re-framed: partial chunks of 1024, final chunk with a five-octet length ({})", chunks_of(&d));
    c.pass("pass-partial-final-5octet", &what, &dc1, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(rsa, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]));
    let d = reframe(&d, |_, p| if p.tag == TAG_PKESK { Frame::Legacy(0) } else { Frame::Min });
    c.pass("pass-legacy-len0", "PKESK (Curve25519) with a legacy header, length type 0 (one octet)", &min, &rpgp, &d, &p, Open::Key(carol), None);

    let p = plain(bob, rsa, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[rsa]));
    let d = reframe(&d, |_, p| if p.tag == TAG_PKESK { Frame::Legacy(1) } else { Frame::Min });
    c.pass("pass-legacy-len1", "PKESK (RSA) with a legacy header, length type 1 (two octets), as GnuPG writes", &min, &rpgp, &d, &p, Open::Key(rsa), None);

    let p = plain(bob, rsa, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[rsa]));
    let d = reframe(&d, |_, p| if p.tag == TAG_PKESK { Frame::Legacy(2) } else { Frame::Min });
    c.pass("pass-legacy-len2", "PKESK (RSA) with a legacy header, length type 2 (four octets)", &min, &rpgp, &d, &p, Open::Key(rsa), None);

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec { password: true, ..Spec::to(Seipd::V1, &[rsa, carol]) });
    let d = reframe(&d, |i, p| match (p.tag, i) {
        (TAG_SEIPD, _) => Frame::New5,
        (_, 0) => Frame::Legacy(0),
        (_, 1) => Frame::Legacy(1),
        _ => Frame::Legacy(2),
    });
    assert_eq!(tags(&d), [TAG_SKESK, TAG_PKESK, TAG_PKESK, TAG_SEIPD]);
    c.pass("pass-legacy-mixed", "SKESK legacy type 0, PKESK legacy type 1, PKESK legacy type 2, SEIPD new format five-octet", &min, &rpgp, &d, &p, Open::Key(carol), None);
    c.also_opens(Open::Password, &p);

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[carol, rsa]));
    let d = reframe(&d, |_, _| Frame::New5);
    c.pass("pass-new-len5-all", "every packet with a (non-minimal) five-octet new-format length", &min, &rpgp, &d, &p, Open::Key(carol), None);

    let p = plain(bob, rsa, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[rsa]));
    let d = reframe(&d, |_, p| if p.tag == TAG_PKESK { Frame::New2 } else { Frame::Min });
    c.pass("pass-new-len2-pkesk", "RSA PKESK with a two-octet new-format length", &min, &rpgp, &d, &p, Open::Key(rsa), None);

    for (len, form) in [(191, "one-octet maximum"), (192, "two-octet minimum"), (8383, "two-octet maximum"), (8384, "five-octet minimum")] {
        let (d, p) = seipd_of_length(len, carol);
        let d = reframe(&d, seipd_min);
        let what = format!("SEIPD v1 body of exactly {len} octets: new-format length at the {form}");
        c.pass(&format!("pass-seipd-len-{len}"), &what, &min, &rpgp, &d, &p, Open::Key(carol), None);
    }

    // --- MIME and armor variants
    let p = plain(rsa, bob, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[bob, rsa]).signed(rsa));
    let d = reframe(&d, |_, p| match p.tag {
        TAG_PKESK if p.body.len() < 256 => Frame::Legacy(0),
        TAG_PKESK => Frame::Legacy(1),
        _ => Frame::Min,
    });
    let enigmail = Armor {
        headers: vec![("Version", "GnuPG v1"), ("Comment", "Using GnuPG with Thunderbird - https://www.enigmail.net/")],
        checksum: true,
        width: 64,
    };
    c.pass("pass-armor-version-header", "Enigmail-like: armor with Version: and Comment: headers, GnuPG-style legacy PKESK headers", &tb, &enigmail, &d, &p, Open::Key(bob), Some(rsa));

    let p = plain(rsa, bob, None);
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[bob, rsa]).signed(rsa));
    let no_crc = Armor { headers: Vec::new(), checksum: false, width: 76 };
    c.pass("pass-thunderbird", "Thunderbird-like MIME (preamble, part descriptions, encrypted.asc), armor without checksum, 76 columns", &tb, &no_crc, &d, &p, Open::Key(bob), Some(rsa));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[carol, bob]).signed(bob));
    c.pass("pass-crlf", "Delta Chat 2.x-like message with CRLF line ends throughout", &dc2_crlf, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol, bob]).signed(bob));
    let crlf_version = Armor { headers: vec![("Version", "rPGP fixture"), ("Comment", "CRLF")], checksum: true, width: 64 };
    let dc1_crlf = Mail { crlf: true, ..Mail { style: Style::DeltaChat1, from: bob, to: carol.addr, crlf: false } };
    c.pass("pass-crlf-version-header", "CRLF line ends and an armor Version: header", &dc1_crlf, &crlf_version, &d, &p, Open::Key(carol), Some(bob));

    let p = plain(rsa, bob, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[bob]));
    let odd = Armor { headers: vec![("Charset", "UTF-8")], checksum: true, width: 70 };
    c.pass("pass-armor-width-70", "armor lines of 70 characters (base64 groups span lines) and a Charset: header", &min, &odd, &d, &p, Open::Key(bob), None);

    let attachment = random_bytes(54_000);
    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[carol, bob]).signed(bob));
    c.pass("pass-100k", "about 100 KB: 54 KB attachment, SEIPD v2 with a five-octet length", &dc2, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    let attachment = random_bytes(100_000);
    let p = plain(bob, carol, Some(&attachment));
    let d = encrypt(&p, &Spec { stream_chunk: Some(65_536), ..Spec::to(Seipd::V1, &[carol, bob]) }.signed(bob));
    let what = format!("about 190 KB: 100 KB attachment, rPGP streaming partial lengths of 64 KiB ({})", chunks_of(&d));
    c.pass("pass-large-partial", &what, &dc1, &rpgp, &d, &p, Open::Key(carol), Some(bob));

    // --- real messages that must be refused
    let p = plain(bob, carol, None);
    let d = plain_message(&p, Some(bob), false);
    assert_eq!(tags(&d), [4, 11, 2]);
    c.fail("fail-signed-only", "signed, not encrypted: one-pass signature + literal data + signature", "tag 4 at byte 0", eml(&dc2, "fail-signed-only", &armor(&d, &rpgp)), Open::Plain, &p);

    let d = plain_message(&p, None, true);
    assert_eq!(tags(&d), [8]);
    c.fail("fail-compressed-only", "compressed data packet (ZLIB) around literal data, not encrypted", "tag 8 at byte 0", eml(&min, "fail-compressed-only", &armor(&d, &rpgp)), Open::Plain, &p);

    let d = plain_message(&p, None, false);
    assert_eq!(tags(&d), [11]);
    c.fail("fail-literal-only", "a bare literal data packet", "tag 11 at byte 0", eml(&min, "fail-literal-only", &armor(&d, &rpgp)), Open::Plain, &p);

    let signature = packets_with_tag(&plain_message(&p, Some(bob), false), TAG_SIGNATURE);
    let mut d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]));
    d.extend(&signature);
    assert_eq!(tags(&d), [TAG_PKESK, TAG_SEIPD, TAG_SIGNATURE]);
    c.fail("fail-seipd-then-signature", "PKESK + SEIPD + a signature packet after it", "data after the SEIPD packet", eml(&dc1, "fail-seipd-then-signature", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let d = packets_with_tag(&encrypt(&p, &Spec::to(Seipd::V1, &[carol])), TAG_SEIPD);
    c.fail("fail-seipd-without-key-packet", "SEIPD alone: the PKESK removed", "without a PKESK or SKESK", eml(&dc1, "fail-seipd-without-key-packet", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let mut d = encrypt(&p, &Spec::to(Seipd::V2, &[carol]));
    d.extend(packets_with_tag(&encrypt(&p, &Spec::to(Seipd::V2, &[carol])), TAG_SEIPD));
    assert_eq!(tags(&d), [TAG_PKESK, TAG_SEIPD, TAG_SEIPD]);
    c.fail("fail-two-seipd", "PKESK + SEIPD + a second SEIPD", "data after the SEIPD packet", eml(&dc2, "fail-two-seipd", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let mut d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]));
    d.extend(encrypt(&p, &Spec::to(Seipd::V1, &[carol])));
    assert_eq!(tags(&d), [TAG_PKESK, TAG_SEIPD, TAG_PKESK, TAG_SEIPD]);
    c.fail("fail-two-messages", "two complete encrypted messages one after the other", "data after the SEIPD packet", eml(&dc1, "fail-two-messages", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let d = sed_message(&p, carol);
    assert_eq!(tags(&d), [TAG_PKESK, TAG_SED]);
    c.fail("fail-sed-tag9", "PKESK + obsolete Symmetrically Encrypted Data (tag 9, no integrity protection)", "tag 9 at byte", eml(&min, "fail-sed-tag9", &armor(&d, &rpgp)), Open::Legacy(carol), &p);

    let p = plain(bob, carol, Some(&attachment[..3000]));
    let d = encrypt(&p, &Spec::to(Seipd::V2, &[carol]));
    let d = reframe(&d, |_, p| if p.tag == TAG_SEIPD { Frame::Partial { exps: vec![9], last5: false } } else { Frame::Min });
    let cut = d[..d.len() - 7].to_vec();
    c.fail("fail-partial-truncated", "partial-length SEIPD v2 whose final chunk lacks its last 7 octets", "OpenPGP data ends early", eml(&dc2, "fail-partial-truncated", &armor(&cut, &rpgp)), Open::Key(carol), &p);

    let framed = split(&d);
    let pkesk_len = frame(TAG_PKESK, &framed[0].body, &Frame::Min).len();
    let cut = d[..pkesk_len + 2 + 512].to_vec(); // header octet + first chunk's length octet + chunk
    c.fail("fail-partial-no-final-chunk", "partial-length SEIPD v2 cut after its first 512-octet chunk (no final chunk)", "OpenPGP data ends early", eml(&dc2, "fail-partial-no-final-chunk", &armor(&cut, &rpgp)), Open::Key(carol), &p);

    let p = plain(bob, carol, None);
    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]));
    let d = reframe(&d, |_, p| if p.tag == TAG_PKESK { Frame::Partial { exps: vec![6], last5: false } } else { Frame::Min });
    c.fail("fail-pkesk-partial-length", "PKESK framed with a partial length (allowed for data packets only)", "key packet (tag 1) with a partial length", eml(&min, "fail-pkesk-partial-length", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let mut d = frame(TAG_MARKER, b"PGP", &Frame::Legacy(0));
    d.extend(encrypt(&p, &Spec::to(Seipd::V1, &[carol])));
    c.fail("fail-marker-packet", "marker packet (tag 10, \"PGP\", as PGP 5 wrote) before PKESK + SEIPD; RFC 9580 says ignore it", "tag 10 at byte 0", eml(&min, "fail-marker-packet", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let mut d = encrypt(&p, &Spec::to(Seipd::V2, &[carol]));
    let padding = Padding::new(thread_rng(), PacketHeaderVersion::New, 32).expect("padding packet");
    d.extend(frame(TAG_PADDING, &padding.to_bytes().expect("serialize padding"), &Frame::Min));
    assert_eq!(tags(&d), [TAG_PKESK, TAG_SEIPD, TAG_PADDING]);
    c.fail("fail-padding-after-seipd", "PKESK + SEIPD v2 + a padding packet (tag 21, RFC 9580) after it", "data after the SEIPD packet", eml(&dc2, "fail-padding-after-seipd", &armor(&d, &rpgp)), Open::Key(carol), &p);

    let d = encrypt(&p, &Spec::to(Seipd::V1, &[carol]).signed(bob));
    let inline = Mail { style: Style::Inline, from: bob, to: carol.addr, crlf: false };
    c.fail("fail-inline-pgp", "inline PGP: the armored, encrypted message as a text/plain body", "not multipart/encrypted", eml(&inline, "fail-inline-pgp", &armor(&d, &rpgp)), Open::Key(carol), &p);

    c.fixtures
}

/// Chunk sizes of the partial-length SEIPD packet, for descriptions.
fn chunks_of(data: &[u8]) -> String {
    let packets = split(data);
    let seipd = packets.iter().find(|p| p.tag == TAG_SEIPD).expect("SEIPD");
    match &seipd.partial {
        None => format!("one chunk of {}", seipd.body.len()),
        Some(chunks) if chunks.len() > 12 => format!("{} chunks, last {}", chunks.len(), chunks.last().copied().unwrap_or(0)),
        Some(chunks) => chunks.iter().map(usize::to_string).collect::<Vec<_>>().join("+"),
    }
}

fn write_out(dir: &Path, fixtures: &[Fixture]) {
    std::fs::create_dir_all(dir).expect("create output directory");
    for entry in std::fs::read_dir(dir).expect("read output directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "eml") {
            std::fs::remove_file(&path).expect("remove old fixture");
        }
    }
    let mut manifest = String::from(MANIFEST_HEAD);
    for f in fixtures {
        std::fs::write(dir.join(&f.name), &f.eml).expect("write fixture");
        let _ = writeln!(manifest, "{} | {} | {}", f.name, f.expect, f.what);
    }
    std::fs::write(dir.join("expect.txt"), manifest).expect("write manifest");
}

const MANIFEST_HEAD: &str = "\
# Expected check_message verdicts for the .eml files beside this file.
# Made by milter/fixture-gen (rPGP, the `pgp` crate); regenerate with
#   cargo run --release --manifest-path milter/fixture-gen/Cargo.toml -- milter/tests/fixtures/pgp
# Every message is real: encrypted (or signed/compressed) by rPGP; framing
# variants re-wrap unchanged packet bodies. Each `pass` message was decrypted
# again by rPGP from the finished file.
#
# One line per file:  NAME | EXPECTATION | DESCRIPTION
#   pass keys=N version=yes|no   accepted; N PKESK+SKESK packets; whether the
#                                armor has a Version: header
#   fail: TEXT                   refused; the error message contains TEXT
";
