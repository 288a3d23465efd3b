//! JavaScript bots: the relay's engine (bots/js-engine/engine.wasm) runs
//! scripts in a real worker process under the same limits as any bot.
//! Friendly scripts produce the action lines the relay checks; hostile
//! ones end within their limit with a clear message, and the worker (so
//! the daemon) is unharmed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chatmail_bot_sandbox::{Outcome, RunEnd, Runner, StorageRequest, WorkerReport, WorkerRequest};

/// Enough for QuickJS and a little more; bombs meet the cap quickly.
const MEMORY_LIMIT: u64 = 64 << 20;
const OUTPUT_LIMIT: u64 = 100_000;
/// About a tenth of a CPU second.
const POINTS: u64 = 100_000_000;

/// The engine, compiled once for this test program (a debug build of the
/// compiler takes a while).
fn engine() -> &'static Path {
    static ARTIFACT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ARTIFACT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = chatmail_bot_sandbox::engine_artifact(dir.path(), MEMORY_LIMIT).expect("the engine compiles");
            (dir, path)
        })
        .1
}

fn runner() -> Runner {
    Runner { program: PathBuf::from(env!("CARGO_BIN_EXE_chatmail-bot-worker")), wall_time: Duration::from_secs(30) }
}

fn request(event: &str) -> WorkerRequest {
    WorkerRequest {
        artifact: engine().to_path_buf(),
        memory_limit: MEMORY_LIMIT,
        output_limit: OUTPUT_LIMIT,
        points: POINTS,
        cpu_seconds: 10,
        environment: vec![
            ("CHATMAIL_EVENT".into(), event.into()),
            ("CHATMAIL_SENDER".into(), "alice@example.org".into()),
            ("CHATMAIL_SENDER_VERIFIED".into(), "1".into()),
            ("CHATMAIL_CHAT".into(), "single".into()),
            ("CHATMAIL_MESSAGE_ID".into(), "<m1@example.org>".into()),
        ],
        network_isolated: false,
        storage: None,
        input_len: None,
        network: false,
        script_len: None,
    }
}

/// Runs `script` on `input` as a message; the report and stdout.
fn run(script: &str, input: &str) -> (WorkerReport, String) {
    run_with(&request("message"), script, input, &BTreeMap::new()).0
}

type Files = BTreeMap<String, Vec<u8>>;

fn run_with(request: &WorkerRequest, script: &str, input: &str, files: &Files) -> ((WorkerReport, String), Option<Files>) {
    let run = runner().run_bot(request, Some(script.as_bytes()), files, input.as_bytes(), None);
    match run.end {
        RunEnd::Reported { report, output, storage } => ((report, String::from_utf8_lossy(&output).into_owned()), storage),
        other => panic!("script {script:?}: {other:?}"),
    }
}

