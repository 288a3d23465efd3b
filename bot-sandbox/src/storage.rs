//! A bot's storage: a flat directory of small files with a quota, which
//! the bot sees as the preopened directory `/data` (so `std::fs` works in
//! any WASI language). It lives in memory for the run: the daemon reads
//! the files from `{bot_dir}/storage/` into the request, the worker hands
//! back the new set if the bot changed anything, and the daemon writes it.
//! No file of the host is ever open while bot code runs.
//!
//! Pure bookkeeping here (names, descriptors, offsets, quota), answering
//! WASI errno values; the WASI glue is in `wasi.rs`.

use std::collections::{BTreeMap, HashMap};

/// Where the bot finds its storage.
pub const MOUNT: &str = "/data";
/// The descriptor of the preopened directory.
pub const DIR_FD: u32 = 3;
/// Longest file name.
pub const MAX_NAME: usize = 64;
/// Most files.
pub const MAX_FILES: usize = 256;

pub const EACCES: i32 = 2;
pub const EBADF: i32 = 8;
pub const EDQUOT: i32 = 19;
pub const EEXIST: i32 = 20;
pub const EINVAL: i32 = 28;
pub const EISDIR: i32 = 31;
pub const ENAMETOOLONG: i32 = 37;
pub const ENOENT: i32 = 44;
pub const ENOTDIR: i32 = 54;
pub const EMFILE: i32 = 33;

/// Whether `name` may be a storage file name: letters, digits, `.`, `_`,
/// `-`, not starting with a dot, at most [`MAX_NAME`] bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
    pub directory: bool,
    pub append: bool,
    pub read: bool,
    pub write: bool,
}

#[derive(Debug, Clone)]
struct OpenFile {
    name: String,
    offset: u64,
    flags: OpenFlags,
}

/// What an open descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

/// The storage of one run.
#[derive(Debug, Clone)]
pub struct Storage {
    files: BTreeMap<String, Vec<u8>>,
    quota: u64,
    open: HashMap<u32, OpenFile>,
    /// Directory descriptors opened on "." (besides [`DIR_FD`]).
    dirs: Vec<u32>,
    next_fd: u32,
    changed: bool,
}

impl Storage {
    pub fn new(files: BTreeMap<String, Vec<u8>>, quota: u64) -> Storage {
        Storage { files, quota, open: HashMap::new(), dirs: Vec::new(), next_fd: DIR_FD + 1, changed: false }
    }

    pub fn used(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }

    /// The files if the bot changed anything.
    pub fn changed_files(self) -> Option<BTreeMap<String, Vec<u8>>> {
        self.changed.then_some(self.files)
    }

    pub fn kind(&self, fd: u32) -> Option<Kind> {
        if fd == DIR_FD || self.dirs.contains(&fd) {
            Some(Kind::Directory)
        } else if self.open.contains_key(&fd) {
            Some(Kind::File)
        } else {
            None
        }
    }

    /// The file name a path (relative to the directory) names; `Ok(None)`
    /// for the directory itself.
    fn name(path: &str) -> Result<Option<String>, i32> {
        let path = path.trim_start_matches("./");
        if path.is_empty() || path == "." {
            return Ok(None);
        }
        if path.len() > MAX_NAME {
            return Err(ENAMETOOLONG);
        }
        if path.contains('/') || path == ".." {
            // Flat: no subdirectories, nothing outside.
            return Err(if path.starts_with("..") { EACCES } else { ENOENT });
        }
        if !valid_name(path) {
            return Err(EINVAL);
        }
        Ok(Some(path.to_owned()))
    }

    fn new_fd(&mut self) -> Result<u32, i32> {
        if self.open.len() + self.dirs.len() >= 64 {
            return Err(EMFILE);
        }
        let fd = self.next_fd;
        self.next_fd += 1;
        Ok(fd)
    }

