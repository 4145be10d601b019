//! The one interface between the service and where it keeps its state (DESIGN.md `[store] backend`):
//! sealed secret records and the sealed manifest, the hash-chained audit log, spent nonces, and the keys
//! every replica must share. [`super::SecretStore`] seals every record under the KEK, binds the current
//! records in a sealed manifest and checks both on every read; a backend only keeps opaque bytes, durably.
//! [`super::file::FileBackend`] (the state directory, one process) and [`super::postgres::PgBackend`] (a
//! PostgreSQL database shared by several replicas) implement it; their storage is equally untrusted.
//!
//! The methods return boxed futures so that the service holds one `Arc<dyn Backend>` whichever is
//! configured.

use super::audit::{AuditRecord, CommitCounts};
use super::manifest::Digest;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what every backend method returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend operation that failed. `location` says where (a path, a table) and the message what: both for
/// the service log only. `unavailable` says the storage could not be reached (the service answers 503
/// `STORE_UNAVAILABLE`, and the caller may retry) rather than that it answered with a failure.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct BackendError {
    /// Where the operation failed.
    pub location: String,
    /// What failed.
    pub message: String,
    /// Whether the storage could not be reached (connection refused or lost, timeout, shutting down).
    pub unavailable: bool,
}

impl BackendError {
    /// A failure the storage answered with (or a local I/O error).
    pub fn failed(location: impl Into<String>, message: impl fmt::Display) -> Self {
        BackendError {
            location: location.into(),
            message: message.to_string(),
            unavailable: false,
        }
    }

    /// The storage could not be reached.
    pub fn unavailable(location: impl Into<String>, message: impl fmt::Display) -> Self {
        BackendError {
            location: location.into(),
            message: message.to_string(),
            unavailable: true,
        }
    }
}

/// The manifest as a read found it.
#[derive(Debug)]
pub enum ManifestRead {
    /// Its digest is the one the caller already holds.
    Unchanged,
    /// The sealed manifest (its digest differs from the caller's).
    Sealed(Vec<u8>),
    /// There is no manifest.
    Absent,
}

/// What one read of a secret sees: the manifest and the record, both from one point in time.
#[derive(Debug)]
pub struct SecretRead {
    /// The manifest.
    pub manifest: ManifestRead,
    /// The sealed record of the name asked for, if there is one.
    pub record: Option<Vec<u8>>,
}

/// The outcome of spending a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// First use: it is now spent.
    Fresh,
    /// Already spent (on this replica or any other).
    Replayed,
    /// The backend keeps too many unexpired spent nonces to take another now.
    Full,
}

/// A page of audit lines, oldest first, and where the next page starts.
#[derive(Debug, Default)]
pub struct AuditPage {
    /// The lines (each a JSON object, chained lines ending in their `tag`).
    pub lines: Vec<String>,
    /// The cursor of the next page; `None` at the end.
    pub next: Option<u64>,
}

/// One change written under the writers' lock: `name`'s new record, or its removal (`None`).
#[derive(Debug)]
pub struct Change<'a> {
    /// The secret.
    pub name: &'a str,
    /// Its new sealed record; `None` removes it.
    pub record: Option<&'a [u8]>,
}

/// The writers' lock: while it is held no other writer (in this process or, for a shared backend, in any
/// replica) changes the secrets or the manifest. Dropping it without [`Locked::commit`] changes nothing.
pub trait Locked: Send {
    /// The sealed manifest as it was when the lock was taken.
    fn manifest(&self) -> Option<&[u8]>;

    /// The sealed record of `name`, if there is one (at most `max_len` bytes; longer is an error).
    fn read_record<'a>(
        &'a mut self,
        name: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>>;

    /// The names that have a record, whatever the manifest says.
    fn record_names(&mut self) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;

    /// Write `change` (if any) and make `manifest` current, durably, then release the lock. `intent` is the
    /// manifest naming the record to come: a backend that cannot write a record and the manifest in one
    /// transaction writes it first, so that a crash between the steps is settled at the next open
    /// ([`super::manifest::Manifest::recover`]).
    fn commit<'a>(
        self: Box<Self>,
        change: Option<Change<'a>>,
        intent: &'a [u8],
        manifest: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BackendError>>
    where
        Self: 'a;
}

/// Where the service keeps its state. Every write is durable when its future completes.
pub trait Backend: fmt::Debug + Send + Sync {
    /// The manifest (unless its digest is `known`) and the sealed record of `name` (none asked for: `None`),
    /// read at one point in time, so that a change committed by any writer before the call is seen whole.
    fn read<'a>(
        &'a self,
        name: Option<&'a str>,
        known: Option<Digest>,
    ) -> BoxFuture<'a, Result<SecretRead, BackendError>>;

    /// Take the writers' lock.
    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn Locked + '_>, BackendError>>;

    /// Append `record` to the audit log, chained to the record before it; completes once it is durable.
    fn append_audit(&self, record: &AuditRecord) -> BoxFuture<'_, Result<(), BackendError>>;

    /// The last `max` audit lines, oldest first.
    fn audit_tail(&self, max: usize) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;

    /// At most `max` audit lines from `cursor` on (0: the first), oldest first.
    fn audit_page(&self, cursor: u64, max: usize)
    -> BoxFuture<'_, Result<AuditPage, BackendError>>;

    /// Batches, records and commit time of this process's audit writer (for the metrics).
    fn audit_counts(&self) -> CommitCounts;

    /// Spend the nonce `id` (valid until `expires_at`; the time is `now`): [`Spend::Fresh`] exactly once
    /// across every process sharing the backend.
    fn spend_nonce(
        &self,
        id: [u8; 16],
        expires_at: i64,
        now: i64,
    ) -> BoxFuture<'_, Result<Spend, BackendError>>;

    /// [`Backend::spend_nonce`] and [`Backend::read`] of `name` together (a backend may do both in one
    /// round trip). The read sees the state after the spend.
    fn spend_and_read<'a>(
        &'a self,
        id: [u8; 16],
        expires_at: i64,
        now: i64,
        name: &'a str,
        known: Option<Digest>,
    ) -> BoxFuture<'a, Result<(Spend, SecretRead), BackendError>> {
        Box::pin(async move {
            let spend = self.spend_nonce(id, expires_at, now).await?;
            Ok((spend, self.read(Some(name), known).await?))
        })
    }

    /// The key shared by every replica under `name`, sealed under the KEK: the one stored, or `sealed` when
    /// none was (it is then stored, so the first replica's key wins). `None`: this backend shares no keys
    /// (one process: the service makes its own).
    fn shared_key<'a>(
        &'a self,
        name: &'a str,
        sealed: Vec<u8>,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>>;

    /// Whether the storage can be reached now (`/healthz`).
    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>>;

    /// Where the state is, for messages to the operator (never sent to clients; never a password).
    fn location(&self) -> String;
}
