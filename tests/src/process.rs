//! Starting and stopping the servers' master processes.
//!
//! Each master runs in the foreground as a child of the harness, in its own
//! process group, with a parent-death signal: if the harness dies without
//! cleaning up (killed, or a test binary aborting), the kernel sends the
//! master SIGTERM and the master stops its own children. Normal teardown
//! sends the master SIGTERM, waits, and then kills whatever is left of its
//! process group.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};

/// A running server master process.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    stopped: bool,
}

impl Daemon {
    /// Spawns `command`, appending its stdout and stderr to `output_log`.
    /// `own_group` puts the process in a new process group; leave it off for
    /// programs that call setsid() themselves (Postfix's master), since
    /// setsid() fails for a process that already leads a group.
    pub fn spawn(name: &str, mut command: Command, output_log: &Path, own_group: bool) -> Result<Daemon> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(output_log)
            .context(|| format!("opening {}", output_log.display()))?;
        let log_err = log.try_clone().context(|| "duplicating a log file handle".into())?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        if own_group {
            command.process_group(0);
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one prctl system call, which is async-signal-safe; it touches
        // no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = command.spawn().context(|| format!("starting {name} ({command:?})"))?;
        Ok(Daemon { name: name.to_owned(), child, stopped: false })
    }

    /// Kills the process group at once, without a grace period.
    pub fn kill_now(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::new(format!("{} exited early ({status})", self.name))),
            Err(e) => Err(Error::new(format!("checking on {}: {e}", self.name))),
        }
    }

    /// Stops the master with SIGTERM, then, after `grace`, kills what is left
    /// of its process group. Safe to call twice.
    pub fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let Ok(raw) = i32::try_from(self.child.id()) else { return };
        let group = Pid::from_raw(raw);
        // Only the master gets SIGTERM: it stops its children in order
        // (signalling the whole group makes them log spurious errors about
        // each other vanishing).
        let _ = kill(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // Children that outlived their master (or ignored SIGTERM) go now.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Waits until a TCP server on 127.0.0.1:`port` greets with a line starting
/// with `greeting`, while `alive` keeps returning Ok.
pub fn wait_for_greeting(
    port: u16,
    greeting: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_problem = String::from("never tried");
    while Instant::now() < deadline {
        alive()?;
        match read_greeting(port) {
            Ok(line) if line.starts_with(greeting) => return Ok(()),
            Ok(line) => last_problem = format!("unexpected greeting {line:?}"),
            Err(e) => last_problem = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(Error::new(format!(
        "nothing answered {greeting:?} on 127.0.0.1:{port} within {timeout:?} (last: {last_problem})"
    )))
}

fn read_greeting(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf)?;
    // Be polite to the server: an SMTP or IMAP logout keeps its log quiet.
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    if line.starts_with("220") {
        let _ = stream.write_all(b"QUIT\r\n");
    } else if line.starts_with("* OK") {
        let _ = stream.write_all(b"a LOGOUT\r\n");
    }
    Ok(line)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`
/// (a server without a greeting, e.g. HTTPS).
pub fn wait_for_port(port: u16, timeout: Duration, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        alive()?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Error::new(format!("nothing listened on 127.0.0.1:{port} within {timeout:?}")))
}

/// Waits until `path` exists (a server's unix socket).
pub fn wait_for_path(path: &Path, timeout: Duration, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        alive()?;
        if path.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Error::new(format!("{} did not appear within {timeout:?}", path.display())))
}

/// Starts a watchdog for a server master that cannot keep a parent-death
/// signal: Postfix's master changes its credentials at startup, which makes
/// the kernel clear the signal. The watchdog is a small shell that keeps the
/// signal (it gets SIGTERM when the harness dies) and then terminates the
/// master. Stop it with `kill_now` during an orderly shutdown.
pub fn spawn_watchdog(name: &str, master_pid: u32, output_log: &Path) -> Result<Daemon> {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(
        "trap 'kill -TERM \"$0\" 2>/dev/null; kill \"$sleeper\" 2>/dev/null; exit 0' TERM; \
         while :; do sleep 3600 & sleeper=$!; wait \"$sleeper\"; done",
    );
    command.arg(master_pid.to_string());
    Daemon::spawn(&format!("{name} watchdog"), command, output_log, true)
}
