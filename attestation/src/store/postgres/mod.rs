//! The `postgres` backend: several stateless replicas of `cvm-attest serve` share one PostgreSQL database
//! (DESIGN.md `[store] backend = "postgres"`). The database holds what the file store holds, with the same
//! guarantees, and the state the replicas must share:
//!
//! - secrets: the same sealed records and sealed manifest ([`crate::store::SecretStore`] checks them on
//!   every read); a write is one transaction that locks the manifest's row, so writers on every replica are
//!   serialized and a reader anywhere sees a change whole once it is committed;
//! - the audit log: one hash chain across the replicas ([`audit`]), each record committed before the
//!   service answers;
//! - spent nonces: a unique insert per nonce ([`Backend::spend_nonce`]), so a nonce is accepted once across
//!   every replica; each replica deletes rows expired more than [`PURGE_MARGIN_SECS`] ago every
//!   [`PURGE_EVERY`];
//! - the nonce MAC key and the token signing key, sealed under the KEK: the first replica's are stored and
//!   every other loads them.
//!
//! The schema is versioned and applied at start ([`schema`]). When the database cannot be reached every
//! operation fails as unavailable (the service answers 503) and the pool reconnects by itself once it is back.
//! Nothing of the service's consistency is built on top of the database beyond unique keys, row locks and
//! transactions.

pub mod audit;
pub mod cluster;
pub mod pool;
pub mod schema;
pub mod settings;

pub use settings::PostgresConfig;

use super::audit::{AuditRecord, CommitCounts};
use super::backend::{
    AuditPage, Backend, BackendError, BoxFuture, Change, Locked, ManifestRead, SecretRead, Spend,
};
use super::chain::{self, ChainKey, Tag};
use super::manifest::{self, Digest};
use pool::{Pool, Pooled};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after its expiry a spent nonce's row is kept: a margin for replicas whose clocks run behind
/// (they still accept a nonce until its expiry by their clock). Replicas' clocks must agree within it.
pub const PURGE_MARGIN_SECS: i64 = 120;
/// How often each replica deletes expired nonces.
pub const PURGE_EVERY: Duration = Duration::from_secs(30);
/// How long a successful operation counts as a passed health check: under load `/healthz` needs no query
/// (nor a connection, which attestations may all be holding), and floods of it do not reach the database.
const CHECK_FRESH: Duration = Duration::from_secs(1);

/// A PostgreSQL database shared by replicas.
#[derive(Debug)]
pub struct PgBackend {
    pool: Arc<Pool>,
    writer: audit::Writer,
    last_ok: Mutex<Option<Instant>>,
}

impl PgBackend {
    /// Connect (failing at once when the database cannot be reached or refuses the role), apply the schema,
    /// and start the audit writer and the purge of expired nonces. Returns the schema versions applied now.
    pub async fn connect(
        settings: &PostgresConfig,
        audit_key: ChainKey,
    ) -> Result<(Self, Vec<i32>), BackendError> {
        let pool = Arc::new(
            Pool::new(settings).map_err(|e| BackendError::failed(settings.location(), e))?,
        );
        let applied = schema::migrate(&pool).await?;
        // A first connection with the statements, so that a problem shows now.
        drop(pool.get().await?);
        let writer = audit::Writer::start(pool.clone(), audit_key);
        tokio::spawn(purge(Arc::downgrade(&pool)));
        Ok((
            PgBackend {
                pool,
                writer,
                last_ok: Mutex::new(None),
            },
            applied,
        ))
    }

