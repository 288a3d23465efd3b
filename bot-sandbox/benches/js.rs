//! A JavaScript bot's run against a Rust bot's, in the same run: the JS
//! echo bot (bots/js-echo/bot.js on the relay's QuickJS engine) and the
//! Rust echo bot (bots/echo/bot.wasm), each answering a message, through
//! the runner and a real worker process as the daemon runs them. Prints
//! p50/p99 of the whole run for both, the ratio, the engine's size and its
//! compile time at install (once per relay configuration).
//!
//! Run: `cargo bench -p chatmail-bot-sandbox --bench js` (BENCH_RUNS=N).
//! Goal: JS p50 < 10 ms, engine start included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chatmail_bot_sandbox::{compile, RunEnd, Runner, WorkerRequest};

mod common;
use common::stats;

const MEMORY_LIMIT: u64 = 128 << 20;

fn request(artifact: PathBuf, network_isolated: bool) -> WorkerRequest {
    WorkerRequest {
        artifact,
        memory_limit: MEMORY_LIMIT,
        output_limit: 1 << 20,
        points: 30_000_000_000,
        cpu_seconds: 31,
        environment: vec![
            ("CHATMAIL_EVENT".into(), "message".into()),
            ("CHATMAIL_SENDER".into(), "alice@example.org".into()),
            ("CHATMAIL_CHAT".into(), "single".into()),
        ],
        network_isolated,
        storage: None,
        input_len: None,
        network: false,
        script_len: None,
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tempdir");
    let network_isolated = chatmail_bot_sandbox::isolate_network().is_ok();

    let wasm = std::fs::read(root.join("bots/echo/bot.wasm")).expect("bots/echo/bot.wasm");
    let rust_artifact = dir.path().join("echo.bin");
    std::fs::write(&rust_artifact, compile(MEMORY_LIMIT, &wasm).expect("compile").serialize().expect("serialize")).expect("write");

    let compiling = Instant::now();
    let engine = chatmail_bot_sandbox::engine_artifact(dir.path(), MEMORY_LIMIT).expect("the JavaScript engine compiles");
    println!(
        "JavaScript engine: {} KiB of wasm, compiled at the first install in {:.0} ms (once per relay configuration)",
        chatmail_bot_sandbox::JS_ENGINE.len() / 1024,
        compiling.elapsed().as_secs_f64() * 1000.0
    );
    let script = std::fs::read_to_string(root.join("bots/js-echo/bot.js")).expect("bots/js-echo/bot.js");

    let runner = Runner { program: PathBuf::from(env!("CARGO_BIN_EXE_chatmail-bot-worker")), wall_time: Duration::from_secs(30) };
    let text = "hello, bot ".repeat(20);
    let rust = request(rust_artifact, network_isolated);
    let js = request(engine, network_isolated);
    let files = BTreeMap::new();
    // Whole run, and the worker's parts: loading the compiled module,
    // instantiating it, running it.
    let once = |request: &WorkerRequest, script: Option<&[u8]>| {
        let run = runner.run_bot(request, script, &files, text.as_bytes(), None);
        let RunEnd::Reported { report, output, .. } = &run.end else { panic!("{run:?}") };
        let answer = String::from_utf8_lossy(output);
        assert!(answer.contains("\"echo: hello, bot"), "{report:?} {answer}");
        let ms = |micros: u64| micros as f64 / 1000.0;
        [ms(run.wall_micros), ms(report.load_micros), ms(report.instantiate_micros), ms(report.run_micros)]
    };
    for _ in 0..10 {
        once(&rust, None);
        once(&js, Some(script.as_bytes()));
    }
    // Interleaved, so both see the same machine.
    let (mut rust_ms, mut js_ms) = (vec![Vec::new(); 4], vec![Vec::new(); 4]);
    for _ in 0..runs {
        for (i, v) in once(&rust, None).into_iter().enumerate() {
            rust_ms[i].push(v);
        }
        for (i, v) in once(&js, Some(script.as_bytes())).into_iter().enumerate() {
            js_ms[i].push(v);
        }
    }
    println!("{runs} runs each, answering a {} byte message:", text.len());
    let parts = ["  load compiled module", "  instantiate", "  the bot's own run"];
    let rust_p50 = stats("Rust echo bot (bot.wasm)", rust_ms[0].clone());
    for (i, name) in parts.iter().enumerate() {
        stats(name, rust_ms[i + 1].clone());
    }
    let js_p50 = stats("JS echo bot (bot.js on QuickJS)", js_ms[0].clone());
    for (i, name) in parts.iter().enumerate() {
        stats(name, js_ms[i + 1].clone());
    }
    println!("JS / Rust (p50): {:.2}   JS p50 {:.2} ms (goal < 10 ms)", js_p50 / rust_p50, js_p50);
}
