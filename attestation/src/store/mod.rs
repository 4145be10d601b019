//! The service's state directory: secrets encrypted under the key-encryption key ([`secrets`]), the audit log
//! ([`audit`]), and the atomic file writes both rely on ([`atomic`]).

pub mod atomic;
pub mod audit;
pub mod secrets;

pub use audit::{AuditLog, AuditRecord};
pub use secrets::{SecretStore, StoreError, StoredSecret};
