//! Measures what the resource gate looks at: the 1-minute load average,
//! available memory (`MemAvailable`), and free space where mailboxes live.

use std::io;
use std::path::Path;

use crate::policy::Resources;

fn load_1m(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Measures now. An error means the gate cannot tell, and callers refuse
/// creation rather than guess.
pub fn measure(mailboxes_dir: &Path) -> io::Result<Resources> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"));
    let load_1m = load_1m(&std::fs::read_to_string("/proc/loadavg")?).ok_or_else(|| bad("/proc/loadavg"))?;
    let available_memory = mem_available(&std::fs::read_to_string("/proc/meminfo")?).ok_or_else(|| bad("/proc/meminfo"))?;
    let stat = nix::sys::statvfs::statvfs(mailboxes_dir).map_err(|e| io::Error::other(format!("statvfs {}: {e}", mailboxes_dir.display())))?;
    // Blocks available to unprivileged users, as `df` shows them.
    let free_disk = stat.blocks_available().saturating_mul(stat.fragment_size());
    Ok(Resources { load_1m, available_memory, free_disk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(load_1m("0.52 0.58 0.59 1/389 12345\n"), Some(0.52));
        assert_eq!(load_1m(""), None);
        let meminfo = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(mem_available(meminfo), Some(2048 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn measures_this_machine() {
        let r = measure(Path::new("/")).expect("measure");
        assert!(r.load_1m >= 0.0 && r.available_memory > 0 && r.free_disk > 0, "{r:?}");
    }
}
