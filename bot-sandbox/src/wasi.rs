//! The WASI preview 1 a bot sees: written here, small and closed.
//!
//! A bot is a WASI command module. It gets stdin (the mail), stdout (its
//! answer, capped), stderr (kept short for the log), a few environment
//! variables, clocks and random bytes, and — if its metadata asks for
//! storage — the preopened directory `/data` (fd 3), a flat in-memory
//! directory with a quota (`storage.rs`). No sockets and no other
//! descriptors: every other preview 1 function exists (so ordinary
//! toolchain output links) and answers `ENOTCAPABLE`, `EBADF` or
//! `ENOTSUP`. Nothing of the worker's own environment, files or arguments
//! is visible.

use std::fmt;

use crate::storage::{self, Kind, OpenFlags, Storage};
use wasmer::{
    imports, Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Memory, MemoryView, Module, RuntimeError, Store, Type, Value,
};

/// The import module name of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";
/// The import module of this relay's own host functions (`fetch`).
pub const HOST_MODULE: &str = "chatmail";

/// How the worker makes a network request for the bot.
pub trait Fetch: Send {
    /// Status and body, or why not.
    fn fetch(&mut self, url: &str) -> Result<(u16, Vec<u8>), String>;
}

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
const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;

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
    /// The bot's storage, if it has any.
    pub storage: Option<Storage>,
    /// Network requests, if the bot may make any.
    pub fetcher: Option<Box<dyn Fetch>>,
    fetches: u32,
    /// The script a JavaScript bot's engine runs (`chatmail.script`).
    pub script: Option<Vec<u8>>,
}

impl fmt::Debug for dyn Fetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fetch")
    }
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
            storage: None,
            fetcher: None,
            fetches: 0,
            script: None,
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

fn fd_close(mut ctx: Ctx<'_>, fd: u32) -> i32 {
    if is_standard(fd) {
        return ESUCCESS;
    }
    match ctx.data_mut().storage.as_mut() {
        Some(storage) => storage.close(fd).err().unwrap_or(ESUCCESS),
        None => EBADF,
    }
}

/// What a descriptor of the storage is.
fn storage_kind(state: &WasiState, fd: u32) -> Option<Kind> {
    state.storage.as_ref().and_then(|s| s.kind(fd))
}

fn fd_fdstat_get(mut ctx: Ctx<'_>, fd: u32, at: u32) -> i32 {
    let mut stat = [0u8; 24];
    if is_standard(fd) {
        // Rights: fd_read (bit 1) for stdin, fd_write (bit 6) for the others.
        let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
        stat[0] = FILETYPE_CHARACTER_DEVICE;
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
    } else {
        // Storage: all rights (libc masks what it asks for with these).
        stat[0] = match storage_kind(ctx.data(), fd) {
            Some(Kind::Directory) => FILETYPE_DIRECTORY,
            Some(Kind::File) => FILETYPE_REGULAR_FILE,
            None => return EBADF,
        };
        stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &stat).map(|()| ESUCCESS)))
}

fn filestat(kind: u8, size: u64) -> [u8; 64] {
    let mut stat = [0u8; 64];
    stat[16] = kind;
    stat[24..32].copy_from_slice(&1u64.to_le_bytes());
    stat[32..40].copy_from_slice(&size.to_le_bytes());
    stat
}

fn fd_filestat_get(mut ctx: Ctx<'_>, fd: u32, at: u32) -> i32 {
    let stat = if is_standard(fd) {
        filestat(FILETYPE_CHARACTER_DEVICE, 0)
    } else {
        let state = ctx.data();
        match (storage_kind(state, fd), state.storage.as_ref()) {
            (Some(Kind::Directory), _) => filestat(FILETYPE_DIRECTORY, 0),
            (Some(Kind::File), Some(storage)) => filestat(FILETYPE_REGULAR_FILE, storage.size(fd).unwrap_or(0)),
            _ => return EBADF,
        }
    };
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &stat).map(|()| ESUCCESS)))
}

