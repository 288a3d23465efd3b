//! Every symbol Dovecot looks up in the plugin, and every Rust function the
//! C shim calls. No panic may unwind into Dovecot's C code (it would abort
//! the imap or lmtp process): each entry point catches them and logs.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::SystemTime;

use crate::bindings::{
    chatmail_wants_CHATMAIL_WANTS_JOBS, chatmail_wants_CHATMAIL_WANTS_PUSH,
    self, chatmail_idle_change, chatmail_idle_event, chatmail_idle_failure, chatmail_idle_place, chatmail_idle_policy, chatmail_user_info,
    mail_user, module, DOVECOT_ABI_VERSION,
};
use crate::login::{is_login, UserEvent};
use crate::{connections, delivery, idle, log, maintenance, settings};

/// Dovecot reads `<name>_plugin_version` as a pointer to a C string and
/// refuses the plugin unless it equals its own ABI version.
#[repr(transparent)]
pub struct AbiVersion(*const c_char);

// SAFETY: the pointer refers to a `'static` constant that is never written.
unsafe impl Sync for AbiVersion {}

#[no_mangle]
pub static chatmail_plugin_version: AbiVersion = AbiVersion(DOVECOT_ABI_VERSION.as_ptr().cast());

/// A NULL-terminated list of plugins that must be loaded before this one:
/// quota (the shim reads the usage) and notify (the shim learns of saves).
#[repr(transparent)]
pub struct PluginName(*const c_char);

// SAFETY: the pointers refer to `'static` constants (or are NULL).
unsafe impl Sync for PluginName {}

#[no_mangle]
pub static chatmail_plugin_dependencies: [PluginName; 3] =
    [PluginName(c"quota".as_ptr()), PluginName(c"notify".as_ptr()), PluginName(std::ptr::null())];

/// Runs `f`, turning a panic into an error in Dovecot's log.
fn guarded(what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        // Logging itself must not panic across the boundary either.
        let _ = catch_unwind(|| log::error(&format!("internal error in {what}: {why}")));
    }
}

/// Called by Dovecot when it loads the plugin.
#[no_mangle]
pub extern "C" fn chatmail_plugin_init(module: *mut module) {
    guarded("plugin init", || {
        // SAFETY: `module` is the pointer Dovecot passed for this plugin;
        // the shim only hands it to mail_storage_hooks_add.
        unsafe { bindings::chatmail_shim_init(module) }
    });
}

/// Called by Dovecot before it unloads the plugin.
#[no_mangle]
pub extern "C" fn chatmail_plugin_deinit() {
    guarded("plugin deinit", || {
        // SAFETY: undoes chatmail_shim_init; Dovecot calls deinit once.
        unsafe { bindings::chatmail_shim_deinit() }
    });
}

/// A C string from the shim, if not NULL and valid UTF-8.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for `'a`.
unsafe fn text<'a>(ptr: *const c_char) -> Option<&'a str> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().ok()
}

