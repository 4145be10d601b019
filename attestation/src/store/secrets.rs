//! Secrets at rest (DESIGN.md "Protocol"): one sealed record per secret, CBOR `{v: 1, nonce, ciphertext}`
//! where `ciphertext = AES-256-GCM(KEK, nonce, AAD = name, CBOR {value, policy, updated_at})`. The policy is
//! encrypted with the value so the untrusted storage can neither read the secret nor swap its policy; the
//! name in the AAD stops records from being swapped between names; the manifest ([`super::manifest`]) names
//! each secret's current record, so a record put back from an older version is refused, never released.
//!
//! Writes are serialized and durable before they return; a write's answer is built from what it stored.
//! Reads are served from a cache of decrypted secrets, filled and invalidated under the writers' lock, so
//! every operation on one name takes effect at one point between its call and its return (linearizable).

use super::backend::{Backend, BackendError};
use super::file::FileBackend;
use super::manifest::{self, Manifest, ManifestError};
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

/// Record format version.
const VERSION: u32 = 1;
/// Largest record read (values are capped by the request size anyway).
const MAX_RECORD: usize = 1 << 20;

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
    /// Randomness or encoding failed.
    #[error("store internal error: {0}")]
    Internal(String),
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

/// The secrets of one store: sealed records in a [`Backend`], the manifest naming the current ones, and a
/// cache of decrypted secrets.
pub struct SecretStore {
    backend: Box<dyn Backend>,
    key: LessSafeKey,
    manifest_key: hmac::Key,
    rng: SystemRandom,
    /// The manifest as last written; holding it serializes writes and cache fills.
    manifest: Mutex<Manifest>,
    cache: RwLock<HashMap<String, Arc<StoredSecret>>>,
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

impl SecretStore {
    /// Open (creating if needed, mode 0700) the file store of `state_dir` with the KEK.
    pub fn open(state_dir: &Path, kek: &Key256) -> Result<Self, StoreError> {
        Self::open_with(
            Box::new(FileBackend::open(state_dir)?),
            kek,
            OpenOptions::default(),
        )
    }

