//! Secrets at rest (DESIGN.md "Protocol"): one sealed record per secret, CBOR `{v: 2, version, nonce,
//! ciphertext}` where `ciphertext = AES-256-GCM(KEK, nonce, AAD = name ‖ 0x00 ‖ version (8 bytes, big-endian),
//! CBOR {value, policy, updated_at})` (records of format 1, without `version`, have the name alone as AAD and
//! are still read). The policy is encrypted with the value so the untrusted storage can neither read the
//! secret nor swap its policy; the AAD stops records from being swapped between names or relabelled with
//! another version; the manifest ([`super::manifest`]) names each secret's current record by its digest, so
//! a record put back from an older version is refused, never released.
//!
//! Writes are serialized by the backend's writers' lock (across replicas for a shared backend) and durable
//! before they return; a write's answer is built from what it stored. Every read asks the backend for the
//! manifest (unless unchanged) and the record, from one point in time, so a change committed by any replica
//! is seen by the next read anywhere, and every operation on one name takes effect at one point between its
//! call and its return (linearizable). Decrypted secrets are cached by the digest of their record. A manifest
//! older than one this process has seen is refused (the storage was rolled back while the service ran).

use super::backend::{Backend, BackendError, Change, Locked, ManifestRead, Spend};
use super::chain::ChainKey;
use super::file::FileBackend;
use super::manifest::{self, Digest, Manifest, ManifestError};
use crate::excerpt::quote;
use crate::policy::Policy;
use crate::protocol::valid_resource_name;
use cvm_keys::Key256;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use zeroize::Zeroizing;

/// Record format written now.
const VERSION: u32 = 2;
/// The first record format: the AAD is the name alone.
const VERSION_NAME_AAD: u32 = 1;
/// Largest record read (values are capped by the request size anyway).
const MAX_RECORD: usize = 1 << 20;
/// Label of the AAD of a shared key sealed under the KEK.
const SHARED_KEY_AAD: &[u8] = b"cvm-attest/v1 shared key\0";

/// Errors of the secret store. Messages may name storage locations: they are for the service log, never for
/// clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The name is not a valid resource name.
    #[error("invalid secret name {}: use 1-128 of A-Z a-z 0-9 . _ - (not starting with '.')", quote(.0))]
    BadName(String),
    /// The policy TOML is not a valid policy for a secret.
    #[error("{}", crate::excerpt::truncate(.0.clone()))]
    BadPolicy(String),
    /// No such secret.
    #[error("no secret named {}", quote(.0))]
    NotFound(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Backend(#[from] BackendError),
    /// The secret's record does not decrypt or decode (tampered, another KEK, or another name).
    #[error(
        "secret {name:?}: its record cannot be decrypted with this key-encryption key (tampered or foreign)"
    )]
    Corrupt {
        /// The secret.
        name: String,
    },
    /// The secret's record is not the one the manifest names: an older or foreign copy was put in its place.
    #[error(
        "secret {name:?}: its record is not the current one (an older or foreign copy was put in its place); it \
         is refused: store the secret again (PUT) to replace it"
    )]
    NotCurrent {
        /// The secret.
        name: String,
    },
    /// The manifest names the secret but its record is gone.
    #[error(
        "secret {name:?}: the manifest names it but its record is missing; store it again (PUT)"
    )]
    Missing {
        /// The secret.
        name: String,
    },
    /// The stored policy no longer passes validation (it was stored by an older, laxer version).
    #[error(
        "secret {name:?}: its stored policy is no longer accepted ({message}); store it again (PUT)"
    )]
    StalePolicy {
        /// The secret.
        name: String,
        /// Why.
        message: String,
    },
    /// The manifest does not verify.
    #[error("{location}: {source}")]
    Manifest {
        /// Where the store is.
        location: String,
        /// Why.
        source: ManifestError,
    },
    /// The manifest is older than one this process has seen, or gone: the storage was rolled back.
    #[error(
        "{location}: the manifest's generation is {found}, but this process has seen {seen}: the store was \
         rolled back (or its manifest removed); nothing is released from it until it is restored"
    )]
    RolledBack {
        /// Where the store is.
        location: String,
        /// The generation found (0: no manifest).
        found: u64,
        /// The highest generation seen.
        seen: u64,
    },
    /// Records without a manifest, and adopting them was not allowed.
    #[error(
        "{location} holds {files} secret record(s) but no manifest: either they were written by a cvm-attest \
         without rollback protection (start once with [store] allow_adopt_existing = true to bind them as they \
         are now, then remove it) or the manifest was deleted (restore it from a backup, or re-register the \
         secrets)"
    )]
    NoManifest {
        /// Where the store is.
        location: String,
        /// How many records there are.
        files: usize,
    },
    /// A key shared by the replicas does not decrypt under this KEK.
    #[error(
        "{location}: the shared {name} does not decrypt under this key-encryption key (another KEK, or \
         tampered): every replica must use the KEK the store was created with"
    )]
    SharedKey {
        /// Where the store is.
        location: String,
        /// Which key.
        name: String,
    },
    /// Randomness or encoding failed.
    #[error("store internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the storage could not be reached (the caller may retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Backend(e) if e.unavailable)
    }
}

