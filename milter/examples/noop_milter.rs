//! A milter that accepts everything and asks only for the MAIL and
//! end-of-message stages: the baseline for how much of the relay
//! benchmark's cost is Postfix's milter protocol itself rather than the
//! chatmail milter's checks. Takes the same `--socket unix:PATH` argument, so
//! the harness can run it in place of chatmail-milter:
//!
//!   cargo build --release --workspace --examples
//!   CHATMAIL_MILTER=$PWD/target/release/examples/noop_milter BENCH_SKIP_BIG=1 target/release/chatmail-bench-relay

use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;

use indymilter::{Callbacks, Config, Status};
use tokio::net::UnixListener;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args
        .iter()
        .position(|a| a == "--socket")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.strip_prefix("unix:"))
        .map(str::to_owned)
    else {
        eprintln!("noop_milter: needs --socket unix:PATH");
        return ExitCode::from(2);
    };
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("noop_milter: binding {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Benchmark tool on a test machine: let Postfix's user connect.
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)) {
        eprintln!("noop_milter: chmod {path}: {e}");
        return ExitCode::FAILURE;
    }
    let callbacks: Callbacks<()> = Callbacks::new()
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_eom(|_| Box::pin(async { Status::Continue }));
    match indymilter::run(listener, callbacks, Config::default(), tokio::signal::ctrl_c()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("noop_milter: {e}");
            ExitCode::FAILURE
        }
    }
}
