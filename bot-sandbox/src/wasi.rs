//! The WASI preview 1 a bot sees: written here, small and closed.
//!
//! A bot is a WASI command module. It gets stdin (the mail), stdout (its
//! answer, capped), stderr (kept short for the log), a few environment
//! variables, clocks and random bytes. There are no preopened directories,
//! no sockets and no other descriptors: every other preview 1 function
//! exists (so ordinary toolchain output links) and answers `ENOTCAPABLE`,
//! `EBADF` or `ENOTSUP`. Nothing of the worker's own environment, files
//! or arguments is visible.

use std::fmt;

use wasmer::{
    imports, Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Memory, MemoryView, Module, RuntimeError, Store, Type, Value,
};

/// The import module name of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// Every function of WASI preview 1.
const PREVIEW1: &[&str] = &[
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
    "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
    "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
    "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
    "fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get", "path_filestat_set_times",
    "path_link", "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get", "sock_accept",
    "sock_recv", "sock_send", "sock_shutdown",
];

/// Whether `name` is a WASI preview 1 function.
pub fn is_known(name: &str) -> bool {
    PREVIEW1.contains(&name)
}

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;
const ENOTCAPABLE: i32 = 76;

const FILETYPE_CHARACTER_DEVICE: u8 = 2;

/// How many bytes of stderr are kept for the log.
pub const STDERR_KEPT: usize = 4096;

/// The bot called `proc_exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub u32);

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

/// The bot wrote more than its output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit(pub u64);

impl fmt::Display for OutputLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrote more than {} bytes to stdout", self.0)
    }
}

impl std::error::Error for OutputLimit {}

/// What one run sees and leaves behind.
#[derive(Debug)]
pub struct WasiState {
    memory: Option<Memory>,
    stdin: Vec<u8>,
    stdin_read: usize,
    pub stdout: Vec<u8>,
    stdout_limit: u64,
    pub stderr: Vec<u8>,
    /// `NAME=value` strings.
    environment: Vec<String>,
    /// Program name and arguments.
    arguments: Vec<String>,
}

impl WasiState {
    pub fn new(stdin: Vec<u8>, stdout_limit: u64, environment: Vec<(String, String)>) -> WasiState {
        WasiState {
            memory: None,
            stdin,
            stdin_read: 0,
            stdout: Vec::new(),
            stdout_limit,
            stderr: Vec::new(),
            environment: environment.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            arguments: vec!["bot".into()],
        }
    }
}

type Ctx<'a> = FunctionEnvMut<'a, WasiState>;

/// A failed guest memory access: the bot passed a bad pointer.
struct Fault;

fn view<'a>(memory: &'a Option<Memory>, store: &'a impl wasmer::AsStoreRef) -> Result<MemoryView<'a>, Fault> {
    memory.as_ref().map(|m| m.view(store)).ok_or(Fault)
}

fn read_u32(view: &MemoryView, at: u32) -> Result<u32, Fault> {
    let mut bytes = [0; 4];
    view.read(u64::from(at), &mut bytes).map_err(|_| Fault)?;
    Ok(u32::from_le_bytes(bytes))
}

fn write_bytes(view: &MemoryView, at: u32, bytes: &[u8]) -> Result<(), Fault> {
    view.write(u64::from(at), bytes).map_err(|_| Fault)
}

/// The (pointer, length) pairs of an iovec array.
fn iovecs(view: &MemoryView, iovs: u32, count: u32) -> Result<Vec<(u32, u32)>, Fault> {
    if count > 1024 {
        return Err(Fault);
    }
    (0..count)
        .map(|i| {
            let at = iovs.checked_add(i.checked_mul(8).ok_or(Fault)?).ok_or(Fault)?;
            Ok((read_u32(view, at)?, read_u32(view, at.checked_add(4).ok_or(Fault)?)?))
        })
        .collect()
}

fn errno(result: Result<i32, Fault>) -> i32 {
    result.unwrap_or(EFAULT)
}

/// Writes a list of strings the way args_get/environ_get do: pointers at
/// `list`, NUL-terminated bytes at `buffer`.
fn write_string_list(view: &MemoryView, strings: &[String], list: u32, buffer: u32) -> Result<i32, Fault> {
    let mut at = buffer;
    for (i, s) in strings.iter().enumerate() {
        let slot = list.checked_add(u32::try_from(i * 4).map_err(|_| Fault)?).ok_or(Fault)?;
        write_bytes(view, slot, &at.to_le_bytes())?;
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        write_bytes(view, at, &bytes)?;
        at = at.checked_add(u32::try_from(bytes.len()).map_err(|_| Fault)?).ok_or(Fault)?;
    }
    Ok(ESUCCESS)
}

