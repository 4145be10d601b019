//! The audit writer of one replica: records queue up while a batch is being committed and go together in
//! the next (group commit). A batch is one transaction that locks the chain's head row, links its records
//! after it ([`crate::store::chain`]), inserts them and moves the head; so the chain stays one line across
//! every replica, and each record is committed (durable) before its caller is told. The writer has a
//! connection of its own, made again after a failure.

use super::super::audit::{AuditRecord, CommitCounts};
use super::super::backend::BackendError;
use super::super::chain::{self, ChainKey, Head};
use super::pool::{Conn, Pool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most records in one transaction.
const MAX_BATCH: usize = 1024;

/// A record waiting for the writer, and who to tell when it is committed.
type Pending = (AuditRecord, oneshot::Sender<Result<(), BackendError>>);

/// What the writer has done.
#[derive(Debug, Default)]
pub(super) struct Stats {
    batches: AtomicU64,
    records: AtomicU64,
    nanos: AtomicU64,
}

impl Stats {
    /// As the metrics show them.
    pub fn counts(&self) -> CommitCounts {
        CommitCounts {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            sync_seconds: self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The handle the backend keeps.
#[derive(Debug)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Pending>,
    pub stats: Arc<Stats>,
}

impl Writer {
    /// Start the writer task.
    pub fn start(pool: Arc<Pool>, key: ChainKey) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(pool, key, rx, stats.clone()));
        Writer { tx, stats }
    }

    /// Append `record`; completes when it is committed.
    pub async fn append(&self, record: AuditRecord, location: &str) -> Result<(), BackendError> {
        let (done, wait) = oneshot::channel();
        let stopped = || BackendError::failed(location, "the audit writer stopped");
        self.tx.send((record, done)).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

async fn run(
    pool: Arc<Pool>,
    key: ChainKey,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stats: Arc<Stats>,
) {
    // The newest record this replica committed: the head found later must not be older.
    let mut written = 0u64;
    let mut conn: Option<Conn> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let start = std::time::Instant::now();
        let records: Vec<&AuditRecord> = batch.iter().map(|(r, _)| r).collect();
        let result = tokio::time::timeout(pool.op_timeout(), async {
            let c = match conn.take() {
                Some(c) if !c.client.is_closed() => c,
                _ => pool.connect().await?,
            };
            commit(&pool, &key, &c, &records, &mut written).await?;
            // Kept only after a whole transaction: a failed or cut-off one leaves it mid-transaction.
            conn = Some(c);
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(pool.timed_out("audit append")));
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.nanos.fetch_add(
            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        for (_, done) in batch {
            let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| BackendError {
                location: e.location.clone(),
                message: e.message.clone(),
                unavailable: e.unavailable,
            }));
        }
    }
}

/// One batch in one transaction: lock the head, link, insert, move the head, commit.
async fn commit(
    pool: &Pool,
    key: &ChainKey,
    conn: &Conn,
    records: &[&AuditRecord],
    written: &mut u64,
) -> Result<(), BackendError> {
    let c = &conn.client;
    let fail = |what: &str, e: tokio_postgres::Error| pool.error(what, &e);
    let (begin, head) = tokio::join!(
        c.batch_execute("BEGIN"),
        c.query_one(&conn.st.audit_head, &[])
    );
    begin.map_err(|e| fail("audit begin", e))?;
    let head = head.map_err(|e| fail("audit head", e))?;
    let seq: i64 = head.try_get(0).map_err(|e| fail("audit head", e))?;
    let tag: Vec<u8> = head.try_get(1).map_err(|e| fail("audit head", e))?;
    let mut head = Head {
        seq: u64::try_from(seq).unwrap_or(0),
        tag: tag.as_slice().try_into().map_err(|_| {
            BackendError::failed(pool.location(), "cvm_audit_head.tag is not 32 bytes")
        })?,
    };
    if head.seq < *written {
        return Err(BackendError::failed(
            pool.location(),
            format!(
                "the audit log's head is record {}, but this replica committed record {written}: the \
                 audit log was rolled back; nothing is released until it is restored",
                head.seq
            ),
        ));
    }
    let (mut seqs, mut bodies, mut tags) = (Vec::new(), Vec::new(), Vec::new());
    for record in records {
        let (body, next) = chain::link(key, &head, record)
            .map_err(|e| BackendError::failed(pool.location(), e))?;
        head = next;
        seqs.push(i64::try_from(head.seq).unwrap_or(i64::MAX));
        bodies.push(body);
        tags.push(head.tag.to_vec());
    }
    let last_seq = i64::try_from(head.seq).unwrap_or(i64::MAX);
    let last_tag = head.tag.to_vec();
    // Pipelined: if the insert or the update fails, PostgreSQL answers the COMMIT with a rollback, and the
    // batch is reported failed by their own results.
    let insert_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&seqs, &bodies, &tags];
    let head_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&last_seq, &last_tag];
    let (insert, update, end) = tokio::join!(
        c.execute(&conn.st.audit_insert, &insert_params),
        c.execute(&conn.st.audit_set_head, &head_params),
        c.batch_execute("COMMIT")
    );
    insert.map_err(|e| fail("audit insert", e))?;
    update.map_err(|e| fail("audit head update", e))?;
    end.map_err(|e| fail("audit commit", e))?;
    *written = head.seq;
    Ok(())
}
