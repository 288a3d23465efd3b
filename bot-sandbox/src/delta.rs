//! Delta Chat messages, as a bot host reads and writes them (pure: bytes
//! in, bytes out; the keys are `openpgp`'s).
//!
//! Incoming: the outer `multipart/encrypted` gives the armored OpenPGP
//! message; its plaintext is a MIME entity whose own headers (protected
//! headers) say who wrote it, to which chat, with which keys (Autocrypt,
//! Autocrypt-Gossip) and which Secure-Join step. The only cleartext a bot
//! account gets that matters is a Secure-Join `vc-request`.
//!
//! Outgoing: the way Delta Chat core writes them: an outer message with
//! only what transport needs (`Subject: [...]`) and an inner part, signed
//! and encrypted, carrying every header with `hp="cipher"` (so receivers
//! ignore the outer ones).

use mail_parser::{MessageParser, MimeHeaders};

use crate::openpgp::{PublicKey, SecretKey};

/// Delta Chat's placeholder for the outer Subject.
pub const HIDDEN_SUBJECT: &str = "[...]";

/// A Secure-Join step a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecureJoin {
    /// `vc-request`, `vc-request-with-auth`, …
    pub step: String,
    pub invite_number: Option<String>,
    pub auth: Option<String>,
    pub fingerprint: Option<String>,
}

/// A key a message carries for an address (Autocrypt or gossip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyData {
    pub addr: String,
    /// The binary transferable public key.
    pub key: Vec<u8>,
}

/// An attachment's name and size (bots get its metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub size: u64,
}

/// What a message (or a decrypted inner part) says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Content {
    /// The From address, lower-cased.
    pub from: String,
    pub from_name: String,
    /// To and Cc addresses, lower-cased.
    pub to: Vec<String>,
    /// Without angle brackets.
    pub message_id: String,
    pub in_reply_to: Vec<String>,
    pub subject: String,
    pub chat_version: bool,
    pub group_id: Option<String>,
    pub group_name: Option<String>,
    pub member_added: Option<String>,
    pub member_removed: Option<String>,
    pub autocrypt: Option<KeyData>,
    pub gossip: Vec<KeyData>,
    pub secure_join: Option<SecureJoin>,
    /// `multipart/encrypted`: the armored OpenPGP message of part 2.
    pub encrypted: Option<Vec<u8>>,
    /// The first text part.
    pub text: String,
    /// A webxdc status update (the `status-update.json` part).
    pub status_update: Option<String>,
    pub attachment: Option<Attachment>,
    /// `Chat-Delete`, `Chat-Edit`, MDNs and other messages a bot is not
    /// shown.
    pub hidden: bool,
}

/// Lower-cased addresses of an address header.
fn addresses(header: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    header.map(|a| a.iter().filter_map(|a| a.address()).map(str::to_ascii_lowercase).collect()).unwrap_or_default()
}

/// An Autocrypt header value: `addr=…; [prefer-encrypt=…;] keydata=…`.
/// Unknown attributes not starting with `_` make it invalid (Autocrypt
/// 1.1), as do a missing addr or keydata.
pub fn parse_autocrypt(value: &str) -> Option<KeyData> {
    let (mut addr, mut key) = (None, None);
    for attribute in value.split(';') {
        let (name, data) = attribute.split_once('=')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "addr" => addr = Some(data.trim().to_ascii_lowercase()),
            "keydata" => key = chatmail_config::base64::decode(data.as_bytes()).ok(),
            "prefer-encrypt" => {}
            other if other.starts_with('_') => {}
            _ => return None,
        }
    }
    Some(KeyData { addr: addr?, key: key? })
}

/// The value of every header called `name` (case-insensitive), unfolded.
fn raw_headers<'a>(message: &'a mail_parser::Message<'a>, name: &str) -> Vec<String> {
    message
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| message.raw_message().get(h.offset_start() as usize..h.offset_end() as usize))
        .map(|raw| String::from_utf8_lossy(raw).split(['\r', '\n']).map(str::trim).collect::<Vec<_>>().join(" ").trim().to_owned())
        .collect()
}

/// A header value with RFC 2047 encoded words decoded (mail-parser
/// decodes only the headers it knows).
fn decode_words(raw: &str) -> String {
    let fake = format!("Subject: {raw}\r\n\r\n");
    MessageParser::default().parse_headers(fake.as_bytes()).and_then(|m| m.subject().map(str::to_owned)).unwrap_or_else(|| raw.to_owned())
}

