//! A small connection pool: at most `pool_size` connections, each with the service's statements prepared
//! once. A connection that failed (or may be inside an unfinished transaction) is dropped, never reused; a
//! new one is made on demand, so the pool heals by itself when the database comes back. Every wait has a
//! deadline: for a connection (`connect_timeout_secs`) and for each operation (the statement timeout plus the
//! connect timeout, for a server that no longer answers at all).

use super::super::backend::BackendError;
use super::settings::PostgresConfig;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Statement};

/// The statements the service runs, prepared on every connection.
#[derive(Debug)]
pub(super) struct Statements {
    /// `$1` the manifest digest held, `$2` a name or NULL → digest, body unless unchanged, record.
    pub read: Statement,
    /// Under the writers' lock: the manifest (locks its row).
    pub lock_manifest: Statement,
    /// `$1` name → record.
    pub record: Statement,
    /// Every name with a record.
    pub names: Statement,
    /// `$1` name, `$2` record: insert or replace.
    pub put_record: Statement,
    /// `$1` name.
    pub delete_record: Statement,
    /// `$1` digest, `$2` sealed manifest.
    pub set_manifest: Statement,
    /// `$1` id, `$2` expiry → 1 row affected when fresh.
    pub spend: Statement,
    /// `$1` time: delete nonces that expired before it.
    pub purge: Statement,
    /// The audit chain's head (locks its row).
    pub audit_head: Statement,
    /// `$1` seqs, `$2` records, `$3` tags.
    pub audit_insert: Statement,
    /// `$1` seq, `$2` tag.
    pub audit_set_head: Statement,
    /// `$1` count → the newest records, oldest first.
    pub audit_tail: Statement,
    /// `$1` after seq, `$2` count.
    pub audit_page: Statement,
    /// `$1` name, `$2` sealed key: insert unless present.
    pub key_insert: Statement,
    /// `$1` name → sealed key.
    pub key_get: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Statements {
            read: c
                .prepare(
                    "SELECT m.digest, CASE WHEN m.digest = $1::bytea THEN NULL ELSE m.body END, \
                     (SELECT s.record FROM cvm_secrets s WHERE s.name = $2::text) \
                     FROM cvm_manifest m WHERE m.id = 1",
                )
                .await?,
            lock_manifest: c
                .prepare("SELECT body FROM cvm_manifest WHERE id = 1 FOR UPDATE")
                .await?,
            record: c
                .prepare("SELECT record FROM cvm_secrets WHERE name = $1")
                .await?,
            names: c
                .prepare("SELECT name FROM cvm_secrets ORDER BY name")
                .await?,
            put_record: c
                .prepare(
                    "INSERT INTO cvm_secrets (name, record) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                )
                .await?,
            delete_record: c
                .prepare("DELETE FROM cvm_secrets WHERE name = $1")
                .await?,
            set_manifest: c
                .prepare("UPDATE cvm_manifest SET digest = $1, body = $2 WHERE id = 1")
                .await?,
            spend: c
                .prepare(
                    "INSERT INTO cvm_nonces (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                )
                .await?,
            purge: c
                .prepare("DELETE FROM cvm_nonces WHERE expires_at < $1")
                .await?,
            audit_head: c
                .prepare("SELECT seq, tag FROM cvm_audit_head WHERE id = 1 FOR UPDATE")
                .await?,
            audit_insert: c
                .prepare(
                    "INSERT INTO cvm_audit (seq, record, tag) \
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])",
                )
                .await?,
            audit_set_head: c
                .prepare("UPDATE cvm_audit_head SET seq = $1, tag = $2 WHERE id = 1")
                .await?,
            audit_tail: c
                .prepare(
                    "SELECT record, tag FROM (SELECT seq, record, tag FROM cvm_audit ORDER BY seq DESC \
                     LIMIT $1) t ORDER BY seq",
                )
                .await?,
            audit_page: c
                .prepare(
                    "SELECT seq, record, tag FROM cvm_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .await?,
            key_insert: c
                .prepare(
                    "INSERT INTO cvm_keys (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .await?,
            key_get: c
                .prepare("SELECT sealed FROM cvm_keys WHERE name = $1")
                .await?,
        })
    }
}

/// One connection and its statements.
pub(super) struct Conn {
    /// The client.
    pub client: Client,
    /// Its prepared statements.
    pub st: Statements,
}

/// The pool.
pub(super) struct Pool {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    size: usize,
    connect_timeout: Duration,
    op_timeout: Duration,
    location: String,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("location", &self.location)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A connection taken from the pool; it goes back when dropped unless marked broken.
pub(super) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    broken: bool,
    _permit: SemaphorePermit<'a>,
}

impl Pooled<'_> {
    /// The connection.
    pub fn conn(&self) -> Result<&Conn, BackendError> {
        self.conn
            .as_ref()
            .ok_or_else(|| BackendError::failed(&self.pool.location, "connection already dropped"))
    }

    /// Never reuse this connection (it failed, or a transaction on it may not finish).
    pub fn discard(&mut self) {
        self.broken = true;
    }

    /// Reuse it after all (the transaction finished).
    pub fn keep(&mut self) {
        self.broken = false;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.broken
            && !conn.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

/// Whether an error means the database could not be reached (rather than that it refused the statement):
/// no answer (I/O, closed connection, timeout), or SQLSTATE class 08 (connection exception), 53
/// (insufficient resources) or 57P (operator intervention: shutting down, cannot connect now).
pub(super) fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
        }
        None => e.as_db_error().is_none(),
    }
}