fn sizes(view: &MemoryView, strings: &[String], count_at: u32, size_at: u32) -> Result<i32, Fault> {
    let total: usize = strings.iter().map(|s| s.len() + 1).sum();
    write_bytes(view, count_at, &u32::try_from(strings.len()).map_err(|_| Fault)?.to_le_bytes())?;
    write_bytes(view, size_at, &u32::try_from(total).map_err(|_| Fault)?.to_le_bytes())?;
    Ok(ESUCCESS)
}

fn args_get(mut ctx: Ctx<'_>, argv: u32, buf: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_string_list(&v, &state.arguments, argv, buf)))
}

fn args_sizes_get(mut ctx: Ctx<'_>, count: u32, size: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| sizes(&v, &state.arguments, count, size)))
}

fn environ_get(mut ctx: Ctx<'_>, environ: u32, buf: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_string_list(&v, &state.environment, environ, buf)))
}

fn environ_sizes_get(mut ctx: Ctx<'_>, count: u32, size: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| sizes(&v, &state.environment, count, size)))
}

/// Nanoseconds of clock `id` (0 realtime, 1 monotonic, 2/3 CPU time).
fn clock_now(id: u32) -> Option<u64> {
    use nix::time::{clock_gettime, ClockId};
    let clock = match id {
        0 => ClockId::CLOCK_REALTIME,
        1 => ClockId::CLOCK_MONOTONIC,
        2 => ClockId::CLOCK_PROCESS_CPUTIME_ID,
        3 => ClockId::CLOCK_THREAD_CPUTIME_ID,
        _ => return None,
    };
    let now = clock_gettime(clock).ok()?;
    let seconds = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
}

fn clock_res_get(mut ctx: Ctx<'_>, id: u32, at: u32) -> i32 {
    if clock_now(id).is_none() {
        return EINVAL;
    }
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &1u64.to_le_bytes()).map(|()| ESUCCESS)))
}

fn clock_time_get(mut ctx: Ctx<'_>, id: u32, _precision: u64, at: u32) -> i32 {
    let Some(now) = clock_now(id) else { return EINVAL };
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &now.to_le_bytes()).map(|()| ESUCCESS)))
}

fn is_standard(fd: u32) -> bool {
    fd <= 2
}

fn fd_close(_ctx: Ctx<'_>, fd: u32) -> i32 {
    if is_standard(fd) {
        ESUCCESS
    } else {
        EBADF
    }
}

fn fd_fdstat_get(mut ctx: Ctx<'_>, fd: u32, at: u32) -> i32 {
    if !is_standard(fd) {
        return EBADF;
    }
    // Rights: fd_read (bit 1) for stdin, fd_write (bit 6) for the others.
    let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
    let mut stat = [0u8; 24];
    stat[0] = FILETYPE_CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &stat).map(|()| ESUCCESS)))
}

fn fd_filestat_get(mut ctx: Ctx<'_>, fd: u32, at: u32) -> i32 {
    if !is_standard(fd) {
        return EBADF;
    }
    let mut stat = [0u8; 64];
    stat[16] = FILETYPE_CHARACTER_DEVICE;
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &stat).map(|()| ESUCCESS)))
}

fn fd_prestat_get(_ctx: Ctx<'_>, _fd: u32, _at: u32) -> i32 {
    // No preopened directories: the first probe ends libc's scan.
    EBADF
}

fn fd_prestat_dir_name(_ctx: Ctx<'_>, _fd: u32, _path: u32, _len: u32) -> i32 {
    EBADF
}

fn fd_seek(_ctx: Ctx<'_>, fd: u32, _offset: i64, _whence: u32, _at: u32) -> i32 {
    if is_standard(fd) {
        ESPIPE
    } else {
        EBADF
    }
}

fn fd_read(mut ctx: Ctx<'_>, fd: u32, iovs: u32, count: u32, nread_at: u32) -> i32 {
    if fd != 0 {
        return EBADF;
    }
    let (state, store) = ctx.data_and_store_mut();
    let result = (|| {
        let v = view(&state.memory, &store)?;
        let mut total: u32 = 0;
        for (ptr, len) in iovecs(&v, iovs, count)? {
            let rest = &state.stdin[state.stdin_read..];
            let n = rest.len().min(len as usize);
            write_bytes(&v, ptr, &rest[..n])?;
            state.stdin_read += n;
            total = total.saturating_add(u32::try_from(n).map_err(|_| Fault)?);
            if n < len as usize {
                break;
            }
        }
        write_bytes(&v, nread_at, &total.to_le_bytes())?;
        Ok(ESUCCESS)
    })();
    errno(result)
}