    /// Run `op` on a pooled connection within the operation deadline; the connection is dropped if `op`
    /// fails or does not finish.
    async fn with<T>(
        &self,
        what: &'static str,
        op: impl AsyncFnOnce(&pool::Conn) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, BackendError> {
        let run = async {
            let mut pooled = self.pool.get().await?;
            pooled.discard();
            let result = op(pooled.conn()?)
                .await
                .map_err(|e| self.pool.error(what, &e))?;
            pooled.keep();
            *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            Ok(result)
        };
        tokio::time::timeout(self.pool.op_timeout(), run)
            .await
            .map_err(|_| self.pool.timed_out(what))?
    }
}

/// Delete expired nonces every [`PURGE_EVERY`] while the pool lives.
async fn purge(pool: std::sync::Weak<Pool>) {
    loop {
        tokio::time::sleep(PURGE_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let before = time::OffsetDateTime::now_utc().unix_timestamp() - PURGE_MARGIN_SECS;
        let run = async {
            let pooled = pool.get().await.ok()?;
            let conn = pooled.conn().ok()?;
            conn.client.execute(&conn.st.purge, &[&before]).await.ok()
        };
        // A failure (the database is down) is retried at the next round.
        let _ = tokio::time::timeout(pool.op_timeout(), run).await;
    }
}

fn digest_of(bytes: Option<Vec<u8>>) -> Option<Digest> {
    bytes.and_then(|b| b.as_slice().try_into().ok())
}

/// The writers' lock: a transaction holding the manifest's row lock.
struct PgLocked<'a> {
    backend: &'a PgBackend,
    pooled: Pooled<'a>,
    manifest: Option<Vec<u8>>,
}

impl PgLocked<'_> {
    fn fail(&self, what: &str, e: &tokio_postgres::Error) -> BackendError {
        self.backend.pool.error(what, e)
    }
}

impl Locked for PgLocked<'_> {
    fn manifest(&self) -> Option<&[u8]> {
        self.manifest.as_deref()
    }

    fn read_record<'a>(
        &'a mut self,
        name: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        Box::pin(async move {
            let conn = self.pooled.conn()?;
            let row = conn
                .client
                .query_opt(&conn.st.record, &[&name])
                .await
                .map_err(|e| self.fail("read record", &e))?;
            let record: Option<Vec<u8>> = match row {
                Some(r) => r.try_get(0).map_err(|e| self.fail("read record", &e))?,
                None => None,
            };
            if record.as_ref().is_some_and(|r| r.len() > max_len) {
                return Err(BackendError::failed(
                    self.backend.location(),
                    format!("the record of {name:?} is longer than {max_len} bytes"),
                ));
            }
            Ok(record)
        })
    }

    fn record_names(&mut self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let conn = self.pooled.conn()?;
            let rows = conn
                .client
                .query(&conn.st.names, &[])
                .await
                .map_err(|e| self.fail("record names", &e))?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(|e| self.fail("record names", &e)))
                .collect()
        })
    }

    fn commit<'a>(
        self: Box<Self>,
        change: Option<Change<'a>>,
        _intent: &'a [u8],
        manifest: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BackendError>>
    where
        Self: 'a,
    {
        // One transaction: the record and the manifest become current together.
        Box::pin(async move {
            let mut this = self;
            let conn = this.pooled.conn()?;
            let c = &conn.client;
            let digest = manifest::digest(manifest).to_vec();
            let record = async {
                match &change {
                    Some(Change {
                        name,
                        record: Some(r),
                    }) => c.execute(&conn.st.put_record, &[name, r]).await.map(|_| ()),
                    Some(Change { name, record: None }) => {
                        c.execute(&conn.st.delete_record, &[name]).await.map(|_| ())
                    }
                    None => Ok(()),
                }
            };
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&digest, &manifest];
            let (record, set, end) = tokio::join!(
                record,
                c.execute(&conn.st.set_manifest, &params),
                c.batch_execute("COMMIT")
            );
            record.map_err(|e| this.fail("write record", &e))?;
            set.map_err(|e| this.fail("write manifest", &e))?;
            end.map_err(|e| this.fail("commit", &e))?;
            this.pooled.keep();
            Ok(())
        })
    }
}

