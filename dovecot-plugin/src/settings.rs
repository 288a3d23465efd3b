//! chatmail.ini as the plugin sees it: read once per process (a Dovecot
//! mail process serves one relay), from the plugin setting
//! `chatmail_config` or the default path.

use std::path::Path;
use std::sync::OnceLock;

use chatmail_config::Config;

use crate::log;

/// Where chatmail.ini is unless the plugin setting `chatmail_config` says.
pub const DEFAULT_CONFIG: &str = "/etc/chatmail/chatmail.ini";

/// The relay's configuration, or `None` (logged once) if it cannot be read:
/// then the features that need it (expiry, connection limits) stay off
/// rather than failing sessions.
pub fn config(path: Option<&str>) -> Option<&'static Config> {
    static LOADED: OnceLock<Result<Config, String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let path = path.unwrap_or(DEFAULT_CONFIG);
        Config::load(Path::new(path)).map(|l| l.config).map_err(|e| e.to_string())
    });
    match loaded {
        Ok(config) => Some(config),
        Err(e) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| log::warning(&format!("chatmail.ini not usable, expiry and connection limits are off: {e}")));
            None
        }
    }
}
