//! The database schema, versioned: `cvm_schema` lists the versions applied, and every replica applies the
//! missing ones at start inside one transaction holding a transaction-level advisory lock, so replicas
//! starting together apply each version once and a replica never sees half a schema.
//!
//! Tables (version 1):
//! - `cvm_manifest`: one row, the sealed manifest and its SHA-256 (the row is locked by writers).
//! - `cvm_secrets`: `name`, `record` (sealed under the KEK; never a plaintext secret).
//! - `cvm_audit`: `seq`, `record` (JSON), `tag` (the chain's HMAC); a trigger refuses UPDATE, DELETE and
//!   TRUNCATE, and `cvm_audit_head` holds the newest `seq` and `tag` (locked by appenders).
//! - `cvm_nonces`: spent nonces, `id` (primary key: the unique insert that spends one) and `expires_at`.
//! - `cvm_keys`: keys shared by the replicas, sealed under the KEK.

use super::super::backend::BackendError;
use super::pool::Pool;

/// The advisory lock key of schema changes (an arbitrary constant: "cvm-attest schema").
const LOCK_KEY: i64 = 0x6376_6d2d_7363_6865;

/// Version 1.
const V1: &str = r"
CREATE TABLE cvm_manifest (
    id integer PRIMARY KEY CHECK (id = 1),
    digest bytea,
    body bytea
);
INSERT INTO cvm_manifest (id) VALUES (1);
CREATE TABLE cvm_secrets (
    name text PRIMARY KEY,
    record bytea NOT NULL
);
CREATE TABLE cvm_audit (
    seq bigint PRIMARY KEY,
    record text NOT NULL,
    tag bytea NOT NULL
);
CREATE TABLE cvm_audit_head (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    tag bytea NOT NULL
);
INSERT INTO cvm_audit_head (id, seq, tag) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE FUNCTION cvm_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cvm_audit is append-only';
END
$$;
CREATE TRIGGER cvm_audit_no_change BEFORE UPDATE OR DELETE ON cvm_audit
    FOR EACH ROW EXECUTE FUNCTION cvm_audit_append_only();
CREATE TRIGGER cvm_audit_no_truncate BEFORE TRUNCATE ON cvm_audit
    FOR EACH STATEMENT EXECUTE FUNCTION cvm_audit_append_only();
CREATE TABLE cvm_nonces (
    id bytea PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX cvm_nonces_expiry ON cvm_nonces (expires_at);
CREATE TABLE cvm_keys (
    name text PRIMARY KEY,
    sealed bytea NOT NULL
);
";

/// Every version, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[V1];

/// The schema version this build uses.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Apply the versions the database lacks; returns the versions applied now.
pub(super) async fn migrate(pool: &Pool) -> Result<Vec<i32>, BackendError> {
    let client = pool.session().await?;
    let fail = |what: &str, e: tokio_postgres::Error| pool.error(what, &e);
    let run = async {
        client
            .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_KEY})"))
            .await
            .map_err(|e| fail("schema lock", e))?;
        // Created only when missing: a role without CREATE (README "Several replicas") runs on a current schema.
        let exists: bool = client
            .query_one("SELECT to_regclass('cvm_schema') IS NOT NULL", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| fail("schema version", e))?;
        if !exists {
            client
                .batch_execute(
                    "CREATE TABLE cvm_schema (version integer PRIMARY KEY, \
                     applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(|e| fail("schema version table", e))?;
        }
        let have: i32 = client
            .query_one("SELECT coalesce(max(version), 0) FROM cvm_schema", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| fail("schema version", e))?;
        if have > VERSION {
            return Err(BackendError::failed(
                pool.location(),
                format!(
                    "the database's schema is version {have}, newer than this cvm-attest's ({VERSION}): \
                     run the cvm-attest that upgraded it (or a newer one)"
                ),
            ));
        }
        let mut applied = Vec::new();
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(have).unwrap_or(0))
        {
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            client
                .batch_execute(sql)
                .await
                .map_err(|e| fail(&format!("schema version {version}"), e))?;
            client
                .execute("INSERT INTO cvm_schema (version) VALUES ($1)", &[&version])
                .await
                .map_err(|e| fail("schema version", e))?;
            applied.push(version);
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| fail("schema commit", e))?;
        Ok(applied)
    };
    tokio::time::timeout(pool.op_timeout() * 4, run)
        .await
        .map_err(|_| pool.timed_out("schema"))?
}
