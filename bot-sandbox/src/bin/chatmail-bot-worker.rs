//! `chatmail-bot-worker`: one bot run, started by `chatmail-bots` for each
//! job (request and input on stdin, report and output on stdout; see
//! `worker.rs`). A program of its own, without the compiler, so that it
//! starts fast. Not for direct use.

use std::process::ExitCode;

fn main() -> ExitCode {
    match chatmail_bot_sandbox::worker_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatmail-bot-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