fn strip_brackets(id: &str) -> String {
    id.trim().trim_start_matches('<').trim_end_matches('>').to_owned()
}

/// What a person wrote when answering a message: Delta Chat puts the
/// quoted text before it (`> ` lines, then an empty line); the bot gets
/// the answer (and the quoted message's id in `CHATMAIL_IN_REPLY_TO`).
fn without_quote(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let quoted = lines.iter().take_while(|l| l.starts_with('>')).count();
    if quoted > 0 && lines.get(quoted).is_some_and(|l| l.trim().is_empty()) {
        lines[quoted + 1..].join("\n")
    } else {
        text.to_owned()
    }
}

/// Reads a message, or the decrypted inner part of one.
pub fn parse(bytes: &[u8]) -> Option<Content> {
    let message = MessageParser::default().parse(bytes)?;
    let one = |name: &str| raw_headers(&message, name).into_iter().next();
    let mut content = Content {
        from: addresses(message.from()).into_iter().next().unwrap_or_default(),
        from_name: message.from().and_then(|a| a.first()).and_then(|a| a.name()).unwrap_or_default().to_owned(),
        to: addresses(message.to()).into_iter().chain(addresses(message.cc())).collect(),
        message_id: message.message_id().map(strip_brackets).unwrap_or_default(),
        in_reply_to: one("In-Reply-To").map(|v| v.split_whitespace().map(strip_brackets).collect()).unwrap_or_default(),
        subject: message.subject().unwrap_or_default().to_owned(),
        chat_version: one("Chat-Version").is_some(),
        group_id: one("Chat-Group-ID"),
        group_name: one("Chat-Group-Name").map(|raw| decode_words(&raw)),
        member_added: one("Chat-Group-Member-Added").map(|a| a.to_ascii_lowercase()),
        member_removed: one("Chat-Group-Member-Removed").map(|a| a.to_ascii_lowercase()),
        autocrypt: one("Autocrypt").and_then(|v| parse_autocrypt(&v)),
        gossip: raw_headers(&message, "Autocrypt-Gossip").iter().filter_map(|v| parse_autocrypt(v)).collect(),
        secure_join: one("Secure-Join").map(|step| SecureJoin {
            step: step.to_ascii_lowercase(),
            invite_number: one("Secure-Join-Invitenumber"),
            auth: one("Secure-Join-Auth"),
            fingerprint: one("Secure-Join-Fingerprint").map(|f| f.replace(' ', "").to_ascii_uppercase()),
        }),
        hidden: one("Chat-Delete").is_some() || one("Chat-Edit").is_some(),
        ..Content::default()
    };
    let root = message.root_part();
    let content_type = root.content_type();
    let is = |t: &str, s: &str| content_type.is_some_and(|c| c.ctype().eq_ignore_ascii_case(t) && c.subtype().is_some_and(|x| x.eq_ignore_ascii_case(s)));
    if is("multipart", "encrypted") {
        content.encrypted = message.parts.get(2).map(|p| p.contents().to_vec());
        return Some(content);
    }
    if is("multipart", "report") {
        let report_type = content_type.and_then(|c| c.attribute("report-type")).unwrap_or_default().to_ascii_lowercase();
        if report_type == "status-update" {
            content.status_update = message
                .parts
                .iter()
                .find(|p| p.attachment_name() == Some("status-update.json"))
                .map(|p| String::from_utf8_lossy(p.contents()).into_owned());
        } else {
            // Read receipts and delivery reports.
            content.hidden = true;
        }
    }
    content.text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    if !content.in_reply_to.is_empty() {
        content.text = without_quote(&content.text);
    }
    content.attachment = message
        .attachments()
        .find(|p| p.attachment_name() != Some("status-update.json"))
        .map(|p| Attachment { name: p.attachment_name().unwrap_or("file").to_owned(), size: p.contents().len() as u64 });
    Some(content)
}

/// What the bot sends: one Delta Chat message.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub from: String,
    pub from_name: String,
    /// Every recipient (shown in To; the envelope too).
    pub to: Vec<String>,
    /// Without angle brackets.
    pub message_id: String,
    /// Unix seconds.
    pub date: u64,
    pub subject: String,
    pub text: String,
    pub in_reply_to: Option<String>,
    /// Group id and name.
    pub group: Option<(String, String)>,
    /// Further protected headers (Secure-Join, Chat-Delete, member changes).
    pub headers: Vec<(String, String)>,
    /// Keys to gossip (the recipients').
    pub gossip: Vec<KeyData>,
    pub file: Option<crate::actions::File>,
    /// A webxdc status update (the JSON of `status-update.json`).
    pub status_update: Option<String>,
}

