//! The worker: one process per bot run, which the daemon can kill.
//!
//! The daemon starts `chatmail-bot-worker` with an empty environment and
//! `/` as its directory, writes a [`WorkerRequest`] line and the input
//! (the mail) to its stdin, and reads a [`WorkerReport`] line and the bot's
//! output from its stdout. Before any bot code is loaded the worker locks
//! itself down (see [`lock_down`]); inside, the bot only has the WASI of
//! [`crate::wasi`].

use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmer::{FunctionEnv, Instance, Module, Store};
use wasmer_middlewares::metering::{get_remaining_points, set_remaining_points, MeteringPoints};

use crate::storage::Storage;
use crate::wasi::{self, WasiState};

/// What the daemon asks of a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerRequest {
    /// The compiled module (a wasmer artifact made by this program).
    pub artifact: PathBuf,
    /// Bytes of linear memory.
    pub memory_limit: u64,
    /// Bytes of stdout.
    pub output_limit: u64,
    /// Metering points (≈ wasm operators) the run may use.
    pub points: u64,
    /// CPU seconds, enforced by the kernel as a backstop.
    pub cpu_seconds: u64,
    /// The bot's environment variables.
    pub environment: Vec<(String, String)>,
    /// The daemon already runs in an empty network namespace of its own
    /// (see [`isolate_network`]): the worker inherits it and need not make
    /// one per run.
    #[serde(default)]
    pub network_isolated: bool,
    /// The bot's storage: quota and files (name, size), whose bytes follow
    /// the request line on stdin, before the input.
    #[serde(default)]
    pub storage: Option<StorageRequest>,
    /// Bytes of input after the storage files; stdin then stays open for
    /// the answers to the bot's network requests. `None`: input up to EOF.
    #[serde(default)]
    pub input_len: Option<u64>,
    /// Whether the bot may make network requests (some origin allowed).
    #[serde(default)]
    pub network: bool,
    /// Bytes of the JavaScript bot's script, after the storage files and
    /// before the input (the engine asks for it with `chatmail.script`).
    /// `None`: a WebAssembly bot.
    #[serde(default)]
    pub script_len: Option<u64>,
}

/// The storage handed to a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StorageRequest {
    pub quota: u64,
    pub files: Vec<(String, u64)>,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// `_start` returned or the bot called `proc_exit`.
    Exited(u32),
    /// The bot trapped (including running out of memory it asked for).
    Trapped(String),
    /// The run used all its metering points.
    OutOfCpu,
    /// The bot wrote more than its output limit.
    OutputLimit,
    /// The module could not be loaded or instantiated.
    LoadFailed(String),
}

/// What the worker reports, followed by `stdout_len` bytes of output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerReport {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub points_used: u64,
    /// User + system CPU of the worker process, microseconds.
    pub cpu_micros: u64,
    /// Microseconds spent loading the artifact / instantiating / running.
    pub load_micros: u64,
    pub instantiate_micros: u64,
    pub run_micros: u64,
    /// Kernel protections that could not be applied here (logged).
    pub unprotected: Vec<String>,
    /// The start of the bot's stderr, lossily decoded.
    pub stderr: String,
    pub stdout_len: u64,
    /// The storage after the run, if the bot changed it: files (name,
    /// size) whose bytes follow the output.
    #[serde(default)]
    pub storage: Option<Vec<(String, u64)>>,
}

fn rlimit(resource: nix::sys::resource::Resource, value: u64, name: &str, unprotected: &mut Vec<String>) {
    if let Err(e) = nix::sys::resource::setrlimit(resource, value, value) {
        unprotected.push(format!("{name}: {e}"));
    }
}

/// Applies the kernel protections before any bot code exists in the
/// process: no new privileges, no core dumps, no file writes, no new
/// processes, a CPU-time backstop, and — where the kernel allows — a
/// network namespace of its own (no interfaces but a down loopback).
/// Returns what could not be applied.
fn lock_down(cpu_seconds: u64, network_isolated: bool) -> Vec<String> {
    use nix::sys::resource::Resource;
    let mut unprotected = Vec::new();
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        unprotected.push(format!("no_new_privs: {e}"));
    }
    // A network namespace: as root directly; otherwise inside a new user
    // namespace (needs unprivileged user namespaces, on in Debian 12).
    if !network_isolated {
        let net = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .or_else(|_| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNET));
        if let Err(e) = net {
            unprotected.push(format!("network namespace: {e}"));
        }
    }
    rlimit(Resource::RLIMIT_CORE, 0, "RLIMIT_CORE", &mut unprotected);
    rlimit(Resource::RLIMIT_FSIZE, 0, "RLIMIT_FSIZE", &mut unprotected);
    rlimit(Resource::RLIMIT_CPU, cpu_seconds.max(1), "RLIMIT_CPU", &mut unprotected);
    // stdin, stdout, stderr and what is open now; nothing new.
    rlimit(Resource::RLIMIT_NOFILE, 8, "RLIMIT_NOFILE", &mut unprotected);
    // No new processes or threads (counted per user: the worker is at or
    // over 0 already, so fork and clone fail).
    rlimit(Resource::RLIMIT_NPROC, 0, "RLIMIT_NPROC", &mut unprotected);
    unprotected
}

