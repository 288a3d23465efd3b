//! Accounts of a chatmail relay.
//!
//! - `chatmail-auth`: a daemon speaking Dovecot 2.3's dict protocol, used as
//!   Dovecot's passdb and userdb. The first login with an unknown, valid
//!   address creates the account; later logins check its password.
//! - `chatmail-metadata`: Dovecot's dict for IMAP METADATA (Delta Chat's
//!   push device tokens, server metadata) and the push notifier.
//! - Onboarding: `/new` hands out fresh random credentials; web pages with the
//!   onboarding QR code; an operator command that prints a `dclogin:` link.
//!
//! Policy (who may get an account) is pure and lives in `policy`; the
//! on-disk layout (chatmail's) in `store`; the wire protocol in `dict`.

mod auth;
mod crypt;
mod dict;
mod https_client;
mod keys;
mod metadata;
mod notifier;
mod policy;
mod push_queue;
mod resources;
mod server_metadata;
mod store;
mod tokens;
pub mod relay_check;
pub mod relay_probe;
pub mod web;

pub use auth::{serve, AuthService, AuthSettings, LookupOutcome};
pub use crypt::{hash_password, verify_password, PasswordScheme};
pub use dict::{escape as dict_escape, parse_line as parse_dict_line, unescape as dict_unescape, Command as DictCommand, ProtocolError, Reply as DictReply};
pub use https_client::{https_tls_config, HttpsAnswer, HttpsClient};
pub use keys::{parse_key, KeyError, Request};
pub use metadata::{read_turn_secret, serve as serve_metadata, MetadataService, MetadataSettings};
pub use notifier::{spool_status, Notifier, PushClient, SpoolStatus};
pub use server_metadata::{turn_credentials, ServerMetadata, Turn};
pub use policy::{
    check_password_bytes, random_credentials, AccountPolicy, NewAccountLimiter, Refusal, ResourceGate, Resources,
    MAX_PASSWORD_LEN, RESERVED_LOCAL_PARTS,
};
pub use resources::measure as measure_resources;
pub use store::{CreateOutcome, Store};

/// Completes on SIGTERM or SIGINT, logging `program: shutting down`; the
/// daemons of this crate stop serving then. Without signal handlers it
/// never completes (the daemon runs until killed).
pub async fn shutdown_signal(program: &str) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("{program}: shutting down");
}

/// The mail user `name` (owner of the mailboxes); a missing user or a
/// failed lookup is logged as `{program}: error: …` and is exit code 2.
pub fn mail_user(program: &str, name: &str) -> Result<nix::unistd::User, std::process::ExitCode> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => {
            eprintln!("{program}: error: mail user {name:?} does not exist");
            Err(std::process::ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("{program}: error: looking up user {name:?}: {e}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// Runs as `user` (the mail user, who owns the mailboxes) from now on, if
/// started as root; otherwise warns when running as someone else.
pub fn become_user(program: &str, user: &nix::unistd::User) -> Result<(), String> {
    use nix::unistd::Uid;
    if !Uid::effective().is_root() {
        if Uid::effective() != user.uid {
            eprintln!(
                "{program}: warning: running as uid {} rather than the mail user {} (uid {}): files it makes will belong to uid {}",
                Uid::effective(),
                user.name,
                user.uid,
                Uid::effective()
            );
        }
        return Ok(());
    }
    nix::unistd::setgroups(&[user.gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(user.gid).map_err(|e| format!("setgid {}: {e}", user.gid))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("setuid {}: {e}", user.uid))?;
    Ok(())
}

/// Accepts connections on `listener` until `shutdown` completes, handing
/// each to `connection` in a task of its own; a connection's error and an
/// accept error are logged as `{program}: op=connection|accept result=error …`.
pub(crate) async fn accept_loop<F, Fut>(program: &'static str, listener: tokio::net::UnixListener, shutdown: impl std::future::Future, connection: F) -> std::io::Result<()>
where
    F: Fn(tokio::net::UnixStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handled = connection(stream);
                    tokio::spawn(async move {
                        if let Err(e) = handled.await {
                            eprintln!("{program}: op=connection result=error problem={:?}", e.to_string());
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    eprintln!("{program}: op=accept result=error problem={:?}", e.to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}