fn fd_prestat_get(mut ctx: Ctx<'_>, fd: u32, at: u32) -> i32 {
    // Only the storage directory, if any; the first EBADF ends libc's scan.
    if fd != storage::DIR_FD || ctx.data().storage.is_none() {
        return EBADF;
    }
    let mut prestat = [0u8; 8];
    prestat[4..8].copy_from_slice(&(storage::MOUNT.len() as u32).to_le_bytes());
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &prestat).map(|()| ESUCCESS)))
}

fn fd_prestat_dir_name(mut ctx: Ctx<'_>, fd: u32, path: u32, len: u32) -> i32 {
    if fd != storage::DIR_FD || ctx.data().storage.is_none() {
        return EBADF;
    }
    let name = storage::MOUNT.as_bytes();
    let n = name.len().min(len as usize);
    let (state, store) = ctx.data_and_store_mut();
    errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, path, &name[..n]).map(|()| ESUCCESS)))
}

fn fd_seek(mut ctx: Ctx<'_>, fd: u32, offset: i64, whence: u32, at: u32) -> i32 {
    if is_standard(fd) {
        return ESPIPE;
    }
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_mut() else { return EBADF };
    match storage.seek(fd, offset, u8::try_from(whence).unwrap_or(u8::MAX)) {
        Ok(position) => errno(view(&state.memory, &store).and_then(|v| write_bytes(&v, at, &position.to_le_bytes()).map(|()| ESUCCESS))),
        Err(e) => e,
    }
}

fn fd_tell(ctx: Ctx<'_>, fd: u32, at: u32) -> i32 {
    fd_seek(ctx, fd, 0, 1, at)
}

fn fd_sync(ctx: Ctx<'_>, fd: u32) -> i32 {
    match storage_kind(ctx.data(), fd) {
        Some(_) => ESUCCESS,
        None => EBADF,
    }
}

/// Reads a path argument (at most 1 KiB, UTF-8).
fn path_text(view: &MemoryView, at: u32, len: u32) -> Result<String, i32> {
    if len > 1024 {
        return Err(storage::ENAMETOOLONG);
    }
    let mut bytes = vec![0; len as usize];
    view.read(u64::from(at), &mut bytes).map_err(|_| EFAULT)?;
    String::from_utf8(bytes).map_err(|_| EINVAL)
}

#[allow(clippy::too_many_arguments)]
fn path_open(
    mut ctx: Ctx<'_>,
    fd: u32,
    _dirflags: u32,
    path: u32,
    path_len: u32,
    oflags: u32,
    rights: u64,
    _rights_inheriting: u64,
    fdflags: u32,
    opened_at: u32,
) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_mut() else { return ENOTCAPABLE };
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    let name = match path_text(&v, path, path_len) {
        Ok(name) => name,
        Err(e) => return e,
    };
    let flags = OpenFlags {
        create: oflags & 1 != 0,
        directory: oflags & 2 != 0,
        exclusive: oflags & 4 != 0,
        truncate: oflags & 8 != 0,
        append: fdflags & 1 != 0,
        read: rights & (1 << 1) != 0,
        write: rights & (1 << 6) != 0,
    };
    match storage.open(fd, &name, flags) {
        Ok(opened) => errno(write_bytes(&v, opened_at, &opened.to_le_bytes()).map(|()| ESUCCESS)),
        Err(e) => e,
    }
}

fn path_filestat_get(mut ctx: Ctx<'_>, fd: u32, _flags: u32, path: u32, path_len: u32, at: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_ref() else { return ENOTCAPABLE };
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    let result = path_text(&v, path, path_len).and_then(|name| storage.stat(fd, &name));
    match result {
        Ok(None) => errno(write_bytes(&v, at, &filestat(FILETYPE_DIRECTORY, 0)).map(|()| ESUCCESS)),
        Ok(Some(size)) => errno(write_bytes(&v, at, &filestat(FILETYPE_REGULAR_FILE, size)).map(|()| ESUCCESS)),
        Err(e) => e,
    }
}

fn path_unlink_file(mut ctx: Ctx<'_>, fd: u32, path: u32, path_len: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_mut() else { return ENOTCAPABLE };
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    match path_text(&v, path, path_len).and_then(|name| storage.unlink(fd, &name)) {
        Ok(()) => ESUCCESS,
        Err(e) => e,
    }
}

