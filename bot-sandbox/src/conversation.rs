//! The Delta Chat side of a bot run: the gate before it (decrypt with the
//! bot's key, verify the sender's signature), Secure-Join answered by the
//! host, and the bot's actions turned into signed, encrypted mail
//! submitted through the relay.
//!
//! Logging policy: `op=gate` for every mail that does not reach the bot
//! (`reason=` says why: not-encrypted, undecryptable, bad-signature, …),
//! `op=securejoin` per protocol step, `op=action` per action (`result=sent`
//! or `result=refused reason=…`). Message text is never logged.


use crate::actions::{valid_group_id, Action, Target};
use crate::daemon::{log, now_secs, word, Daemon};
use crate::delta::{self, Content, KeyData, Outgoing};
use crate::identity::{Identity, Peers};
use crate::lmtp::{self, SubmitError};
use crate::openpgp::{self, PublicKey, SecretKey};
use crate::state::Bot;

/// Where a mail came from, once it passed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chat {
    /// 1:1 with the sender.
    Single,
    Group { id: String, name: String },
}

impl Chat {
    /// The key under which the bot's sent message ids are kept.
    fn sent_key(&self, sender: &str) -> String {
        match self {
            Chat::Single => format!("single:{sender}"),
            Chat::Group { id, .. } => id.clone(),
        }
    }
}

/// A mail that passed the gate: what the bot is told.
#[derive(Debug, Clone)]
pub struct Verified {
    pub sender: String,
    pub sender_verified: bool,
    pub chat: Chat,
    pub content: Content,
}

