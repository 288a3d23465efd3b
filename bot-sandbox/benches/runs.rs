//! Per-run overhead of the bot sandbox: a job is handed to the runner, a
//! worker process starts, loads the cached compiled module, instantiates it
//! and runs the echo bot on a 2 KB mail. Prints p50/p99 of the whole run
//! and of its parts, the overhead (everything but the bot's own run)
//! against the baseline of starting `/bin/cat` on the same input in the
//! same way, and jobs/s with 1 and 2 runs in parallel.
//!
//! Run: `cargo bench -p chatmail-bot-sandbox --bench runs` (BENCH_RUNS=N).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatmail_bot_sandbox::{compile, RunEnd, Runner, WorkerRequest};

mod common;
use common::stats;

fn cat_run(input: &[u8]) -> f64 {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut child = Command::new("/bin/cat").env_clear().current_dir("/").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("cat");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut out).expect("read");
    child.wait().expect("wait");
    let _ = feeder.join();
    started.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wasm = std::fs::read(root.join("../bots/echo/bot.wasm")).expect("bots/echo/bot.wasm");
    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("echo.bin");
    let compiling = Instant::now();
    let module = compile(128 << 20, &wasm).expect("compile");
    std::fs::write(&artifact, module.serialize().expect("serialize")).expect("write");
    println!("compile at install (once): {:.1} ms for {} bytes of wasm", compiling.elapsed().as_secs_f64() * 1000.0, wasm.len());

    let runner = Runner { program: PathBuf::from(env!("CARGO_BIN_EXE_chatmail-bot-worker")), wall_time: Duration::from_secs(30) };
    let body = "x".repeat(2000);
    let mail = format!("From: <alice@example.org>\r\nTo: <bot@example.org>\r\nSubject: bench\r\n\r\n{body}\r\n").into_bytes();
    let request = WorkerRequest {
        artifact,
        memory_limit: 128 << 20,
        output_limit: 1 << 20,
        points: 30_000_000_000,
        cpu_seconds: 31,
        environment: vec![("CHATMAIL_SENDER".into(), "alice@example.org".into()), ("CHATMAIL_EVENT".into(), "message".into())],
        network_isolated: std::env::var_os("BENCH_NETNS_PER_RUN").is_none() && chatmail_bot_sandbox::isolate_network().is_ok(),
        storage: None,
        input_len: None,
        network: false,
        script_len: None,
    };
    // Warm up the page cache and the dynamic loader.
    for _ in 0..10 {
        runner.run(&request, &mail);
        cat_run(&mail);
    }
    let (mut total, mut spawn, mut load, mut instantiate, mut run, mut overhead, mut cat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let result = runner.run(&request, &mail);
        let RunEnd::Reported { report, output, .. } = &result.end else { panic!("{result:?}") };
        // The echo bot answers a message with a reply action carrying its text.
        assert!(output.starts_with(b"{\"action\":\"reply\",\"text\":\"echo: From:"), "{}", String::from_utf8_lossy(output));
        let ms = |micros: u64| micros as f64 / 1000.0;
        total.push(ms(result.wall_micros));
        spawn.push(ms(result.spawn_micros));
        load.push(ms(report.load_micros));
        instantiate.push(ms(report.instantiate_micros));
        run.push(ms(report.run_micros));
        overhead.push(ms(result.wall_micros.saturating_sub(report.run_micros)));
        cat.push(cat_run(&mail));
    }
    println!("{runs} runs of the echo bot on a {} byte mail:", mail.len());
    stats("whole run (job -> finished)", total);
    stats("  worker process start", spawn);
    stats("  load compiled module", load);
    stats("  instantiate", instantiate);
    stats("  bot's own run", run);
    let overhead_p50 = stats("sandbox overhead", overhead);
    let cat_p50 = stats("baseline: /bin/cat process", cat);
    println!("overhead / baseline (p50): {:.2}  (goal: overhead p50 < 5 ms)", overhead_p50 / cat_p50);

    for parallel in [1usize, 2] {
        let jobs = runs;
        let started = Instant::now();
        std::thread::scope(|scope| {
            for worker in 0..parallel {
                let (runner, request, mail) = (&runner, &request, &mail);
                scope.spawn(move || {
                    for _ in (worker..jobs).step_by(parallel) {
                        runner.run(request, mail);
                    }
                });
            }
        });
        println!("jobs/s with {parallel} in parallel: {:.0}", jobs as f64 / started.elapsed().as_secs_f64());
    }
}