fn fd_write(mut ctx: Ctx<'_>, fd: u32, iovs: u32, count: u32, nwritten_at: u32) -> Result<i32, OutputLimit> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let (state, store) = ctx.data_and_store_mut();
    let mut over_limit = false;
    let result = (|| {
        let v = view(&state.memory, &store)?;
        let mut total: u32 = 0;
        for (ptr, len) in iovecs(&v, iovs, count)? {
            let mut bytes = vec![0; len as usize];
            v.read(u64::from(ptr), &mut bytes).map_err(|_| Fault)?;
            if fd == 1 {
                if state.stdout.len() as u64 + bytes.len() as u64 > state.stdout_limit {
                    over_limit = true;
                    return Ok(ESUCCESS);
                }
                state.stdout.extend_from_slice(&bytes);
            } else {
                // stderr is for the operator's log: keep the start.
                let room = STDERR_KEPT.saturating_sub(state.stderr.len());
                state.stderr.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            total = total.saturating_add(len);
        }
        write_bytes(&v, nwritten_at, &total.to_le_bytes())?;
        Ok(ESUCCESS)
    })();
    if over_limit {
        return Err(OutputLimit(state.stdout_limit));
    }
    Ok(errno(result))
}

fn proc_exit(_ctx: Ctx<'_>, code: u32) -> Result<(), ExitCode> {
    Err(ExitCode(code))
}

fn random_get(mut ctx: Ctx<'_>, at: u32, len: u32) -> i32 {
    if len > 1 << 20 {
        return EINVAL;
    }
    let mut bytes = vec![0u8; len as usize];
    if getrandom::getrandom(&mut bytes).is_err() {
        return ENOTSUP;
    }
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &bytes).map(|()| ESUCCESS)))
}

fn sched_yield(_ctx: Ctx<'_>) -> i32 {
    ESUCCESS
}

/// What a function the bot may not use answers.
fn refusal(name: &str) -> i32 {
    match name {
        n if n.starts_with("path_") => ENOTCAPABLE,
        n if n.starts_with("sock_") => ENOTCAPABLE,
        n if n.starts_with("fd_") => EBADF,
        _ => ENOTSUP,
    }
}

/// The imports for `module`: every preview 1 function it imports.
pub fn imports(store: &mut Store, env: &FunctionEnv<WasiState>, module: &Module) -> Imports {
    let mut imports = imports! {
        MODULE => {
            "args_get" => Function::new_typed_with_env(store, env, args_get),
            "args_sizes_get" => Function::new_typed_with_env(store, env, args_sizes_get),
            "environ_get" => Function::new_typed_with_env(store, env, environ_get),
            "environ_sizes_get" => Function::new_typed_with_env(store, env, environ_sizes_get),
            "clock_res_get" => Function::new_typed_with_env(store, env, clock_res_get),
            "clock_time_get" => Function::new_typed_with_env(store, env, clock_time_get),
            "fd_close" => Function::new_typed_with_env(store, env, fd_close),
            "fd_fdstat_get" => Function::new_typed_with_env(store, env, fd_fdstat_get),
            "fd_filestat_get" => Function::new_typed_with_env(store, env, fd_filestat_get),
            "fd_prestat_get" => Function::new_typed_with_env(store, env, fd_prestat_get),
            "fd_prestat_dir_name" => Function::new_typed_with_env(store, env, fd_prestat_dir_name),
            "fd_seek" => Function::new_typed_with_env(store, env, fd_seek),
            "fd_read" => Function::new_typed_with_env(store, env, fd_read),
            "fd_write" => Function::new_typed_with_env(store, env, fd_write),
            "proc_exit" => Function::new_typed_with_env(store, env, proc_exit),
            "random_get" => Function::new_typed_with_env(store, env, random_get),
            "sched_yield" => Function::new_typed_with_env(store, env, sched_yield),
        }
    };
    // The rest of preview 1, with the signature the module declares.
    for import in module.imports().functions() {
        let name = import.name();
        if import.module() != MODULE || imports.exists(MODULE, name) || !is_known(name) {
            continue;
        }
        let ty: FunctionType = import.ty().clone();
        let answer = refusal(name);
        let results: Vec<Type> = ty.results().to_vec();
        let function = Function::new(store, ty, move |_args| {
            Ok(results.iter().map(|t| if *t == Type::I32 { Value::I32(answer) } else { Value::I64(i64::from(answer)) }).collect())
        });
        imports.define(MODULE, name, function);
    }
    imports
}

/// Gives the functions the instance's memory (after instantiation).
pub fn attach_memory(store: &mut Store, env: &FunctionEnv<WasiState>, memory: Memory) {
    env.as_mut(store).memory = Some(memory);
}

/// How the run ended, from the error `_start` returned.
pub fn exit_of(error: RuntimeError) -> Result<ExitCode, RuntimeError> {
    error.downcast::<ExitCode>()
}
