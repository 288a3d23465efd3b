//! Maintenance when a user's session ends (IMAP logout, LMTP delivery
//! done): the adaptive quota and, at most once an hour per account, the
//! expiry of old mail. Decisions are `chatmail_config::retention`'s; this module measures,
//! lists and expunges through the C shim.

use std::ffi::c_void;
use std::fs::{self, File, FileTimes};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatmail_config::Config;

use crate::bindings::{self, mail_user};
use chatmail_config::retention::{bytes_to_free, plan, Expiry, MailMeta, Usage};
use crate::{log, settings};

/// File in the account's home whose mtime is the last expiry run.
pub const EXPIRY_STAMP: &str = "chatmail-expiry";
/// Expiry runs at most this often per account.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);
fn expiry_from(config: &Config) -> Expiry {
    Expiry { delete_mails_after_days: config.delete_mails_after, delete_large_after_days: config.delete_large_after }
}

/// Whether expiry is due for the account at `home`; if so, the stamp is
/// moved to now first, so a failing run is not retried at every session.
fn expiry_due(home: &Path, now: SystemTime) -> bool {
    let stamp = home.join(EXPIRY_STAMP);
    let last = fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    if last.is_some_and(|t| now.duration_since(t).map_or(true, |age| age < EXPIRY_INTERVAL)) {
        return false;
    }
    let touched = File::options().create(true).truncate(false).write(true).open(&stamp).and_then(|f| f.set_times(FileTimes::new().set_modified(now)));
    if let Err(e) = touched {
        log::warning(&format!("{}: {e}", stamp.display()));
    }
    true
}

fn quota_usage(user: *mut mail_user) -> Option<Usage> {
    let (mut used, mut limit) = (0u64, 0u64);
    // SAFETY: `user` is the live mail user the shim passed to us; the
    // out-pointers are valid locals.
    let result = unsafe { bindings::chatmail_shim_quota_usage(user, &mut used, &mut limit) };
    (result == 1).then_some(Usage { used, limit })
}

extern "C" fn collect(context: *mut c_void, uid: u32, saved: i64, size: u64) {
    // SAFETY: `context` is the `&mut Vec<MailMeta>` passed to
    // chatmail_shim_inbox_list by `list`, alive for the whole listing.
    let mails = unsafe { &mut *context.cast::<Vec<MailMeta>>() };
    mails.push(MailMeta { uid, saved, size });
}

fn list(user: *mut mail_user) -> Option<Vec<MailMeta>> {
    let mut mails: Vec<MailMeta> = Vec::new();
    // SAFETY: `user` is live; `collect` matches the callback type and only
    // ever receives the pointer to `mails`, which outlives the call.
    let result = unsafe { bindings::chatmail_shim_inbox_list(user, Some(collect), (&mut mails as *mut Vec<MailMeta>).cast()) };
    (result == 0).then_some(mails)
}

fn expunge(user: *mut mail_user, uids: &[u32]) -> bool {
    let Ok(count) = u32::try_from(uids.len()) else { return false };
    // SAFETY: `user` is live; `uids` points to `count` valid u32s.
    unsafe { bindings::chatmail_shim_inbox_expunge(user, uids.as_ptr(), count) == 0 }
}

/// One maintenance pass for `username` (home `home`).
pub fn run(user: *mut mail_user, username: &str, home: &Path, config_path: Option<&str>, now: SystemTime) {
    let to_free = quota_usage(user).and_then(bytes_to_free);
    let expiry = if expiry_due(home, now) { settings::config(config_path).map(expiry_from) } else { None };
    if to_free.is_none() && expiry.is_none() {
        return;
    }
    let Some(mails) = list(user) else { return };
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let plan = plan(&mails, to_free, expiry, now_secs);
    if plan.is_empty() {
        if let Some(bytes) = to_free {
            log::info(&format!("{username}: over the cleanup threshold by {bytes} bytes, but all mail is younger than 24 hours"));
        }
        return;
    }
    let uids = plan.uids();
    let bytes: u64 = mails.iter().filter(|m| uids.contains(&m.uid)).map(|m| m.size).sum();
    if expunge(user, &uids) {
        log::info(&format!(
            "{username}: expunged {} expired and {} oldest mails ({bytes} bytes) for retention and quota",
            plan.expired.len(),
            plan.for_quota.len()
        ));
    }
}
