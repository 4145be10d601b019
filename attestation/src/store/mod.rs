//! The secret store and the audit log. [`secrets`] seals secrets under the key-encryption key and binds the
//! current records in a sealed [`manifest`]; it keeps its bytes through the one [`backend::Backend`]
//! interface, with [`file`] (the state directory) behind it. [`audit`] is the append-only audit log, and
//! [`atomic`] the atomic file writes the file backend and the token key rely on.

pub mod atomic;
pub mod audit;
pub mod backend;
pub mod file;
pub mod manifest;
pub mod secrets;

pub use audit::{AuditLog, AuditRecord};
pub use backend::{Backend, BackendError};
pub use file::FileBackend;
pub use secrets::{OpenOptions, SecretStore, StoreError, StoredSecret};
