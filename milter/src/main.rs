//! `chatmail-milter`: the Postfix milter daemon.
//!
//! Usage: chatmail-milter [--config FILE] [--socket unix:PATH|inet:HOST:PORT] [--socket-group GROUP]
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 1 on a runtime failure, 2 on bad
//! arguments or configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use chatmail_milter::MilterSettings;
use std::task::{Context, Poll};

use indymilter::Listener;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: chatmail-milter [--config FILE] [--socket unix:PATH|inet:HOST:PORT] [--socket-group GROUP]";

struct Args {
    config: PathBuf,
    socket: String,
    socket_group: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: PathBuf::from("/etc/chatmail/chatmail.ini"),
        socket: "unix:/run/chatmail-milter/milter.sock".into(),
        socket_group: "postfix".into(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--config" => args.config = PathBuf::from(value()?),
            "--socket" => args.socket = value()?,
            "--socket-group" => args.socket_group = value()?,
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
            eprintln!("chatmail-milter: {message}");
            return ExitCode::from(2);
        }
    };
    let config = match chatmail_config::load_for("chatmail-milter", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let settings = MilterSettings::from_config(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatmail-milter: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-milter: error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the daemon still runs until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("chatmail-milter: shutting down");
}

async fn serve(args: Args, settings: MilterSettings) -> Result<(), String> {
    if let Some(path) = args.socket.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        // A socket left by an earlier run would make bind fail.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
            let _ = std::fs::remove_file(&path);
        }
        let listener = UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
        // Postfix connects as its own user: the socket belongs to its group.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
        match nix_group_id(&args.socket_group) {
            Some(gid) => std::os::unix::fs::chown(&path, None, Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))?,
            None => eprintln!("chatmail-milter: warning: group {} not found; only the owner can use {}", args.socket_group, path.display()),
        }
        eprintln!("chatmail-milter: listening on unix:{}", path.display());
        let result = chatmail_milter::run(listener, settings, shutdown_signal()).await;
        let _ = std::fs::remove_file(&path);
        result.map_err(|e| e.to_string())
    } else if let Some(addr) = args.socket.strip_prefix("inet:") {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
        eprintln!("chatmail-milter: listening on inet:{addr}");
        chatmail_milter::run(NoDelayListener(listener), settings, shutdown_signal()).await.map_err(|e| e.to_string())
    } else {
        Err(format!("--socket {:?} must start with unix: or inet:", args.socket))
    }
}

/// A TCP listener whose connections send small replies at once: without
/// TCP_NODELAY, Nagle's algorithm and delayed ACKs stall each milter reply
/// by up to ~40 ms.
struct NoDelayListener(TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<TcpStream>> {
        self.0.poll_accept(cx).map(|accepted| {
            let (stream, _) = accepted?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// Looks up a group id in /etc/group (no libc call needed for this).
fn nix_group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.nth(1)?.parse().ok())?
    })
}
