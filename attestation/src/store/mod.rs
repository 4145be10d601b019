//! The service's state: secrets, the audit log, spent nonces and shared keys, behind one interface
//! ([`backend::Backend`]) with two implementations, [`file`] (the state directory, one process) and
//! [`postgres`] (a database shared by replicas). [`secrets`] seals secrets under the key-encryption key and
//! binds the current records in a sealed [`manifest`]; [`chain`] links the audit records into a hash chain
//! and checks it; [`audit`] is the file store's audit log, and [`atomic`] the atomic file writes the file
//! backend and the token key rely on.

pub mod atomic;
pub mod audit;
pub mod backend;
pub mod chain;
pub mod file;
pub mod manifest;
pub mod postgres;
pub mod secrets;

pub use audit::{AuditLog, AuditRecord};
pub use backend::{Backend, BackendError};
pub use file::FileBackend;
pub use postgres::PgBackend;
pub use secrets::{OpenOptions, SecretStore, StoreError, StoredSecret};

/// Check the whole audit log of `backend` against the chain under `key`, a page at a time.
pub async fn verify_audit(
    backend: &dyn Backend,
    key: chain::ChainKey,
) -> Result<chain::ChainCheck, BackendError> {
    /// Lines per page.
    const PAGE: usize = 10_000;
    let mut verifier = chain::Verifier::new(key);
    let mut cursor = 0;
    loop {
        let page = backend.audit_page(cursor, PAGE).await?;
        for line in &page.lines {
            verifier.push(line);
        }
        match page.next {
            Some(next) => cursor = next,
            None => return Ok(verifier.finish()),
        }
    }
}
