//! `chatmail-metadata`'s dict side: Dovecot's `mail_attribute_dict` for
//! IMAP METADATA. It keeps Delta Chat's push device tokens per account in
//! chatmail's `metadata.json`, answers the server metadata Delta Chat reads
//! (`maxsmtprecipients`, `irohrelay`, `turn`), and refuses everything else.
//!
//! Dovecot names the user in every lookup and transaction: the IMAP session
//! that asks is logged in as that user, so an account only ever reaches its
//! own tokens. The socket is the mail user's (mode 0660), like Dovecot's
//! mail processes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chatmail_config::layout::METADATA_FILE;
use chatmail_config::push::valid_account_name;
use chatmail_config::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::dict::{self, Command, Reply};
use crate::server_metadata::{classify, MetadataKey, ServerMetadata, Turn};
use crate::tokens::{check_token, Tokens};

/// What the metadata service needs to know.
#[derive(Debug, Clone)]
pub struct MetadataSettings {
    pub mailboxes_dir: PathBuf,
    pub server: ServerMetadata,
}

impl MetadataSettings {
    /// From the configuration; `turn_secret` is the content of
    /// `turn_secret_file` (read by the caller) when `turn_server` is set.
    pub fn from_config(config: &Config, turn_secret: Option<Vec<u8>>) -> MetadataSettings {
        MetadataSettings {
            mailboxes_dir: config.mailboxes_dir.clone(),
            server: ServerMetadata {
                max_recipients_per_message: config.max_recipients_per_message,
                iroh_relay: config.iroh_relay.clone(),
                turn: config.turn_server.clone().zip(turn_secret).map(|(server, secret)| Turn { server, secret }),
            },
        }
    }
}

/// Reads the TURN secret: the file's first line, at least 16 bytes.
pub fn read_turn_secret(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading the TURN secret {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.len() < 16 {
        return Err(format!("the TURN secret in {} is shorter than 16 characters", path.display()));
    }
    Ok(secret.as_bytes().to_vec())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One change inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set { key: String, value: Vec<u8> },
    Unset { key: String },
    /// An atomic increment or timestamp: not supported.
    Unsupported,
}

/// The accounts' metadata files, shared by the dict and the notifier.
#[derive(Debug)]
pub struct MetadataService {
    settings: MetadataSettings,
    /// Serialises read-modify-write of metadata files (the dict's SETs and
    /// the notifier's removals of gone tokens).
    writing: Mutex<()>,
}

impl MetadataService {
    pub fn new(settings: MetadataSettings) -> MetadataService {
        MetadataService { settings, writing: Mutex::new(()) }
    }

    /// The metadata file of `account`, if it names an existing account.
    fn metadata_path(&self, account: &str) -> Option<PathBuf> {
        if !valid_account_name(account) {
            return None;
        }
        let home = self.settings.mailboxes_dir.join(account);
        home.is_dir().then(|| home.join(METADATA_FILE))
    }

    fn read_tokens(path: &Path, now: u64) -> io::Result<Tokens> {
        match std::fs::read_to_string(path) {
            Ok(text) => Tokens::parse(&text, now).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Tokens::default()),
            Err(e) => Err(io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))),
        }
    }

    fn write_tokens(path: &Path, tokens: &Tokens) -> io::Result<()> {
        let dir = path.parent().ok_or_else(|| io::Error::other("metadata file without directory"))?;
        // Written beside the file (same file system), then renamed over it.
        chatmail_config::files::write_atomically(dir, path, tokens.to_json().as_bytes(), 0o600)
    }

    /// The live device tokens of `account` (none for an unknown account).
    pub fn tokens(&self, account: &str, now: u64) -> io::Result<Vec<String>> {
        let Some(path) = self.metadata_path(account) else { return Ok(Vec::new()) };
        Ok(Self::read_tokens(&path, now)?.live(now).into_iter().map(str::to_owned).collect())
    }

    /// Forgets `token` of `account` (the notification service said it is
    /// gone); whether it was there.
    pub fn forget_token(&self, account: &str, token: &str, now: u64) -> io::Result<bool> {
        let Some(path) = self.metadata_path(account) else { return Ok(false) };
        let _guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut tokens = Self::read_tokens(&path, now)?;
        let removed = tokens.remove(token);
        let pruned = tokens.prune(now);
        if removed || pruned {
            Self::write_tokens(&path, &tokens)?;
        }
        Ok(removed)
    }

    /// Answers a lookup of `key` for `user`.
    pub fn lookup(&self, key: &str, user: &str, now: u64) -> Reply {
        match classify(key) {
            MetadataKey::DeviceToken => match self.tokens(user, now) {
                Ok(tokens) if tokens.is_empty() => Reply::NotFound,
                // chatmail's answer: the account's tokens, separated by spaces.
                Ok(tokens) => Reply::Found(tokens.join(" ")),
                Err(e) => Reply::Failed(e.to_string()),
            },
            MetadataKey::DeltaChatServer(name) => self.settings.server.value(&name, now).map_or(Reply::NotFound, Reply::Found),
            MetadataKey::OtherServer | MetadataKey::Other => Reply::NotFound,
        }
    }

    /// Applies a committed transaction of `user`. `Ok` carries log lines;
    /// `Err` is the reason the whole transaction is refused (nothing is
    /// changed then).
    fn commit(&self, user: &str, changes: &[Change], now: u64) -> Result<Vec<String>, String> {
        let mut new_tokens = Vec::new();
        let mut log = Vec::new();
        for change in changes {
            match change {
                Change::Set { key, value } => match classify(key) {
                    MetadataKey::DeviceToken => new_tokens.push(check_token(value).map_err(|e| e.to_string())?.to_owned()),
                    MetadataKey::DeltaChatServer(_) | MetadataKey::OtherServer => return Err("server metadata is read-only".into()),
                    MetadataKey::Other => return Err("only /private/devicetoken can be set on this relay".into()),
                },
                Change::Unsupported => return Err("counters and timestamps are not supported".into()),
                // Nothing else is stored, so there is nothing to remove; a
                // device token goes when the notification service says so
                // (which device's token a NIL would mean is unknown).
                Change::Unset { key } => {
                    if classify(key) == MetadataKey::DeviceToken {
                        log.push(format!("op=unset-devicetoken account={user} result=ignored"));
                    }
                }
            }
        }
        if new_tokens.is_empty() {
            return Ok(log);
        }
        let path = self.metadata_path(user).ok_or_else(|| format!("no account {user:?}"))?;
        let _guard = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut tokens = Self::read_tokens(&path, now).map_err(|e| e.to_string())?;
        tokens.prune(now);
        for token in &new_tokens {
            tokens.add(token, now);
            log.push(format!("op=set-devicetoken account={user} token={} result=ok", crate::push_queue::token_label(&crate::push_queue::entry_id(user, token))));
        }
        Self::write_tokens(&path, &tokens).map_err(|e| e.to_string())?;
        Ok(log)
    }
}