impl Pool {
    /// A pool for `settings` (nothing is connected yet).
    pub fn new(settings: &PostgresConfig) -> Result<Self, String> {
        Ok(Pool {
            config: settings.client_config()?,
            tls: settings.tls()?,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(settings.pool_size),
            size: settings.pool_size,
            connect_timeout: settings.connect_timeout(),
            op_timeout: settings.statement_timeout() + settings.connect_timeout(),
            location: settings.location(),
        })
    }

    /// Where the database is (no password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The deadline of one operation.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// A backend error for `e`, unavailable when the database could not be reached.
    pub fn error(&self, what: &str, e: &tokio_postgres::Error) -> BackendError {
        // The Display of a database error is its message; add its SQLSTATE and detail.
        let message = match e.as_db_error() {
            Some(db) => format!(
                "{what}: {} (SQLSTATE {}){}",
                db.message(),
                db.code().code(),
                db.detail().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            None => {
                // The Display of a client error leaves out its cause (a TLS or I/O error): add the chain.
                let mut text = format!("{what}: {e}");
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            }
        };
        if is_unreachable(e) {
            BackendError::unavailable(&self.location, message)
        } else {
            BackendError::failed(&self.location, message)
        }
    }

    /// The operation did not finish in time.
    pub fn timed_out(&self, what: &str) -> BackendError {
        BackendError::unavailable(
            &self.location,
            format!(
                "{what}: no answer within {} s",
                self.op_timeout.as_secs_f64()
            ),
        )
    }

    /// A new session (statements not prepared: the schema may not exist yet).
    pub async fn session(&self) -> Result<Client, BackendError> {
        let connect = async {
            let client = match &self.tls {
                Some(tls) => {
                    let (client, connection) = self.config.connect(tls.clone()).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    client
                }
                None => {
                    let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    client
                }
            };
            Ok::<_, tokio_postgres::Error>(client)
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| self.timed_out("connect"))?
            .map_err(|e| self.error("connect", &e))
    }

    /// A new session with the statements prepared, outside the pool's count (the audit writer's own, so
    /// that commits never queue behind attestations for a connection).
    pub async fn connect(&self) -> Result<Conn, BackendError> {
        let client = self.session().await?;
        let st = tokio::time::timeout(self.op_timeout, Statements::prepare(&client))
            .await
            .map_err(|_| self.timed_out("prepare statements"))?
            .map_err(|e| self.error("prepare statements", &e))?;
        Ok(Conn { client, st })
    }

    /// A connection: an idle one, or a new one, within the connect timeout.
    pub async fn get(&self) -> Result<Pooled<'_>, BackendError> {
        let permit = tokio::time::timeout(self.connect_timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                BackendError::unavailable(
                    &self.location,
                    format!(
                        "all {} connections stayed busy for {} s",
                        self.size,
                        self.connect_timeout.as_secs()
                    ),
                )
            })?
            .map_err(|_| BackendError::failed(&self.location, "the pool is closed"))?;
        loop {
            let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match conn {
                Some(c) if c.client.is_closed() => continue,
                Some(c) => {
                    return Ok(Pooled {
                        pool: self,
                        conn: Some(c),
                        broken: false,
                        _permit: permit,
                    });
                }
                None => break,
            }
        }
        let conn = self.connect().await?;
        Ok(Pooled {
            pool: self,
            conn: Some(conn),
            broken: false,
            _permit: permit,
        })
    }
}
