//! The JavaScript engine of chatmail-rs bots: QuickJS (through rquickjs),
//! compiled to `wasm32-wasip1`, run by the relay's bot sandbox like any
//! bot, under the same limits. It asks the host for its bot's script
//! (`chatmail.script`), builds the `chatmail` API (src/prelude.js) and runs
//! the script once for the mail at hand.
//!
//! Contract with the sandbox (bot-sandbox/src/js.rs):
//! - `CHATMAIL_EVENT=check`: only parse the script; a syntax error is one
//!   line on stderr, `bot.js:LINE:COL: SyntaxError: MESSAGE`, exit code 1.
//! - otherwise: run it; the actions it made are printed to stdout as JSON
//!   lines. An uncaught exception is reported on stderr as
//!   `bot.js:LINE:COL: Uncaught NAME: MESSAGE` followed by the stack, exit
//!   code 1 (the sandbox carries out no action of a failed run).
//! - `console.log` and friends write to stderr, the bot's log.

use std::cell::RefCell;
use std::ffi::CString;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use rquickjs::context::EvalOptions;
use rquickjs::{qjs, Context, Ctx, Error, Exception, Function, Object, Runtime, Value};

/// The bot's storage, preopened by the sandbox when bot.toml asks for it.
const STORAGE_DIR: &str = "/data";
/// Largest response body the host hands over (its own limit).
const MAX_FETCH_BODY: usize = 1 << 20;
/// QuickJS's stack limit (kept on under WASI by wasi-stack.h): deep
/// recursion ends as a RangeError the script can catch, not a trap. The
/// module's stack is 4 MiB (.cargo/config.toml); the sandbox runs compiled
/// code on an 8 MiB native stack, of which a JavaScript call uses a few
/// times what it uses here.
const MAX_STACK: usize = 1 << 20;
const PRELUDE: &str = include_str!("prelude.js");
const FILE_NAME: &str = "bot.js";

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "chatmail")]
    extern "C" {
        fn script(buf: *mut u8, buf_len: usize) -> i32;
        fn fetch(url: *const u8, url_len: usize, buf: *mut u8, buf_len: usize, body_len: *mut u32) -> i32;
    }

    /// The bot's script, from the sandbox.
    pub fn bot_script() -> Option<Vec<u8>> {
        // SAFETY: a null buffer of length 0 is never written to.
        let len = unsafe { script(std::ptr::null_mut(), 0) };
        let len = usize::try_from(len).ok()?;
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` is valid for `len` bytes, which the host writes at most.
        let again = unsafe { script(buf.as_mut_ptr(), len) };
        (usize::try_from(again).ok() == Some(len)).then_some(buf)
    }

    /// One HTTPS GET through the host: status and body, or why not.
    pub fn get(url: &str, max_body: usize) -> Result<(u16, Vec<u8>), i32> {
        let mut body = vec![0u8; max_body];
        let mut body_len: u32 = 0;
        // SAFETY: every pointer is valid for the length passed with it; the
        // host writes at most `max_body` bytes and one u32.
        let status = unsafe { fetch(url.as_ptr(), url.len(), body.as_mut_ptr(), body.len(), &mut body_len) };
        if status < 0 {
            return Err(status);
        }
        body.truncate((body_len as usize).min(max_body));
        Ok((u16::try_from(status).unwrap_or(0), body))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    //! Outside the sandbox (a native build, for trying the engine out):
    //! the script comes from the file named by `CHATMAIL_SCRIPT`; no network.
    pub fn bot_script() -> Option<Vec<u8>> {
        std::fs::read(std::env::var_os("CHATMAIL_SCRIPT")?).ok()
    }

    pub fn get(_url: &str, _max_body: usize) -> Result<(u16, Vec<u8>), i32> {
        Err(-1)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn stderr(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
}

/// `bot.js:LINE:COL` (or `bot.js:LINE`) of the first frame of `stack` in
/// the bot's script.
fn position(stack: &str) -> Option<String> {
    let start = stack.find("bot.js:")?;
    let rest = &stack[start..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':' || c == '_' || c == '-')).unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches(':').to_owned())
}

/// The pending exception as `(position, "NAME: MESSAGE", stack)`.
fn describe(ctx: &Ctx<'_>) -> (String, String, String) {
    let value = ctx.catch();
    let Some(object) = value.as_object() else {
        let shown = value.as_string().and_then(|s| s.to_string().ok()).unwrap_or_else(|| format!("{value:?}"));
        return (FILE_NAME.to_owned(), format!("thrown value: {shown}"), String::new());
    };
    let get = |name: &str| object.get::<_, Option<String>>(name).ok().flatten().unwrap_or_default();
    let (name, message, stack) = (get("name"), get("message"), get("stack"));
    let name = if name.is_empty() { "Error".to_owned() } else { name };
    // QuickJS reports a syntax error's place in fileName/lineNumber.
    let line = object.get::<_, Option<i32>>("lineNumber").ok().flatten();
    let column = object.get::<_, Option<i32>>("columnNumber").ok().flatten();
    let position = match (position(&stack), line, column) {
        (Some(p), _, _) => p,
        (None, Some(l), Some(c)) => format!("{FILE_NAME}:{l}:{c}"),
        (None, Some(l), None) => format!("{FILE_NAME}:{l}"),
        _ => FILE_NAME.to_owned(),
    };
    (position, format!("{name}: {message}"), stack)
}

/// Parses `source` as a global script without running it.
fn parse_only(ctx: &Ctx<'_>, source: &str) -> Result<(), Error> {
    let code = CString::new(source).map_err(|_| Exception::throw_syntax(ctx, "the script contains a NUL character"))?;
    let name = CString::new(FILE_NAME).map_err(|_| Exception::throw_internal(ctx, "file name"))?;
    let flags = (qjs::JS_EVAL_TYPE_GLOBAL | qjs::JS_EVAL_FLAG_COMPILE_ONLY) as i32;
    // SAFETY: `ctx` is a live context of this thread; `code` is
    // NUL-terminated at `source.len()` as JS_Eval requires, and both
    // strings outlive the call. The returned value is owned and handed to
    // `Value::from_raw`, which frees it when dropped.
    let compiled = unsafe { qjs::JS_Eval(ctx.as_raw().as_ptr(), code.as_ptr(), source.len() as _, name.as_ptr(), flags) };
    // SAFETY: `compiled` was just returned by JS_Eval for this context.
    let value = unsafe { Value::from_raw(ctx.clone(), compiled) };
    if value.is_exception() {
        return Err(Error::Exception);
    }
    Ok(())
}

fn storage_path(key: &str) -> std::path::PathBuf {
    Path::new(STORAGE_DIR).join(key)
}

fn no_storage(ctx: &Ctx<'_>) -> Error {
    Exception::throw_message(ctx, "this bot has no storage: add storage = \"1K\" (or more) to bot.toml")
}

fn has_storage() -> bool {
    std::fs::metadata(STORAGE_DIR).is_ok_and(|m| m.is_dir())
}

/// The native side of the API, for the prelude.
fn host_object<'js>(ctx: &Ctx<'js>, actions: &Rc<RefCell<Vec<String>>>) -> rquickjs::Result<Object<'js>> {
    let host = Object::new(ctx.clone())?;
    let collected = Rc::clone(actions);
    host.set("emit", Function::new(ctx.clone(), move |line: String| collected.borrow_mut().push(line))?)?;
    host.set("log", Function::new(ctx.clone(), |line: String| stderr(&line))?)?;
    host.set("base64", Function::new(ctx.clone(), |text: String| base64(text.as_bytes()))?)?;
    host.set(
        "storageGet",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, key: String| -> rquickjs::Result<Option<String>> {
            if !has_storage() {
                return Err(no_storage(&ctx));
            }
            match std::fs::read(storage_path(&key)) {
                Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Exception::throw_message(&ctx, &format!("chatmail.storage.get({key}): {e}"))),
            }
        })?,
    )?;
    host.set(
        "storageSet",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, key: String, value: String| -> rquickjs::Result<()> {
            if !has_storage() {
                return Err(no_storage(&ctx));
            }
            std::fs::write(storage_path(&key), value).map_err(|e| Exception::throw_message(&ctx, &format!("chatmail.storage.set({key}): {e}")))
        })?,
    )?;
    host.set(
        "storageRemove",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, key: String| -> rquickjs::Result<()> {
            if !has_storage() {
                return Err(no_storage(&ctx));
            }
            match std::fs::remove_file(storage_path(&key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Exception::throw_message(&ctx, &format!("chatmail.storage.remove({key}): {e}")))
                }
                _ => Ok(()),
            }
        })?,
    )?;
    host.set(
        "storageKeys",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| -> rquickjs::Result<Vec<String>> {
            if !has_storage() {
                return Err(no_storage(&ctx));
            }
            let entries = std::fs::read_dir(STORAGE_DIR).map_err(|e| Exception::throw_message(&ctx, &format!("chatmail.storage.keys(): {e}")))?;
            let mut keys: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
            keys.sort();
            Ok(keys)
        })?,
    )?;
    host.set(
        "fetch",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, url: String| -> rquickjs::Result<Object<'js>> {
            match host::get(&url, MAX_FETCH_BODY) {
                Ok((status, body)) => {
                    let answer = Object::new(ctx.clone())?;
                    answer.set("status", status)?;
                    answer.set("body", String::from_utf8_lossy(&body).into_owned())?;
                    Ok(answer)
                }
                Err(-1) => Err(Exception::throw_message(&ctx, &format!("chatmail.fetch: {url} refused (not an origin bot.toml's network and the relay allow, or too many requests)"))),
                Err(_) => Err(Exception::throw_message(&ctx, &format!("chatmail.fetch: {url} failed (see the bot's log)"))),
            }
        })?,
    )?;
    Ok(host)
}

/// What the script sees of the mail, as an object for the prelude.
fn input_object<'js>(ctx: &Ctx<'js>, event: &str, text: String) -> rquickjs::Result<Object<'js>> {
    let input = Object::new(ctx.clone())?;
    input.set("event", event)?;
    input.set("text", text)?;
    for (key, var) in [
        ("sender", "CHATMAIL_SENDER"),
        ("chat", "CHATMAIL_CHAT"),
        ("chatName", "CHATMAIL_CHAT_NAME"),
        ("messageId", "CHATMAIL_MESSAGE_ID"),
        ("inReplyTo", "CHATMAIL_IN_REPLY_TO"),
        ("webxdcInstance", "CHATMAIL_WEBXDC_INSTANCE"),
    ] {
        input.set(key, env(var))?;
    }
    input.set("verified", env("CHATMAIL_SENDER_VERIFIED").as_deref() == Some("1"))?;
    match env("CHATMAIL_ATTACHMENT") {
        Some(name) => {
            let attachment = Object::new(ctx.clone())?;
            attachment.set("name", name)?;
            attachment.set("size", env("CHATMAIL_ATTACHMENT_SIZE").and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0))?;
            input.set("attachment", attachment)?;
        }
        None => input.set("attachment", Value::new_null(ctx.clone()))?,
    }
    Ok(input)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn main() {
    let event = env("CHATMAIL_EVENT").unwrap_or_default();
    let Some(script) = host::bot_script() else {
        stderr("bot.js: the relay handed over no script");
        std::process::exit(2);
    };
    let source = String::from_utf8_lossy(&script).into_owned();
    let code = run(&event, &source);
    std::process::exit(code);
}

/// A global script named `file_name` (positions in errors).
fn eval_options(strict: bool, file_name: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = strict;
    options.filename = Some(file_name.into());
    options
}

/// Runs the pending promise jobs; the exit code.
fn run_jobs(runtime: &Runtime) -> i32 {
    loop {
        match runtime.execute_pending_job() {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(failed) => {
                failed.0.with(|ctx| {
                    let (position, what, stack) = describe(&ctx);
                    stderr(&format!("{position}: Uncaught (in a promise job) {what}"));
                    if !stack.trim().is_empty() {
                        stderr(stack.trim_end());
                    }
                });
                return 1;
            }
        }
    }
}

/// Runs (or, for `check`, parses) `source`; the exit code.
fn run(event: &str, source: &str) -> i32 {
    let Ok(runtime) = Runtime::new() else {
        stderr("bot.js: the JavaScript engine could not start (out of memory)");
        return 2;
    };
    runtime.set_max_stack_size(MAX_STACK);
    let Ok(context) = Context::full(&runtime) else {
        stderr("bot.js: the JavaScript engine could not start (out of memory)");
        return 2;
    };
    let actions = Rc::new(RefCell::new(Vec::new()));
    let code = context.with(|ctx| {
        if event == "check" {
            return match parse_only(&ctx, source) {
                Ok(()) => 0,
                Err(_) => {
                    let (position, what, _) = describe(&ctx);
                    stderr(&format!("{position}: {what}"));
                    1
                }
            };
        }
        let mut text = String::new();
        let _ = std::io::stdin().read_to_string(&mut text);
        let text = text.replace("\r\n", "\n");
        let setup = (|| -> rquickjs::Result<()> {
            let make_api: Function = ctx.eval_with_options(PRELUDE, eval_options(true, "prelude.js"))?;
            make_api.call::<_, ()>((host_object(&ctx, &actions)?, input_object(&ctx, event, text)?))
        })();
        if setup.is_err() {
            let (position, what, _) = describe(&ctx);
            stderr(&format!("the chatmail API could not be set up ({position}: {what})"));
            return 2;
        }
        match ctx.eval_with_options::<(), _>(source, eval_options(false, FILE_NAME)) {
            Ok(()) => 0,
            Err(_) => {
                let (position, what, stack) = describe(&ctx);
                stderr(&format!("{position}: Uncaught {what}"));
                if !stack.trim().is_empty() {
                    stderr(stack.trim_end());
                }
                1
            }
        }
    });
    // Promise callbacks (async functions, .then) run after the script, in
    // order; one that throws ends the run as an uncaught exception.
    let code = if code == 0 && event != "check" { run_jobs(&runtime) } else { code };
    let mut out = std::io::stdout().lock();
    for line in actions.borrow().iter() {
        if out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).is_err() {
            // The sandbox's output limit: the run ends there.
            return 1;
        }
    }
    let _ = out.flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_from_stacks() {
        let cases = [
            ("    at f (bot.js:3:5)\n    at <eval> (bot.js:9:1)\n", Some("bot.js:3:5")),
            ("    at <eval> (bot.js:12)\n", Some("bot.js:12")),
            ("    at prelude (prelude.js:4:2)\n", None),
        ];
        for (stack, want) in cases {
            assert_eq!(position(stack).as_deref(), want, "{stack}");
        }
    }

    #[test]
    fn base64_of_text() {
        for (text, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("hello é", "aGVsbG8gw6k=")] {
            assert_eq!(base64(text.as_bytes()), want);
        }
    }
}
