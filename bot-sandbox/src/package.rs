//! A bot package: the mail an account stores in its install folder, with
//! the attachments `bot.wasm` (a WASI command module) or `bot.js` (a
//! script the relay's JavaScript engine runs), and `bot.toml` (metadata).
//! This module takes the mail apart and checks everything but the code
//! itself (see [`crate::engine`] and [`crate::js`]).

use mail_parser::{MessageParser, MimeHeaders};

use crate::metadata::{self, Metadata};

/// A bot's code: a WASI module, or a script for the JavaScript engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Wasm(Vec<u8>),
    Script(String),
}

impl Code {
    /// The file name in a package.
    pub fn file_name(&self) -> &'static str {
        match self {
            Code::Wasm(_) => "bot.wasm",
            Code::Script(_) => "bot.js",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Code::Wasm(bytes) => bytes.len(),
            Code::Script(text) => text.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parts of a package, metadata checked.
#[derive(Debug, Clone)]
pub struct Package {
    pub code: Code,
    pub metadata: Metadata,
    /// The bot account's OpenPGP secret key, if the package carries one
    /// (an `.asc` attachment, as Delta Chat exports keys).
    pub key: Option<String>,
}

/// Takes a package mail apart. Every problem found is listed, in words
/// the bot's author can act on.
pub fn unpack(mail: &[u8], max_wasm_size: u64) -> Result<Package, Vec<String>> {
    let Some(message) = MessageParser::default().parse(mail) else {
        return Err(vec!["the mail could not be read as a MIME message".into()]);
    };
    let mut wasm = None;
    let mut script: Option<Vec<u8>> = None;
    let mut toml = None;
    let mut key = None;
    let mut problems = Vec::new();
    for part in message.attachments() {
        match part.attachment_name() {
            Some("bot.wasm") if wasm.is_some() => problems.push("more than one bot.wasm attachment".into()),
            Some("bot.toml") if toml.is_some() => problems.push("more than one bot.toml attachment".into()),
            Some("bot.js") if script.is_some() => problems.push("more than one bot.js attachment".into()),
            Some("bot.wasm") => wasm = Some(part.contents().to_vec()),
            Some("bot.js") => script = Some(part.contents().to_vec()),
            Some("bot.toml") => toml = Some(part.contents().to_vec()),
            Some(name) if name.ends_with(".asc") => {
                let text = String::from_utf8_lossy(part.contents());
                if text.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
                    if key.is_some() {
                        problems.push("more than one secret key (.asc) attachment".into());
                    }
                    key = Some(text.into_owned());
                }
            }
            _ => {}
        }
    }
    let code = match (wasm, script) {
        (None, None) => {
            problems.push("no attachment named bot.wasm (a WebAssembly module) or bot.js (a script)".into());
            None
        }
        (Some(_), Some(_)) => {
            problems.push("both bot.wasm and bot.js: a package carries one of them".into());
            None
        }
        (Some(bytes), None) if bytes.len() as u64 > max_wasm_size => {
            problems.push(format!("bot.wasm has {} bytes; the limit on this relay is {max_wasm_size}", bytes.len()));
            None
        }
        (Some(bytes), None) if !bytes.starts_with(b"\0asm") => {
            problems.push("bot.wasm is not a WebAssembly binary (it does not start with \\0asm)".into());
            None
        }
        (Some(bytes), None) => Some(Code::Wasm(bytes)),
        (None, Some(bytes)) if bytes.len() as u64 > max_wasm_size => {
            problems.push(format!("bot.js has {} bytes; the limit on this relay is {max_wasm_size}", bytes.len()));
            None
        }
        (None, Some(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => Some(Code::Script(text)),
            Err(_) => {
                problems.push("bot.js is not UTF-8 text".into());
                None
            }
        },
    };
    let metadata = match toml {
        None => {
            problems.push("no attachment named bot.toml".into());
            None
        }
        Some(bytes) => match std::str::from_utf8(&bytes) {
            Err(_) => {
                problems.push("bot.toml is not UTF-8 text".into());
                None
            }
            Ok(text) => match metadata::parse(text) {
                Ok(metadata) => Some(metadata),
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
        },
    };
    match (code, metadata) {
        (Some(code), Some(metadata)) if problems.is_empty() => Ok(Package { code, metadata, key }),
        _ => Err(problems),
    }
}

/// Builds a package mail (`chatmail-bots package`, tests, benchmarks).
pub fn build(from: &str, to: &str, code: &Code, toml: &str) -> Vec<u8> {
    use std::fmt::Write as _;
    let boundary = "chatmail-bot-package";
    let (bytes, content_type) = match code {
        Code::Wasm(bytes) => (bytes.as_slice(), "application/wasm"),
        Code::Script(text) => (text.as_bytes(), "text/javascript; charset=utf-8"),
    };
    let file_name = code.file_name();
    let encoded = chatmail_config::base64::encode(bytes);
    let mut mail = String::new();
    let _ = write!(
        mail,
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: bot package\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBot package.\r\n\
         --{boundary}\r\nContent-Type: application/toml; charset=utf-8\r\nContent-Disposition: attachment; filename=\"bot.toml\"\r\n\r\n{toml}\r\n\
         --{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; filename=\"{file_name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    for line in encoded.as_bytes().chunks(76) {
        mail.push_str(std::str::from_utf8(line).unwrap_or_default());
        mail.push_str("\r\n");
    }
    let _ = write!(mail, "--{boundary}--\r\n");
    mail.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "name = \"echo\"\nauthor = \"alice@example.org\"\n";

    #[test]
    fn a_built_package_unpacks() {
        let wasm: Vec<u8> = b"\0asm\x01\0\0\0".iter().copied().chain((0..=255u8).cycle().take(1000)).collect();
        let mail = build("bot@example.org", "bot@example.org", &Code::Wasm(wasm.clone()), TOML);
        let package = unpack(&mail, 1 << 20).expect("unpacks");
        assert_eq!(package.code, Code::Wasm(wasm));
        assert_eq!(package.metadata.name, "echo");
        let script = Code::Script("chatmail.reply('é ' + chatmail.text);\n".into());
        let package = unpack(&build("bot@example.org", "bot@example.org", &script, TOML), 1 << 20).expect("unpacks");
        assert_eq!(package.code, script);
    }

    #[test]
    fn problems() {
        let wasm = Code::Wasm(b"\0asm\x01\0\0\0".to_vec());
        let both = {
            let with_wasm = String::from_utf8(build("a@b.c", "a@b.c", &wasm, TOML)).expect("text");
            let script = String::from_utf8(build("a@b.c", "a@b.c", &Code::Script("1".into()), TOML)).expect("text");
            let js_part = &script[script.find("Content-Type: text/javascript").expect("js part")..script.rfind("--chatmail-bot-package--").expect("end")];
            with_wasm.replace("--chatmail-bot-package--", &format!("--chatmail-bot-package\r\n{js_part}--chatmail-bot-package--")).into_bytes()
        };
        let table: Vec<(Vec<u8>, &str)> = vec![
            (build("a@b.c", "a@b.c", &wasm, "name = \"x\"\n"), "author is required"),
            (build("a@b.c", "a@b.c", &Code::Wasm(b"MZ\x90\0".to_vec()), TOML), "not a WebAssembly binary"),
            (build("a@b.c", "a@b.c", &Code::Wasm([b"\0asm\x01\0\0\0".to_vec(), vec![0; 100]].concat()), TOML), "the limit on this relay is 50"),
            (build("a@b.c", "a@b.c", &Code::Script("x".repeat(51)), TOML), "bot.js has 51 bytes; the limit on this relay is 50"),
            (both, "both bot.wasm and bot.js"),
            (b"From: a@b.c\r\nSubject: hi\r\n\r\nno attachments\r\n".to_vec(), "no attachment named bot.wasm (a WebAssembly module) or bot.js"),
            (b"From: a@b.c\r\nSubject: hi\r\n\r\nno attachments\r\n".to_vec(), "no attachment named bot.toml"),
        ];
        for (mail, want) in table {
            let problems = unpack(&mail, 50).expect_err("refused");
            assert!(problems.iter().any(|p| p.contains(want)), "{want}: {problems:?}");
        }
    }
}
