//! The delivery hook: mail for an account's bot, and bot packages (saved or
//! expunged), become jobs in the bot spool (`chatmail_config::spool`). It runs after Dovecot
//! committed the mail, and every failure is only logged: the bot system can
//! never delay or fail a delivery.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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
}

fn kind_for(home: &Path, service: &str, config_path: Option<&str>, mailbox: &str) -> Option<JobKind> {
    let config = settings::config(config_path)?;
    let has_bot = mailbox == "INBOX" && home.join(BOT_MARKER).exists();
    job_kind(mailbox, service, &config.bot_install_folder, has_bot)
}

/// Whether a transaction of this user in `mailbox` could make jobs (asked
/// when it begins, so that UIDs get assigned).
pub fn wants_jobs(home: &Path, service: &str, config_path: Option<&str>, mailbox: &str) -> bool {
    kind_for(home, service, config_path, mailbox).is_some()
}

pub fn on_saved(saved: &Saved<'_>) {
    let Some(config) = settings::config(saved.config_path) else { return };
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