/// Moves the calling process (the daemon, before it starts threads) into
/// an empty network namespace of its own, which every worker inherits:
/// cheaper than one namespace per run (about a millisecond each). As root
/// directly; otherwise inside a new user namespace that maps the process's
/// own user and group to themselves, so file access is unchanged. Must be
/// called while the process has a single thread.
pub fn isolate_network() -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    if unshare(CloneFlags::CLONE_NEWNET).is_ok() {
        return Ok(());
    }
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
    let write = |file: &str, text: String| std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("/proc/self/{file}: {e}"));
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("setgroups", "deny".into())?;
    write("gid_map", format!("{gid} {gid} 1\n"))
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn own_cpu_micros() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let total = |t: nix::sys::time::TimeVal| {
                u64::try_from(t.tv_sec()).unwrap_or(0).saturating_mul(1_000_000).saturating_add(u64::try_from(t.tv_usec()).unwrap_or(0))
            };
            total(usage.user_time()).saturating_add(total(usage.system_time()))
        }
        Err(_) => 0,
    }
}

/// Storage files by name.
type Files = BTreeMap<String, Vec<u8>>;

/// Runs the bot of `request` on `input` with its storage `files`. Returns
/// the report, the output and the storage if the bot changed it.
pub fn run(
    request: &WorkerRequest,
    files: BTreeMap<String, Vec<u8>>,
    input: Vec<u8>,
    script: Option<Vec<u8>>,
    fetcher: Option<Box<dyn wasi::Fetch>>,
    unprotected: Vec<String>,
) -> (WorkerReport, Vec<u8>, Option<Files>) {
    let mut report = WorkerReport {
        outcome: Outcome::Exited(0),
        points_used: 0,
        cpu_micros: 0,
        load_micros: 0,
        instantiate_micros: 0,
        run_micros: 0,
        unprotected,
        stderr: String::new(),
        stdout_len: 0,
        storage: None,
    };
    let started = std::time::Instant::now();
    let engine = crate::engine::runtime_engine(request.memory_limit);
    // Mapped, not read: the JavaScript engine's artifact is ~10 MB, and
    // copying it first cost more than the rest of a run.
    // SAFETY: the artifact was written by this program's install step from
    // a module it compiled with the same engine configuration, into the
    // daemon's own state directory; wasmer checks its header and version.
    let module = match unsafe { Module::deserialize_from_file(&engine, &request.artifact) } {
        Ok(module) => module,
        Err(e) => {
            report.outcome = Outcome::LoadFailed(format!("loading the compiled module: {e}"));
            return (report, Vec::new(), None);
        }
    };
    report.load_micros = micros(started.elapsed());

    let instantiating = std::time::Instant::now();
    let mut store = Store::new(engine);
    let mut state = WasiState::new(input, request.output_limit, request.environment.clone());
    state.storage = request.storage.as_ref().map(|s| Storage::new(files, s.quota));
    state.fetcher = fetcher;
    state.script = script;
    let env = FunctionEnv::new(&mut store, state);
    let imports = wasi::imports(&mut store, &env, &module);
    let instance = match Instance::new(&mut store, &module, &imports) {
        Ok(instance) => instance,
        Err(e) => {
            report.outcome = Outcome::LoadFailed(format!("instantiating: {e}"));
            return (report, Vec::new(), None);
        }
    };
    match instance.exports.get_memory("memory") {
        Ok(memory) => wasi::attach_memory(&mut store, &env, memory.clone()),
        Err(e) => {
            report.outcome = Outcome::LoadFailed(format!("no memory export: {e}"));
            return (report, Vec::new(), None);
        }
    }
    let start = match instance.exports.get_function("_start") {
        Ok(start) => start.clone(),
        Err(e) => {
            report.outcome = Outcome::LoadFailed(format!("no _start: {e}"));
            return (report, Vec::new(), None);
        }
    };
    set_remaining_points(&mut store, &instance, request.points);
    report.instantiate_micros = micros(instantiating.elapsed());

    let running = std::time::Instant::now();
    let result = start.call(&mut store, &[]);
    report.run_micros = micros(running.elapsed());
    let remaining = get_remaining_points(&mut store, &instance);
    report.points_used = match remaining {
        MeteringPoints::Remaining(left) => request.points.saturating_sub(left),
        MeteringPoints::Exhausted => request.points,
    };
    report.outcome = match result {
        Ok(_) => Outcome::Exited(0),
        Err(_) if remaining == MeteringPoints::Exhausted => Outcome::OutOfCpu,
        Err(error) => match wasi::exit_of(error) {
            Ok(code) => Outcome::Exited(code.0),
            Err(error) => match error.downcast::<wasi::OutputLimit>() {
                Ok(_) => Outcome::OutputLimit,
                Err(error) => Outcome::Trapped(error.message()),
            },
        },
    };
    let state = env.as_mut(&mut store);
    let output = std::mem::take(&mut state.stdout);
    report.stderr = String::from_utf8_lossy(&state.stderr).into_owned();
    report.stdout_len = output.len() as u64;
    let changed = state.storage.take().and_then(Storage::changed_files);
    report.storage = changed.as_ref().map(|files| files.iter().map(|(n, d)| (n.clone(), d.len() as u64)).collect());
    report.cpu_micros = own_cpu_micros();
    (report, output, changed)
}

