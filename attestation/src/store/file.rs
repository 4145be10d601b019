//! The `file` backend: the state directory, for one `cvm-attest serve` process. Records are
//! `secrets/<name>.secret` and the manifest is `secrets.manifest`, each replaced atomically and durably
//! ([`super::atomic`]), mode 0600 in directories of mode 0700; the audit log is `audit.jsonl`
//! ([`super::audit`]); spent nonces are kept in memory ([`crate::nonce::ReplaySet`]) and no key is shared
//! (the service makes its nonce key at start and keeps its token key in `token-key.p8`).

use super::atomic;
use super::audit::{AuditLog, AuditRecord, CommitCounts};
use super::backend::{
    AuditPage, Backend, BackendError, BoxFuture, Change, Locked, ManifestRead, SecretRead, Spend,
};
use super::chain::ChainKey;
use super::manifest::{self, Digest};
use crate::nonce::{DEFAULT_REPLAY_CAPACITY, ReplaySet};
use crate::protocol::valid_resource_name;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::{RwLock, RwLockWriteGuard};

/// Extension of record files.
const EXT: &str = "secret";
/// What stands for `/` in the record file of a KBS resource path (`default/key/db` is
/// `default+key+db.secret`); no single name contains it.
const SLASH: &str = "+";
/// The manifest's file name in the state directory.
const MANIFEST: &str = "secrets.manifest";
/// Largest manifest or record read through [`Backend::read`].
const MAX_READ: usize = manifest::MAX_LEN;

/// Records, manifest, audit log and spent nonces of a state directory.
#[derive(Debug)]
pub struct FileBackend {
    secrets: PathBuf,
    manifest: PathBuf,
    /// Readers share it; a writer holds it through the three steps of a change, so a read sees committed
    /// states only.
    lock: RwLock<()>,
    audit: AuditLog,
    spent: Mutex<ReplaySet>,
}

fn error(path: &Path, source: std::io::Error) -> BackendError {
    BackendError::failed(path.display().to_string(), source)
}

/// Read `path` if it exists, refusing files longer than `max_len` (the directory is untrusted: a planted
/// huge file must not be read into memory).
fn read_capped(path: &Path, max_len: usize) -> Result<Option<Vec<u8>>, BackendError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(path, e)),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| error(path, e))?;
    if bytes.len() > max_len {
        return Err(error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("longer than {max_len} bytes"),
            ),
        ));
    }
    Ok(Some(bytes))
}

impl FileBackend {
    /// The backend of `state_dir`, creating `state_dir/secrets` (mode 0700) if needed and opening the audit
    /// log, whose records are chained under `audit_key`.
    pub fn open(state_dir: &Path, audit_key: ChainKey) -> Result<Self, BackendError> {
        let secrets = state_dir.join("secrets");
        atomic::create_private_dir(&secrets).map_err(|e| error(&secrets, e))?;
        let audit = AuditLog::open(state_dir, audit_key)
            .map_err(|e| error(&state_dir.join("audit.jsonl"), e))?;
        Ok(FileBackend {
            secrets,
            manifest: state_dir.join(MANIFEST),
            lock: RwLock::new(()),
            audit,
            spent: Mutex::new(ReplaySet::new(DEFAULT_REPLAY_CAPACITY)),
        })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.secrets
            .join(format!("{}.{EXT}", name.replace('/', SLASH)))
    }

    fn read_record(&self, name: &str, max_len: usize) -> Result<Option<Vec<u8>>, BackendError> {
        read_capped(&self.record_path(name), max_len)
    }

    fn record_names(&self) -> Result<Vec<String>, BackendError> {
        let rd = std::fs::read_dir(&self.secrets).map_err(|e| error(&self.secrets, e))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| error(&self.secrets, e))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(name) = file
                .strip_suffix(&format!(".{EXT}"))
                .map(|stem| stem.replace(SLASH, "/"))
                && valid_resource_name(&name)
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn write_manifest(&self, manifest: &[u8]) -> Result<(), BackendError> {
        atomic::write_file(&self.manifest, manifest, 0o600).map_err(|e| error(&self.manifest, e))
    }