impl Backend for PgBackend {
    fn read<'a>(
        &'a self,
        name: Option<&'a str>,
        known: Option<Digest>,
    ) -> BoxFuture<'a, Result<SecretRead, BackendError>> {
        Box::pin(async move {
            let known = known.map(|d| d.to_vec());
            let row = self
                .with("read secret", async |conn| {
                    conn.client.query_one(&conn.st.read, &[&known, &name]).await
                })
                .await?;
            self.secret_read(&row, known.as_deref())
        })
    }

    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn Locked + '_>, BackendError>> {
        Box::pin(async move {
            let run = async {
                let mut pooled = self.pool.get().await?;
                // Mid-transaction until commit: dropped unless it finishes.
                pooled.discard();
                let conn = pooled.conn()?;
                let (begin, row) = tokio::join!(
                    conn.client.batch_execute("BEGIN"),
                    conn.client.query_one(&conn.st.lock_manifest, &[])
                );
                begin.map_err(|e| self.pool.error("begin", &e))?;
                let manifest: Option<Vec<u8>> = row
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| self.pool.error("lock manifest", &e))?;
                Ok::<_, BackendError>(Box::new(PgLocked {
                    backend: self,
                    pooled,
                    manifest,
                }) as Box<dyn Locked + '_>)
            };
            tokio::time::timeout(self.pool.op_timeout(), run)
                .await
                .map_err(|_| self.pool.timed_out("lock"))?
        })
    }

    fn append_audit(&self, record: &AuditRecord) -> BoxFuture<'_, Result<(), BackendError>> {
        let record = record.clone();
        Box::pin(async move { self.writer.append(record, self.pool.location()).await })
    }

    fn audit_tail(&self, max: usize) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            let rows = self
                .with("audit tail", async |conn| {
                    conn.client.query(&conn.st.audit_tail, &[&max]).await
                })
                .await?;
            rows.iter()
                .map(|r| {
                    let record: String = r.try_get(0)?;
                    let tag: Vec<u8> = r.try_get(1)?;
                    Ok(audit_line(&record, &tag))
                })
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| self.pool.error("audit tail", &e))
        })
    }

    fn audit_page(
        &self,
        cursor: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<AuditPage, BackendError>> {
        Box::pin(async move {
            let after = i64::try_from(cursor).unwrap_or(i64::MAX);
            let limit = i64::try_from(max).unwrap_or(i64::MAX);
            let rows = self
                .with("audit page", async |conn| {
                    conn.client
                        .query(&conn.st.audit_page, &[&after, &limit])
                        .await
                })
                .await?;
            let mut page = AuditPage::default();
            let mut last = after;
            for r in &rows {
                let read = (|| {
                    let seq: i64 = r.try_get(0)?;
                    let record: String = r.try_get(1)?;
                    let tag: Vec<u8> = r.try_get(2)?;
                    Ok::<_, tokio_postgres::Error>((seq, audit_line(&record, &tag)))
                })();
                let (seq, line) = read.map_err(|e| self.pool.error("audit page", &e))?;
                last = seq;
                page.lines.push(line);
            }
            page.next = (rows.len() == max).then(|| u64::try_from(last).unwrap_or(0));
            Ok(page)
        })
    }

    fn audit_counts(&self) -> CommitCounts {
        self.writer.stats.counts()
    }

    fn spend_nonce(
        &self,
        id: [u8; 16],
        expires_at: i64,
        _now: i64,
    ) -> BoxFuture<'_, Result<Spend, BackendError>> {
        Box::pin(async move {
            let id = id.to_vec();
            let inserted = self
                .with("spend nonce", async |conn| {
                    spend(conn, &id, expires_at).await
                })
                .await?;
            Ok(spent(inserted))
        })
    }

    fn spend_and_read<'a>(
        &'a self,
        id: [u8; 16],
        expires_at: i64,
        _now: i64,
        name: &'a str,
        known: Option<Digest>,
    ) -> BoxFuture<'a, Result<(Spend, SecretRead), BackendError>> {
        // One connection, one round trip: the spend's statements and the read, pipelined.
        Box::pin(async move {
            let id = id.to_vec();
            let known = known.map(|d| d.to_vec());
            let (inserted, row) = self
                .with("spend nonce and read secret", async |conn| {
                    let read_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                        [&known, &name];
                    let (inserted, row) = tokio::join!(
                        spend(conn, &id, expires_at),
                        conn.client.query_one(&conn.st.read, &read_params)
                    );
                    Ok((inserted?, row?))
                })
                .await?;
            Ok((spent(inserted), self.secret_read(&row, known.as_deref())?))
        })
    }

    fn shared_key<'a>(
        &'a self,
        name: &'a str,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        Box::pin(async move {
            let row = self
                .with("shared key", async |conn| {
                    conn.client
                        .execute(&conn.st.key_insert, &[&name, &sealed])
                        .await?;
                    conn.client.query_one(&conn.st.key_get, &[&name]).await
                })
                .await?;
            row.try_get(0)
                .map(Some)
                .map_err(|e| self.pool.error("shared key", &e))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let fresh = self
                .last_ok
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < CHECK_FRESH);
            if fresh {
                return Ok(());
            }
            self.with("health check", async |conn| {
                conn.client.simple_query("SELECT 1").await.map(|_| ())
            })
            .await
        })
    }

    fn location(&self) -> String {
        self.pool.location().to_owned()
    }
}

