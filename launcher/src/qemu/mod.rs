//! The QEMU engine (`cvm-launch run --vmm qemu`): real Linux guests with disks and a network to the
//! attestation service. The launcher writes QEMU's command line from the launch ([`args`]), starts QEMU with
//! the guest's console on a pipe it copies to stdout (or `--console FILE`), follows QMP ([`qmp`]) to learn
//! whether the guest powered off or reset, and stops it at `--timeout`. With `--tee sim` the launcher also
//! answers the guest's simulated PSP on the virtio-serial port `cvm-psp` (a Unix socket QEMU connects to);
//! the guest reaches the attestation service through [`relay`], which QEMU's user-mode networking runs for
//! each connection to the forwarded address.
//!
//! - [`args`]: the command line, from a [`args::QemuConfig`].
//! - [`version`]: QEMU's version and what it can launch.
//! - [`qmp`]: the shutdown events.
//! - [`relay`]: the per-connection relay to the host's loopback.

pub mod args;
pub mod qmp;
pub mod relay;
pub mod version;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use args::{Accel, QemuConfig};
use qmp::ShutdownReason;

/// How long QEMU may take to open its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the launcher checks whether QEMU ended.
const POLL: Duration = Duration::from_millis(10);

/// Where the guest's console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Console {
    /// This process's stdout.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
}

/// One QEMU run.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The QEMU program.
    pub qemu: PathBuf,
    /// Its command line's contents.
    pub config: QemuConfig,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Where the console goes.
    pub console: Console,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest powered off.
    PowerOff,
    /// The guest reset (a reboot, or a panic with `panic=-1`).
    Reset,
    /// The guest kernel reported a panic to QEMU.
    Panic,
    /// The launcher stopped the guest at `--timeout`.
    TimedOut(Duration),
    /// QEMU ended without the guest asking: its exit status and the shutdown reason it gave, if any.
    Ended(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::PowerOff => write!(f, "the guest powered off"),
            Stop::Reset => write!(
                f,
                "the guest reset (a reboot, or a kernel panic with panic=-1)"
            ),
            Stop::Panic => write!(f, "the guest kernel panicked"),
            Stop::TimedOut(t) => write!(
                f,
                "the guest was stopped after the {} s timeout",
                t.as_secs()
            ),
            Stop::Ended(why) => write!(f, "QEMU ended: {why}"),
        }
    }
}

/// What a run gave.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How it ended.
    pub stop: Stop,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
}

/// Why QEMU could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// QEMU did not start.
    #[error(
        "cannot start {qemu}: {source} (install QEMU: Debian's qemu-system-x86, or give --qemu PATH)"
    )]
    Spawn {
        /// The program.
        qemu: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The console file.
    #[error("cannot create the console file {path}: {source}")]
    Console {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// QEMU refused its command line or failed before the guest ran.
    #[error("QEMU failed to start the guest ({status}); its messages are above")]
    Early {
        /// QEMU's exit status.
        status: String,
    },
    /// QMP did not come up.
    #[error("{0}")]
    Qmp(String),
    /// Waiting for QEMU failed.
    #[error("waiting for QEMU: {0}")]
    Wait(std::io::Error),
}

/// QEMU, killed and reaped if the launcher returns early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `auto`: KVM where `/dev/kvm` opens and the CPU shows hardware virtualization (VMX or SVM in
/// `/proc/cpuinfo`: a nested KVM without it emulates guest code far slower than TCG), else TCG.
pub fn auto_accel() -> Accel {
    let hardware = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false);
    if hardware && crate::probe::kvm_usable().is_ok() {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// Runs `launch` to its end: QEMU started, its console copied, its end read from QMP.
pub fn run(launch: &Launch) -> Result<Outcome, QemuError> {
    let mut sink: Box<dyn Write + Send> = match &launch.console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::File(p) => {
            Box::new(
                std::fs::File::create(p).map_err(|source| QemuError::Console {
                    path: p.clone(),
                    source,
                })?,
            )
        }
    };
    let start = Instant::now();
    let child = Command::new(&launch.qemu)
        .args(args::argv(&launch.config))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| QemuError::Spawn {
            qemu: launch.qemu.clone(),
            source,
        })?;
    let mut qemu = Running(child);
    let console = qemu
        .0
        .stdout
        .take()
        .map(|mut out| std::thread::spawn(move || copy_console(&mut out, &mut sink)));
    let shutdown = match qmp::watch(&launch.config.qmp_socket, start + QMP_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            return Err(match qemu.0.try_wait() {
                Ok(Some(status)) => QemuError::Early {
                    status: status.to_string(),
                },
                _ => QemuError::Qmp(e),
            });
        }
    };
    let status = loop {
        if let Some(status) = qemu.0.try_wait().map_err(QemuError::Wait)? {
            break Some(status);
        }
        if let Some(limit) = launch.timeout
            && start.elapsed() >= limit
        {
            let _ = qemu.0.kill();
            let _ = qemu.0.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    if let Some(t) = console {
        let _ = t.join();
    }
    let reason = shutdown.lock().ok().and_then(|s| s.clone());
    let stop = match (status, reason) {
        (None, _) => Stop::TimedOut(launch.timeout.unwrap_or_default()),
        (Some(_), Some(ShutdownReason::PowerOff)) => Stop::PowerOff,
        (Some(_), Some(ShutdownReason::Reset)) => Stop::Reset,
        (Some(_), Some(ShutdownReason::Panic)) => Stop::Panic,
        (Some(status), Some(ShutdownReason::Other(r))) => Stop::Ended(format!("{status}, {r}")),
        (Some(status), None) => Stop::Ended(format!("{status}, no shutdown event")),
    };
    Ok(Outcome { stop, elapsed })
}

/// Copies the console until QEMU closes it, flushing after each read so lines show as they come.
fn copy_console(from: &mut impl Read, to: &mut dyn Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        let _ = to.flush();
    }
}

/// A private directory (mode 0700) for the files handed to QEMU and the sockets between it and the
/// launcher; removed when dropped.
pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("cvm-qemu-").tempdir()
}

/// Writes `bytes` to `dir/name` (mode 0600) and returns the path: the private copy QEMU reads, so that
/// the bytes the launcher measured are the bytes the guest gets.
pub fn private_copy(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(bytes)?;
    Ok(path)
}
