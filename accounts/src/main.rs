//! `chatmail-auth`: Dovecot's passdb and userdb for a chatmail relay, over
//! Dovecot's dict protocol on a unix socket. The first login with an unknown,
//! valid address creates the account.
//!
//! Usage: chatmail-auth [--config FILE] [--socket PATH] [--socket-group GROUP] [--mail-user USER]
//!
//! Started as root, it binds the socket and then runs as the mail user, who
//! owns the mailboxes. Exit codes: 0 after SIGTERM/SIGINT, 1 on a runtime
//! failure, 2 on bad arguments or configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chatmail_accounts::{AuthService, AuthSettings};
use chatmail_config::metrics::MetricsFile;
use nix::unistd::{Group, User};
use tokio::net::UnixListener;

const USAGE: &str = "usage: chatmail-auth [--config FILE] [--socket PATH] [--socket-group GROUP] [--mail-user USER]

  --config FILE         chatmail.ini (default /etc/chatmail/chatmail.ini)
  --socket PATH         dict socket for Dovecot (default /run/chatmail-auth/auth.sock)
  --socket-group GROUP  group that may connect, mode 0660 (default dovecot)
  --mail-user USER      owner of the mailboxes; userdb answers with its ids, and
                        the daemon runs as this user when started as root (default vmail)";

/// Most lookups hashing passwords at once (each is one SHA512-CRYPT).
const MAX_BLOCKING_THREADS: usize = 32;

struct Args {
    config: PathBuf,
    socket: PathBuf,
    socket_group: String,
    mail_user: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: PathBuf::from("/etc/chatmail/chatmail.ini"),
        socket: PathBuf::from("/run/chatmail-auth/auth.sock"),
        socket_group: "dovecot".into(),
        mail_user: "vmail".into(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--config" => args.config = PathBuf::from(value()?),
            "--socket" => args.socket = PathBuf::from(value()?),
            "--socket-group" => args.socket_group = value()?,
            "--mail-user" => args.mail_user = value()?,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("chatmail-auth: {message}");
            return ExitCode::from(2);
        }
    };
    let config = match chatmail_config::load_for("chatmail-auth", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let user = match chatmail_accounts::mail_user("chatmail-auth", &args.mail_user) {
        Ok(user) => user,
        Err(code) => return code,
    };
    let settings = AuthSettings::from_config(&config, user.uid.as_raw(), user.gid.as_raw());
    let runtime = match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(MAX_BLOCKING_THREADS).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatmail-auth: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&args, &user, settings, config.metrics_dir.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-auth: error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args, user: &User, settings: AuthSettings, metrics_dir: Option<&Path>) -> Result<(), String> {
    let path = &args.socket;
    // A socket left by an earlier run would make bind fail.
    if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    match Group::from_name(&args.socket_group) {
        Ok(Some(group)) => std::os::unix::fs::chown(path, None, Some(group.gid.as_raw())).map_err(|e| format!("chown {}: {e}", path.display()))?,
        _ => eprintln!("chatmail-auth: warning: group {} not found; only the owner can use {}", args.socket_group, path.display()),
    }
    chatmail_accounts::become_user("chatmail-auth", user)?;
    eprintln!(
        "chatmail-auth: listening on {} for {} (mailboxes {})",
        path.display(),
        settings.policy.address.mail_domain,
        settings.mailboxes_dir.display()
    );
    let service = Arc::new(AuthService::new(settings));
    if let Some(file) = MetricsFile::new(metrics_dir, "chatmail-auth") {
        chatmail_config::metrics::write_periodically("chatmail-auth", Arc::clone(service.metrics()), file);
    }
    chatmail_accounts::serve(listener, service, chatmail_accounts::shutdown_signal("chatmail-auth")).await.map_err(|e| e.to_string())
}