    fn write_record(&self, name: &str, record: Option<&[u8]>) -> Result<(), BackendError> {
        let path = self.record_path(name);
        match record {
            Some(bytes) => atomic::write_file(&path, bytes, 0o600),
            None => match atomic::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        }
        .map_err(|e| error(&path, e))
    }

    fn read_now(
        &self,
        name: Option<&str>,
        known: Option<Digest>,
    ) -> Result<SecretRead, BackendError> {
        let manifest = match read_capped(&self.manifest, MAX_READ)? {
            None => ManifestRead::Absent,
            Some(bytes) if Some(manifest::digest(&bytes)) == known => ManifestRead::Unchanged,
            Some(bytes) => ManifestRead::Sealed(bytes),
        };
        let record = match name {
            Some(name) => self.read_record(name, MAX_READ)?,
            None => None,
        };
        Ok(SecretRead { manifest, record })
    }
}

/// The writers' lock of a state directory.
struct FileLocked<'a> {
    backend: &'a FileBackend,
    _guard: RwLockWriteGuard<'a, ()>,
    manifest: Option<Vec<u8>>,
}

impl Locked for FileLocked<'_> {
    fn manifest(&self) -> Option<&[u8]> {
        self.manifest.as_deref()
    }

    fn read_record<'a>(
        &'a mut self,
        name: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        Box::pin(async move { self.backend.read_record(name, max_len) })
    }

    fn record_names(&mut self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move { self.backend.record_names() })
    }

    fn commit<'a>(
        self: Box<Self>,
        change: Option<Change<'a>>,
        intent: &'a [u8],
        manifest: &'a [u8],
    ) -> BoxFuture<'a, Result<(), BackendError>>
    where
        Self: 'a,
    {
        Box::pin(async move {
            // Three steps, each atomic and durable: a crash between them is settled at the next open.
            if let Some(change) = change {
                self.backend.write_manifest(intent)?;
                self.backend.write_record(change.name, change.record)?;
            }
            self.backend.write_manifest(manifest)
        })
    }
}

impl Backend for FileBackend {
    fn read<'a>(
        &'a self,
        name: Option<&'a str>,
        known: Option<Digest>,
    ) -> BoxFuture<'a, Result<SecretRead, BackendError>> {
        Box::pin(async move {
            let _shared = self.lock.read().await;
            self.read_now(name, known)
        })
    }

    fn lock(&self) -> BoxFuture<'_, Result<Box<dyn Locked + '_>, BackendError>> {
        Box::pin(async move {
            let guard = self.lock.write().await;
            let manifest = read_capped(&self.manifest, manifest::MAX_LEN)?;
            Ok(Box::new(FileLocked {
                backend: self,
                _guard: guard,
                manifest,
            }) as Box<dyn Locked + '_>)
        })
    }

    fn append_audit(&self, record: &AuditRecord) -> BoxFuture<'_, Result<(), BackendError>> {
        let record = record.clone();
        Box::pin(async move {
            self.audit
                .append(&record)
                .await
                .map_err(|e| error(self.audit.path(), e))
        })
    }

    fn audit_tail(&self, max: usize) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            self.audit
                .tail(max)
                .map_err(|e| error(self.audit.path(), e))
        })
    }

    fn audit_page(
        &self,
        cursor: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<AuditPage, BackendError>> {
        Box::pin(async move {
            let (lines, next) = self
                .audit
                .page(cursor, max)
                .map_err(|e| error(self.audit.path(), e))?;
            Ok(AuditPage { lines, next })
        })
    }

    fn audit_counts(&self) -> CommitCounts {
        self.audit.commit_counts()
    }

    fn spend_nonce(
        &self,
        id: [u8; 16],
        expires_at: i64,
        now: i64,
    ) -> BoxFuture<'_, Result<Spend, BackendError>> {
        let spend = self
            .spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spend(id, expires_at, now);
        Box::pin(async move { Ok(spend) })
    }

    fn shared_key<'a>(
        &'a self,
        _name: &'a str,
        _sealed: Vec<u8>,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn location(&self) -> String {
        self.secrets.display().to_string()
    }
}
