//! The file store's audit log, `audit.jsonl`: one JSON object per line, hash-chained ([`super::chain`]),
//! appended and fsynced for every release and every refusal. It records who asked for what and the outcome,
//! never secret bytes.

use super::chain::{self, ChainKey, Head};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub time: i64,
    /// What happened: `"attest"`, `"secret_put"`, `"secret_delete"`, `"admin_refused"`.
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
    /// The nonce's identity (lowercase hex of its 16 random bytes) once its MAC verified: each nonce is
    /// released against at most once, which a check of the log can confirm.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A record waiting for the writer, and who to tell when it is durable.
type Pending = (AuditRecord, tokio::sync::oneshot::Sender<io::Result<()>>);

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

/// Bytes read from the end of the log per step when looking for its last line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The end of the last complete line of `file` (a crash while appending can leave a partial line after
/// it: that record was never acknowledged) and that line.
fn last_line(file: &mut File) -> io::Result<(u64, Option<String>)> {
    let mut pos = file.metadata()?.len();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let newlines: Vec<usize> = (0..tail.len())
            .filter(|&i| tail.get(i) == Some(&b'\n'))
            .collect();
        if newlines.len() >= 2 || pos == 0 {
            let Some(&last) = newlines.last() else {
                return Ok((0, None));
            };
            let from = match newlines.len() {
                1 => 0,
                n => newlines.get(n - 2).map_or(0, |i| i + 1),
            };
            let line = String::from_utf8_lossy(tail.get(from..last).unwrap_or_default());
            return Ok((pos + last as u64 + 1, Some(line.into_owned())));
        }
        let step = TAIL_CHUNK.min(pos);
        pos -= step;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(0)];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
    }
}

impl AuditLog {
    /// Open (creating, mode 0600) `state_dir/audit.jsonl`, drop a partial last line a crash left, find the
    /// chain's head, and start the writer thread that links records under `key`.
    pub fn open(state_dir: &Path, key: ChainKey) -> io::Result<Self> {
        let path = state_dir.join("audit.jsonl");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        let (end, last) = last_line(&mut file)?;
        if end < file.metadata()?.len() {
            file.set_len(end)?;
            file.sync_all()?;
        }
        let head = chain::head_of(last.as_deref());
        super::atomic::sync_dir(state_dir)?;
        let (tx, rx) = std::sync::mpsc::channel::<Pending>();
        let stats = Arc::new(Stats::default());
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("cvm-audit".into())
            .spawn(move || writer(file, rx, &writer_stats, &key, head))?;
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

    /// Append one record, chained to the one before; returns once it is on disk (fsynced).
    pub async fn append(&self, record: &AuditRecord) -> io::Result<()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((record.clone(), done_tx))
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

    /// At most `max` complete lines from byte offset `cursor`, and the offset after them (`None` at the
    /// end).
    pub fn page(&self, cursor: u64, max: usize) -> io::Result<(Vec<String>, Option<u64>)> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(cursor))?;
        let mut reader = io::BufReader::new(f);
        let (mut lines, mut offset) = (Vec::new(), cursor);
        let mut buf = Vec::new();
        while lines.len() < max {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                return Ok((lines, None));
            }
            offset += n as u64;
            buf.pop();
            lines.push(String::from_utf8_lossy(&buf).into_owned());
        }
        Ok((lines, Some(offset)))
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writer thread: batch, link, append, fsync, acknowledge. Ends when every sender is gone.
///
/// Under load (the last batch's records came less than a commit window apart) it sleeps through the commit
/// window after the first record of a batch instead of waiting on the channel: records sent meanwhile queue
/// up without waking it (a sleeping receiver costs a sender no system call), so a batch costs one wake-up,
/// one write and one fsync however many records it holds. No record is acknowledged before the fsync that
/// covers it has returned; a batch that fails is cut off the file again and the chain's head stays.
fn writer(
    mut file: File,
    rx: std::sync::mpsc::Receiver<Pending>,
    stats: &Stats,
    key: &ChainKey,
    mut head: Head,
) {
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
        let start = std::time::Instant::now();
        let mut next = head;
        let result = (|| {
            let mut buf = String::new();
            for (record, _) in &batch {
                let (body, linked) = chain::link(key, &next, record).map_err(io::Error::other)?;
                next = linked;
                buf.push_str(&chain::line(&body, &next.tag));
                buf.push('\n');
            }
            let before = file.metadata()?.len();
            let written = file
                .write_all(buf.as_bytes())
                .and_then(|()| file.sync_data());
            if written.is_err() {
                // Nothing of a failed batch stays: the next one links to the last durable record.
                let _ = file.set_len(before);
            }
            written
        })();
        if result.is_ok() {
            head = next;
        }
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
