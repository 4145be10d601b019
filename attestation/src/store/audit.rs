//! The audit log: one JSON object per line, appended and fsynced for every release and every refusal. It
//! records who asked for what and the outcome, never secret bytes.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub time: i64,
    /// What happened: `"attest"`, `"secret_put"`, `"secret_delete"`.
    pub event: String,
    /// The resource (secret name) concerned.
    pub resource: String,
    /// `"release"`, `"refuse"`, or `"ok"` for admin changes.
    pub verdict: String,
    /// The reason code of a refusal.
    pub reason: Option<String>,
    /// `"snp"` or `"tdx"` for attestations.
    pub tee: Option<String>,
    /// The measurement (lowercase hex) when the evidence parsed.
    pub measurement: Option<String>,
    /// Whether the evidence was simulated.
    pub simulated: bool,
    /// The peer address.
    pub peer: Option<String>,
}

/// The append-only audit log file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Open (creating, mode 0600) `state_dir/audit.jsonl` for appending.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join("audit.jsonl");
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        super::atomic::sync_dir(state_dir)?;
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// Append one record and fsync.
    pub fn append(&self, record: &AuditRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)?;
        f.sync_data()
    }

    /// The last `max` lines, oldest first.
    pub fn tail(&self, max: usize) -> io::Result<Vec<String>> {
        let f = File::open(&self.path)?;
        let mut lines = std::collections::VecDeque::with_capacity(max.min(4096));
        for line in io::BufReader::new(f).lines() {
            let line = line?;
            if lines.len() == max {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        Ok(lines.into())
    }
}