/// Spend nonce `id` on `conn`: returns the rows inserted (1: fresh).
///
/// The spend commits without waiting for its WAL flush: it is visible to every replica at commit all the
/// same, and a release's audit record, committed afterwards with a synchronous commit, flushes the WAL past it
/// (PostgreSQL flushes the WAL in order). So a spend a crash of the database could lose is one whose
/// attestation released nothing, and every release keeps its nonce spent. This halves the flushes an
/// attestation waits for.
async fn spend(
    conn: &pool::Conn,
    id: &Vec<u8>,
    expires_at: i64,
) -> Result<u64, tokio_postgres::Error> {
    let c = &conn.client;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [id, &expires_at];
    let (begin, insert, end) = tokio::join!(
        c.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF"),
        c.execute(&conn.st.spend, &params),
        c.batch_execute("COMMIT")
    );
    begin?;
    let inserted = insert?;
    end?;
    Ok(inserted)
}

fn spent(inserted: u64) -> Spend {
    if inserted == 1 {
        Spend::Fresh
    } else {
        Spend::Replayed
    }
}

impl PgBackend {
    /// A row of the `read` statement as a [`SecretRead`], given the manifest digest the caller holds.
    fn secret_read(
        &self,
        row: &tokio_postgres::Row,
        known: Option<&[u8]>,
    ) -> Result<SecretRead, BackendError> {
        let fail = |e: tokio_postgres::Error| self.pool.error("read secret", &e);
        let digest: Option<Vec<u8>> = row.try_get(0).map_err(fail)?;
        let body: Option<Vec<u8>> = row.try_get(1).map_err(fail)?;
        let record: Option<Vec<u8>> = row.try_get(2).map_err(fail)?;
        let manifest = match (digest_of(digest), body) {
            (_, Some(body)) => ManifestRead::Sealed(body),
            (Some(d), None) if Some(d) == known_digest(known) => ManifestRead::Unchanged,
            _ => ManifestRead::Absent,
        };
        Ok(SecretRead { manifest, record })
    }
}

fn known_digest(bytes: Option<&[u8]>) -> Option<Digest> {
    bytes.and_then(|b| b.try_into().ok())
}

/// The line of a stored record and its tag (a tag of the wrong length gives a line the check refuses).
fn audit_line(record: &str, tag: &[u8]) -> String {
    let tag: Tag = tag.try_into().unwrap_or([0; 32]);
    chain::line(record, &tag)
}
