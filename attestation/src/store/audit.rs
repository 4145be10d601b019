//! The audit log: one JSON object per line, appended and fsynced for every release and every refusal. It
//! records who asked for what and the outcome, never secret bytes.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// A record waiting for the writer, and who to tell when it is durable.
type Pending = (Vec<u8>, tokio::sync::oneshot::Sender<io::Result<()>>);

/// How long the writer lets records gather after the first one of a batch before writing and fsyncing
/// them all, when records are arriving faster than one per window: a little latency for far fewer fsyncs
/// under load (an fsync costs about 100–125 µs of CPU and 0.2–8 ms on the bench box's virtual disk, whatever
/// the batch size). A record that arrives alone, after a quiet spell, is written at once.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// Most records written with one fsync.
const MAX_BATCH: usize = 4096;

/// The append-only audit log file. Records go to one writer thread that appends whatever has queued up and
/// fsyncs once per batch (group commit); [`AuditLog::append`] returns when its record is durable.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    tx: Mutex<std::sync::mpsc::Sender<Pending>>,
    stats: Arc<Stats>,
}

/// What the writer has done, updated after every batch.
#[derive(Debug, Default)]
struct Stats {
    batches: AtomicU64,
    records: AtomicU64,
    sync_nanos: AtomicU64,
}

/// What the audit writer has done since the log was opened (for the metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommitCounts {
    /// Batches written and fsynced.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// Seconds spent writing and fsyncing them.
    pub sync_seconds: f64,
}

impl AuditLog {
    /// Open (creating, mode 0600) `state_dir/audit.jsonl` for appending and start its writer thread.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join("audit.jsonl");
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        super::atomic::sync_dir(state_dir)?;
        let (tx, rx) = std::sync::mpsc::channel::<Pending>();
        let stats = Arc::new(Stats::default());
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("cvm-audit".into())
            .spawn(move || writer(file, rx, &writer_stats))?;
        Ok(AuditLog {
            path,
            tx: Mutex::new(tx),
            stats,
        })
    }

    /// Batches, records and fsync time so far.
    pub fn commit_counts(&self) -> CommitCounts {
        CommitCounts {
            batches: self.stats.batches.load(Ordering::Relaxed),
            records: self.stats.records.load(Ordering::Relaxed),
            sync_seconds: self.stats.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Append one record; returns once it is on disk (fsynced).
    pub async fn append(&self, record: &AuditRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((line, done_tx))
            .map_err(|_| io::Error::other("the audit writer stopped"))?;
        done_rx
            .await
            .map_err(|_| io::Error::other("the audit writer stopped"))?
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

/// The writer thread: batch, append, fsync, acknowledge. Ends when every sender is gone.
///
/// Under load (the last batch's records came less than a commit window apart) it sleeps through the commit
/// window after the first record of a batch instead of waiting on the channel: records sent meanwhile queue
/// up without waking it (a sleeping receiver costs a sender no system call), so a batch costs one wake-up,
/// one write and one fsync however many records it holds. No record is acknowledged before the fsync that
/// covers it has returned.
fn writer(mut file: File, rx: std::sync::mpsc::Receiver<Pending>, stats: &Stats) {
    let mut last_batch: Option<(std::time::Instant, usize)> = None;
    while let Ok(first) = rx.recv() {
        let now = std::time::Instant::now();
        let under_load = last_batch.is_some_and(|(at, records)| {
            now.duration_since(at)
                < COMMIT_WINDOW.saturating_mul(u32::try_from(records).unwrap_or(u32::MAX))
        });
        if under_load {
            std::thread::sleep(COMMIT_WINDOW);
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        last_batch = Some((now, batch.len()));
        let mut buf = Vec::new();
        for (line, _) in &batch {
            buf.extend_from_slice(line);
        }
        let start = std::time::Instant::now();
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        for (_, done) in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = done.send(r);
        }
    }
}
