//! JavaScript bots: a package may carry `bot.js` instead of `bot.wasm`.
//! The relay ships one engine for all of them, QuickJS compiled to
//! `wasm32-wasip1` (`bots/js-engine/`, rebuilt by `make js-engine`, the
//! module committed as `bots/js-engine/engine.wasm` and built into this
//! program). The engine is compiled once per daemon configuration, like
//! any bot and with the same metering and memory cap, into
//! `{bot_state_dir}/engines/`; a JavaScript bot's run is a run of that
//! module, which asks the worker for its script (`chatmail.script`). The
//! script is the only per-bot part, and it adds no power: the engine turns
//! the `chatmail` API's calls into the action lines every bot prints, which
//! the relay checks as always.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::runner::{RunEnd, Runner};
use crate::worker::{Outcome, WorkerRequest};

/// The engine module (see `bots/js-engine/`).
pub const ENGINE: &[u8] = include_bytes!("../../bots/js-engine/engine.wasm");

/// The value of `CHATMAIL_EVENT` that makes the engine only parse the
/// script (install check).
pub const CHECK_EVENT: &str = "check";

/// Metering points for the install check: parsing a script of the largest
/// package takes a small fraction of this.
const CHECK_POINTS: u64 = 5 * crate::engine::POINTS_PER_CPU_SECOND;

/// One compile at a time: the daemon's threads may install two JavaScript
/// bots at once, and the first compile serves both.
static COMPILING: Mutex<()> = Mutex::new(());

/// FNV-1a: names the artifact after what it was compiled from (not a
/// security measure; the state directory is the daemon's own).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The FNV-1a state after `part` (and a separator, so parts cannot shift).
fn fnv_feed(mut hash: u64, part: &[u8]) -> u64 {
    for byte in part {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= 0xff;
    hash.wrapping_mul(0x0100_0000_01b3)
}

#[cfg(test)]
fn fingerprint(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(FNV_OFFSET, |hash, part| fnv_feed(hash, part))
}

/// Where the compiled engine for `memory_limit` lives under `state_dir`.
/// (Asked at every JavaScript run: the engine's ~1 MB is hashed once per
/// process.)
pub fn artifact_path(state_dir: &Path, memory_limit: u64) -> PathBuf {
    static ENGINE_HASHED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let engine = *ENGINE_HASHED.get_or_init(|| fnv_feed(FNV_OFFSET, ENGINE));
    let id = fnv_feed(fnv_feed(engine, &memory_limit.to_le_bytes()), env!("CARGO_PKG_VERSION").as_bytes());
    state_dir.join("engines").join(format!("js-{id:016x}.bin"))
}

/// The compiled engine, compiled now if this configuration has none yet
/// (a new relay version or `bot_memory_limit` makes a new one).
pub fn engine_artifact(state_dir: &Path, memory_limit: u64) -> Result<PathBuf, String> {
    let path = artifact_path(state_dir, memory_limit);
    if path.is_file() {
        return Ok(path);
    }
    let _one = COMPILING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if path.is_file() {
        return Ok(path);
    }
    let module = crate::engine::compile_js_engine(memory_limit, ENGINE)?;
    let artifact = module.serialize().map_err(|e| format!("serializing the JavaScript engine: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    crate::state::write_atomically(&path, &artifact, 0o600).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Why a script cannot be installed, from the engine's install check: a
/// syntax error (`bot.js:LINE:COL: SyntaxError: …`) in the author's words.
/// `Err` of the outer result: the check itself could not run (retry).
pub fn check_script(runner: &Runner, artifact: &Path, memory_limit: u64, network_isolated: bool, script: &str) -> Result<Vec<String>, String> {
    let request = WorkerRequest {
        artifact: artifact.to_path_buf(),
        memory_limit,
        output_limit: 64 * 1024,
        points: CHECK_POINTS,
        cpu_seconds: CHECK_POINTS / crate::engine::POINTS_PER_CPU_SECOND + 1,
        environment: vec![("CHATMAIL_EVENT".into(), CHECK_EVENT.into())],
        network_isolated,
        storage: None,
        input_len: None,
        network: false,
        script_len: None,
    };
    let run = runner.run_bot(&request, Some(script.as_bytes()), &BTreeMap::new(), b"", None);
    match run.end {
        RunEnd::Reported { report, .. } => Ok(match report.outcome {
            Outcome::Exited(0) => Vec::new(),
            Outcome::Exited(_) => {
                let said: Vec<String> = report.stderr.lines().filter(|l| !l.trim().is_empty()).take(3).map(str::to_owned).collect();
                if said.is_empty() {
                    vec!["bot.js could not be parsed (the engine said nothing more)".into()]
                } else {
                    said
                }
            }
            Outcome::OutOfCpu => vec!["bot.js took too long to parse".into()],
            Outcome::OutputLimit => vec!["bot.js could not be parsed (too much output)".into()],
            Outcome::Trapped(why) => vec![format!("bot.js could not be parsed: the engine stopped ({why})")],
            Outcome::LoadFailed(why) => return Err(format!("loading the JavaScript engine: {why}")),
        }),
        RunEnd::TimedOut => Ok(vec!["bot.js took too long to parse".into()]),
        RunEnd::Crashed(why) => Err(format!("checking bot.js: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_follow_what_they_were_compiled_from() {
        let dir = Path::new("/state");
        let a = artifact_path(dir, 128 << 20);
        assert_eq!(a, artifact_path(dir, 128 << 20));
        assert_ne!(a, artifact_path(dir, 64 << 20));
        assert!(a.to_string_lossy().starts_with("/state/engines/js-") && a.extension().is_some_and(|e| e == "bin"), "{a:?}");
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        // The cached engine part gives the name hashing everything at once would.
        let whole = fingerprint(&[ENGINE, &(128u64 << 20).to_le_bytes(), env!("CARGO_PKG_VERSION").as_bytes()]);
        assert_eq!(artifact_path(dir, 128 << 20), dir.join("engines").join(format!("js-{whole:016x}.bin")));
    }

    #[test]
    fn the_engine_is_a_module_the_relay_accepts() {
        assert!(ENGINE.starts_with(b"\0asm"), "bots/js-engine/engine.wasm is not a WebAssembly module");
        crate::engine::compile_js_engine(16 << 20, ENGINE).expect("the engine compiles with the JavaScript imports allowed");
        // As a bot's own module it would be refused: it asks for a script.
        assert!(crate::engine::compile(16 << 20, ENGINE).is_err());
    }
}
