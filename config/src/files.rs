//! Writing a file so that readers only ever see it whole, and it is on
//! disk before the call returns: the spools' jobs and queue entries, the
//! accounts' metadata files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `path` atomically and durably through `tmp_dir` (`mode` for a new
/// file), replacing what was there: written and synced under a name of its
/// own in `tmp_dir` (same file system), renamed over `path`, and `path`'s
/// directory synced. Both directories are created if missing.
pub fn write_atomically(tmp_dir: &Path, path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let context = |e: io::Error, what: &str, path: &Path| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
    let dir = path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path without a directory"))?;
    for d in [tmp_dir, dir] {
        fs::create_dir_all(d).map_err(|e| context(e, "creating", d))?;
    }
    let name = format!("{}.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), path.file_name().map_or("f".into(), |n| n.to_string_lossy()));
    let tmp = tmp_dir.join(name);
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(context(e, "writing", &tmp));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(context(e, "renaming", &tmp));
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| context(e, "syncing", dir))
}
