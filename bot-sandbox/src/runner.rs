//! The daemon's side of a run: start a worker process, feed it, wait at
//! most the wall time, kill it after that, and read what it reports.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use crate::fetch::FetchAnswer;

/// Answers a bot's network request (URL → answer and body).
pub type FetchFn = Arc<dyn Fn(&str) -> (FetchAnswer, Vec<u8>) + Send + Sync>;
use std::time::{Duration, Instant};

use crate::worker::{WorkerReport, WorkerRequest};

/// How a worker ended, seen from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The worker reported; the bot's output follows, and its storage if
    /// the bot changed it.
    Reported { report: WorkerReport, output: Vec<u8>, storage: Option<BTreeMap<String, Vec<u8>>> },
    /// Killed after the wall time.
    TimedOut,
    /// The worker died or reported nothing usable: a crash, to retry.
    Crashed(String),
}

/// A finished run with the daemon's own measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub end: RunEnd,
    /// Microseconds from starting the worker to its exit.
    pub wall_micros: u64,
    /// Microseconds until the worker process existed (spawn returned).
    pub spawn_micros: u64,
}

/// Where the worker program is and how long a run may take.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The worker program (`chatmail-bot-worker`).
    pub program: PathBuf,
    pub wall_time: Duration,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Runner {
    /// The worker program installed beside the running program.
    pub fn beside_current(wall_time: Duration) -> std::io::Result<Runner> {
        let exe = std::env::current_exe()?;
        let program = exe.with_file_name("chatmail-bot-worker");
        if !program.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} is missing", program.display())));
        }
        Ok(Runner { program, wall_time })
    }

    /// Runs one worker on `input` (a bot without storage).
    pub fn run(&self, request: &WorkerRequest, input: &[u8]) -> Run {
        self.run_with_storage(request, &BTreeMap::new(), input)
    }

    /// Runs one worker on `input`, with the files of the bot's storage
    /// (those `request.storage` names, in that order).
    pub fn run_with_storage(&self, request: &WorkerRequest, files: &BTreeMap<String, Vec<u8>>, input: &[u8]) -> Run {
        self.run_full(request, files, input, None)
    }

    /// Runs one worker; `fetch` answers the bot's network requests (the
    /// request's `network` says whether it may make any).
    pub fn run_full(&self, request: &WorkerRequest, files: &BTreeMap<String, Vec<u8>>, input: &[u8], fetch: Option<FetchFn>) -> Run {
        self.run_bot(request, None, files, input, fetch)
    }

    /// Runs one worker; `script`: the JavaScript bot's script (the request
    /// names the engine's artifact), `None` for a WebAssembly bot.
    pub fn run_bot(&self, request: &WorkerRequest, script: Option<&[u8]>, files: &BTreeMap<String, Vec<u8>>, input: &[u8], fetch: Option<FetchFn>) -> Run {
        let mut request = request.clone();
        request.script_len = script.map(|s| s.len() as u64);
        let fetch = if request.network { fetch } else { None };
        request.network = fetch.is_some();
        // With network requests the input has a length, so stdin can stay
        // open for the answers.
        request.input_len = fetch.as_ref().map(|_| input.len() as u64);
        let request = &request;
        let started = Instant::now();
        let mut child = match Command::new(&self.program)
            .env_clear()
            .current_dir(Path::new("/"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                return Run { end: RunEnd::Crashed(format!("starting the worker: {e}")), wall_micros: 0, spawn_micros: 0 };
            }
        };
        let spawn_micros = micros(started.elapsed());
        let (Some(stdin), Some(stdout), Some(mut stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Run { end: RunEnd::Crashed("worker pipes missing".into()), wall_micros: 0, spawn_micros };
        };
        let mut header = match serde_json::to_vec(request) {
            Ok(header) => header,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Run { end: RunEnd::Crashed(format!("encoding the request: {e}")), wall_micros: 0, spawn_micros };
            }
        };
        header.push(b'\n');
        if let Some(storage) = &request.storage {
            for (name, _) in &storage.files {
                header.extend_from_slice(files.get(name).map_or(&[][..], Vec::as_slice));
            }
        }
        header.extend_from_slice(script.unwrap_or_default());
        let input = input.to_vec();
        let keep_open = fetch.is_some();
        let shared_stdin = Arc::new(Mutex::new(Some(stdin)));
        // Feeding and reading happen on threads, so a bot that neither reads
        // its input nor exits cannot block the daemon past the wall time.
        let feeder = {
            let shared_stdin = Arc::clone(&shared_stdin);
            std::thread::spawn(move || {
                if let Ok(mut guard) = shared_stdin.lock() {
                    if let Some(stdin) = guard.as_mut() {
                        let _ = stdin.write_all(&header).and_then(|()| stdin.write_all(&input));
                    }
                    if !keep_open {
                        *guard = None;
                    }
                }
            })
        };
        let (sender, receiver) = mpsc::channel();
        let answers = Arc::clone(&shared_stdin);
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            // Network requests come first, one `F <url>` line each.
            let read = loop {
                line.clear();
                if let Err(e) = stdout.read_line(&mut line) {
                    break Err(e.to_string());
                }
                let Some(url) = line.strip_prefix("F ") else { break Ok(()) };
                let Some(fetch) = fetch.as_ref() else { break Err("network request from a bot without network".into()) };
                let (answer, body) = match serde_json::from_str::<String>(url.trim_end()) {
                    Ok(url) => fetch(&url),
                    Err(e) => (FetchAnswer { status: 0, error: Some(format!("bad request: {e}")), len: 0 }, Vec::new()),
                };
                let mut frame = serde_json::to_vec(&answer).unwrap_or_default();
                frame.push(b'\n');
                frame.extend_from_slice(&body);
                let written = answers.lock().map_err(|_| "stdin lock".to_owned()).and_then(|mut guard| match guard.as_mut() {
                    Some(stdin) => stdin.write_all(&frame).and_then(|()| stdin.flush()).map_err(|e| e.to_string()),
                    None => Err("stdin closed".into()),
                });
                if let Err(e) = written {
                    break Err(format!("answering a network request: {e}"));
                }
            };
            let parsed = read.and_then(|()| {
                serde_json::from_str::<WorkerReport>(&line).map_err(|e| format!("unreadable report {:?}: {e}", line.trim_end()))
            });
            let result = parsed.and_then(|report| {
                let mut output = Vec::new();
                (&mut stdout).take(report.stdout_len).read_to_end(&mut output).map_err(|e| e.to_string())?;
                let storage = match &report.storage {
                    None => None,
                    Some(files) => {
                        let mut read = BTreeMap::new();
                        for (name, size) in files {
                            let mut data = Vec::new();
                            (&mut stdout).take(*size).read_to_end(&mut data).map_err(|e| e.to_string())?;
                            if data.len() as u64 != *size {
                                return Err(format!("storage file {name} cut short"));
                            }
                            read.insert(name.clone(), data);
                        }
                        Some(read)
                    }
                };
                Ok((report, output, storage))
            });
            let _ = sender.send(result);
        });
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let end = match receiver.recv_timeout(self.wall_time) {
            Ok(Ok((report, output, storage))) => RunEnd::Reported { report, output, storage },
            Ok(Err(problem)) => RunEnd::Crashed(problem),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                RunEnd::TimedOut
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => RunEnd::Crashed("worker reader ended".into()),
        };
        if let Ok(mut guard) = shared_stdin.lock() {
            *guard = None;
        }
        let status = child.wait();
        let wall_micros = micros(started.elapsed());
        let _ = feeder.join();
        let _ = reader.join();
        let worker_errors = errors.join().unwrap_or_default();
        let end = match end {
            RunEnd::Crashed(problem) => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let detail = worker_errors.trim();
                RunEnd::Crashed(if detail.is_empty() { format!("{problem} ({status})") } else { format!("{problem} ({status}): {detail}") })
            }
            other => other,
        };
        Run { end, wall_micros, spawn_micros }
    }
}