/// A header value with non-ASCII text encoded (RFC 2047) and no line
/// breaks.
fn header_text(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.is_ascii() {
        flat
    } else {
        format!("=?utf-8?B?{}?=", chatmail_config::base64::encode(flat.as_bytes()))
    }
}

/// base64 in lines of 76.
fn base64_lines(data: &[u8]) -> String {
    let encoded = chatmail_config::base64::encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// An Autocrypt(-Gossip) value, folded the way core does (spaces in the
/// key data are ignored by readers).
pub fn autocrypt_value(addr: &str, key: &[u8], mutual: bool) -> String {
    let encoded = chatmail_config::base64::encode(key);
    let mut value = format!("addr={addr};{} keydata=", if mutual { " prefer-encrypt=mutual;" } else { "" });
    for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            value.push_str("\r\n ");
        }
        value.push_str(&String::from_utf8_lossy(chunk));
    }
    value
}

fn boundary(message_id: &str, salt: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.bytes().chain(salt.bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("=_cmb{hash:016x}{salt}")
}

/// The inner (to be encrypted) part of `message`, with `own_key` in its
/// Autocrypt header.
pub fn render_inner(message: &Outgoing, own_key: &PublicKey) -> Vec<u8> {
    let date = crate::lmtp::rfc2822(message.date);
    let mut h = String::new();
    let from = if message.from_name.is_empty() { format!("<{}>", message.from) } else { format!("{} <{}>", header_text(&quoted(&message.from_name)), message.from) };
    h.push_str(&format!("From: {from}\r\n"));
    h.push_str(&format!("Date: {date}\r\n"));
    h.push_str(&format!("Message-ID: <{}>\r\n", message.message_id));
    let to: Vec<String> = message.to.iter().map(|a| format!("<{a}>")).collect();
    h.push_str(&format!("To: {}\r\n", to.join(", ")));
    h.push_str(&format!("Subject: {}\r\n", header_text(&message.subject)));
    if let Some(parent) = &message.in_reply_to {
        h.push_str(&format!("In-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n"));
    }
    // Marks the sender as a bot in Delta Chat.
    h.push_str("Auto-Submitted: auto-generated\r\n");
    h.push_str("Chat-Version: 1.0\r\n");
    if let Some((id, name)) = &message.group {
        h.push_str(&format!("Chat-Group-ID: {id}\r\nChat-Group-Name: {}\r\n", header_text(name)));
    }
    for (name, value) in &message.headers {
        h.push_str(&format!("{name}: {}\r\n", header_text(value)));
    }
    h.push_str(&format!("Autocrypt: {}\r\n", autocrypt_value(&message.from, &own_key.to_bytes(), true)));
    for gossip in &message.gossip {
        h.push_str(&format!("Autocrypt-Gossip: {}\r\n", autocrypt_value(&gossip.addr, &gossip.key, false)));
    }
    h.push_str("MIME-Version: 1.0\r\n");
    let protected = "protected-headers=\"v1\"; hp=\"cipher\"";
    let text_part = |text: &str| format!("Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}", base64_lines(text.as_bytes()));
    let mut body = String::new();
    if let Some(update) = &message.status_update {
        let b = boundary(&message.message_id, "r");
        h.push_str(&format!("Content-Type: multipart/report; report-type=status-update; boundary=\"{b}\"; {protected}\r\n\r\n"));
        body.push_str(&format!("--{b}\r\n{}", text_part(&message.text)));
        body.push_str(&format!(
            "--{b}\r\nContent-Type: application/json\r\nContent-Disposition: attachment; filename=\"status-update.json\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(update.as_bytes())
        ));
        body.push_str(&format!("--{b}--\r\n"));
    } else if let Some(file) = &message.file {
        let b = boundary(&message.message_id, "m");
        h.push_str(&format!("Content-Type: multipart/mixed; boundary=\"{b}\"; {protected}\r\n\r\n"));
        body.push_str(&format!("--{b}\r\n{}", text_part(&message.text)));
        body.push_str(&format!(
            "--{b}\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            base64_lines(&file.data),
            name = file.name
        ));
        body.push_str(&format!("--{b}--\r\n"));
    } else {
        h.push_str(&format!("Content-Type: text/plain; charset=\"utf-8\"; {protected}\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        body.push_str(&base64_lines(message.text.as_bytes()));
    }
    h.push_str(&body);
    h.into_bytes()
}

fn quoted(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
        name.to_owned()
    } else if name.is_ascii() {
        format!("\"{}\"", name.replace(['"', '\\'], ""))
    } else {
        name.to_owned()
    }
}

/// The whole message: signed with `key`, encrypted to `recipients` (and
/// the bot itself), in the outer envelope chatmail relays accept.
pub fn compose(message: &Outgoing, key: &SecretKey, recipients: &[&PublicKey]) -> Result<Vec<u8>, String> {
    let inner = render_inner(message, &key.public());
    let armored = key.sign_and_encrypt(&inner, recipients)?;
    Ok(envelope(message, &armored))
}

/// `message` as a Delta Chat mail signed with `key` and encrypted with
/// the shared secret `password` (Secure-Join v3's `vc-pubkey`), not to
/// keys.
pub fn compose_with_password(message: &Outgoing, key: &SecretKey, password: &str) -> Result<Vec<u8>, String> {
    let inner = render_inner(message, &key.public());
    let armored = key.sign_and_encrypt_with_password(&inner, password)?;
    Ok(envelope(message, &armored))
}

/// The outer, unprotected message around `armored` (an OpenPGP message):
/// PGP/MIME with only the headers transport needs.
pub(crate) fn envelope(message: &Outgoing, armored: &str) -> Vec<u8> {
    let b = boundary(&message.message_id, "e");
    let outer = format!(
        "From: <{from}>\r\nTo: \"hidden-recipients\": ;\r\nDate: {date}\r\nMessage-ID: <{id}>\r\nSubject: {HIDDEN_SUBJECT}\r\nChat-Version: 1.0\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{b}\"\r\n\r\n\
         --{b}\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n\
         --{b}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n{armored}\r\n--{b}--\r\n",
        from = message.from,
        date = crate::lmtp::rfc2822(message.date),
        id = message.message_id,
        armored = armored.trim_end().replace("\r\n", "\n").replace('\n', "\r\n"),
    );
    outer.into_bytes()
}

/// A fresh message id at `domain`.
pub fn new_message_id(domain: &str) -> String {
    format!("{}@{domain}", random_token(16))
}

/// `len` random characters of the URL-safe base64 alphabet (Delta Chat's
/// ids and Secure-Join tokens look like this).
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; len];
    // The system's random source failing is not something to continue after.
    if getrandom::getrandom(&mut bytes).is_err() {
        panic!("no random numbers from the system");
    }
    bytes.iter().map(|b| ALPHABET[usize::from(b & 63)] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_taken_off_answers() {
        let table = [
            ("> echo: hello\r\n\r\n/delete", "/delete"),
            ("> line one\n> line two\n\nanswer\nsecond line", "answer\nsecond line"),
            ("> not followed by an empty line\nanswer", "> not followed by an empty line\nanswer"),
            ("plain text", "plain text"),
            ("", ""),
        ];
        for (text, want) in table {
            assert_eq!(without_quote(text), want, "{text:?}");
        }
    }

    #[test]
    fn autocrypt_values() {
        type Expected<'a> = Option<(&'a str, &'a [u8])>;
        let table: &[(&str, Expected)] = &[
            ("addr=Alice@Example.org; prefer-encrypt=mutual; keydata=aGk=", Some(("alice@example.org", b"hi"))),
            ("addr=a@b.c; keydata=aG\r\n k=", Some(("a@b.c", b"hi"))),
            ("addr=a@b.c; _verified=1; keydata=aGk=", Some(("a@b.c", b"hi"))),
            ("addr=a@b.c; color=blue; keydata=aGk=", None),
            ("addr=a@b.c", None),
            ("keydata=aGk=", None),
            ("nonsense", None),
        ];
        for (value, want) in table {
            let got = parse_autocrypt(value);
            assert_eq!(got.as_ref().map(|k| (k.addr.as_str(), k.key.as_slice())), *want, "{value}");
        }
        let folded = autocrypt_value("a@b.c", &[7u8; 200], true);
        assert_eq!(parse_autocrypt(&folded).map(|k| k.key), Some(vec![7u8; 200]));
    }

    #[test]
    fn a_cleartext_secure_join_request() {
        let key = SecretKey::generate("bob@example.org").expect("key");
        let mail = format!(
            "From: <bob@example.org>\r\nTo: <bot@chat.example>\r\nMessage-ID: <r1@example.org>\r\nSubject: Message from bob\r\nChat-Version: 1.0\r\n\
             Secure-Join: vc-request\r\nSecure-Join-Invitenumber: INV123456789\r\nAutocrypt: {}\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSecure-Join: vc-request\r\n--b--\r\n",
            autocrypt_value("bob@example.org", &key.public().to_bytes(), true)
        );
        let content = parse(mail.as_bytes()).expect("parse");
        assert_eq!(content.from, "bob@example.org");
        let sj = content.secure_join.expect("secure-join");
        assert_eq!((sj.step.as_str(), sj.invite_number.as_deref()), ("vc-request", Some("INV123456789")));
        assert_eq!(content.autocrypt.map(|k| k.key), Some(key.public().to_bytes()));
        assert_eq!(content.text.trim(), "Secure-Join: vc-request");
        assert!(content.encrypted.is_none());
    }

    #[test]
    fn composed_messages_read_back() {
        let bot = SecretKey::generate("bot@chat.example").expect("key");
        let alice = SecretKey::generate("alice@example.org").expect("key");
        let carol = SecretKey::generate("carol@example.org").expect("key");
        let message = Outgoing {
            from: "bot@chat.example".into(),
            from_name: "Echo Bot".into(),
            to: vec!["alice@example.org".into(), "carol@example.org".into()],
            message_id: new_message_id("chat.example"),
            date: 1_795_435_200,
            subject: "Re: Grüße".into(),
            text: "hello ümlaut\nsecond line".into(),
            in_reply_to: Some("m1@example.org".into()),
            group: Some(("Dx7vQ2fG9kLm".into(), "Grüße".into())),
            headers: vec![("Secure-Join".into(), "vc-contact-confirm".into())],
            gossip: vec![KeyData { addr: "alice@example.org".into(), key: alice.public().to_bytes() }],
            file: Some(crate::actions::File { name: "a.txt".into(), data: b"file data".to_vec() }),
            status_update: None,
        };
        let mail = compose(&message, &bot, &[&alice.public(), &carol.public()]).expect("compose");
        let outer = parse(&mail).expect("outer");
        assert_eq!((outer.from.as_str(), outer.subject.as_str()), ("bot@chat.example", HIDDEN_SUBJECT));
        let text = String::from_utf8_lossy(&mail);
        assert!(!text.contains("hello") && !text.contains("Echo Bot"), "nothing readable outside");
        for reader in [&alice, &carol] {
            let decrypted = reader.decrypt(outer.encrypted.as_deref().expect("armored")).expect("decrypt");
            assert!(crate::openpgp::signed_by(&decrypted, &bot.public()));
            let inner = parse(&decrypted.data).expect("inner");
            assert_eq!(inner.from, "bot@chat.example");
            assert_eq!(inner.from_name, "Echo Bot");
            assert_eq!(inner.to, vec!["alice@example.org".to_owned(), "carol@example.org".to_owned()]);
            assert_eq!(inner.message_id, message.message_id);
            assert_eq!(inner.text.replace("\r\n", "\n").trim_end(), "hello ümlaut\nsecond line");
            assert_eq!(inner.subject, "Re: Grüße");
            assert_eq!(inner.group_id.as_deref(), Some("Dx7vQ2fG9kLm"));
            assert_eq!(inner.group_name.as_deref(), Some("Grüße"));
            assert_eq!(inner.in_reply_to, vec!["m1@example.org".to_owned()]);
            assert_eq!(inner.autocrypt.as_ref().map(|k| k.key.clone()), Some(bot.public().to_bytes()));
            assert_eq!(inner.gossip.len(), 1);
            assert_eq!(inner.secure_join.as_ref().map(|s| s.step.as_str()), Some("vc-contact-confirm"));
            assert_eq!(inner.attachment, Some(Attachment { name: "a.txt".into(), size: 9 }));
        }
        // A status update reads back as one.
        let update = Outgoing { status_update: Some("{\"updates\":[{\"payload\":1}]}".into()), file: None, ..message };
        let decrypted = alice.decrypt(parse(&compose(&update, &bot, &[&alice.public()]).expect("compose")).expect("outer").encrypted.as_deref().expect("armored")).expect("decrypt");
        assert_eq!(parse(&decrypted.data).expect("inner").status_update.as_deref(), Some("{\"updates\":[{\"payload\":1}]}"));
    }
}