    /// Open the store kept by `backend`: verify the manifest (or start one), settle a change a crash
    /// interrupted, and note records the manifest does not name (they are never served).
    pub fn open_with(
        backend: Box<dyn Backend>,
        kek: &Key256,
        options: OpenOptions,
    ) -> Result<Self, StoreError> {
        let key = UnboundKey::new(&AES_256_GCM, kek.as_bytes())
            .map_err(|_| StoreError::Internal("bad KEK".into()))?;
        let manifest_key = Manifest::key(kek);
        let location = backend.location();
        let mut warnings = Vec::new();
        let mut dirty = false;
        let mut manifest = match backend.read_manifest(manifest::MAX_LEN)? {
            Some(bytes) => {
                Manifest::unseal(&bytes, &manifest_key).map_err(|source| StoreError::Manifest {
                    location: location.clone(),
                    source,
                })?
            }
            None => {
                let names = backend.record_names()?;
                let mut m = Manifest::default();
                if !names.is_empty() {
                    if !options.adopt_existing {
                        return Err(StoreError::NoManifest {
                            location,
                            files: names.len(),
                        });
                    }
                    for name in &names {
                        if let Some(record) = backend.read_record(name, MAX_RECORD)? {
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
            let found = backend
                .read_record(&name, MAX_RECORD)?
                .map(|r| manifest::digest(&r));
            dirty |= manifest.recover(&name, found);
        }
        if dirty {
            backend.write_manifest(&seal_manifest(&manifest, &manifest_key)?)?;
        }
        for name in backend.record_names()? {
            if !manifest.contains(&name) {
                warnings.push(format!(
                    "ignoring the record of {name:?} in {location}: the manifest does not name it (deleted, \
                     or put back from an older copy)"
                ));
            }
        }
        Ok(SecretStore {
            backend,
            key: LessSafeKey::new(key),
            manifest_key,
            rng: SystemRandom::new(),
            manifest: Mutex::new(manifest),
            cache: RwLock::new(HashMap::new()),
            warnings,
        })
    }

    /// What opening the store found worth telling the operator.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The manifest's generation: every change counts (README: compare it with a copy kept elsewhere to
    /// detect a whole-store rollback).
    pub fn generation(&self) -> u64 {
        self.lock_manifest().generation
    }

    fn lock_manifest(&self) -> MutexGuard<'_, Manifest> {
        self.manifest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_name(name: &str) -> Result<(), StoreError> {
        if valid_resource_name(name) {
            Ok(())
        } else {
            Err(StoreError::BadName(name.to_owned()))
        }
    }

    /// Store (or replace) a secret; returns what was stored once it is durable. The policy must be valid and
    /// fit for release ([`Policy::check_for_release`]).
    pub fn put(
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
        let record = self.seal(name, value, policy_toml, now)?;
        let stored = Arc::new(StoredSecret {
            name: name.to_owned(),
            value: Zeroizing::new(value.to_vec()),
            policy_toml: policy_toml.to_owned(),
            policy,
            policy_id: policy_id(policy_toml),
            updated_at: now,
        });
        let mut manifest = self.lock_manifest();
        self.change(&mut manifest, name, Some(&record))?;
        self.cache_put(name, Some(stored.clone()));
        Ok(stored)
    }

    /// Delete a secret.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        Self::check_name(name)?;
        let mut manifest = self.lock_manifest();
        if manifest.current(name).is_none() {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        self.change(&mut manifest, name, None)?;
        self.cache_put(name, None);
        Ok(())
    }

    /// Write one change durably: the intent, the record (or its removal), the commit. `manifest` becomes the
    /// new state once the record is written (a crash after that is settled the same way at the next open).
    fn change(
        &self,
        manifest: &mut Manifest,
        name: &str,
        record: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut next = manifest.clone();
        next.begin(name, record.map(manifest::digest));
        self.backend
            .write_manifest(&seal_manifest(&next, &self.manifest_key)?)?;
        self.backend.write_record(name, record)?;
        next.commit(name);
        *manifest = next;
        self.backend
            .write_manifest(&seal_manifest(manifest, &self.manifest_key)?)?;
        Ok(())
    }

    fn cache_put(&self, name: &str, secret: Option<Arc<StoredSecret>>) {
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

    fn cached(&self, name: &str) -> Option<Arc<StoredSecret>> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A secret, from the cache or from its record (which must be the current one).
    pub fn get(&self, name: &str) -> Result<Arc<StoredSecret>, StoreError> {
        if let Some(s) = self.cached(name) {
            return Ok(s);
        }
        Self::check_name(name)?;
        let manifest = self.lock_manifest();
        // Another caller may have filled the cache while this one waited for the lock.
        if let Some(s) = self.cached(name) {
            return Ok(s);
        }
        let Some(current) = manifest.current(name) else {
            return Err(StoreError::NotFound(name.to_owned()));
        };
        let record =
            self.backend
                .read_record(name, MAX_RECORD)?
                .ok_or_else(|| StoreError::Missing {
                    name: name.to_owned(),
                })?;
        if manifest::digest(&record) != current {
            return Err(StoreError::NotCurrent {
                name: name.to_owned(),
            });
        }
        let secret = Arc::new(self.open_record(name, &record)?);
        self.cache_put(name, Some(secret.clone()));
        Ok(secret)
    }

    /// The names of all secrets, sorted.
    pub fn list(&self) -> Vec<String> {
        self.lock_manifest().names()
    }

    /// A sealed record of `value` and its policy.
    fn seal(
        &self,
        name: &str,
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
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Internal("no randomness".into()))?;
        let mut ciphertext = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| StoreError::Internal("encryption failed".into()))?;
        cvm_keys::cbor::to_vec(&FileFormat {
            v: VERSION,
            nonce: nonce.to_vec(),
            ciphertext,
        })
        .map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// Decrypt and decode a record of `name`.
    fn open_record(&self, name: &str, record: &[u8]) -> Result<StoredSecret, StoreError> {
        let corrupt = || StoreError::Corrupt {
            name: name.to_owned(),
        };
        let file: FileFormat =
            cvm_keys::cbor::from_slice_capped(record, MAX_RECORD).map_err(|_| corrupt())?;
        let nonce: [u8; NONCE_LEN] = file.nonce.as_slice().try_into().map_err(|_| corrupt())?;
        if file.v != VERSION {
            return Err(corrupt());
        }
        let mut buf = Zeroizing::new(file.ciphertext);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| corrupt())?;
        let plain: Plain =
            cvm_keys::cbor::from_slice_capped(plain, MAX_RECORD).map_err(|_| corrupt())?;
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

    #[test]
    fn round_trips_and_refuses_swapped_or_tampered_records() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        let stored = s.put("a", b"value-a", ANY, 5).unwrap();
        assert_eq!((&stored.value[..], stored.updated_at), (&b"value-a"[..], 5));
        s.put("b", b"value-b", ANY, 6).unwrap();
        assert_eq!(&s.get("a").unwrap().value[..], b"value-a");
        assert_eq!(s.list(), ["a", "b"]);
        assert!(matches!(
            s.put("x", b"v", "nonsense = [", 0),
            Err(StoreError::BadPolicy(_))
        ));
        assert!(matches!(
            s.put("x", b"v", "", 0),
            Err(StoreError::BadPolicy(_))
        ));
        assert!(matches!(
            s.put("../x", b"v", ANY, 0),
            Err(StoreError::BadName(_))
        ));
        // Swap a's record into b's place, or flip a bit of a's: neither is the current record.
        std::fs::copy(record(dir.path(), "a"), record(dir.path(), "b")).unwrap();
        let mut bytes = std::fs::read(record(dir.path(), "a")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(record(dir.path(), "a"), &bytes).unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        assert!(matches!(s.get("b"), Err(StoreError::NotCurrent { .. })));
        assert!(matches!(s.get("a"), Err(StoreError::NotCurrent { .. })));
        // Another KEK cannot even open the store.
        assert!(matches!(
            SecretStore::open(dir.path(), &Key256::generate().unwrap()),
            Err(StoreError::Manifest { .. })
        ));
        s.put("c", b"value-c", ANY, 7).unwrap();
        s.delete("c").unwrap();
        assert!(matches!(s.get("c"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.delete("c"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn a_record_put_back_from_an_older_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let m = "11".repeat(48);
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        // The old policy let any guest have the secret; the new one names a measurement.
        s.put("db", b"v1", ANY, 1).unwrap();
        let old = std::fs::read(record(dir.path(), "db")).unwrap();
        s.put(
            "db",
            b"v2",
            &format!("[snp]\nmeasurements = [\"{m}\"]\n"),
            2,
        )
        .unwrap();
        // A deleted secret's record, put back.
        s.put("gone", b"g", ANY, 3).unwrap();
        let gone = std::fs::read(record(dir.path(), "gone")).unwrap();
        s.delete("gone").unwrap();
        drop(s);
        std::fs::write(record(dir.path(), "db"), &old).unwrap();
        std::fs::write(record(dir.path(), "gone"), &gone).unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        assert!(matches!(s.get("db"), Err(StoreError::NotCurrent { .. })));
        assert!(matches!(s.get("gone"), Err(StoreError::NotFound(_))));
        assert_eq!(s.list(), ["db"]);
        assert!(s.warnings().iter().any(|w| w.contains("\"gone\"")));
        // The same store running when the record is rolled back: the cache holds v2; a fresh one refuses.
        s.put("db", b"v3", ANY, 4).unwrap();
        std::fs::write(record(dir.path(), "db"), &old).unwrap();
        assert_eq!(&s.get("db").unwrap().value[..], b"v3");
    }

    #[test]
    fn records_without_a_manifest_are_refused_unless_adoption_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        s.put("db", b"v", ANY, 1).unwrap();
        drop(s);
        std::fs::remove_file(dir.path().join("secrets.manifest")).unwrap();
        let e = SecretStore::open(dir.path(), &kek).unwrap_err();
        assert!(matches!(e, StoreError::NoManifest { files: 1, .. }), "{e}");
        assert!(e.to_string().contains("allow_adopt_existing"), "{e}");
        let open = || {
            SecretStore::open_with(
                Box::new(FileBackend::open(dir.path()).unwrap()),
                &kek,
                OpenOptions {
                    adopt_existing: true,
                },
            )
        };
        let s = open().unwrap();
        assert_eq!(&s.get("db").unwrap().value[..], b"v");
        assert_eq!(s.warnings().len(), 1);
        drop(s);
        // Adopted once: the manifest exists now, and nothing more is adopted.
        assert!(open().unwrap().warnings().is_empty());
    }

    #[test]
    fn a_change_interrupted_by_a_crash_is_settled_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        s.put("db", b"old", ANY, 1).unwrap();
        let manifest_path = dir.path().join("secrets.manifest");
        let key = Manifest::key(&kek);
        let m = Manifest::unseal(&std::fs::read(&manifest_path).unwrap(), &key).unwrap();
        // The intent of a write was made durable, then the process died: before the record was written, and
        // (second round) after.
        let new_record = s.seal("db", b"new", ANY, 2).unwrap();
        let mut intent = m.clone();
        intent.begin("db", Some(manifest::digest(&new_record)));
        std::fs::write(&manifest_path, intent.seal(&key).unwrap()).unwrap();
        drop(s);
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        assert_eq!(&s.get("db").unwrap().value[..], b"old");
        drop(s);
        std::fs::write(&manifest_path, intent.seal(&key).unwrap()).unwrap();
        std::fs::write(record(dir.path(), "db"), &new_record).unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        assert_eq!(&s.get("db").unwrap().value[..], b"new");
        assert!(s.generation() > m.generation);
    }
}