/// What the gate decided.
#[derive(Debug)]
pub enum Gate {
    /// Run the bot with this.
    Run(Box<Verified>),
    /// Handled by the host (Secure-Join) or not for the bot; `reason` is
    /// logged.
    Handled(&'static str),
    /// Refused: the bot does not run (`reason` logged and counted).
    Refused(&'static str, String),
}

impl Daemon {
    pub(crate) fn identity(&self, account: &str) -> std::io::Result<Identity> {
        Ok(Identity::new(self.registry.bot_dir(account)?.join("identity")))
    }

    /// The bot's key, token and invite: made at install when missing
    /// (`package_key`: the one the package carries, which replaces the old).
    /// Writes the token's hash into the account's home for chatmail-auth.
    pub(crate) fn prepare_identity(&self, account: &str, package_key: Option<SecretKey>) -> Result<(SecretKey, String), String> {
        let identity = self.identity(account).map_err(|e| e.to_string())?;
        let key = match package_key {
            Some(key) => {
                identity.store_key(&key).map_err(|e| e.to_string())?;
                key
            }
            None => match identity.key().map_err(|e| e.to_string())? {
                Some(key) => key,
                None => {
                    let key = SecretKey::generate(account)?;
                    identity.store_key(&key).map_err(|e| e.to_string())?;
                    key
                }
            },
        };
        let (token, _) = identity.submit_token().map_err(|e| e.to_string())?;
        let hash = chatmail_accounts::hash_password(&token)?;
        let hash_file = self.settings.mailboxes_dir.join(account).join(chatmail_config::spool::BOT_SUBMIT_TOKEN);
        crate::state::write_atomically(&hash_file, hash.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        let invite = identity.invite().map_err(|e| e.to_string())?;
        let name = self.registry.load(account).ok().flatten().map(|b| b.metadata.name).unwrap_or_else(|| account.to_owned());
        Ok((key.clone(), crate::identity::invite_link(&key.public().fingerprint(), account, &name, &invite)))
    }

    /// Decides whether `mail` reaches the bot; answers Secure-Join itself.
    pub(crate) fn gate(&self, job: &str, bot: &Bot, mail: &[u8]) -> Gate {
        let account = &bot.account;
        let Some(outer) = delta::parse(mail) else { return Gate::Refused("unreadable", String::new()) };
        let identity = match self.identity(account) {
            Ok(identity) => identity,
            Err(e) => return Gate::Refused("no-identity", e.to_string()),
        };
        let key = match identity.key() {
            Ok(Some(key)) => key,
            Ok(None) => return Gate::Refused("no-key", "the bot has no key (reinstall it)".into()),
            Err(e) => return Gate::Refused("no-key", e.to_string()),
        };
        let mut peers = match identity.peers() {
            Ok(peers) => peers,
            Err(e) => return Gate::Refused("peers-unreadable", e.to_string()),
        };
        let Some(armored) = &outer.encrypted else {
            // The one cleartext a bot account takes: a Secure-Join request
            // (the milter lets exactly that through).
            if let Some(sj) = outer.secure_join.as_ref().filter(|sj| sj.step == "vc-request") {
                return self.answer_vc_request(job, bot, &key, &identity, &mut peers, &outer, sj);
            }
            return Gate::Refused("not-encrypted", outer.from);
        };
        let decrypted = match key.decrypt(armored) {
            Ok(decrypted) => decrypted,
            // Secure-Join v3's first step is encrypted with the invite's
            // secret, not to the bot's key.
            Err(_) if openpgp::is_password_encrypted(armored) => return self.answer_request_pubkey(job, bot, &key, &identity, &outer, armored),
            Err(e) => return Gate::Refused("undecryptable", e),
        };
        let Some(inner) = delta::parse(&decrypted.data) else { return Gate::Refused("unreadable", "the decrypted part is not MIME".into()) };
        let sender = if inner.from.is_empty() { outer.from.clone() } else { inner.from.clone() };
        if sender != outer.from {
            // The relay checked the outer From (DKIM, sender login); the
            // inner one must be the same person.
            return Gate::Refused("from-mismatch", format!("{} inside, {} outside", inner.from, outer.from));
        }
        if !decrypted.signed() {
            return Gate::Refused("unsigned", sender);
        }
        // The key that signed: the Autocrypt header's (for this address),
        // else the one the bot has for the sender.
        let offered = inner.autocrypt.as_ref().filter(|k| k.addr == sender).and_then(|k| PublicKey::from_bytes(&k.key).ok());
        let known = peers.key_of(&sender);
        let signer = [offered, known].into_iter().flatten().find(|k| openpgp::signed_by(&decrypted, k));
        let Some(signer) = signer else { return Gate::Refused("bad-signature", sender) };
        peers.learn_key(&sender, &signer);
        // Keys of the other recipients, for group replies: only for those
        // the bot has no key of. A gossiped key is the sender's word about
        // someone else; it must not replace what that person sent (or
        // Secure-Join verified), or any group member could redirect the
        // bot's mail for another member to a key of their own.
        for gossip in &inner.gossip {
            if gossip.addr != sender && gossip.addr != *account && inner.to.contains(&gossip.addr) && peers.key_of(&gossip.addr).is_none() {
                if let Ok(key) = PublicKey::from_bytes(&gossip.key) {
                    peers.learn_key(&gossip.addr, &key);
                }
            }
        }
        let outcome = self.classify(job, bot, &key, &identity, &mut peers, &signer, inner);
        if let Err(e) = identity.save_peers(&peers) {
            log(&format!("op=gate job={job} bot={account} result=error problem={}", word(&e.to_string())));
        }
        outcome
    }

    /// After the signature: Secure-Join steps, hidden messages, consent,
    /// the chat.
    #[allow(clippy::too_many_arguments)]
    fn classify(&self, job: &str, bot: &Bot, key: &SecretKey, identity: &Identity, peers: &mut Peers, signer: &PublicKey, inner: Content) -> Gate {
        let account = &bot.account;
        let sender = inner.from.clone();
        if let Some(sj) = &inner.secure_join {
            if sj.step == "vc-request-with-auth" {
                return self.answer_request_with_auth(job, bot, key, identity, peers, signer, &inner);
            }
            log(&format!("op=securejoin job={job} bot={account} from={} step={} result=ignored", word(&sender), word(&sj.step)));
            return Gate::Handled("secure-join-step");
        }
        if inner.hidden {
            return Gate::Handled("hidden-message");
        }
        let chat = match inner.group_id.as_deref().filter(|id| valid_group_id(id)) {
            Some(id) => {
                if inner.member_removed.as_deref() == Some(account.as_str()) {
                    peers.groups.remove(id);
                    log(&format!("op=gate job={job} bot={account} group={id} result=left-group"));
                    return Gate::Handled("removed-from-group");
                }
                let group = peers.groups.entry(id.to_owned()).or_default();
                if let Some(name) = &inner.group_name {
                    group.name = name.clone();
                }
                let mut members: Vec<String> = inner.to.iter().chain(std::iter::once(&sender)).filter(|a| *a != account).cloned().collect();
                if let Some(removed) = &inner.member_removed {
                    members.retain(|m| m != removed);
                }
                members.sort();
                members.dedup();
                group.members = members;
                Chat::Group { id: id.to_owned(), name: group.name.clone() }
            }
            None => {
                let contact = peers.contacts.entry(sender.clone()).or_default();
                if inner.text.trim().eq_ignore_ascii_case("/stop") {
                    contact.consent = false;
                    log(&format!("op=gate job={job} bot={account} from={} result=consent-revoked", word(&sender)));
                    return Gate::Handled("consent-revoked");
                }
                contact.consent = true;
                Chat::Single
            }
        };
        let sender_verified = peers.contacts.get(&sender).is_some_and(|c| c.verified);
        Gate::Run(Box::new(Verified { sender, sender_verified, chat, content: inner }))
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_vc_request(&self, job: &str, bot: &Bot, key: &SecretKey, identity: &Identity, peers: &mut Peers, outer: &Content, sj: &delta::SecureJoin) -> Gate {
        let account = &bot.account;
        let from = &outer.from;
        let refuse = |reason: &'static str| {
            log(&format!("op=securejoin job={job} bot={account} from={} step=vc-request result=refused reason={reason}", word(from)));
            Gate::Handled("secure-join")
        };
        let invite = match identity.invite() {
            Ok(invite) => invite,
            Err(_) => return refuse("no-invite"),
        };
        if sj.invite_number.as_deref() != Some(invite.invite_number.as_str()) {
            return refuse("wrong-invite-number");
        }
        let Some(their_key) = outer.autocrypt.as_ref().filter(|k| k.addr == *from).and_then(|k| PublicKey::from_bytes(&k.key).ok()) else {
            return refuse("no-key");
        };
        peers.learn_key(from, &their_key);
        let gossip = vec![KeyData { addr: from.clone(), key: their_key.to_bytes() }];
        let message = self.message(bot, vec![from.clone()], "Secure-Join: vc-auth-required", None, None, vec![("Secure-Join".into(), "vc-auth-required".into())], gossip, false);
        let result = self.send_message(job, bot, key, &message, &[&their_key]);
        if let Err(e) = identity.save_peers(peers) {
            log(&format!("op=securejoin job={job} bot={account} result=error problem={}", word(&e.to_string())));
        }
        log(&format!("op=securejoin job={job} bot={account} from={} step=vc-request result={}", word(from), result_word(&result)));
        Gate::Handled("secure-join")
    }

    /// Secure-Join v3: `vc-request-pubkey`, encrypted with the shared
    /// secret `securejoin/{bot fingerprint}/{auth}` (only someone who
    /// scanned the invite knows it), unsigned; answered with `vc-pubkey`,
    /// encrypted with the same secret and signed, carrying the bot's key.
    /// The joiner goes on with `vc-request-with-auth`, as in the legacy
    /// protocol.
    fn answer_request_pubkey(&self, job: &str, bot: &Bot, key: &SecretKey, identity: &Identity, outer: &Content, armored: &[u8]) -> Gate {
        let account = &bot.account;
        let from = &outer.from;
        let refuse = |reason: &'static str| {
            log(&format!("op=securejoin job={job} bot={account} from={} step=vc-request-pubkey result=refused reason={reason}", word(from)));
            Gate::Handled("secure-join")
        };
        let Ok(invite) = identity.invite() else { return refuse("no-invite") };
        let secret = format!("securejoin/{}/{}", key.public().fingerprint(), invite.auth);
        let decrypted = match openpgp::decrypt_with_password(armored, &secret) {
            Ok(decrypted) => decrypted,
            // Not the invite's secret: as any mail the bot cannot read.
            Err(e) => return Gate::Refused("undecryptable", e),
        };
        let Some(inner) = delta::parse(&decrypted.data) else { return refuse("unreadable") };
        let Some(sj) = inner.secure_join.as_ref().filter(|sj| sj.step == "vc-request-pubkey") else { return refuse("not-a-pubkey-request") };
        if sj.auth.as_deref() != Some(invite.auth.as_str()) {
            return refuse("wrong-auth");
        }
        if !inner.from.is_empty() && inner.from != *from {
            return refuse("from-mismatch");
        }
        let headers = vec![("Secure-Join".into(), "vc-pubkey".into()), ("Secure-Join-Auth".into(), invite.auth.clone())];
        let message = self.message(bot, vec![from.clone()], "Secure-Join", None, None, headers, Vec::new(), false);
        let result = self.submit_composed(job, bot, &message, || delta::compose_with_password(&message, key, &secret));
        log(&format!("op=securejoin job={job} bot={account} from={} step=vc-request-pubkey result={}", word(from), result_word(&result)));
        Gate::Handled("secure-join")
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_request_with_auth(&self, job: &str, bot: &Bot, key: &SecretKey, identity: &Identity, peers: &mut Peers, signer: &PublicKey, inner: &Content) -> Gate {
        let account = &bot.account;
        let from = &inner.from;
        let refuse = |reason: &'static str| {
            log(&format!("op=securejoin job={job} bot={account} from={} step=vc-request-with-auth result=refused reason={reason}", word(from)));
            Gate::Handled("secure-join")
        };
        let Some(sj) = &inner.secure_join else { return refuse("no-headers") };
        let Ok(invite) = identity.invite() else { return refuse("no-invite") };
        if sj.auth.as_deref() != Some(invite.auth.as_str()) {
            return refuse("wrong-auth");
        }
        if sj.fingerprint.as_deref() != Some(signer.fingerprint().as_str()) {
            return refuse("fingerprint-mismatch");
        }
        let own = key.public().to_bytes();
        if !inner.gossip.iter().any(|g| g.addr == *account && g.key == own) {
            return refuse("own-key-not-gossiped");
        }
        let contact = peers.contacts.entry(from.clone()).or_default();
        contact.verified = true;
        contact.consent = true;
        let gossip = vec![KeyData { addr: from.clone(), key: signer.to_bytes() }];
        let message = self.message(bot, vec![from.clone()], "Secure-Join: vc-contact-confirm", None, None, vec![("Secure-Join".into(), "vc-contact-confirm".into())], gossip, true);
        let result = self.send_message(job, bot, key, &message, &[signer]);
        log(&format!("op=securejoin job={job} bot={account} from={} step=vc-request-with-auth result={} verified=yes", word(from), result_word(&result)));
        Gate::Handled("secure-join")
    }

    /// A message from the bot (date now, fresh id).
    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        bot: &Bot,
        to: Vec<String>,
        text: &str,
        group: Option<(String, String)>,
        in_reply_to: Option<String>,
        headers: Vec<(String, String)>,
        gossip: Vec<KeyData>,
        with_name: bool,
    ) -> Outgoing {
        let subject = match &group {
            Some((_, name)) if in_reply_to.is_some() => format!("Re: {name}"),
            Some((_, name)) => name.clone(),
            None => format!("Message from {}", bot.metadata.name),
        };
        Outgoing {
            from: bot.account.clone(),
            from_name: if with_name { bot.metadata.name.clone() } else { String::new() },
            to,
            message_id: delta::new_message_id(&self.settings.mail_domain),
            date: now_secs(),
            subject,
            text: text.to_owned(),
            in_reply_to,
            group,
            headers,
            gossip,
            file: None,
            status_update: None,
        }
    }

    /// Signs, encrypts (to `keys` and the bot's own) and submits `message`;
    /// a temporary failure keeps it in the bot's queue for the next try.
    fn send_message(&self, job: &str, bot: &Bot, key: &SecretKey, message: &Outgoing, keys: &[&PublicKey]) -> Result<(), String> {
        self.submit_composed(job, bot, message, || delta::compose(message, key, keys))
    }

    /// Submits the mail `compose` makes of `message`, as [`send_message`].
    fn submit_composed(&self, job: &str, bot: &Bot, message: &Outgoing, compose: impl FnOnce() -> Result<Vec<u8>, String>) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mail = compose()?;
        let composed = started.elapsed();
        let identity = self.identity(&bot.account).map_err(|e| e.to_string())?;
        let (token, _) = identity.submit_token().map_err(|e| e.to_string())?;
        match lmtp::submit(&self.settings.submission_socket, &bot.account, &token, &message.to, &mail) {
            Ok(refused) => {
                for (recipient, reason) in refused {
                    log(&format!("op=submit job={job} bot={} to={} result=refused reason={}", bot.account, word(&recipient), word(&reason)));
                }
                // Signing and encrypting vs handing the mail to Postfix
                // (which includes the milter's checks).
                log(&format!(
                    "op=submit job={job} bot={} result=sent bytes={} compose_us={} submit_us={}",
                    bot.account,
                    mail.len(),
                    composed.as_micros(),
                    (started.elapsed() - composed).as_micros()
                ));
                Ok(())
            }
            Err(SubmitError::Temporary(reason)) => {
                self.queue_mail(bot, &message.to, &mail).map_err(|e| format!("queueing after {reason}: {e}"))?;
                log(&format!("op=submit job={job} bot={} result=queued reason={}", bot.account, word(&reason)));
                Ok(())
            }
            Err(SubmitError::Permanent(reason)) => Err(reason),
        }
    }

