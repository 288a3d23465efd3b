//! The delivery hook: mail for an account's bot, and bot packages (saved or
//! expunged), become jobs in the bot spool (`chatmail_config::spool`); mail
//! delivered to an account with push device tokens becomes an arrival in the
//! push spool (`chatmail_config::push`), unless the account sent it itself.
//! It runs after Dovecot committed the mail, and every failure is only
//! logged: neither bots nor push can ever delay or fail a delivery.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use chatmail_config::layout::METADATA_FILE;
use chatmail_config::spool::{self, Job, JobKind, BOT_MARKER};

use crate::{log, settings};

/// Which job (if any) saving mail into `mailbox` makes. Deliveries count
/// only when they come over LMTP into the INBOX of an account that has a bot
/// installed; a save into the install folder counts however it comes
/// (a client's APPEND or COPY).
pub fn job_kind(mailbox: &str, service: &str, install_folder: &str, has_bot: bool) -> Option<JobKind> {
    if mailbox == install_folder {
        Some(JobKind::Install)
    } else if mailbox == "INBOX" && service == "lmtp" && has_bot {
        Some(JobKind::Deliver)
    } else {
        None
    }
}

/// Whether saves may make a push arrival (asked when the transaction
/// begins): mail delivered (LMTP) into the INBOX of an account that has
/// device tokens (a metadata file).
pub fn push_wanted(mailbox: &str, service: &str, has_metadata: impl FnOnce() -> bool) -> bool {
    mailbox == "INBOX" && service == "lmtp" && has_metadata()
}

/// Whether `account` sent the mail itself (Delta Chat's copies for its
/// other devices): then it makes no push arrival. `sender` is the envelope
/// sender (`None`: unknown, e.g. a bounce's empty one).
pub fn sent_by(sender: Option<&str>, account: &str) -> bool {
    sender.is_some_and(|s| s.trim_start_matches('<').trim_end_matches('>').eq_ignore_ascii_case(account))
}

/// What a transaction of this user in a mailbox may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    /// Bot jobs (then UIDs get assigned at commit).
    pub jobs: bool,
    /// A push arrival.
    pub push: bool,
}

/// What Dovecot reports about a committed save.
#[derive(Debug)]
pub struct Saved<'a> {
    pub username: &'a str,
    pub home: &'a Path,
    pub service: &'a str,
    pub config_path: Option<&'a str>,
    pub mailbox: &'a str,
    pub uid_validity: u32,
    pub uids: &'a [u32],
    /// Whether the transaction was [`Wanted::push`] when it began.
    pub push_wanted: bool,
    /// The envelope sender of the (first) saved mail, if Dovecot knows it.
    pub sender: Option<&'a str>,
}

fn kind_for(home: &Path, service: &str, config_path: Option<&str>, mailbox: &str) -> Option<JobKind> {
    let config = settings::config(config_path)?;
    let has_bot = mailbox == "INBOX" && home.join(BOT_MARKER).exists();
    job_kind(mailbox, service, &config.bot_install_folder, has_bot)
}

/// What a transaction of this user in `mailbox` could make (asked when it
/// begins, so that UIDs get assigned for jobs).
pub fn wanted(home: &Path, service: &str, config_path: Option<&str>, mailbox: &str) -> Wanted {
    Wanted {
        jobs: kind_for(home, service, config_path, mailbox).is_some(),
        push: push_wanted(mailbox, service, || home.join(METADATA_FILE).exists()),
    }
}

pub fn on_saved(saved: &Saved<'_>) {
    let Some(config) = settings::config(saved.config_path) else { return };
    if saved.push_wanted && !sent_by(saved.sender, saved.username) {
        if let Err(e) = chatmail_config::push::record_arrival(&config.push_spool_dir, saved.username) {
            log::warning(&format!("push arrival for {} not recorded: {e}", saved.username));
        }
    }
    let Some(kind) = kind_for(saved.home, saved.service, saved.config_path, saved.mailbox) else { return };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // One job per saved mail (one without UID if Dovecot assigned none).
    let count = saved.uids.len().max(1);
    for i in 0..count {
        let job = Job {
            kind,
            account: saved.username.to_owned(),
            mailbox: saved.mailbox.to_owned(),
            uidvalidity: (!saved.uids.is_empty()).then_some(saved.uid_validity),
            uid: saved.uids.get(i).copied(),
            expunged: Vec::new(),
            created,
        };
        if let Err(e) = spool::write_job(&config.bot_spool_dir, &job) {
            log::warning(&format!("bot job for {} not written: {e}", saved.username));
            return;
        }
    }
    spool::nudge(&config.bot_spool_dir);
}

/// Mails were expunged (and nothing saved) in a transaction that wanted
/// jobs: in the install folder this may have emptied it, which uninstalls
/// the bot, so the daemon is asked to look (a job without UID). Expunges
/// in the INBOX make no job.
pub fn on_expunged(saved: &Saved<'_>) {
    let Some(config) = settings::config(saved.config_path) else { return };
    if kind_for(saved.home, saved.service, saved.config_path, saved.mailbox) != Some(JobKind::Install) {
        return;
    }
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // `uids` are the expunged mails here.
    let job = Job {
        kind: JobKind::Install,
        account: saved.username.to_owned(),
        mailbox: saved.mailbox.to_owned(),
        uidvalidity: None,
        uid: None,
        expunged: saved.uids.to_vec(),
        created,
    };
    match spool::write_job(&config.bot_spool_dir, &job) {
        Ok(_) => spool::nudge(&config.bot_spool_dir),
        Err(e) => log::warning(&format!("bot job for {} not written: {e}", saved.username)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_arrivals() {
        let table = [
            (("INBOX", "lmtp", true, Some("b@x.example")), true),
            (("INBOX", "lmtp", true, None), true),
            (("INBOX", "lmtp", true, Some("")), true),
            (("INBOX", "lmtp", true, Some("a@x.example")), false),
            (("INBOX", "lmtp", true, Some("A@X.example")), false),
            (("INBOX", "lmtp", true, Some("<a@x.example>")), false),
            (("INBOX", "lmtp", false, Some("b@x.example")), false),
            (("INBOX", "imap", true, Some("b@x.example")), false),
            (("Sent", "lmtp", true, Some("b@x.example")), false),
            (("DeltaBot", "lmtp", true, Some("b@x.example")), false),
        ];
        for ((mailbox, service, has_metadata, sender), want) in table {
            let arrival = push_wanted(mailbox, service, || has_metadata) && !sent_by(sender, "a@x.example");
            assert_eq!(arrival, want, "{mailbox} {service} {has_metadata} {sender:?}");
        }
    }

    #[test]
    fn kinds() {
        let table = [
            (("INBOX", "lmtp", true), Some(JobKind::Deliver)),
            (("INBOX", "lmtp", false), None),
            (("INBOX", "imap", true), None),
            (("DeltaBot", "imap", false), Some(JobKind::Install)),
            (("DeltaBot", "lmtp", true), Some(JobKind::Install)),
            (("Sent", "imap", true), None),
            (("deltabot", "imap", true), None),
        ];
        for ((mailbox, service, has_bot), want) in table {
            assert_eq!(job_kind(mailbox, service, "DeltaBot", has_bot), want, "{mailbox} {service} {has_bot}");
        }
    }
}