/// Called by the shim from Dovecot's `mail_user_created` hook.
#[no_mangle]
pub extern "C" fn chatmail_rs_user_created(user: *mut mail_user, info: *const chatmail_user_info) {
    guarded("mail_user_created", || {
        if user.is_null() || info.is_null() {
            return;
        }
        // SAFETY: the shim passes a pointer to a struct on its stack whose
        // strings belong to the mail user and live during this call.
        let info = unsafe { &*info };
        // SAFETY: as above, each field is NULL or a NUL-terminated string.
        let (username, home, service, config) =
            unsafe { (text(info.username), text(info.home), text(info.service), text(info.config_path)) };
        let event = UserEvent {
            service: service.unwrap_or(""),
            has_home: home.is_some(),
            autocreated: info.autocreated != 0,
            session_restored: info.session_restored != 0,
        };
        let Some(home) = home else { return };
        let username = username.unwrap_or("?");
        if connections::counts(event.service) && !event.autocreated {
            if let Some(max) = settings::config(config).map(|c| c.max_user_connections) {
                match connections::acquire(Path::new(home), max) {
                    Ok(connections::Acquired::Slot(slot)) => connections::hold(user as usize, slot),
                    Ok(connections::Acquired::AllBusy) if event.session_restored => {
                        // Admitted at its login; while it was hibernated its
                        // slot was free (imap-hibernate holds no slot) and
                        // another session took it. Ending it now would cut
                        // off a device that only woke up for new mail.
                        log::info(&format!(
                            "{username} has {max} sessions already (max_user_connections); a session back from hibernation continues without a slot"
                        ));
                    }
                    Ok(connections::Acquired::AllBusy) => {
                        let reason = format!("{username} has {max} sessions already (max_user_connections); session refused");
                        log::warning(&reason);
                        let reason = CString::new(reason).unwrap_or_default();
                        // SAFETY: `user` is the live mail user being
                        // initialised; the shim copies the string.
                        unsafe { bindings::chatmail_shim_user_fail(user, reason.as_ptr()) };
                        return;
                    }
                    // Fail open: a broken slot directory must not lock
                    // everyone out; the operator sees the warning.
                    Err(e) => log::warning(&format!("connection limit of {username} not checked: {e}")),
                }
            }
        }
        if !is_login(&event) {
            return;
        }
        // Logins Dovecot's auth cache answered never reach chatmail-auth,
        // so the plugin records them (at most one write a day).
        match chatmail_config::layout::record_login(Path::new(home), SystemTime::now()) {
            Ok(()) => {}
            // Not an account with a password file (e.g. a static passdb).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warning(&format!("recording the last login of {username}: {e}")),
        }
    });
}

/// Called by the shim when a user's session ends (its deinit vfunc), while
/// the user's storage is still usable: maintenance for accounts that logged
/// in or got mail.
#[no_mangle]
pub extern "C" fn chatmail_rs_user_deinit(user: *mut mail_user, info: *const chatmail_user_info) {
    guarded("mail_user deinit", || {
        if user.is_null() || info.is_null() {
            return;
        }
        // The session's connection slot (if any) is freed whatever happens below.
        let _slot = connections::ReleaseOnDrop(user as usize);
        // SAFETY: as in chatmail_rs_user_created: a valid struct from the
        // shim's stack whose strings live during this call.
        let info = unsafe { &*info };
        // SAFETY: each field is NULL or a NUL-terminated string.
        let (username, home, service, config) =
            unsafe { (text(info.username), text(info.home), text(info.service), text(info.config_path)) };
        if info.autocreated != 0 || !matches!(service, Some("imap" | "lmtp" | "pop3")) {
            return;
        }
        let Some(home) = home else { return };
        maintenance::run(user, username.unwrap_or("?"), Path::new(home), config, SystemTime::now());
    });
}

/// The user fields the delivery hook needs, from the shim's struct.
///
/// # Safety
/// `info` must be NULL or point to a valid `chatmail_user_info` whose
/// strings live for `'a`.
unsafe fn hook_user<'a>(info: *const chatmail_user_info) -> Option<(&'a str, &'a Path, &'a str, Option<&'a str>)> {
    if info.is_null() {
        return None;
    }
    // SAFETY: non-NULL and valid per this function's contract.
    let info = unsafe { &*info };
    // SAFETY: each field is NULL or a NUL-terminated string living for 'a.
    let (username, home, service, config) = unsafe { (text(info.username), text(info.home), text(info.service), text(info.config_path)) };
    Some((username?, Path::new(home?), service.unwrap_or(""), config))
}