/// Serves Dovecot's dict clients on `listener` until `shutdown` completes.
pub async fn serve(listener: UnixListener, service: Arc<MetadataService>, shutdown: impl Future) -> io::Result<()> {
    crate::accept_loop("chatmail-metadata", listener, shutdown, move |stream| connection(stream, Arc::clone(&service))).await
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One client connection: a handshake, then commands answered in order.
async fn connection(stream: UnixStream, service: Arc<MetadataService>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut commands = dict::CommandReader::new(read);
    // Open transactions: id → (user, changes).
    let mut transactions: HashMap<String, (String, Vec<Change>)> = HashMap::new();
    while let Some(command) = commands.next().await? {
        let reply = match command {
            Command::Hello { .. } => continue,
            Command::Lookup { key, user } => {
                let service = Arc::clone(&service);
                let (key, user) = (text(key), text(user));
                tokio::task::spawn_blocking(move || service.lookup(&key, &user, unix_now()))
                    .await
                    .unwrap_or_else(|e| Reply::Failed(format!("internal error: {e}")))
                    .line()
            }
            // Nothing is listed: Delta Chat asks for keys by name.
            Command::Iterate => dict::ITERATION_FINISHED.to_owned(),
            Command::Begin { id, user } => {
                transactions.insert(id, (text(user), Vec::new()));
                continue;
            }
            Command::Set { id, key, value } => {
                if let Some((_, changes)) = transactions.get_mut(&id) {
                    changes.push(Change::Set { key: text(key), value });
                }
                continue;
            }
            Command::Unset { id, key } => {
                if let Some((_, changes)) = transactions.get_mut(&id) {
                    changes.push(Change::Unset { key: text(key) });
                }
                continue;
            }
            Command::OtherWrite { id } => {
                // Counters are not supported: the commit will fail.
                if let Some((_, changes)) = transactions.get_mut(&id) {
                    changes.push(Change::Unsupported);
                }
                continue;
            }
            Command::Rollback { id } => {
                transactions.remove(&id);
                continue;
            }
            Command::Commit { id } => match transactions.remove(&id) {
                None => dict::commit_failed(&id, "unknown transaction"),
                Some((user, changes)) => {
                    let service = Arc::clone(&service);
                    let user_for_log = user.clone();
                    let result = tokio::task::spawn_blocking(move || service.commit(&user, &changes, unix_now()))
                        .await
                        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
                    match result {
                        Ok(log) => {
                            for entry in log {
                                eprintln!("chatmail-metadata: {entry}");
                            }
                            dict::commit_ok(&id)
                        }
                        Err(why) => {
                            eprintln!("chatmail-metadata: op=setmetadata account={user_for_log} result=refused reason={why:?}");
                            dict::commit_failed(&id, &why)
                        }
                    }
                }
            },
        };
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const GUID: &str = "43f5f508a7ea0366dff30200c15250e3";

    fn service(dir: &Path) -> MetadataService {
        std::fs::create_dir_all(dir.join("a@x.example")).expect("account");
        std::fs::create_dir_all(dir.join("b@x.example")).expect("account");
        MetadataService::new(MetadataSettings {
            mailboxes_dir: dir.to_owned(),
            server: ServerMetadata { max_recipients_per_message: 50, iroh_relay: None, turn: None },
        })
    }

    fn set(key: &str, value: &[u8]) -> Change {
        Change::Set { key: key.into(), value: value.to_vec() }
    }

    #[test]
    fn tokens_per_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = service(dir.path());
        let key = format!("priv/{GUID}/devicetoken");
        assert_eq!(service.lookup(&key, "a@x.example", NOW), Reply::NotFound);
        service.commit("a@x.example", &[set(&key, b"openpgp:one")], NOW).expect("first device");
        service.commit("a@x.example", &[set(&key, b"openpgp:two")], NOW + 1).expect("second device");
        assert_eq!(service.lookup(&key, "a@x.example", NOW + 2), Reply::Found("openpgp:one openpgp:two".into()));
        // Another account sees nothing of them.
        assert_eq!(service.lookup(&key, "b@x.example", NOW + 2), Reply::NotFound);
        assert_eq!(service.tokens("b@x.example", NOW + 2).expect("b"), Vec::<String>::new());
        // chatmail's file form.
        let text = std::fs::read_to_string(dir.path().join("a@x.example").join(METADATA_FILE)).expect("file");
        assert_eq!(text, format!(r#"{{"devicetoken":{{"openpgp:one":{NOW},"openpgp:two":{}}}}}"#, NOW + 1));
        assert!(service.forget_token("a@x.example", "openpgp:one", NOW + 3).expect("forget"));
        assert_eq!(service.tokens("a@x.example", NOW + 3).expect("a"), ["openpgp:two"]);
    }

    #[test]
    fn refusals_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = service(dir.path());
        let key = format!("priv/{GUID}/devicetoken");
        let table = [
            (vec![set(&key, &vec![b'x'; 8 * 1024 + 1])], "device token is 8193 bytes, more than 8192"),
            (vec![set(&key, b"two\r\nlines")], "device token contains a control character (it must be one line)"),
            (vec![set(&key, b"ok"), set(&format!("priv/{GUID}/other"), b"v")], "only /private/devicetoken can be set on this relay"),
            (vec![set(&format!("shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/turn"), b"v")], "server metadata is read-only"),
        ];
        for (changes, want) in table {
            assert_eq!(service.commit("a@x.example", &changes, NOW), Err(want.to_owned()));
        }
        assert_eq!(service.commit("nobody@x.example", &[set(&key, b"t")], NOW), Err("no account \"nobody@x.example\"".into()));
        assert_eq!(service.commit("../a@x.example", &[set(&key, b"t")], NOW), Err("no account \"../a@x.example\"".into()));
        assert!(!dir.path().join("a@x.example").join(METADATA_FILE).exists());
        // Unsets of what is not stored succeed and change nothing.
        assert!(service.commit("a@x.example", &[Change::Unset { key: key.clone() }, Change::Unset { key: format!("priv/{GUID}/x") }], NOW).is_ok());
    }

    #[test]
    fn server_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = service(dir.path());
        let server = |name: &str| format!("shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/{name}");
        assert_eq!(service.lookup(&server("maxsmtprecipients"), "a@x.example", NOW), Reply::Found("50".into()));
        assert_eq!(service.lookup(&server("irohrelay"), "a@x.example", NOW), Reply::NotFound);
        assert_eq!(service.lookup(&server("turn"), "a@x.example", NOW), Reply::NotFound);
        assert_eq!(service.lookup(&format!("shared/{GUID}/comment"), "a@x.example", NOW), Reply::NotFound);
    }
}
