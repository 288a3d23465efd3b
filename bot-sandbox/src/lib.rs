//! The bot sandbox: WebAssembly (and JavaScript, `js`) Delta Chat bots, installed by storing a
//! package mail in an account's bot folder and run for each mail the
//! account receives, one fresh worker process per run, under hard limits.
//!
//! Jobs come from the spool the Dovecot plugin writes (`queue`); installs
//! are checked and compiled once (`package`, `metadata`, `engine`) and
//! reported to the account by mail (`lmtp`); runs happen in a worker
//! process (`runner` starts it, `worker` is its side) that sees only the
//! closed WASI of `wasi`; per-sender limits and the CPU budget are
//! `limits`; the daemon's files per bot are `state`.

mod actions;
mod conversation;
mod daemon;
mod delta;
mod dsn;
mod engine;
mod identity;
mod fetch;
mod js;
mod limits;
mod lmtp;
mod maildir;
mod metadata;
mod openpgp;
mod package;
mod queue;
mod runner;
mod state;
mod storage;
mod wasi;
mod worker;

pub use daemon::{serve, Daemon, Disposition, FetchHelper, Settings};
pub use fetch::{allowed_origins, serve_helper as serve_fetch_helper, FetchAnswer, FetchRequest};
pub use actions::{parse as parse_actions, Action};
pub use delta::{compose as compose_message, parse as parse_message, Content, Outgoing};
pub use openpgp::{PublicKey, SecretKey};
pub use engine::{compile, engine, POINTS_PER_CPU_SECOND, WASM_PAGE};
pub use limits::{check, CpuBudget, OverLimit, RunRecord};
pub use lmtp::{probe as probe_mail_socket, REPORT_HEADER};
pub use maildir::{find_mail, newest_mail};
pub use metadata::{Metadata, SenderLimits};
pub use package::{build as build_package, unpack, Code, Package};
pub use js::{check_script, engine_artifact, ENGINE as JS_ENGINE};
pub use queue::{Spool, MAX_ATTEMPTS};
pub use runner::{FetchFn, Run, RunEnd, Runner};
pub use state::{Bot, Installed, InstalledCode, Registry};
pub use worker::{isolate_network, main as worker_main, Outcome, StorageRequest, WorkerReport, WorkerRequest};

/// A Delta Chat message from `from` (a fresh key of its own) to the bot
/// `bot` whose state is under `state_dir`: encrypted to the bot's key and
/// signed, as a Delta Chat client writes it (for tests and benchmarks).
pub fn mail_to_bot(state_dir: &std::path::Path, bot: &str, from: &str, text: &str) -> Result<Vec<u8>, String> {
    let path = state_dir.join("bots").join(bot).join("identity").join("key.asc");
    let armored = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bot_key = SecretKey::from_armor(&armored)?.public();
    let sender = SecretKey::generate(from)?;
    let message = Outgoing {
        from: from.to_owned(),
        to: vec![bot.to_owned()],
        message_id: delta::new_message_id("test.example"),
        date: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        subject: "Message from a test".into(),
        text: text.to_owned(),
        ..Outgoing::default()
    };
    compose_message(&message, &sender, &[&bot_key])
}