fn path_rename(mut ctx: Ctx<'_>, fd: u32, old: u32, old_len: u32, new_fd: u32, new: u32, new_len: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_mut() else { return ENOTCAPABLE };
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    let names = path_text(&v, old, old_len).and_then(|o| path_text(&v, new, new_len).map(|n| (o, n)));
    match names.and_then(|(o, n)| storage.rename(fd, &o, new_fd, &n)) {
        Ok(()) => ESUCCESS,
        Err(e) => e,
    }
}

/// Directory entries as preview 1 `dirent`s, from entry `cookie` on.
fn fd_readdir(mut ctx: Ctx<'_>, fd: u32, buf: u32, buf_len: u32, cookie: u64, used_at: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_ref() else { return EBADF };
    if storage.kind(fd) != Some(Kind::Directory) {
        return if storage.kind(fd).is_some() { storage::ENOTDIR } else { EBADF };
    }
    let mut entries = vec![(".".to_owned(), FILETYPE_DIRECTORY), ("..".to_owned(), FILETYPE_DIRECTORY)];
    entries.extend(storage.entries().into_iter().map(|n| (n, FILETYPE_REGULAR_FILE)));
    let mut out = Vec::new();
    for (index, (name, kind)) in entries.iter().enumerate().skip(usize::try_from(cookie).unwrap_or(usize::MAX)) {
        let mut dirent = [0u8; 24];
        dirent[0..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
        dirent[8..16].copy_from_slice(&(index as u64 + 1).to_le_bytes());
        dirent[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        dirent[20] = *kind;
        out.extend_from_slice(&dirent);
        out.extend_from_slice(name.as_bytes());
        if out.len() >= buf_len as usize {
            break;
        }
    }
    out.truncate(buf_len as usize);
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    errno(write_bytes(&v, buf, &out).and_then(|()| write_bytes(&v, used_at, &(out.len() as u32).to_le_bytes())).map(|()| ESUCCESS))
}

fn storage_read(mut ctx: Ctx<'_>, fd: u32, iovs: u32, count: u32, nread_at: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_mut() else { return EBADF };
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    let Ok(vectors) = iovecs(&v, iovs, count) else { return EFAULT };
    let mut total: u32 = 0;
    for (ptr, len) in vectors {
        let bytes = match storage.read(fd, len as usize) {
            Ok(bytes) => bytes,
            Err(e) => return e,
        };
        if write_bytes(&v, ptr, &bytes).is_err() {
            return EFAULT;
        }
        total = total.saturating_add(bytes.len() as u32);
        if bytes.len() < len as usize {
            break;
        }
    }
    errno(write_bytes(&v, nread_at, &total.to_le_bytes()).map(|()| ESUCCESS))
}

fn storage_write(mut ctx: Ctx<'_>, fd: u32, iovs: u32, count: u32, nwritten_at: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(storage) = state.storage.as_mut() else { return EBADF };
    let Ok(v) = view(&state.memory, &store) else { return EFAULT };
    let Ok(vectors) = iovecs(&v, iovs, count) else { return EFAULT };
    let mut total: u32 = 0;
    for (ptr, len) in vectors {
        let mut bytes = vec![0; len as usize];
        if v.read(u64::from(ptr), &mut bytes).is_err() {
            return EFAULT;
        }
        match storage.write(fd, &bytes) {
            Ok(n) => total = total.saturating_add(n as u32),
            Err(e) if total == 0 => return e,
            Err(_) => break,
        }
    }
    errno(write_bytes(&v, nwritten_at, &total.to_le_bytes()).map(|()| ESUCCESS))
}

fn fd_read(mut ctx: Ctx<'_>, fd: u32, iovs: u32, count: u32, nread_at: u32) -> i32 {
    if fd > 2 {
        return storage_read(ctx, fd, iovs, count, nread_at);
    }
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
    if fd > 2 {
        return Ok(storage_write(ctx, fd, iovs, count, nwritten_at));
    }
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

/// `chatmail.fetch(url, url_len, buf, buf_len, body_len_out) -> status`:
/// an HTTPS GET through the host. Returns the HTTP status (the body's
/// first `buf_len` bytes in `buf`, its whole length in `body_len_out`),
/// -1 if refused (no network for this bot, origin not allowed, too many
/// requests this run) or -2 if it failed; the reason goes to stderr.
/// `chatmail.script(buf, buf_len) -> len`: the JavaScript engine's way to
/// its bot's script. Copies what fits into `buf`; answers the script's
/// whole length (-1: no script, -2: a bad pointer). Only the relay's engine
/// may import it (see [`crate::engine::check_imports`]).
fn chatmail_script(mut ctx: Ctx<'_>, buf: u32, buf_len: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Some(script) = state.script.as_ref() else { return -1 };
    let Ok(v) = view(&state.memory, &store) else { return -2 };
    let n = script.len().min(buf_len as usize);
    if write_bytes(&v, buf, &script[..n]).is_err() {
        return -2;
    }
    i32::try_from(script.len()).unwrap_or(i32::MAX)
}

fn chatmail_fetch(mut ctx: Ctx<'_>, url: u32, url_len: u32, buf: u32, buf_len: u32, len_at: u32) -> i32 {
    let (state, store) = ctx.data_and_store_mut();
    let Ok(v) = view(&state.memory, &store) else { return -2 };
    let url = match path_text(&v, url, url_len.min(4096)) {
        Ok(url) => url,
        Err(_) => return -1,
    };
    let note = |state_stderr: &mut Vec<u8>, text: String| {
        let room = STDERR_KEPT.saturating_sub(state_stderr.len());
        let line = format!("fetch {url}: {text}\n");
        state_stderr.extend_from_slice(&line.as_bytes()[..line.len().min(room)]);
    };
    if state.fetches >= crate::fetch::MAX_FETCHES_PER_RUN {
        note(&mut state.stderr, format!("refused: more than {} requests in one run", crate::fetch::MAX_FETCHES_PER_RUN));
        return -1;
    }
    let Some(fetcher) = state.fetcher.as_mut() else {
        note(&mut state.stderr, "refused: this bot has no network origins the relay allows".into());
        return -1;
    };
    state.fetches += 1;
    match fetcher.fetch(&url) {
        Ok((status, body)) => {
            let n = body.len().min(buf_len as usize);
            let written = write_bytes(&v, buf, &body[..n]).and_then(|()| write_bytes(&v, len_at, &(body.len() as u32).to_le_bytes()));
            if written.is_err() {
                return -2;
            }
            i32::from(status)
        }
        Err(problem) => {
            let refused = problem.contains("not an allowed origin") || problem.contains("only https");
            note(&mut state.stderr, problem);
            if refused {
                -1
            } else {
                -2
            }
        }
    }
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
            "fd_tell" => Function::new_typed_with_env(store, env, fd_tell),
            "fd_sync" => Function::new_typed_with_env(store, env, fd_sync),
            "fd_datasync" => Function::new_typed_with_env(store, env, fd_sync),
            "fd_readdir" => Function::new_typed_with_env(store, env, fd_readdir),
            "path_open" => Function::new_typed_with_env(store, env, path_open),
            "path_filestat_get" => Function::new_typed_with_env(store, env, path_filestat_get),
            "path_unlink_file" => Function::new_typed_with_env(store, env, path_unlink_file),
            "path_rename" => Function::new_typed_with_env(store, env, path_rename),
            "fd_read" => Function::new_typed_with_env(store, env, fd_read),
            "fd_write" => Function::new_typed_with_env(store, env, fd_write),
            "proc_exit" => Function::new_typed_with_env(store, env, proc_exit),
            "random_get" => Function::new_typed_with_env(store, env, random_get),
            "sched_yield" => Function::new_typed_with_env(store, env, sched_yield),
        },
        HOST_MODULE => {
            "fetch" => Function::new_typed_with_env(store, env, chatmail_fetch),
            "script" => Function::new_typed_with_env(store, env, chatmail_script),
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