#[test]
fn the_api_produces_action_lines_the_relay_accepts() {
    let script = r#"
        console.log("seen", chatmail.sender, { verified: chatmail.verified });
        if (chatmail.event === "message" && chatmail.chat === "single") {
            chatmail.reply("echo: " + chatmail.text.trim());
            // Ordinary recursion is fine (deep recursion traps, see below).
            function depth(n) { return n === 0 ? 0 : depth(n - 1) + 1; }
            chatmail.send("depth " + depth(2000), "sender");
            chatmail.delete(chatmail.messageId);
        }
        // Promise callbacks run after the script.
        Promise.resolve().then(() => chatmail.accept());
    "#;
    let (report, output) = run(script, "hello \"bot\"\r\nline two\r\n");
    assert_eq!(report.outcome, Outcome::Exited(0), "{report:?}");
    let (actions, refused) = chatmail_bot_sandbox::parse_actions(output.as_bytes());
    assert!(refused.is_empty(), "{refused:?} in {output}");
    assert_eq!(actions.len(), 4, "{output}");
    assert!(output.lines().next().is_some_and(|l| l.contains(r#""text":"echo: hello \"bot\"\nline two""#)), "{output}");
    assert!(output.contains(r#""text":"depth 2000","to":"sender""#), "{output}");
    // console.log is the bot's log, never an action.
    assert!(report.stderr.contains("seen alice@example.org"), "{report:?}");
    assert!(!output.contains("seen"), "{output}");
}

#[test]
fn a_syntax_error_is_found_at_install_with_its_line() {
    let engine = engine();
    let problems = chatmail_bot_sandbox::check_script(&runner(), engine, MEMORY_LIMIT, false, "let a = 1;\nlet b = (;\n").expect("checked");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("bot.js:2:") && problems[0].contains("SyntaxError"), "{problems:?}");
    let fine = chatmail_bot_sandbox::check_script(&runner(), engine, MEMORY_LIMIT, false, "while (true) {}\n").expect("checked");
    assert!(fine.is_empty(), "a script is only parsed at install, not run: {fine:?}");
}

#[test]
fn hostile_scripts_end_within_their_limits() {
    type Check = fn(&WorkerReport, &str) -> bool;
    let table: &[(&str, &str, Check)] = &[
        ("endless loop", "while (true) {}", |r, _| r.outcome == Outcome::OutOfCpu && r.points_used == POINTS),
        (
            "memory bomb",
            "const a = []; while (true) a.push(new Array(100000).fill(1));",
            |r, _| r.outcome == Outcome::Exited(1) && r.stderr.contains("out of memory") || matches!(r.outcome, Outcome::Trapped(_) | Outcome::OutOfCpu),
        ),
        (
            "huge string",
            "let s = 'x'; while (true) s = s + s;",
            |r, _| r.outcome == Outcome::Exited(1) && r.stderr.contains("bot.js") || matches!(r.outcome, Outcome::Trapped(_) | Outcome::OutOfCpu),
        ),
        ("output flood", "while (true) chatmail.reply('x'.repeat(1000));", |r, _| {
            matches!(r.outcome, Outcome::OutputLimit | Outcome::OutOfCpu | Outcome::Exited(1))
        }),
        ("log flood", "while (true) console.log('x'.repeat(1000));", |r, out| {
            r.outcome == Outcome::OutOfCpu && out.is_empty() && r.stderr.len() <= 4096
        }),
        ("deep recursion", "function f(n) { return f(n + 1) + 1; } f(0);", |r, _| {
            r.outcome == Outcome::Exited(1) && r.stderr.contains("RangeError") && r.stderr.contains("bot.js:1:")
        }),
        ("deep recursion, caught", "function f(n) { return f(n + 1) + 1; } try { f(0); } catch (e) { chatmail.reply(e.name); }", |r, out| {
            r.outcome == Outcome::Exited(0) && out.contains(r#""text":"RangeError""#)
        }),
        ("an exception", "\n\nnull.x;", |r, _| r.outcome == Outcome::Exited(1) && r.stderr.contains("bot.js:3:") && r.stderr.contains("TypeError")),
        ("wrong types", "chatmail.reply(42);", |r, out| {
            r.outcome == Outcome::Exited(1) && r.stderr.contains("TypeError") && r.stderr.contains("chatmail.reply") && out.is_empty()
        }),
        ("monkey-patching", "chatmail.reply = () => {}; chatmail.reply('still the real one');", |r, out| {
            // The API object is frozen: the assignment fails (strict) or is ignored.
            (r.outcome == Outcome::Exited(1) && r.stderr.contains("TypeError")) || (r.outcome == Outcome::Exited(0) && out.contains("still the real one"))
        }),
        ("no storage asked for", "chatmail.storage.set('k', 'v');", |r, _| {
            r.outcome == Outcome::Exited(1) && r.stderr.contains("storage")
        }),
    ];
    for (name, script, check) in table {
        let (report, output) = run(script, "hi");
        assert!(check(&report, &output), "{name}: {report:?} output {output:?}");
        assert!(report.points_used <= POINTS, "{name}: {report:?}");
    }
}

#[test]
fn storage_is_kept_between_runs() {
    let counter = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots/js-counter/bot.js")).expect("bots/js-counter/bot.js");
    let mut request = request("message");
    let mut files = Files::new();
    for n in 1..=3 {
        request.storage = Some(StorageRequest { quota: 1024, files: files.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect() });
        let ((report, output), changed) = run_with(&request, &counter, "count me", &files);
        assert_eq!(report.outcome, Outcome::Exited(0), "{report:?}");
        assert!(output.contains(&format!("message number {n}")), "run {n}: {output}");
        files = changed.expect("the counter changed its storage");
    }
}

#[test]
fn the_example_bots_parse() {
    let engine = engine();
    for bot in ["js-echo", "js-counter", "js-reminder"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bots").join(bot).join("bot.js");
        let script = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let problems = chatmail_bot_sandbox::check_script(&runner(), engine, MEMORY_LIMIT, false, &script).expect("checked");
        assert!(problems.is_empty(), "{bot}: {problems:?}");
        let toml = std::fs::read_to_string(path.with_file_name("bot.toml")).expect("bot.toml");
        chatmail_bot_sandbox::unpack(&chatmail_bot_sandbox::build_package("b@x.y", "b@x.y", &chatmail_bot_sandbox::Code::Script(script), &toml), 1 << 20)
            .unwrap_or_else(|p| panic!("{bot}: {p:?}"));
    }
}