/// A decrypted secret.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    /// The name.
    pub name: String,
    /// The value (zeroized on drop).
    pub value: Zeroizing<Vec<u8>>,
    /// The policy TOML as given.
    pub policy_toml: String,
    /// The parsed policy.
    pub policy: Policy,
    /// SHA-256 of the policy TOML.
    pub policy_id: [u8; 32],
    /// When it was stored, Unix seconds.
    pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(with = "cvm_keys::cbor::bytes")]
    nonce: Vec<u8>,
    #[serde(with = "cvm_keys::cbor::bytes")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    #[serde(with = "cvm_keys::cbor::bytes")]
    value: Vec<u8>,
    policy: String,
    updated_at: i64,
}

/// Options of [`SecretStore::open_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Bind records found without a manifest into a new one (`[store] allow_adopt_existing`).
    pub adopt_existing: bool,
}

/// The manifest this process last saw, its digest, and the highest generation it has seen.
#[derive(Debug, Default)]
struct View {
    digest: Option<Digest>,
    manifest: Arc<Manifest>,
    highest: u64,
}

/// The secrets of one store: sealed records in a [`Backend`], the manifest naming the current ones, and a
/// cache of decrypted secrets.
pub struct SecretStore {
    backend: Arc<dyn Backend>,
    key: LessSafeKey,
    manifest_key: hmac::Key,
    rng: SystemRandom,
    view: Mutex<View>,
    cache: RwLock<HashMap<String, (Digest, Arc<StoredSecret>)>>,
    warnings: Vec<String>,
}

/// Most secrets kept decrypted in memory.
const CACHE_MAX: usize = 4096;

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The policy id: SHA-256 of the policy TOML.
pub fn policy_id(policy_toml: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, policy_toml.as_bytes()).as_ref());
    out
}

/// The AAD of a record of format `v` for `name` at `version`.
fn record_aad(v: u32, name: &str, version: u64) -> Vec<u8> {
    let mut aad = name.as_bytes().to_vec();
    if v != VERSION_NAME_AAD {
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
    }
    aad
}

impl SecretStore {
    /// Open (creating if needed, mode 0700) the file store of `state_dir` with the KEK.
    pub async fn open(state_dir: &Path, kek: &Key256) -> Result<Self, StoreError> {
        let backend = FileBackend::open(state_dir, ChainKey::from_kek(kek))?;
        Self::open_with(Arc::new(backend), kek, OpenOptions::default()).await
    }