    fn queue_mail(&self, bot: &Bot, to: &[String], mail: &[u8]) -> std::io::Result<()> {
        let dir = self.registry.outgoing_queue_dir(&bot.account)?;
        std::fs::create_dir_all(&dir)?;
        let name = format!("{}.{}", now_secs(), delta::random_token(8));
        let mut record = to.join(" ").into_bytes();
        record.push(b'\n');
        record.extend_from_slice(mail);
        crate::state::write_atomically(&dir.join(name), &record, 0o600)
    }

    /// Tries the queued mail of every bot again (oldest first); mail the
    /// relay refuses for good, or older than a day, is dropped with a log
    /// line and an entry in the bot's errors.
    pub(crate) fn retry_queued(&self) {
        let Ok(accounts) = self.registry.accounts() else { return };
        for account in accounts {
            let (Ok(dir), Ok(names)) = (self.registry.outgoing_queue_dir(&account), self.registry.queued_outgoing(&account)) else { continue };
            let Ok(Some((token, _))) = self.identity(&account).map(|i| i.submit_token().ok()) else { continue };
            for name in names {
                let path = dir.join(&name);
                let Ok(record) = std::fs::read(&path) else { continue };
                let Some(split) = record.iter().position(|&b| b == b'\n') else {
                    let _ = std::fs::remove_file(&path);
                    continue;
                };
                let to: Vec<String> = String::from_utf8_lossy(&record[..split]).split_whitespace().map(str::to_owned).collect();
                let age = name.split('.').next().and_then(|t| t.parse::<u64>().ok()).map_or(0, |t| now_secs().saturating_sub(t));
                match lmtp::submit(&self.settings.submission_socket, &account, &token, &to, &record[split + 1..]) {
                    Ok(_) => {
                        let _ = std::fs::remove_file(&path);
                        log(&format!("op=submit bot={account} result=sent-from-queue"));
                    }
                    Err(SubmitError::Temporary(reason)) if age < 86_400 => {
                        log(&format!("op=submit bot={account} result=still-queued reason={}", word(&reason)));
                        break;
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        log(&format!("op=submit bot={account} result=dropped reason={}", word(&e.to_string())));
                        let _ = self.registry.record_error(&account, now_secs(), &format!("a message to {} was not sent: {e}", to.join(", ")));
                    }
                }
            }
        }
    }