/// Network requests through the daemon: a `F <url as JSON>` line on
/// stdout, the answer (a [`crate::fetch::FetchAnswer`] line and the body)
/// on stdin.
struct StdioFetch;

impl wasi::Fetch for StdioFetch {
    fn fetch(&mut self, url: &str) -> Result<(u16, Vec<u8>), String> {
        let mut stdout = io::stdout().lock();
        let url = serde_json::to_string(url).map_err(|e| e.to_string())?;
        stdout.write_all(format!("F {url}\n").as_bytes()).and_then(|()| stdout.flush()).map_err(|e| e.to_string())?;
        drop(stdout);
        let mut stdin = io::stdin().lock();
        let mut line = String::new();
        stdin.read_line(&mut line).map_err(|e| e.to_string())?;
        let answer: crate::fetch::FetchAnswer = serde_json::from_str(&line).map_err(|e| format!("bad answer: {e}"))?;
        let mut body = vec![0; usize::try_from(answer.len.min(crate::fetch::MAX_BODY)).unwrap_or(0)];
        stdin.read_exact(&mut body).map_err(|e| e.to_string())?;
        match answer.error {
            Some(error) => Err(error),
            None => Ok((answer.status, body)),
        }
    }
}

/// The worker program's `main`: request and input on stdin, report and output on
/// stdout. Exit status 0 whenever a report was written.
pub fn main() -> io::Result<()> {
    let stdin = io::stdin();
    let mut stdin = stdin.lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    let request: WorkerRequest =
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad worker request: {e}")))?;
    let mut files = BTreeMap::new();
    if let Some(storage) = &request.storage {
        for (name, size) in &storage.files {
            let mut data = vec![0; usize::try_from(*size).map_err(io::Error::other)?];
            stdin.read_exact(&mut data)?;
            files.insert(name.clone(), data);
        }
    }
    let script = match request.script_len {
        Some(len) => {
            let mut script = vec![0; usize::try_from(len).map_err(io::Error::other)?];
            stdin.read_exact(&mut script)?;
            Some(script)
        }
        None => None,
    };
    let mut input = Vec::new();
    match request.input_len {
        Some(len) => {
            input = vec![0; usize::try_from(len).map_err(io::Error::other)?];
            stdin.read_exact(&mut input)?;
        }
        None => {
            stdin.read_to_end(&mut input)?;
        }
    }
    drop(stdin);
    let fetcher: Option<Box<dyn wasi::Fetch>> = (request.network && request.input_len.is_some()).then(|| Box::new(StdioFetch) as Box<dyn wasi::Fetch>);
    // A missing artifact is the daemon's problem (a crash, retried), not an
    // outcome of the bot's.
    std::fs::File::open(&request.artifact).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", request.artifact.display())))?;
    let unprotected = lock_down(request.cpu_seconds, request.network_isolated);
    let (report, output, changed) = run(&request, files, input, script, fetcher, unprotected);
    let stdout = io::stdout();
    let mut stdout = stdout.lock();
    serde_json::to_writer(&mut stdout, &report).map_err(io::Error::other)?;
    stdout.write_all(b"\n")?;
    stdout.write_all(&output)?;
    for data in changed.iter().flat_map(|files| files.values()) {
        stdout.write_all(data)?;
    }
    stdout.flush()
}