    /// Open the store kept by `backend`: verify the manifest (or start one), settle a change a crash
    /// interrupted, and note records the manifest does not name (they are never served).
    pub async fn open_with(
        backend: Arc<dyn Backend>,
        kek: &Key256,
        options: OpenOptions,
    ) -> Result<Self, StoreError> {
        let key = UnboundKey::new(&AES_256_GCM, kek.as_bytes())
            .map_err(|_| StoreError::Internal("bad KEK".into()))?;
        let manifest_key = Manifest::key(kek);
        let location = backend.location();
        let mut warnings = Vec::new();
        let mut lock = backend.lock().await?;
        let mut dirty = false;
        let mut manifest = match lock.manifest() {
            Some(bytes) => {
                Manifest::unseal(bytes, &manifest_key).map_err(|source| StoreError::Manifest {
                    location: location.clone(),
                    source,
                })?
            }
            None => {
                let names = lock.record_names().await?;
                let mut m = Manifest::default();
                if !names.is_empty() {
                    if !options.adopt_existing {
                        return Err(StoreError::NoManifest {
                            location,
                            files: names.len(),
                        });
                    }
                    for name in &names {
                        if let Some(record) = lock.read_record(name, MAX_RECORD).await? {
                            m.adopt(name, manifest::digest(&record));
                        }
                    }
                    warnings.push(format!(
                        "bound the {} secret record(s) in {location} into a new manifest \
                         (allow_adopt_existing): remove that setting now",
                        names.len()
                    ));
                }
                dirty = true;
                m
            }
        };
        for name in manifest.pending() {
            let found = lock
                .read_record(&name, MAX_RECORD)
                .await?
                .map(|r| manifest::digest(&r));
            dirty |= manifest.recover(&name, found);
        }
        for name in lock.record_names().await? {
            if !manifest.contains(&name) {
                warnings.push(format!(
                    "ignoring the record of {name:?} in {location}: the manifest does not name it (deleted, \
                     or put back from an older copy)"
                ));
            }
        }
        let sealed = match (dirty, lock.manifest()) {
            (false, Some(bytes)) => bytes.to_vec(),
            _ => seal_manifest(&manifest, &manifest_key)?,
        };
        if dirty {
            lock.commit(None, &sealed, &sealed).await?;
        } else {
            drop(lock);
        }
        let view = View {
            digest: Some(manifest::digest(&sealed)),
            highest: manifest.generation,
            manifest: Arc::new(manifest),
        };
        Ok(SecretStore {
            backend,
            key: LessSafeKey::new(key),
            manifest_key,
            rng: SystemRandom::new(),
            view: Mutex::new(view),
            cache: RwLock::new(HashMap::new()),
            warnings,
        })
    }

    /// What opening the store found worth telling the operator.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The generation of the newest manifest this process has seen: every change counts (README: compare
    /// it with a copy kept elsewhere to detect a whole-store rollback).
    pub fn generation(&self) -> u64 {
        self.lock_view().highest
    }

    fn lock_view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_name(name: &str) -> Result<(), StoreError> {
        if valid_resource_name(name) {
            Ok(())
        } else {
            Err(StoreError::BadName(name.to_owned()))
        }
    }

    fn rolled_back(&self, found: u64, seen: u64) -> StoreError {
        StoreError::RolledBack {
            location: self.backend.location(),
            found,
            seen,
        }
    }

    /// Verify sealed manifest bytes; `Ok(None)` when older than the newest seen (which a read that started
    /// before that one was seen can return: read again), and remember them when they are the newest.
    fn accept_manifest(&self, bytes: &[u8]) -> Result<Option<Arc<Manifest>>, StoreError> {
        let m =
            Manifest::unseal(bytes, &self.manifest_key).map_err(|source| StoreError::Manifest {
                location: self.backend.location(),
                source,
            })?;
        let mut view = self.lock_view();
        if m.generation < view.highest {
            return Ok(None);
        }
        let m = Arc::new(m);
        view.highest = m.generation;
        view.digest = Some(manifest::digest(bytes));
        view.manifest = m.clone();
        Ok(Some(m))
    }