/// Called by the shim when a transaction begins: whether its saves could
/// make bot jobs (`CHATMAIL_WANTS_JOBS`: then UIDs get assigned at commit)
/// or a push arrival (`CHATMAIL_WANTS_PUSH`: the shim notes the sender).
#[no_mangle]
pub extern "C" fn chatmail_rs_wants_jobs(info: *const chatmail_user_info, mailbox: *const c_char) -> std::ffi::c_int {
    let mut flags = 0;
    guarded("transaction begin", || {
        // SAFETY: the shim passes its stack struct and the mailbox's name,
        // both alive during this call.
        let (user, mailbox) = unsafe { (hook_user(info), text(mailbox)) };
        let (Some((_, home, service, config)), Some(mailbox)) = (user, mailbox) else { return };
        let wanted = delivery::wanted(home, service, config, mailbox);
        if wanted.jobs {
            flags |= chatmail_wants_CHATMAIL_WANTS_JOBS as std::ffi::c_int;
        }
        if wanted.push {
            flags |= chatmail_wants_CHATMAIL_WANTS_PUSH as std::ffi::c_int;
        }
    });
    flags
}

/// Called by the shim after a transaction that saved mails committed.
#[no_mangle]
pub extern "C" fn chatmail_rs_mails_saved(
    info: *const chatmail_user_info,
    mailbox: *const c_char,
    uid_validity: u32,
    uids: *const u32,
    count: std::ffi::c_uint,
    expunged_only: std::ffi::c_int,
    push_wanted: std::ffi::c_int,
    sender: *const c_char,
) {
    guarded("mails saved", || {
        // SAFETY: as in chatmail_rs_wants_jobs; `sender` is NULL or a
        // string the shim owns until the call returns.
        let (user, mailbox, sender) = unsafe { (hook_user(info), text(mailbox), text(sender)) };
        let (Some((username, home, service, config)), Some(mailbox)) = (user, mailbox) else { return };
        let uids: &[u32] = if uids.is_null() || count == 0 {
            &[]
        } else {
            // SAFETY: the shim passes `count` UIDs from an array alive during the call.
            unsafe { std::slice::from_raw_parts(uids, count as usize) }
        };
        let saved = delivery::Saved { username, home, service, config_path: config, mailbox, uid_validity, uids, push_wanted: push_wanted != 0, sender };
        if expunged_only != 0 {
            delivery::on_expunged(&saved);
        } else {
            delivery::on_saved(&saved);
        }
    });
}

/// Called by the shim when an IMAP session allocates a mailbox: whether it
/// gets the instant IDLE wake-up, and its minimum interval.
#[no_mangle]
pub extern "C" fn chatmail_rs_idle_policy(info: *const chatmail_user_info, policy_r: *mut chatmail_idle_policy) {
    guarded("idle policy", || {
        if policy_r.is_null() {
            return;
        }
        // SAFETY: the shim passes its stack struct, alive during this call.
        let config = unsafe { hook_user(info) }.and_then(|(_, _, _, config)| settings::config(config));
        let policy = idle::Policy::from_config(config);
        let policy_c = chatmail_idle_policy {
            enabled: i32::from(policy.enabled),
            min_interval_msecs: u32::try_from(policy.min_interval.as_millis()).unwrap_or(u32::MAX),
        };
        // SAFETY: non-NULL pointer to the shim's struct, writable during this call.
        unsafe { policy_r.write(policy_c) };
    });
}

