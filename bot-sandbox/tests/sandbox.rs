//! Bots that behave and bots that misbehave, each run in a real worker
//! process (this package's `chatmail-bot-worker`) under small limits: each
//! is stopped within its limit and the outcome is the right one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chatmail_bot_sandbox::{compile, Outcome, RunEnd, Runner, WorkerRequest};

const MEMORY_LIMIT: u64 = 8 << 20;
const OUTPUT_LIMIT: u64 = 100_000;
const POINTS: u64 = 100_000_000;

fn bot(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bots").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compiles `wasm` and stores its artifact in `dir`.
fn artifact(dir: &Path, name: &str, wasm: &[u8]) -> PathBuf {
    let module = compile(MEMORY_LIMIT, wasm).unwrap_or_else(|p| panic!("{name}: {p:?}"));
    let path = dir.join(format!("{name}.bin"));
    std::fs::write(&path, module.serialize().expect("serialize")).expect("write artifact");
    path
}

fn runner(wall: Duration) -> Runner {
    Runner { program: PathBuf::from(env!("CARGO_BIN_EXE_chatmail-bot-worker")), wall_time: wall }
}

fn request(artifact: PathBuf, points: u64) -> WorkerRequest {
    WorkerRequest {
        artifact,
        memory_limit: MEMORY_LIMIT,
        output_limit: OUTPUT_LIMIT,
        points,
        cpu_seconds: 10,
        environment: vec![("CHATMAIL_BOT".into(), "bot@x".into()), ("CHATMAIL_SENDER".into(), "a@x".into()), ("CHATMAIL_EVENT".into(), "message".into())],
        network_isolated: false,
        storage: None,
        input_len: None,
        network: false,
        script_len: None,
    }
}

#[test]
fn each_bot_ends_the_right_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = runner(Duration::from_secs(20));
    type Check = fn(&Outcome, &[u8]) -> bool;
    let table: &[(&str, &[u8], Check)] = &[
        ("echo", b"hello, bot\n", |o, out| *o == Outcome::Exited(0) && out == b"hello, bot\n"),
        ("exit", b"", |o, out| *o == Outcome::Exited(3) && out == b"bye\n"),
        ("trap", b"", |o, _| matches!(o, Outcome::Trapped(m) if m.contains("unreachable"))),
        ("loop", b"", |o, _| *o == Outcome::OutOfCpu),
        ("memory-bomb", b"", |o, _| matches!(o, Outcome::Trapped(m) if m.contains("unreachable"))),
        ("flood", b"", |o, out| *o == Outcome::OutputLimit && out.len() as u64 <= OUTPUT_LIMIT),
        // No network for this run: the host refuses without asking anyone.
        ("fetch", b"", |o, out| *o == Outcome::Exited(0) && out == b"refused\n"),
        // path_open and sock_accept: ENOTCAPABLE (76); fd 5: EBADF (8);
        // exactly the three variables the daemon sets.
        ("escape", b"", |o, out| *o == Outcome::Exited(0) && out == b"76 76 8 3\n"),
    ];
    for (name, input, check) in table {
        let path = artifact(dir.path(), name, &bot(name));
        let run = runner.run(&request(path, POINTS), input);
        match &run.end {
            RunEnd::Reported { report, output, .. } => {
                assert!(check(&report.outcome, output), "{name}: {report:?} output {:?}", String::from_utf8_lossy(output));
                assert!(report.points_used <= POINTS, "{name}: {report:?}");
                assert!(report.unprotected.is_empty(), "{name}: protections missing: {:?}", report.unprotected);
                if report.outcome == Outcome::OutOfCpu {
                    assert_eq!(report.points_used, POINTS);
                }
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn memory_over_the_limit_at_start_fails_to_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = artifact(dir.path(), "big-memory", &bot("big-memory"));
    let run = runner(Duration::from_secs(20)).run(&request(path, POINTS), b"");
    let RunEnd::Reported { report, .. } = &run.end else { panic!("{run:?}") };
    assert!(matches!(&report.outcome, Outcome::LoadFailed(m) if m.contains("the limit is 8388608 bytes")), "{report:?}");
}

#[test]
fn forbidden_imports_and_broken_modules_are_refused_at_install() {
    let problems = compile(MEMORY_LIMIT, &bot("forbidden-import")).expect_err("refused");
    assert!(problems.iter().any(|p| p.contains("system")), "{problems:?}");
    let problems = compile(MEMORY_LIMIT, b"\0asm\x01\0\0\0\x01\xff").expect_err("refused");
    assert!(problems[0].contains("not a valid WebAssembly module"), "{problems:?}");
}

#[test]
fn the_wall_time_kills_a_bot_metering_would_let_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = artifact(dir.path(), "loop", &bot("loop"));
    let started = Instant::now();
    let run = runner(Duration::from_secs(1)).run(&request(path, u64::MAX / 2), b"");
    assert_eq!(run.end, RunEnd::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_missing_artifact_is_a_crash_not_an_outcome() {
    let run = runner(Duration::from_secs(5)).run(&request(PathBuf::from("/nonexistent/module.bin"), POINTS), b"");
    assert!(matches!(&run.end, RunEnd::Crashed(m) if m.contains("/nonexistent/module.bin")), "{run:?}");
}

/// The example bot in Rust (bots/echo, built for wasm32-wasip1 by
/// `make bots`): standard library startup, environment, stdin, stdout.
#[test]
fn the_rust_echo_bot_answers_with_the_text() {
    let wasm_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots/echo/bot.wasm");
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("{}: {e} (run `make bots`)", wasm_path.display()));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = artifact(dir.path(), "echo-rust", &wasm);
    let mut request = request(path, POINTS);
    request.environment = vec![("CHATMAIL_EVENT".into(), "message".into()), ("CHATMAIL_CHAT".into(), "Dx7vQ2fG9kLm".into())];
    let run = runner(Duration::from_secs(20)).run(&request, "hello, \"bot\"\r\nsecond line\r\n".as_bytes());
    let RunEnd::Reported { report, output, .. } = &run.end else { panic!("{run:?}") };
    assert_eq!(report.outcome, Outcome::Exited(0), "{report:?}");
    assert_eq!(String::from_utf8_lossy(output), "{\"action\":\"accept\"}\n{\"action\":\"reply\",\"text\":\"echo: hello, \\\"bot\\\"\\nsecond line\"}\n");
    let (actions, refused) = chatmail_bot_sandbox::parse_actions(output);
    assert!(refused.is_empty(), "{refused:?}");
    assert!(matches!(&actions[1], chatmail_bot_sandbox::Action::Send { text, .. } if text == "echo: hello, \"bot\"\nsecond line"), "{actions:?}");
}

/// The counter bot (bots/counter, Rust, `std::fs` on `/data`): its storage
/// goes in with each run and comes back changed, as the daemon keeps it;
/// the quota holds.
#[test]
fn storage_survives_between_runs_within_its_quota() {
    use std::collections::BTreeMap;
    let wasm_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots/counter/bot.wasm");
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("{}: {e} (run `make bots`)", wasm_path.display()));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = artifact(dir.path(), "counter", &wasm);
    let runner = runner(Duration::from_secs(20));
    let run = |files: &BTreeMap<String, Vec<u8>>, quota: u64| {
        let mut request = request(path.clone(), POINTS);
        request.storage = Some(chatmail_bot_sandbox::StorageRequest {
            quota,
            files: files.iter().map(|(n, d)| (n.clone(), d.len() as u64)).collect(),
        });
        match runner.run_with_storage(&request, files, b"mail").end {
            RunEnd::Reported { report, output, storage } => (report, String::from_utf8_lossy(&output).into_owned(), storage),
            other => panic!("{other:?}"),
        }
    };
    let mut files = BTreeMap::new();
    for expected in 1..=3 {
        let (report, output, storage) = run(&files, 1024);
        assert_eq!(report.outcome, Outcome::Exited(0), "{report:?}");
        assert_eq!(output, format!("{{\"action\":\"reply\",\"text\":\"message number {expected}\"}}\n"));
        files = storage.expect("storage changed");
        assert_eq!(files.get("count").map(Vec::as_slice), Some(expected.to_string().as_bytes()));
    }
    // "10" does not fit in a 1-byte quota: the bot sees the error.
    files.insert("count".into(), b"9".to_vec());
    let (_, output, storage) = run(&files, 1);
    assert!(output.contains("message number 10 (the count could not be stored)"), "{output}");
    assert!(storage.is_none_or(|f| f.get("count").is_none_or(|c| c.len() <= 1)), "quota kept");
}