    /// The manifest this process holds and its digest.
    fn held(&self) -> (Option<Digest>, Arc<Manifest>) {
        let v = self.lock_view();
        (v.digest, v.manifest.clone())
    }

    /// The manifest a read returned (`held` when unchanged); `Ok(None)` when it is older than one seen
    /// meanwhile, which a read that started before that one was seen can return: read again.
    fn resolve(
        &self,
        read: ManifestRead,
        held: Arc<Manifest>,
    ) -> Result<Option<Arc<Manifest>>, StoreError> {
        match read {
            ManifestRead::Unchanged => Ok(Some(held)),
            ManifestRead::Sealed(bytes) => self.accept_manifest(&bytes),
            ManifestRead::Absent => {
                let seen = self.generation();
                if seen > 0 {
                    return Err(self.rolled_back(0, seen));
                }
                Ok(Some(Arc::new(Manifest::default())))
            }
        }
    }

    /// The current manifest and `name`'s record (if asked), as one read of the backend sees them.
    async fn read(
        &self,
        name: Option<&str>,
    ) -> Result<(Arc<Manifest>, Option<Vec<u8>>), StoreError> {
        // A second read starting now must see at least the newest manifest seen, unless the storage went
        // back.
        for _ in 0..2 {
            let (known, held) = self.held();
            let read = self.backend.read(name, known).await?;
            if let Some(m) = self.resolve(read.manifest, held)? {
                return Ok((m, read.record));
            }
        }
        let seen = self.generation();
        Err(self.rolled_back(seen.saturating_sub(1), seen))
    }

    /// The manifest under the writers' lock (the newest there is).
    fn locked_manifest(&self, lock: &dyn Locked) -> Result<Manifest, StoreError> {
        let seen = self.generation();
        let Some(bytes) = lock.manifest() else {
            return Err(self.rolled_back(0, seen));
        };
        let m =
            Manifest::unseal(bytes, &self.manifest_key).map_err(|source| StoreError::Manifest {
                location: self.backend.location(),
                source,
            })?;
        if m.generation < seen {
            return Err(self.rolled_back(m.generation, seen));
        }
        Ok(m)
    }

    /// Store (or replace) a secret; returns what was stored once it is durable. The policy must be valid and
    /// fit for release ([`Policy::check_for_release`]).
    pub async fn put(
        &self,
        name: &str,
        value: &[u8],
        policy_toml: &str,
        now: i64,
    ) -> Result<Arc<StoredSecret>, StoreError> {
        Self::check_name(name)?;
        let policy = Policy::from_toml(policy_toml)
            .and_then(|p| p.check_for_release().map(|()| p))
            .map_err(|e| StoreError::BadPolicy(e.to_string()))?;
        let stored = Arc::new(StoredSecret {
            name: name.to_owned(),
            value: Zeroizing::new(value.to_vec()),
            policy_toml: policy_toml.to_owned(),
            policy,
            policy_id: policy_id(policy_toml),
            updated_at: now,
        });
        let lock = self.backend.lock().await?;
        let manifest = self.locked_manifest(lock.as_ref())?;
        let version = manifest.generation.saturating_add(1);
        let record = self.seal(name, version, value, policy_toml, now)?;
        let digest = manifest::digest(&record);
        self.change(lock, manifest, name, Some(&record)).await?;
        self.cache_put(name, Some((digest, stored.clone())));
        Ok(stored)
    }

    /// Delete a secret.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        Self::check_name(name)?;
        let lock = self.backend.lock().await?;
        let manifest = self.locked_manifest(lock.as_ref())?;
        if manifest.current(name).is_none() {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        self.change(lock, manifest, name, None).await?;
        self.cache_put(name, None);
        Ok(())
    }

