//! Secrets at rest (DESIGN.md "Protocol"): one file per secret, `secrets/<name>.secret`, holding CBOR
//! `{v: 1, nonce, ciphertext}` where `ciphertext = AES-256-GCM(KEK, nonce, AAD = name, CBOR {value, policy,
//! updated_at})`. The policy is encrypted with the value so the untrusted storage can neither read the
//! secret nor swap its policy; the name in the AAD stops files from being swapped between names. Writes
//! are atomic and durable ([`super::atomic`]).

use super::atomic;
use crate::policy::Policy;
use crate::protocol::valid_resource_name;
use cvm_keys::Key256;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// File format version.
const VERSION: u32 = 1;
/// Extension of secret files.
const EXT: &str = "secret";
/// Largest secret file read (values are capped by the request size anyway).
const MAX_FILE: usize = 1 << 20;

/// Errors of the secret store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The name is not a valid resource name.
    #[error("invalid secret name {0:?}: use 1-128 of A-Z a-z 0-9 . _ - (not starting with '.')")]
    BadName(String),
    /// The policy TOML is not a valid policy.
    #[error("invalid policy: {0}")]
    BadPolicy(String),
    /// No such secret.
    #[error("no secret named {0:?}")]
    NotFound(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A secret file does not decrypt or decode (tampered, another KEK, or another name).
    #[error("{path}: cannot be decrypted with this key-encryption key (tampered or foreign)")]
    Corrupt {
        /// The file.
        path: PathBuf,
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

/// The secrets of one store directory, with a cache of decrypted secrets (the service is the store's only
/// writer; loading and invalidating happen under the cache's write lock, so the cache never goes stale).
pub struct SecretStore {
    dir: PathBuf,
    key: LessSafeKey,
    rng: SystemRandom,
    cache: RwLock<HashMap<String, Arc<StoredSecret>>>,
}

/// Most secrets kept decrypted in memory.
const CACHE_MAX: usize = 4096;

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("dir", &self.dir)
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
    /// Open (creating if needed, mode 0700) the secrets under `state_dir/secrets` with the KEK.
    pub fn open(state_dir: &Path, kek: &Key256) -> Result<Self, StoreError> {
        let dir = state_dir.join("secrets");
        atomic::create_private_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let key = UnboundKey::new(&AES_256_GCM, kek.as_bytes())
            .map_err(|_| StoreError::Internal("bad KEK".into()))?;
        Ok(SecretStore {
            dir,
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
            cache: RwLock::new(HashMap::new()),
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_resource_name(name) {
            return Err(StoreError::BadName(name.to_owned()));
        }
        Ok(self.dir.join(format!("{name}.{EXT}")))
    }

    /// Store (or replace) a secret; returns once the write is durable.
    pub fn put(
        &self,
        name: &str,
        value: &[u8],
        policy_toml: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let path = self.path(name)?;
        Policy::from_toml(policy_toml).map_err(|e| StoreError::BadPolicy(e.to_string()))?;
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
        let file = cvm_keys::cbor::to_vec(&FileFormat {
            v: VERSION,
            nonce: nonce.to_vec(),
            ciphertext,
        })
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.remove(name);
        atomic::write_file(&path, &file, 0o600).map_err(|source| StoreError::Io { path, source })
    }

    /// Read and decrypt a secret (from the cache when it is there).
    pub fn get(&self, name: &str) -> Result<Arc<StoredSecret>, StoreError> {
        if let Some(s) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(s.clone());
        }
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(name) {
            return Ok(s.clone());
        }
        let secret = Arc::new(self.load(name)?);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(name.to_owned(), secret.clone());
        Ok(secret)
    }

    /// Read and decrypt a secret from its file.
    fn load(&self, name: &str) -> Result<StoredSecret, StoreError> {
        let path = self.path(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.to_owned()));
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let corrupt = || StoreError::Corrupt { path: path.clone() };
        let file: FileFormat =
            cvm_keys::cbor::from_slice_capped(&bytes, MAX_FILE).map_err(|_| corrupt())?;
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
            cvm_keys::cbor::from_slice_capped(plain, MAX_FILE).map_err(|_| corrupt())?;
        let policy = Policy::from_toml(&plain.policy).map_err(|_| corrupt())?;
        Ok(StoredSecret {
            name: name.to_owned(),
            policy_id: policy_id(&plain.policy),
            value: Zeroizing::new(plain.value),
            policy_toml: plain.policy,
            policy,
            updated_at: plain.updated_at,
        })
    }

    /// Delete a secret.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name)?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.remove(name);
        match atomic::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(name.to_owned()))
            }
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// The names of all secrets, sorted.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(name) = file.strip_suffix(&format!(".{EXT}"))
                && valid_resource_name(name)
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_swapped_or_tampered_files() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Key256::generate().unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        s.put("a", b"value-a", "allow_debug = false\n", 5).unwrap();
        s.put("b", b"value-b", "", 6).unwrap();
        assert_eq!(&s.get("a").unwrap().value[..], b"value-a");
        assert_eq!(s.list().unwrap(), ["a", "b"]);
        assert!(matches!(
            s.put("x", b"v", "nonsense = [", 0),
            Err(StoreError::BadPolicy(_))
        ));
        assert!(matches!(
            s.put("../x", b"v", "", 0),
            Err(StoreError::BadName(_))
        ));
        // Swap a's file into b's place: the AAD (the name) no longer matches.
        let pa = dir.path().join("secrets/a.secret");
        let pb = dir.path().join("secrets/b.secret");
        std::fs::copy(&pa, &pb).unwrap();
        let s = SecretStore::open(dir.path(), &kek).unwrap();
        assert!(matches!(s.get("b"), Err(StoreError::Corrupt { .. })));
        let mut bytes = std::fs::read(&pa).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&pa, &bytes).unwrap();
        assert!(matches!(s.get("a"), Err(StoreError::Corrupt { .. })));
        // Another KEK cannot read.
        s.put("c", b"value-c", "", 7).unwrap();
        let other = SecretStore::open(dir.path(), &Key256::generate().unwrap()).unwrap();
        assert!(matches!(other.get("c"), Err(StoreError::Corrupt { .. })));
        s.delete("c").unwrap();
        assert!(matches!(s.get("c"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.delete("c"), Err(StoreError::NotFound(_))));
    }
}