    /// Opens `path` in directory `dir_fd`.
    pub fn open(&mut self, dir_fd: u32, path: &str, flags: OpenFlags) -> Result<u32, i32> {
        if self.kind(dir_fd) != Some(Kind::Directory) {
            return Err(if self.kind(dir_fd).is_some() { ENOTDIR } else { EBADF });
        }
        let Some(name) = Storage::name(path)? else {
            if flags.create || flags.write || flags.truncate {
                return Err(EISDIR);
            }
            let fd = self.new_fd()?;
            self.dirs.push(fd);
            return Ok(fd);
        };
        if flags.directory {
            return Err(if self.files.contains_key(&name) { ENOTDIR } else { ENOENT });
        }
        let exists = self.files.contains_key(&name);
        if exists && flags.create && flags.exclusive {
            return Err(EEXIST);
        }
        if !exists && !flags.create {
            return Err(ENOENT);
        }
        if !exists {
            if self.files.len() >= MAX_FILES {
                return Err(EDQUOT);
            }
            self.files.insert(name.clone(), Vec::new());
            self.changed = true;
        } else if flags.truncate {
            if let Some(file) = self.files.get_mut(&name) {
                if !file.is_empty() {
                    file.clear();
                    self.changed = true;
                }
            }
        }
        let fd = self.new_fd()?;
        self.open.insert(fd, OpenFile { name, offset: 0, flags });
        Ok(fd)
    }

    pub fn close(&mut self, fd: u32) -> Result<(), i32> {
        if fd == DIR_FD {
            return Ok(());
        }
        if let Some(at) = self.dirs.iter().position(|&d| d == fd) {
            self.dirs.remove(at);
            return Ok(());
        }
        self.open.remove(&fd).map(|_| ()).ok_or(EBADF)
    }