    /// Carries out the bot's actions for a run on `verified` (`None`: a
    /// scheduled run, which has no chat of its own).
    pub(crate) fn carry_out(&self, job: &str, bot: &Bot, verified: Option<&Verified>, actions: Vec<Action>) {
        let account = &bot.account;
        let Ok(identity) = self.identity(account) else { return };
        let (key, mut peers) = match (identity.key(), identity.peers()) {
            (Ok(Some(key)), Ok(peers)) => (key, peers),
            _ => {
                log(&format!("op=action job={job} bot={account} result=error problem=identity-unreadable"));
                return;
            }
        };
        let per_hour = bot.metadata.limits.sends_per_hour;
        for action in actions {
            let name = action.name();
            let outcome = self.one_action(bot, verified, &mut peers, action).and_then(|message| {
                let Some(message) = message else { return Ok(()) };
                let now = now_secs();
                let over: Vec<&String> = message.to.iter().filter(|addr| !peers.count_send(addr, now, per_hour)).collect();
                if !over.is_empty() {
                    return Err(format!("send-limit: {} message(s) per contact per hour reached for {}", per_hour, over.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")));
                }
                let keys: Vec<PublicKey> = message.to.iter().filter_map(|a| peers.key_of(a)).collect();
                let key_refs: Vec<&PublicKey> = keys.iter().collect();
                self.send_message(job, bot, &key, &message, &key_refs)?;
                let chat = match &message.group {
                    Some((id, _)) => id.clone(),
                    None => format!("single:{}", message.to.first().map(String::as_str).unwrap_or_default()),
                };
                peers.remember_sent(&chat, &message.message_id);
                Ok(())
            });
            match outcome {
                Ok(()) => log(&format!("op=action job={job} bot={account} action={name} result=done")),
                Err(reason) => {
                    log(&format!("op=action job={job} bot={account} action={name} result=refused reason={}", word(&reason)));
                    let _ = self.registry.record_error(account, now_secs(), &format!("action {name} refused: {reason}"));
                }
            }
        }
        if let Err(e) = identity.save_peers(&peers) {
            log(&format!("op=action job={job} bot={account} result=error problem={}", word(&e.to_string())));
        }
    }

    /// Checks one action; the message it sends, if any.
    fn one_action(&self, bot: &Bot, run: Option<&Verified>, peers: &mut Peers, action: Action) -> Result<Option<Outgoing>, String> {
        const NO_CHAT: &str = "a scheduled run has no chat of its own: send with \"to\": a contact's address or \"group:ID\"";
        let group = run.and_then(|v| match &v.chat {
            Chat::Group { id, .. } => Some(id.clone()),
            Chat::Single => None,
        });
        // The chat the mail came from: its group, or 1:1 with its sender.
        let this_chat = |peers: &Peers| -> Result<Recipients, String> {
            let run = run.ok_or(NO_CHAT)?;
            match &run.chat {
                Chat::Group { id, .. } => group_recipients(peers, id),
                Chat::Single => Ok(Recipients::one(run.sender.clone())),
            }
        };
        match action {
            Action::Accept => {
                let id = group.as_ref().ok_or("accept: the mail did not come from a group")?;
                peers.groups.get_mut(id).ok_or("unknown group")?.accepted = true;
                Ok(None)
            }
            Action::Send { text, to, quote, file } => {
                let recipients = match to {
                    Target::Chat => this_chat(peers)?,
                    Target::Sender => Recipients::one(run.ok_or(NO_CHAT)?.sender.clone()),
                    Target::Group(id) => group_recipients(peers, &id)?,
                    Target::Contact(addr) => {
                        consented(peers, &addr)?;
                        Recipients::one(addr)
                    }
                };
                // The bot only writes encrypted: a group goes to its members
                // with a key, a 1:1 chat needs the contact's.
                let keyless = recipients.group.is_none() && recipients.to.iter().any(|r| peers.key_of(r).is_none());
                if recipients.to.is_empty() || keyless {
                    return Err("no recipient with a key".into());
                }
                let in_reply_to = run.filter(|_| quote).map(|v| v.content.message_id.clone()).filter(|id| !id.is_empty());
                let mut message = self.message(bot, recipients.to, &text, recipients.group, in_reply_to, Vec::new(), recipients.gossip, true);
                message.file = file;
                Ok(Some(message))
            }
            Action::Delete { message_id } => {
                let run = run.ok_or(NO_CHAT)?;
                if !peers.has_sent(&run.chat.sent_key(&run.sender), &message_id) {
                    return Err(format!("{message_id} is not one of the bot's messages in this chat"));
                }
                let r = this_chat(peers)?;
                Ok(Some(self.message(bot, r.to, "🚮", r.group, None, vec![("Chat-Delete".into(), format!("<{message_id}>"))], r.gossip, true)))
            }
            Action::WebxdcUpdate { instance, update } => {
                let r = this_chat(peers)?;
                let mut message = self.message(bot, r.to, "Webxdc Status Update", r.group, Some(instance), Vec::new(), r.gossip, true);
                message.status_update = Some(serde_json::json!({ "updates": [{ "payload": update }] }).to_string());
                Ok(Some(message))
            }
            Action::AddMember { contact } => {
                let id = group.ok_or("add-member: the mail did not come from a group")?;
                consented(peers, &contact)?;
                let new_key = peers.key_of(&contact).ok_or("no key for the contact")?;
                let mut r = group_recipients(peers, &id)?;
                if r.to.contains(&contact) {
                    return Err(format!("{contact} is already a member"));
                }
                r.to.push(contact.clone());
                r.gossip.push(KeyData { addr: contact.clone(), key: new_key.to_bytes() });
                if let Some(record) = peers.groups.get_mut(&id) {
                    record.members.push(contact.clone());
                }
                let headers = vec![("Chat-Group-Member-Added".into(), contact.clone()), ("Chat-Group-Member-Added-Fpr".into(), new_key.fingerprint())];
                Ok(Some(self.message(bot, r.to, &format!("Member {contact} was added."), r.group, None, headers, r.gossip, true)))
            }
        }
    }
}

/// Who a message of the bot goes to.
struct Recipients {
    to: Vec<String>,
    /// Keys to gossip (a group message: the members').
    gossip: Vec<KeyData>,
    /// The group (id, name) for the message's headers; none for 1:1.
    group: Option<(String, String)>,
}

impl Recipients {
    /// One contact, 1:1.
    fn one(addr: String) -> Recipients {
        Recipients { to: vec![addr], gossip: Vec::new(), group: None }
    }
}

/// The members of group `id` the bot can write to (those with a key),
/// with their keys to gossip; only for a group whose invitation the bot
/// accepted.
fn group_recipients(peers: &Peers, id: &str) -> Result<Recipients, String> {
    let record = peers.groups.get(id).ok_or_else(|| format!("the bot is not a member of group {id}"))?;
    if !record.accepted {
        return Err("the bot has not accepted this group's invitation (an accept action first)".into());
    }
    let to: Vec<String> = record.members.iter().filter(|m| peers.key_of(m).is_some()).cloned().collect();
    let gossip = to.iter().filter_map(|a| peers.key_of(a).map(|k| KeyData { addr: a.clone(), key: k.to_bytes() })).collect();
    Ok(Recipients { to, gossip, group: Some((id.to_owned(), record.name.clone())) })
}

/// The bot may write to `addr` unasked (by address, or add it to a group)
/// only if `addr` wrote to it 1:1 and did not send `/stop` since.
fn consented(peers: &Peers, addr: &str) -> Result<(), String> {
    if peers.contacts.get(addr).is_some_and(|c| c.consent) {
        Ok(())
    } else {
        Err(format!("{addr} has not written to the bot directly (or sent /stop): no consent"))
    }
}

fn result_word(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "answered".into(),
        Err(e) => format!("error problem={}", word(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runner::Runner;
    use crate::state::{Installed, InstalledCode};

    const BOT: &str = "bot@chat.example";
    const ALICE: &str = "alice@chat.example";
    const BOB: &str = "bob@chat.example";

    /// A daemon with an installed bot (key made as at install), and the
    /// bot's public key.
    fn daemon_with_bot(dir: &std::path::Path) -> (Daemon, Bot, PublicKey) {
        let daemon = Daemon::new(crate::daemon::tests::settings(dir), Runner { program: "/bin/false".into(), wall_time: Duration::from_secs(1) });
        std::fs::create_dir_all(dir.join("mail").join(BOT)).expect("account dir");
        daemon.registry.install(BOT, &Installed { uid: 1, installed_at: 1000, wasm_bytes: 1, script_bytes: None }, "name = \"echo\"\nauthor = \"a@b.c\"\n", &InstalledCode::Artifact(b"x")).expect("install");
        let (key, _) = daemon.prepare_identity(BOT, None).expect("identity");
        let bot = daemon.registry.load(BOT).expect("load").expect("installed");
        (daemon, bot, key.public())
    }

    fn message(from: &str, to: &[&str], text: &str) -> Outgoing {
        Outgoing {
            from: from.into(),
            to: to.iter().map(|a| a.to_string()).collect(),
            message_id: delta::new_message_id("chat.example"),
            date: 1_700_000_000,
            subject: "[...]".into(),
            text: text.into(),
            ..Outgoing::default()
        }
    }

    /// `inner` (its Autocrypt header offering `offered`), signed by
    /// `signer`, encrypted to `to`, in an envelope from `outer_from`.
    fn mail(inner: &Outgoing, outer_from: &str, signer: &SecretKey, offered: &PublicKey, to: &PublicKey) -> Vec<u8> {
        let armored = signer.sign_and_encrypt(&delta::render_inner(inner, offered), &[to]).expect("encrypt");
        delta::envelope(&Outgoing { from: outer_from.into(), ..inner.clone() }, &armored)
    }

    fn outcome(gate: Gate) -> String {
        match gate {
            Gate::Run(verified) => format!("run for {}", verified.sender),
            Gate::Handled(reason) => format!("handled {reason}"),
            Gate::Refused(reason, _) => format!("refused {reason}"),
        }
    }

    #[test]
    fn the_bot_runs_only_for_mail_signed_by_the_senders_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (daemon, bot, bot_key) = daemon_with_bot(dir.path());
        let alice = SecretKey::generate(ALICE).expect("key");
        let mallory = SecretKey::generate(ALICE).expect("key");
        let stranger = SecretKey::generate("stranger@chat.example").expect("key");
        let hello = message(ALICE, &[BOT], "hello");
        let cleartext = b"From: <alice@chat.example>\r\nTo: <bot@chat.example>\r\nSubject: hi\r\n\r\nhello\r\n".to_vec();
        // In order: the bot learns Alice's key from her first message.
        let table: Vec<(&str, Vec<u8>, &str)> = vec![
            ("alice, her key", mail(&hello, ALICE, &alice, &alice.public(), &bot_key), "run for alice@chat.example"),
            ("alice's public key offered, signed by another", mail(&hello, ALICE, &mallory, &alice.public(), &bot_key), "refused bad-signature"),
            ("no key offered that signed it", mail(&hello, ALICE, &mallory, &stranger.public(), &bot_key), "refused bad-signature"),
            ("inner From differs from the envelope's", mail(&hello, "other@chat.example", &alice, &alice.public(), &bot_key), "refused from-mismatch"),
            ("encrypted to someone else", mail(&hello, ALICE, &alice, &alice.public(), &stranger.public()), "refused undecryptable"),
            ("cleartext", cleartext, "refused not-encrypted"),
            ("alice again", mail(&hello, ALICE, &alice, &alice.public(), &bot_key), "run for alice@chat.example"),
        ];
        for (case, bytes, want) in table {
            assert_eq!(outcome(daemon.gate("job", &bot, &bytes)), want, "{case}");
        }
        let peers = daemon.identity(BOT).expect("identity").peers().expect("peers");
        assert_eq!(peers.key_of(ALICE).map(|k| k.fingerprint()), Some(alice.public().fingerprint()), "the refused mail changed no key");
    }

    #[test]
    fn a_v3_key_request_needs_the_invites_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (daemon, bot, bot_key) = daemon_with_bot(dir.path());
        let auth = daemon.identity(BOT).expect("identity").invite().expect("invite").auth;
        let alice = SecretKey::generate(ALICE).expect("key");
        let request = |secret: &str| {
            let mut inner = message(ALICE, &["hidden-recipients@localhost"], "Secure-Join");
            inner.headers = vec![("Secure-Join".into(), "vc-request-pubkey".into()), ("Secure-Join-Auth".into(), auth.clone())];
            delta::compose_with_password(&inner, &alice, secret).expect("compose")
        };
        let right = format!("securejoin/{}/{auth}", bot_key.fingerprint());
        let table: Vec<(&str, Vec<u8>, &str)> = vec![
            ("the invite's secret", request(&right), "handled secure-join"),
            ("another secret", request(&format!("securejoin/{}/guess", bot_key.fingerprint())), "refused undecryptable"),
        ];
        for (case, bytes, want) in table {
            assert_eq!(outcome(daemon.gate("job", &bot, &bytes)), want, "{case}");
        }
        // The request carries no key: the bot learns none from it.
        assert!(daemon.identity(BOT).expect("identity").peers().expect("peers").key_of(ALICE).is_none());
    }

    #[test]
    fn gossip_does_not_replace_a_members_own_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (daemon, bot, bot_key) = daemon_with_bot(dir.path());
        let alice = SecretKey::generate(ALICE).expect("key");
        let bob = SecretKey::generate(BOB).expect("key");
        let carol = SecretKey::generate("carol@chat.example").expect("key");
        let forged_bob = SecretKey::generate(BOB).expect("key");
        let bob_hello = message(BOB, &[BOT], "hi");
        assert_eq!(outcome(daemon.gate("job", &bot, &mail(&bob_hello, BOB, &bob, &bob.public(), &bot_key))), "run for bob@chat.example");
        let mut group = message(ALICE, &[BOT, BOB, "carol@chat.example"], "hi all");
        group.group = Some(("abcdefghijk".into(), "Group".into()));
        group.gossip = vec![
            KeyData { addr: BOB.into(), key: forged_bob.public().to_bytes() },
            KeyData { addr: "carol@chat.example".into(), key: carol.public().to_bytes() },
        ];
        daemon.gate("job", &bot, &mail(&group, ALICE, &alice, &alice.public(), &bot_key));
        let peers = daemon.identity(BOT).expect("identity").peers().expect("peers");
        assert_eq!(peers.key_of(BOB).map(|k| k.fingerprint()), Some(bob.public().fingerprint()), "bob keeps his own key");
        assert_eq!(peers.key_of("carol@chat.example").map(|k| k.fingerprint()), Some(carol.public().fingerprint()), "an unknown member's key is learnt");
    }

    #[test]
    fn a_scheduled_run_sends_only_to_consenting_contacts_and_accepted_groups() {
        use crate::actions::parse_line;
        let dir = tempfile::tempdir().expect("tempdir");
        let (daemon, bot, _) = daemon_with_bot(dir.path());
        let mut peers = Peers::default();
        for (addr, consent) in [(ALICE, true), (BOB, false)] {
            peers.learn_key(addr, &SecretKey::generate(addr).expect("key").public());
            peers.contacts.get_mut(addr).expect("contact").consent = consent;
        }
        let group = |accepted| crate::identity::Group { name: "Group".into(), members: vec![ALICE.into(), BOB.into(), "nokey@chat.example".into()], accepted };
        peers.groups.insert("accepted-group".into(), group(true));
        peers.groups.insert("invited-group".into(), group(false));
        let from_bob = Verified { sender: BOB.into(), sender_verified: false, chat: Chat::Single, content: Content { message_id: "m1@chat.example".into(), ..Content::default() } };
        let no_chat = "refused: a scheduled run has no chat";
        // (run, action line, outcome: recipients and group, or the refusal's start)
        let table: &[(Option<&Verified>, &str, &str)] = &[
            (None, r#"{"action":"send","text":"hi","to":"alice@chat.example"}"#, "to alice@chat.example"),
            (None, r#"{"action":"send","text":"hi","to":"bob@chat.example"}"#, "refused: bob@chat.example has not written to the bot directly"),
            (None, r#"{"action":"send","text":"hi","to":"stranger@chat.example"}"#, "refused: stranger@chat.example has not written"),
            (None, r#"{"action":"send","text":"hi","to":"group:accepted-group"}"#, "to alice@chat.example,bob@chat.example in accepted-group"),
            (None, r#"{"action":"send","text":"hi","to":"group:invited-group"}"#, "refused: the bot has not accepted"),
            (None, r#"{"action":"send","text":"hi","to":"group:unknown-group"}"#, "refused: the bot is not a member of group unknown-group"),
            (None, r#"{"action":"send","text":"hi"}"#, no_chat),
            (None, r#"{"action":"send","text":"hi","to":"sender"}"#, no_chat),
            (None, r#"{"action":"reply","text":"hi"}"#, no_chat),
            (None, r#"{"action":"delete","message_id":"x@y"}"#, no_chat),
            (None, r#"{"action":"webxdc-update","instance":"i@x","update":{}}"#, no_chat),
            (None, r#"{"action":"accept"}"#, "refused: accept: the mail did not come from a group"),
            (None, r#"{"action":"add-member","contact":"alice@chat.example"}"#, "refused: add-member: the mail did not come from a group"),
            // A message run may also address another chat, under the same rules.
            (Some(&from_bob), r#"{"action":"reply","text":"hi"}"#, "to bob@chat.example quoting m1@chat.example"),
            (Some(&from_bob), r#"{"action":"send","text":"hi","to":"group:accepted-group"}"#, "to alice@chat.example,bob@chat.example in accepted-group"),
            (Some(&from_bob), r#"{"action":"send","text":"hi","to":"alice@chat.example"}"#, "to alice@chat.example"),
        ];
        for (run, line, want) in table {
            let action = parse_line(line).expect(line);
            let got = match daemon.one_action(&bot, *run, &mut peers, action) {
                Ok(Some(m)) => {
                    let mut text = format!("to {}", m.to.join(","));
                    if let Some((id, _)) = &m.group {
                        text.push_str(&format!(" in {id}"));
                    }
                    if let Some(quoted) = &m.in_reply_to {
                        text.push_str(&format!(" quoting {quoted}"));
                    }
                    text
                }
                Ok(None) => "nothing to send".into(),
                Err(reason) => format!("refused: {reason}"),
            };
            assert!(got.starts_with(want), "{line} (run: {}): {got}", run.is_some());
        }
    }
}
