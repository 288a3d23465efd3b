//! `chatmail-metadata`: IMAP METADATA for Dovecot (its `mail_attribute_dict`,
//! over the dict protocol on a unix socket) and Delta Chat push
//! notifications: device tokens per account, and a POST to the notification
//! service for every account that receives mail.
//!
//! Usage: chatmail-metadata [--config FILE] [--socket PATH] [--mail-user USER]
//!        chatmail-metadata [--config FILE] status
//!
//! Started as root, it binds the socket and then runs as the mail user, who
//! owns the mailboxes and the push spool. Exit codes: 0 after SIGTERM/SIGINT,
//! 1 on a runtime failure, 2 on bad arguments or configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chatmail_accounts::{MetadataService, MetadataSettings, Notifier, PushClient};
use nix::unistd::User;
use tokio::net::UnixListener;

const USAGE: &str = "usage: chatmail-metadata [--config FILE] [--socket PATH] [--mail-user USER]
       chatmail-metadata [--config FILE] status

  status             print the push queue (notifications queued, retrying,
                     the oldest one's age, accounts waiting) and exit

  --config FILE      chatmail.ini (default /etc/chatmail/chatmail.ini)
  --socket PATH      dict socket for Dovecot's mail_attribute_dict
                     (default /run/chatmail-metadata/metadata.sock)
  --mail-user USER   owner of the mailboxes and the push spool; the socket is
                     this user's (mode 0660), and the daemon runs as this user
                     when started as root (default vmail)";

struct Args {
    /// `status`: report and exit.
    status: bool,
    config: PathBuf,
    socket: PathBuf,
    mail_user: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        status: false,
        config: PathBuf::from("/etc/chatmail/chatmail.ini"),
        socket: PathBuf::from("/run/chatmail-metadata/metadata.sock"),
        mail_user: "vmail".into(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--config" => args.config = PathBuf::from(value()?),
            "--socket" => args.socket = PathBuf::from(value()?),
            "--mail-user" => args.mail_user = value()?,
            "status" => args.status = true,
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
            eprintln!("chatmail-metadata: {message}");
            return ExitCode::from(2);
        }
    };
    let config = match chatmail_config::load_for("chatmail-metadata", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if args.status {
        return print_status(&config);
    }
    let user = match chatmail_accounts::mail_user("chatmail-metadata", &args.mail_user) {
        Ok(user) => user,
        Err(code) => return code,
    };
    // Read before privileges are dropped (the package makes it root:vmail 0640).
    let turn_secret = match &config.turn_server {
        None => None,
        Some(_) => match chatmail_accounts::read_turn_secret(&config.turn_secret_file) {
            Ok(secret) => Some(secret),
            Err(e) => {
                eprintln!("chatmail-metadata: error: {e} (turn_server is set)");
                return ExitCode::from(2);
            }
        },
    };
    let client = match &config.push_notification_url {
        None => None,
        Some(url) => match PushClient::new(url, config.push_notification_ca_file.as_deref()) {
            Ok(client) => Some(client),
            Err(e) => {
                eprintln!("chatmail-metadata: error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatmail-metadata: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = MetadataSettings::from_config(&config, turn_secret);
    match runtime.block_on(serve(&args, &user, &config, settings, client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-metadata: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `chatmail-metadata status`: the push spool, for operators.
fn print_status(config: &chatmail_config::Config) -> ExitCode {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match chatmail_accounts::spool_status(&config.push_spool_dir, now) {
        Ok(status) => {
            println!("push_notification_url: {}", config.push_notification_url.as_deref().unwrap_or("(empty: push off)"));
            println!("push_spool_dir: {}", config.push_spool_dir.display());
            println!("queued notifications: {}", status.queued);
            println!("retrying: {}", status.retrying);
            match status.oldest_secs {
                Some(age) => println!("oldest: {age} s"),
                None => println!("oldest: -"),
            }
            println!("accounts waiting to be queued: {}", status.arrivals);
            if status.unreadable > 0 {
                println!("unreadable queue files: {}", status.unreadable);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatmail-metadata: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args, user: &User, config: &chatmail_config::Config, settings: MetadataSettings, client: Option<PushClient>) -> Result<(), String> {
    let path = &args.socket;
    if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    chatmail_accounts::become_user("chatmail-metadata", user)?;
    let push = match &config.push_notification_url {
        Some(url) => format!("push to {url}"),
        None => "push off (push_notification_url is empty)".into(),
    };
    eprintln!(
        "chatmail-metadata: listening on {} for {} ({push}; spool {}; turn {}; irohrelay {})",
        path.display(),
        config.mail_domain,
        config.push_spool_dir.display(),
        config.turn_server.as_deref().unwrap_or("none"),
        config.iroh_relay.as_deref().unwrap_or("none"),
    );
    let service = Arc::new(MetadataService::new(settings));
    let notifier = Notifier::new(config.push_spool_dir.clone(), Arc::clone(&service), client);
    if let Some(file) = chatmail_config::metrics::MetricsFile::new(config.metrics_dir.as_deref(), "chatmail-metadata") {
        chatmail_config::metrics::write_periodically("chatmail-metadata", notifier.metrics(), file);
    }
    let shutdown = chatmail_accounts::shutdown_signal("chatmail-metadata");
    // The notifier keeps everything on disk: it needs no shutdown of its
    // own and ends with the dict service (or ends it, failing).
    let mut notifier_task = tokio::spawn(notifier.run(std::future::pending::<()>()));
    let result = tokio::select! {
        r = chatmail_accounts::serve_metadata(listener, service, shutdown) => r.map_err(|e| e.to_string()),
        r = &mut notifier_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("push notifier: {e}")),
            Err(e) => Err(format!("push notifier: {e}")),
        },
    };
    notifier_task.abort();
    result
}