    pub fn read(&mut self, fd: u32, max: usize) -> Result<Vec<u8>, i32> {
        let missing = if self.kind(fd).is_some() { EISDIR } else { EBADF };
        let open = self.open.get_mut(&fd).ok_or(missing)?;
        if !open.flags.read {
            return Err(EBADF);
        }
        let data = self.files.get(&open.name).ok_or(ENOENT)?;
        let start = usize::try_from(open.offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(max).min(data.len());
        open.offset = end as u64;
        Ok(data[start..end].to_vec())
    }

    pub fn write(&mut self, fd: u32, bytes: &[u8]) -> Result<usize, i32> {
        let used = self.used();
        let missing = if self.kind(fd).is_some() { EISDIR } else { EBADF };
        let open = self.open.get_mut(&fd).ok_or(missing)?;
        if !open.flags.write {
            return Err(EBADF);
        }
        let data = self.files.get_mut(&open.name).ok_or(ENOENT)?;
        if open.flags.append {
            open.offset = data.len() as u64;
        }
        let start = usize::try_from(open.offset).map_err(|_| EINVAL)?;
        let end = start.checked_add(bytes.len()).ok_or(EINVAL)?;
        let growth = end.saturating_sub(data.len()) as u64;
        if used + growth > self.quota {
            return Err(EDQUOT);
        }
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        open.offset = end as u64;
        if !bytes.is_empty() {
            self.changed = true;
        }
        Ok(bytes.len())
    }

    /// Moves the offset; `whence` 0 = set, 1 = current, 2 = end.
    pub fn seek(&mut self, fd: u32, offset: i64, whence: u8) -> Result<u64, i32> {
        let open = self.open.get_mut(&fd).ok_or(EBADF)?;
        let len = self.files.get(&open.name).map_or(0, |d| d.len() as i64);
        let base = match whence {
            0 => 0,
            1 => open.offset as i64,
            2 => len,
            _ => return Err(EINVAL),
        };
        let target = base.checked_add(offset).filter(|t| *t >= 0).ok_or(EINVAL)?;
        open.offset = target as u64;
        Ok(open.offset)
    }

    /// Size of an open file.
    pub fn size(&self, fd: u32) -> Result<u64, i32> {
        let open = self.open.get(&fd).ok_or(EBADF)?;
        Ok(self.files.get(&open.name).map_or(0, |d| d.len() as u64))
    }

    /// What `path` in `dir_fd` is: `Ok(None)` the directory, else a
    /// file's size.
    pub fn stat(&self, dir_fd: u32, path: &str) -> Result<Option<u64>, i32> {
        if self.kind(dir_fd) != Some(Kind::Directory) {
            return Err(EBADF);
        }
        match Storage::name(path)? {
            None => Ok(None),
            Some(name) => self.files.get(&name).map(|d| Some(d.len() as u64)).ok_or(ENOENT),
        }
    }

    pub fn unlink(&mut self, dir_fd: u32, path: &str) -> Result<(), i32> {
        if self.kind(dir_fd) != Some(Kind::Directory) {
            return Err(EBADF);
        }
        let name = Storage::name(path)?.ok_or(EISDIR)?;
        self.files.remove(&name).ok_or(ENOENT)?;
        self.changed = true;
        Ok(())
    }

    pub fn rename(&mut self, dir_fd: u32, from: &str, to_dir_fd: u32, to: &str) -> Result<(), i32> {
        if self.kind(dir_fd) != Some(Kind::Directory) || self.kind(to_dir_fd) != Some(Kind::Directory) {
            return Err(EBADF);
        }
        let from = Storage::name(from)?.ok_or(EISDIR)?;
        let to = Storage::name(to)?.ok_or(EISDIR)?;
        let data = self.files.remove(&from).ok_or(ENOENT)?;
        self.files.insert(to.clone(), data);
        for open in self.open.values_mut().filter(|o| o.name == from) {
            open.name = to.clone();
        }
        self.changed = true;
        Ok(())
    }

    /// The directory's entries, sorted.
    pub fn entries(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: OpenFlags = OpenFlags { create: false, exclusive: false, truncate: false, directory: false, append: false, read: true, write: true };
    const CREATE: OpenFlags = OpenFlags { create: true, truncate: true, ..RW };

    #[test]
    fn names() {
        for (name, ok) in [("state.json", true), ("a-b_c.1", true), (".hidden", false), ("", false), ("a b", false), ("ä", false), (&"x".repeat(65), false)] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
        assert_eq!(Storage::name("./count"), Ok(Some("count".into())));
        assert_eq!(Storage::name("."), Ok(None));
        assert_eq!(Storage::name("../etc"), Err(EACCES));
        assert_eq!(Storage::name("sub/file"), Err(ENOENT));
        assert_eq!(Storage::name(&"x".repeat(65)), Err(ENAMETOOLONG));
    }

    #[test]
    fn files_round_trip_within_the_quota() {
        let mut s = Storage::new(BTreeMap::from([("old".to_owned(), b"hello".to_vec())]), 10);
        let fd = s.open(DIR_FD, "old", RW).expect("open");
        assert_eq!(s.read(fd, 3), Ok(b"hel".to_vec()));
        assert_eq!(s.read(fd, 100), Ok(b"lo".to_vec()));
        assert_eq!(s.read(fd, 100), Ok(Vec::new()), "end of file");
        assert_eq!(s.seek(fd, -2, 2), Ok(3));
        assert_eq!(s.write(fd, b"p!"), Ok(2));
        assert_eq!(s.size(fd), Ok(5));
        assert_eq!(s.close(fd), Ok(()));
        assert_eq!(s.close(fd), Err(EBADF));
        let new = s.open(DIR_FD, "new", CREATE).expect("create");
        assert_eq!(s.write(new, b"12345"), Ok(5));
        assert_eq!(s.write(new, b"6"), Err(EDQUOT), "10 bytes in all");
        assert_eq!(s.open(DIR_FD, "new", OpenFlags { exclusive: true, ..CREATE }), Err(EEXIST));
        assert_eq!(s.open(DIR_FD, "missing", RW), Err(ENOENT));
        assert_eq!(s.open(DIR_FD, "../../etc/passwd", RW), Err(EACCES));
        assert_eq!(s.open(new, "x", RW), Err(ENOTDIR));
        assert_eq!(s.open(99, "x", RW), Err(EBADF));
        assert_eq!(s.stat(DIR_FD, "new"), Ok(Some(5)));
        assert_eq!(s.stat(DIR_FD, "."), Ok(None));
        s.rename(DIR_FD, "new", DIR_FD, "renamed").expect("rename");
        assert_eq!(s.entries(), vec!["old".to_owned(), "renamed".to_owned()]);
        s.unlink(DIR_FD, "old").expect("unlink");
        assert_eq!(s.unlink(DIR_FD, "old"), Err(ENOENT));
        let files = s.changed_files().expect("changed");
        assert_eq!(files, BTreeMap::from([("renamed".to_owned(), b"12345".to_vec())]));
    }

    #[test]
    fn reading_only_changes_nothing() {
        let mut s = Storage::new(BTreeMap::from([("a".to_owned(), b"x".to_vec())]), 10);
        let fd = s.open(DIR_FD, "a", OpenFlags { read: true, ..OpenFlags::default() }).expect("open");
        assert_eq!(s.write(fd, b"y"), Err(EBADF), "opened read-only");
        s.read(fd, 10).expect("read");
        assert!(s.changed_files().is_none());
    }
}