/// Called by the shim with the events of a watched mailbox it read at once:
/// whether to wake the session for them (non-zero) or leave them to
/// Dovecot's own delayed wake-up.
#[no_mangle]
pub extern "C" fn chatmail_rs_idle_wakes(
    events: *const chatmail_idle_event,
    count: std::ffi::c_uint,
    pending: *mut std::ffi::c_int,
    lock_held: std::ffi::c_int,
) -> std::ffi::c_int {
    // If anything goes wrong here, waking is the safe answer: a needless
    // sync costs little, a missed one 500 ms.
    let mut wakes = 1;
    guarded("idle events", || {
        if events.is_null() || count == 0 || pending.is_null() {
            wakes = 0;
            return;
        }
        // SAFETY: the shim passes `count` events from an array alive during
        // the call, each with enum values it wrote from the declared ones.
        let events = unsafe { std::slice::from_raw_parts(events, count as usize) };
        let events: Vec<idle::Event> = events
            .iter()
            .map(|e| idle::Event {
                place: match e.place {
                    chatmail_idle_place::CHATMAIL_IDLE_PLACE_NEW => idle::Place::New,
                    chatmail_idle_place::CHATMAIL_IDLE_PLACE_CUR => idle::Place::Cur,
                    chatmail_idle_place::CHATMAIL_IDLE_PLACE_OTHER => idle::Place::Other,
                    chatmail_idle_place::CHATMAIL_IDLE_PLACE_CONTROL => idle::Place::Control,
                },
                change: match e.change {
                    chatmail_idle_change::CHATMAIL_IDLE_CREATED => idle::Change::Created,
                    chatmail_idle_change::CHATMAIL_IDLE_MOVED_IN => idle::Change::MovedIn,
                    chatmail_idle_change::CHATMAIL_IDLE_MOVED_OUT => idle::Change::MovedOut,
                    chatmail_idle_change::CHATMAIL_IDLE_REMOVED => idle::Change::Removed,
                    chatmail_idle_change::CHATMAIL_IDLE_MODIFIED => idle::Change::Modified,
                    chatmail_idle_change::CHATMAIL_IDLE_WATCH_GONE => idle::Change::WatchGone,
                    chatmail_idle_change::CHATMAIL_IDLE_OVERFLOW => idle::Change::Overflow,
                    chatmail_idle_change::CHATMAIL_IDLE_LOCK_RELEASED => idle::Change::LockReleased,
                },
                cookie: e.cookie,
            })
            .collect();
        // SAFETY: non-NULL pointer to the mailbox's flag, owned by the
        // shim and not touched elsewhere during this call.
        let pending = unsafe { &mut *pending };
        let mut waiting = *pending != 0;
        wakes = i32::from(idle::wake_now(&events, &mut waiting, lock_held != 0));
        *pending = i32::from(waiting);
    });
    wakes
}

/// Called by the shim on a change in a watched mailbox: after how many
/// milliseconds to wake the session (0: now).
#[no_mangle]
pub extern "C" fn chatmail_rs_idle_wake_delay(min_interval_msecs: u32, since_last_msecs: u64) -> u64 {
    let mut delay = 0;
    guarded("idle wake-up", || {
        let since_last = (since_last_msecs != u64::MAX).then(|| std::time::Duration::from_millis(since_last_msecs));
        let wait = idle::wake_delay(std::time::Duration::from_millis(u64::from(min_interval_msecs)), since_last);
        delay = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    });
    delay
}

/// Called by the shim when its own watch of a mailbox failed; the session
/// keeps Dovecot's delayed wake-up. Logged once per process, so a relay
/// at its inotify limits does not log once per IDLE.
#[no_mangle]
pub extern "C" fn chatmail_rs_idle_failed(username: *const c_char, what: chatmail_idle_failure, path: *const c_char, err: std::ffi::c_int) {
    guarded("idle watch failure", || {
        static LOGGED: std::sync::Once = std::sync::Once::new();
        LOGGED.call_once(|| {
            // SAFETY: NULL or NUL-terminated strings alive during this call.
            let (username, path) = unsafe { (text(username), text(path)) };
            let what = match what {
                chatmail_idle_failure::CHATMAIL_IDLE_INIT_FAILED => idle::Failure::Init,
                chatmail_idle_failure::CHATMAIL_IDLE_WATCH_FAILED => idle::Failure::Watch,
                chatmail_idle_failure::CHATMAIL_IDLE_READ_FAILED => idle::Failure::Read,
            };
            let error = std::io::Error::from_raw_os_error(err);
            log::warning(&idle::failure_message(username.unwrap_or("?"), what, path.unwrap_or(""), &error));
        });
    });
}
