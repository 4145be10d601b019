//! Child processes of the demo: each one's stdout and stderr go to a log file, it is stopped
//! (killed and reaped) when its guard drops, and waiting for it to become ready fails early when
//! it exits.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Why a process step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The program could not be started or its log file created.
    #[error("cannot start {name}: {source}")]
    Start {
        /// Which process.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// It exited before it was ready.
    #[error("{name} exited ({status}) before {what}; its log {}:\n{tail}", log.display())]
    Exited {
        /// Which process.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// What was awaited.
        what: String,
        /// The log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// It did not become ready in time.
    #[error("{name}: no {what} within {secs} s; its log {}:\n{tail}", log.display())]
    Timeout {
        /// Which process.
        name: String,
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: u64,
        /// The log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
}

/// A running child process, stopped when dropped.
#[derive(Debug)]
pub struct Spawned {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Opens `log` for a child's output (stdout and stderr share it).
fn log_stdio(name: &str, log: &Path) -> Result<(Stdio, Stdio), ProcessError> {
    let start = |source| ProcessError::Start {
        name: name.to_owned(),
        source,
    };
    let out = File::create(log).map_err(start)?;
    let err = out.try_clone().map_err(start)?;
    Ok((Stdio::from(out), Stdio::from(err)))
}

impl Spawned {
    /// Starts `cmd` with its output going to `log`.
    pub fn start(name: &str, cmd: &mut Command, log: &Path) -> Result<Self, ProcessError> {
        let (out, err) = log_stdio(name, log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ProcessError::Start {
                name: name.to_owned(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Polls `ready` every 10 ms until it holds; fails when the process exits first or after
    /// `timeout`.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), ProcessError> {
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ProcessError::Exited {
                    name: self.name.clone(),
                    status,
                    what: what.to_owned(),
                    log: self.log.clone(),
                    tail: tail(&self.log, 12),
                });
            }
            if start.elapsed() > timeout {
                return Err(ProcessError::Timeout {
                    name: self.name.clone(),
                    what: what.to_owned(),
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                    tail: tail(&self.log, 12),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (if it still runs) and reaps it.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a program that ran to completion ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything it printed (stdout, then stderr), lossy UTF-8.
    pub output: String,
    /// Its stdout alone.
    pub stdout: Vec<u8>,
}

/// Runs `cmd` to completion and returns what it printed (also written to `log`).
pub fn run_to_end(name: &str, cmd: &mut Command, log: &Path) -> Result<Finished, ProcessError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProcessError::Start {
            name: name.to_owned(),
            source,
        })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    std::fs::write(log, &output).map_err(|source| ProcessError::Start {
        name: name.to_owned(),
        source,
    })?;
    Ok(Finished {
        status: out.status,
        output,
        stdout: out.stdout,
    })
}

/// The last `n` lines of a log file (empty when unreadable).
pub fn tail(log: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines.get(from..).unwrap_or_default().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_exits_early_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let mut p = Spawned::start(
            "sh",
            Command::new("sh").args(["-c", "echo first; echo second >&2; exit 3"]),
            &log,
        )
        .unwrap();
        let e = p
            .wait_until("readiness", Duration::from_secs(10), || false)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("exited") && msg.contains("first\nsecond"),
            "{msg}"
        );
    }

    #[test]
    fn a_dropped_guard_stops_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let p = Spawned::start("sleep", Command::new("sleep").arg("60"), &log).unwrap();
        let pid = p.child.id();
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
