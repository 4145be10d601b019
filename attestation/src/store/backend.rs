//! The one interface between the secret store and where it keeps its bytes. [`super::SecretStore`] seals
//! every record under the KEK, binds the current records in a sealed manifest and checks both on every
//! read; a backend only keeps opaque bytes, durably. [`super::file::FileBackend`] (the state directory) is
//! the one built in; a database backend (DESIGN.md `[store] backend = "postgres"`) implements the same trait,
//! and its storage is as untrusted as a directory's.

use std::fmt;

/// A backend operation that failed; `location` says where (a path, a table), for the service log only.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {source}")]
pub struct BackendError {
    /// Where the operation failed.
    pub location: String,
    /// The error.
    pub source: std::io::Error,
}

/// Durable storage of sealed secret records and of the sealed manifest.
///
/// Each write must be atomic (afterwards the old or the new bytes are there, never a mix) and durable when it
/// returns. The store writes a change as three steps (the manifest naming the record to come, the record, the
/// manifest naming it current) and recovers at open from a crash between them, so a backend needs no
/// transaction spanning a record and the manifest.
pub trait Backend: fmt::Debug + Send + Sync {
    /// The sealed record of `name` (at most `max_len` bytes; longer is an error), if there is one.
    fn read_record(&self, name: &str, max_len: usize) -> Result<Option<Vec<u8>>, BackendError>;

    /// The names that have a record, whatever the manifest says.
    fn record_names(&self) -> Result<Vec<String>, BackendError>;

    /// The sealed manifest (at most `max_len` bytes), if there is one.
    fn read_manifest(&self, max_len: usize) -> Result<Option<Vec<u8>>, BackendError>;

    /// Replace the manifest with `manifest`, atomically and durably.
    fn write_manifest(&self, manifest: &[u8]) -> Result<(), BackendError>;

    /// Replace `name`'s record with `record`, or remove it (`None`; removing a missing record succeeds),
    /// atomically and durably.
    fn write_record(&self, name: &str, record: Option<&[u8]>) -> Result<(), BackendError>;

    /// Where the records are, for messages to the operator (never sent to clients).
    fn location(&self) -> String;
}
