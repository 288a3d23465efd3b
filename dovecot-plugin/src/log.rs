//! Logging through Dovecot's own log (the shim's `i_info` and friends), so
//! plugin messages land where the operator reads Dovecot's.

use std::ffi::CString;

use crate::bindings::{chatmail_log_level, chatmail_shim_log};

fn log(level: chatmail_log_level, message: &str) {
    // A NUL inside would end the C string early; show it instead.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: `text` is a valid NUL-terminated string that outlives the
    // call; the shim only formats it into Dovecot's log.
    unsafe { chatmail_shim_log(level, text.as_ptr()) }
}

pub fn info(message: &str) {
    log(chatmail_log_level::CHATMAIL_LOG_INFO, message);
}

pub fn warning(message: &str) {
    log(chatmail_log_level::CHATMAIL_LOG_WARNING, message);
}

pub fn error(message: &str) {
    log(chatmail_log_level::CHATMAIL_LOG_ERROR, message);
}