    /// Write one change durably through the lock: the intent, the record (or its removal), the commit
    /// (a backend with transactions writes the record and the commit together).
    async fn change(
        &self,
        lock: Box<dyn Locked + '_>,
        manifest: Manifest,
        name: &str,
        record: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut intent = manifest;
        intent.begin(name, record.map(manifest::digest));
        let mut done = intent.clone();
        done.commit(name);
        let intent = seal_manifest(&intent, &self.manifest_key)?;
        let sealed = seal_manifest(&done, &self.manifest_key)?;
        lock.commit(Some(Change { name, record }), &intent, &sealed)
            .await?;
        let mut view = self.lock_view();
        if done.generation >= view.highest {
            view.highest = done.generation;
            view.digest = Some(manifest::digest(&sealed));
            view.manifest = Arc::new(done);
        }
        Ok(())
    }

    fn cache_put(&self, name: &str, secret: Option<(Digest, Arc<StoredSecret>)>) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        match secret {
            Some(s) => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(name.to_owned(), s);
            }
            None => {
                cache.remove(name);
            }
        }
    }

    fn cached(&self, name: &str, record: &Digest) -> Option<Arc<StoredSecret>> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .filter(|(d, _)| d == record)
            .map(|(_, s)| s.clone())
    }

    /// A secret: its record as the backend has it now, which must be the one the current manifest names
    /// (decrypted once per record and cached).
    pub async fn get(&self, name: &str) -> Result<Arc<StoredSecret>, StoreError> {
        Self::check_name(name)?;
        let (manifest, record) = self.read(Some(name)).await?;
        self.secret_of(name, &manifest, record)
    }

    /// Spend a nonce ([`Backend::spend_nonce`]) and get `name` ([`SecretStore::get`]) with one call to the
    /// backend (one round trip to a database). A backend failure fails both; the secret's own errors are
    /// the second result's.
    pub async fn spend_and_get(
        &self,
        id: [u8; 16],
        expires_at: i64,
        now: i64,
        name: &str,
    ) -> Result<(Spend, Result<Arc<StoredSecret>, StoreError>), StoreError> {
        Self::check_name(name)?;
        let (known, held) = self.held();
        let (spend, read) = self
            .backend
            .spend_and_read(id, expires_at, now, name, known)
            .await?;
        let secret = match self.resolve(read.manifest, held) {
            Ok(Some(manifest)) => self.secret_of(name, &manifest, read.record),
            Ok(None) => self.get(name).await,
            Err(e) => Err(e),
        };
        Ok((spend, secret))
    }

    /// `name`'s secret from its record, which must be the one `manifest` names.
    fn secret_of(
        &self,
        name: &str,
        manifest: &Manifest,
        record: Option<Vec<u8>>,
    ) -> Result<Arc<StoredSecret>, StoreError> {
        let Some(current) = manifest.current(name) else {
            return Err(StoreError::NotFound(name.to_owned()));
        };
        let record = record.ok_or_else(|| StoreError::Missing {
            name: name.to_owned(),
        })?;
        let digest = manifest::digest(&record);
        if digest != current {
            return Err(StoreError::NotCurrent {
                name: name.to_owned(),
            });
        }
        if let Some(s) = self.cached(name, &digest) {
            return Ok(s);
        }
        let secret = Arc::new(self.open_record(name, &record)?);
        self.cache_put(name, Some((digest, secret.clone())));
        Ok(secret)
    }

    /// The names of all secrets, sorted.
    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.read(None).await?.0.names())
    }

    /// The key shared by the replicas under `name`: the one the backend holds (sealed under the KEK, AAD
    /// binding its name), or `fresh` when the backend held none and stored it now; `None` when the backend
    /// shares no keys.
    pub async fn shared_key(
        &self,
        name: &str,
        fresh: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let mut aad = SHARED_KEY_AAD.to_vec();
        aad.extend_from_slice(name.as_bytes());
        let sealed = self.seal_bytes(&aad, fresh)?;
        let Some(stored) = self.backend.shared_key(name, sealed).await? else {
            return Ok(None);
        };
        let corrupt = || StoreError::SharedKey {
            location: self.backend.location(),
            name: name.to_owned(),
        };
        let file: FileFormat =
            cvm_keys::cbor::from_slice_capped(&stored, MAX_RECORD).map_err(|_| corrupt())?;
        self.open_bytes(&aad, &file).map(Some).ok_or_else(corrupt)
    }

    /// `plain` sealed under the KEK with `aad`.
    fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal_format(VERSION, None, aad, plain)
    }

    fn seal_format(
        &self,
        v: u32,
        version: Option<u64>,
        aad: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Internal("no randomness".into()))?;
        let mut ciphertext = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut ciphertext,
            )
            .map_err(|_| StoreError::Internal("encryption failed".into()))?;
        cvm_keys::cbor::to_vec(&FileFormat {
            v,
            version,
            nonce: nonce.to_vec(),
            ciphertext,
        })
        .map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// The plaintext of a sealed record under `aad`, if it authenticates.
    fn open_bytes(&self, aad: &[u8], file: &FileFormat) -> Option<Zeroizing<Vec<u8>>> {
        let nonce: [u8; NONCE_LEN] = file.nonce.as_slice().try_into().ok()?;
        let mut buf = Zeroizing::new(file.ciphertext.clone());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }

    /// A sealed record of `value` and its policy, version `version` of `name`.
    fn seal(
        &self,
        name: &str,
        version: u64,
        value: &[u8],
        policy_toml: &str,
        now: i64,
    ) -> Result<Vec<u8>, StoreError> {
        let plain = Zeroizing::new(
            cvm_keys::cbor::to_vec(&Plain {
                value: value.to_vec(),
                policy: policy_toml.to_owned(),
                updated_at: now,
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?,
        );
        self.seal_format(
            VERSION,
            Some(version),
            &record_aad(VERSION, name, version),
            &plain,
        )
    }

    /// Decrypt and decode a record of `name`.
    fn open_record(&self, name: &str, record: &[u8]) -> Result<StoredSecret, StoreError> {
        let corrupt = || StoreError::Corrupt {
            name: name.to_owned(),
        };
        let file: FileFormat =
            cvm_keys::cbor::from_slice_capped(record, MAX_RECORD).map_err(|_| corrupt())?;
        let version = match (file.v, file.version) {
            (VERSION_NAME_AAD, None) => 0,
            (VERSION, Some(version)) => version,
            _ => return Err(corrupt()),
        };
        let plain = self
            .open_bytes(&record_aad(file.v, name, version), &file)
            .ok_or_else(corrupt)?;
        let plain: Plain =
            cvm_keys::cbor::from_slice_capped(&plain, MAX_RECORD).map_err(|_| corrupt())?;
        let policy = Policy::from_toml(&plain.policy).map_err(|e| StoreError::StalePolicy {
            name: name.to_owned(),
            message: crate::excerpt::truncate(e.to_string()),
        })?;
        Ok(StoredSecret {
            name: name.to_owned(),
            policy_id: policy_id(&plain.policy),
            value: Zeroizing::new(plain.value),
            policy_toml: plain.policy,
            policy,
            updated_at: plain.updated_at,
        })
    }
}

fn seal_manifest(m: &Manifest, key: &hmac::Key) -> Result<Vec<u8>, StoreError> {
    m.seal(key).map_err(|e| StoreError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: &str = "allow_any_measurement = true\n";

    fn record(dir: &Path, name: &str) -> std::path::PathBuf {
        dir.join(format!("secrets/{name}.secret"))
    }

    fn file_backend(dir: &Path, kek: &Key256) -> Arc<dyn Backend> {
        Arc::new(FileBackend::open(dir, ChainKey::from_kek(kek)).unwrap())
    }

    #[tokio::test]
    async fn round_trips_and_refuses_swapped_or_tampered_records() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        let stored = s.put("a", b"value-a", ANY, 5).await.unwrap();
        assert_eq!((&stored.value[..], stored.updated_at), (&b"value-a"[..], 5));
        s.put("b", b"value-b", ANY, 6).await.unwrap();
        assert_eq!(&s.get("a").await.unwrap().value[..], b"value-a");
        assert_eq!(s.list().await.unwrap(), ["a", "b"]);
        assert!(matches!(
            s.put("x", b"v", "nonsense = [", 0).await,
            Err(StoreError::BadPolicy(_))
        ));
        assert!(matches!(
            s.put("x", b"v", "", 0).await,
            Err(StoreError::BadPolicy(_))
        ));
        assert!(matches!(
            s.put("../x", b"v", ANY, 0).await,
            Err(StoreError::BadName(_))
        ));
        // Swap a's record into b's place, or flip a bit of a's: neither is the current record.
        std::fs::copy(record(dir.path(), "a"), record(dir.path(), "b")).unwrap();
        let mut bytes = std::fs::read(record(dir.path(), "a")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(record(dir.path(), "a"), &bytes).unwrap();
        // The running store sees it at the next read, as a fresh one does.
        assert!(matches!(
            s.get("b").await,
            Err(StoreError::NotCurrent { .. })
        ));
        drop(s);
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        assert!(matches!(
            s.get("b").await,
            Err(StoreError::NotCurrent { .. })
        ));
        assert!(matches!(
            s.get("a").await,
            Err(StoreError::NotCurrent { .. })
        ));
        // Another KEK cannot even open the store.
        drop(s);
        assert!(matches!(
            SecretStore::open(dir.path(), &Key256::generate().unwrap()).await,
            Err(StoreError::Manifest { .. })
        ));
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        s.put("c", b"value-c", ANY, 7).await.unwrap();
        s.delete("c").await.unwrap();
        assert!(matches!(s.get("c").await, Err(StoreError::NotFound(_))));
        assert!(matches!(s.delete("c").await, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_record_put_back_from_an_older_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let m = "11".repeat(48);
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        // The old policy let any guest have the secret; the new one names a measurement.
        s.put("db", b"v1", ANY, 1).await.unwrap();
        let old = std::fs::read(record(dir.path(), "db")).unwrap();
        s.put(
            "db",
            b"v2",
            &format!("[snp]\nmeasurements = [\"{m}\"]\n"),
            2,
        )
        .await
        .unwrap();
        // A deleted secret's record, put back.
        s.put("gone", b"g", ANY, 3).await.unwrap();
        let gone = std::fs::read(record(dir.path(), "gone")).unwrap();
        s.delete("gone").await.unwrap();
        drop(s);
        std::fs::write(record(dir.path(), "db"), &old).unwrap();
        std::fs::write(record(dir.path(), "gone"), &gone).unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        assert!(matches!(
            s.get("db").await,
            Err(StoreError::NotCurrent { .. })
        ));
        assert!(matches!(s.get("gone").await, Err(StoreError::NotFound(_))));
        assert_eq!(s.list().await.unwrap(), ["db"]);
        assert!(s.warnings().iter().any(|w| w.contains("\"gone\"")));
        // The same store running when the record is rolled back refuses it at the next read.
        s.put("db", b"v3", ANY, 4).await.unwrap();
        assert_eq!(&s.get("db").await.unwrap().value[..], b"v3");
        std::fs::write(record(dir.path(), "db"), &old).unwrap();
        assert!(matches!(
            s.get("db").await,
            Err(StoreError::NotCurrent { .. })
        ));
    }

    #[tokio::test]
    async fn a_manifest_older_than_one_seen_is_refused_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        s.put("db", b"v1", ANY, 1).await.unwrap();
        let manifest = dir.path().join("secrets.manifest");
        let old_manifest = std::fs::read(&manifest).unwrap();
        let old_record = std::fs::read(record(dir.path(), "db")).unwrap();
        s.put("db", b"v2", ANY, 2).await.unwrap();
        // The whole store put back together: consistent in itself, but older than what this process saw.
        std::fs::write(&manifest, &old_manifest).unwrap();
        std::fs::write(record(dir.path(), "db"), &old_record).unwrap();
        let e = s.get("db").await.unwrap_err();
        assert!(matches!(e, StoreError::RolledBack { .. }), "{e}");
        assert!(matches!(
            s.put("db", b"v3", ANY, 3).await,
            Err(StoreError::RolledBack { .. })
        ));
        std::fs::remove_file(&manifest).unwrap();
        assert!(matches!(
            s.get("db").await,
            Err(StoreError::RolledBack { found: 0, .. })
        ));
    }

    #[tokio::test]
    async fn records_of_the_first_format_are_still_read_and_bound_to_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        let plain = cvm_keys::cbor::to_vec(&Plain {
            value: b"old".to_vec(),
            policy: ANY.into(),
            updated_at: 1,
        })
        .unwrap();
        let v1 = s
            .seal_format(VERSION_NAME_AAD, None, b"db", &plain)
            .unwrap();
        assert_eq!(&s.open_record("db", &v1).unwrap().value[..], b"old");
        assert!(matches!(
            s.open_record("other", &v1),
            Err(StoreError::Corrupt { .. })
        ));
        // A current record relabelled with another version, or as format 1, does not decrypt.
        let v2 = s.seal("db", 7, b"new", ANY, 2).unwrap();
        let mut f: FileFormat = cvm_keys::cbor::from_slice_capped(&v2, MAX_RECORD).unwrap();
        f.version = Some(8);
        let relabelled = cvm_keys::cbor::to_vec(&f).unwrap();
        assert!(matches!(
            s.open_record("db", &relabelled),
            Err(StoreError::Corrupt { .. })
        ));
        f.v = VERSION_NAME_AAD;
        f.version = None;
        let downgraded = cvm_keys::cbor::to_vec(&f).unwrap();
        assert!(matches!(
            s.open_record("db", &downgraded),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn records_without_a_manifest_are_refused_unless_adoption_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        s.put("db", b"v", ANY, 1).await.unwrap();
        drop(s);
        std::fs::remove_file(dir.path().join("secrets.manifest")).unwrap();
        let e = SecretStore::open(dir.path(), &kek).await.unwrap_err();
        assert!(matches!(e, StoreError::NoManifest { files: 1, .. }), "{e}");
        assert!(e.to_string().contains("allow_adopt_existing"), "{e}");
        let open = async || {
            SecretStore::open_with(
                file_backend(dir.path(), &kek),
                &kek,
                OpenOptions {
                    adopt_existing: true,
                },
            )
            .await
        };
        let s = open().await.unwrap();
        assert_eq!(&s.get("db").await.unwrap().value[..], b"v");
        assert_eq!(s.warnings().len(), 1);
        drop(s);
        // Adopted once: the manifest exists now, and nothing more is adopted.
        assert!(open().await.unwrap().warnings().is_empty());
    }

    #[tokio::test]
    async fn a_change_interrupted_by_a_crash_is_settled_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        s.put("db", b"old", ANY, 1).await.unwrap();
        let manifest_path = dir.path().join("secrets.manifest");
        let key = Manifest::key(&kek);
        let m = Manifest::unseal(&std::fs::read(&manifest_path).unwrap(), &key).unwrap();
        // The intent of a write was made durable, then the process died: before the record was written, and
        // (second round) after.
        let new_record = s.seal("db", m.generation + 1, b"new", ANY, 2).unwrap();
        let mut intent = m.clone();
        intent.begin("db", Some(manifest::digest(&new_record)));
        std::fs::write(&manifest_path, intent.seal(&key).unwrap()).unwrap();
        drop(s);
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        assert_eq!(&s.get("db").await.unwrap().value[..], b"old");
        drop(s);
        std::fs::write(&manifest_path, intent.seal(&key).unwrap()).unwrap();
        std::fs::write(record(dir.path(), "db"), &new_record).unwrap();
        let s = SecretStore::open(dir.path(), &kek).await.unwrap();
        assert_eq!(&s.get("db").await.unwrap().value[..], b"new");
        assert!(s.generation() > m.generation);
    }
}
