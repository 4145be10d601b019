//! The manifest: for every secret, the SHA-256 of its current sealed record, and during a change the record
//! about to replace it (or its removal). It is authenticated with HMAC-SHA256 under a key derived from the
//! KEK, so storage that can put back an older record of a secret cannot make it current: a record whose
//! digest is not the manifest's is refused. A change is written as intent (manifest), record, commit
//! (manifest); [`Manifest::recover`] settles a change a crash interrupted.
//!
//! What it cannot see: the whole store put back from one older copy (manifest and records together) is
//! consistent. Detecting that needs a monotonic counter kept outside the store; [`Manifest::generation`]
//! counts every change so that one can be compared with it (README "cvm-attest serve").

use cvm_keys::Key256;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// SHA-256 of a sealed record.
pub type Digest = [u8; 32];

/// The manifest format version.
const VERSION: u32 = 1;
/// Label of the manifest key derived from the KEK.
const KEY_LABEL: &[u8] = b"cvm-attest/v1 secrets manifest key";
/// Label MACed before the body.
const TAG_LABEL: &[u8] = b"cvm-attest/v1 secrets manifest";

/// One secret's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The current record (none while a secret is being created).
    pub current: Option<Digest>,
    /// A change under way: the record to come, or `Some(None)` for a removal.
    pub pending: Option<Option<Digest>>,
}

/// Which record of every secret is current.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Changes written so far (every intent and every commit counts one).
    pub generation: u64,
    entries: BTreeMap<String, Entry>,
}

/// The manifest bytes do not verify or decode.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The MAC does not verify (tampered, or another KEK) or the bytes are not a manifest.
    #[error(
        "the manifest does not verify under this key-encryption key (tampered, or another KEK)"
    )]
    Invalid,
    /// The manifest could not be encoded.
    #[error("cannot encode the manifest: {0}")]
    Encode(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    #[serde(with = "cvm_keys::cbor::bytes")]
    body: Vec<u8>,
    #[serde(with = "cvm_keys::cbor::bytes")]
    tag: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    v: u32,
    generation: u64,
    entries: Vec<WireEntry>,
}

/// An entry on the wire: empty byte strings stand for "none".
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    name: String,
    #[serde(with = "cvm_keys::cbor::bytes")]
    current: Vec<u8>,
    #[serde(with = "cvm_keys::cbor::bytes")]
    pending: Vec<u8>,
    pending_removal: bool,
}

/// Largest manifest read or written (about 80,000 secrets).
pub const MAX_LEN: usize = 16 << 20;

fn digest_of(bytes: &[u8]) -> Result<Option<Digest>, ManifestError> {
    match bytes.len() {
        0 => Ok(None),
        32 => {
            let mut d = [0u8; 32];
            d.copy_from_slice(bytes);
            Ok(Some(d))
        }
        _ => Err(ManifestError::Invalid),
    }
}

/// The SHA-256 of a sealed record.
pub fn digest(record: &[u8]) -> Digest {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, record).as_ref());
    d
}

impl Manifest {
    /// The manifest's MAC key: HMAC-SHA256(KEK, label).
    pub fn key(kek: &Key256) -> hmac::Key {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, kek.as_bytes()),
            KEY_LABEL,
        );
        hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
    }

    /// The current record of `name`.
    pub fn current(&self, name: &str) -> Option<Digest> {
        self.entries.get(name).and_then(|e| e.current)
    }

    /// Names with a current record, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.current.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names with a change under way.
    pub fn pending(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.pending.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether `name` has an entry at all.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Adopt `record` as `name`'s current record (binding a store written before manifests).
    pub fn adopt(&mut self, name: &str, record: Digest) {
        self.entries.insert(
            name.to_owned(),
            Entry {
                current: Some(record),
                pending: None,
            },
        );
    }

    /// Record the intent to replace `name`'s record with `next` (`None`: remove it).
    pub fn begin(&mut self, name: &str, next: Option<Digest>) {
        self.entries.entry(name.to_owned()).or_default().pending = Some(next);
        self.generation = self.generation.saturating_add(1);
    }

    /// Make `name`'s change current.
    pub fn commit(&mut self, name: &str) {
        if let Some(entry) = self.entries.get_mut(name)
            && let Some(next) = entry.pending.take()
        {
            entry.current = next;
            if next.is_none() {
                self.entries.remove(name);
            }
        }
        self.generation = self.generation.saturating_add(1);
    }

    /// Settle `name`'s interrupted change given the record `found` now: the change is made current if the
    /// record is the one it names, and dropped otherwise (it was never acknowledged). Returns whether the
    /// entry changed.
    pub fn recover(&mut self, name: &str, found: Option<Digest>) -> bool {
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        let Some(next) = entry.pending else {
            return false;
        };
        if found == next {
            self.commit(name);
        } else {
            entry.pending = None;
            if entry.current.is_none() {
                self.entries.remove(name);
            }
            self.generation = self.generation.saturating_add(1);
        }
        true
    }

    /// The manifest's bytes: CBOR `{body, tag}` with `tag = HMAC(key, label ‖ body)`.
    pub fn seal(&self, key: &hmac::Key) -> Result<Vec<u8>, ManifestError> {
        let or_empty = |d: Option<Digest>| d.map(|d| d.to_vec()).unwrap_or_default();
        let body = Body {
            v: VERSION,
            generation: self.generation,
            entries: self
                .entries
                .iter()
                .map(|(name, e)| WireEntry {
                    name: name.clone(),
                    current: or_empty(e.current),
                    pending: or_empty(e.pending.flatten()),
                    pending_removal: e.pending == Some(None),
                })
                .collect(),
        };
        let body = cvm_keys::cbor::to_vec_capped(&body, MAX_LEN)
            .map_err(|e| ManifestError::Encode(e.to_string()))?;
        let tag = tag(key, &body);
        cvm_keys::cbor::to_vec_capped(&Sealed { body, tag }, MAX_LEN)
            .map_err(|e| ManifestError::Encode(e.to_string()))
    }

    /// Verify and decode a manifest.
    pub fn unseal(bytes: &[u8], key: &hmac::Key) -> Result<Self, ManifestError> {
        let sealed: Sealed = cvm_keys::cbor::from_slice_capped(bytes, MAX_LEN)
            .map_err(|_| ManifestError::Invalid)?;
        let mut msg = TAG_LABEL.to_vec();
        msg.extend_from_slice(&sealed.body);
        hmac::verify(key, &msg, &sealed.tag).map_err(|_| ManifestError::Invalid)?;
        let body: Body = cvm_keys::cbor::from_slice_capped(&sealed.body, MAX_LEN)
            .map_err(|_| ManifestError::Invalid)?;
        if body.v != VERSION {
            return Err(ManifestError::Invalid);
        }
        let mut entries = BTreeMap::new();
        for w in body.entries {
            let pending = match (digest_of(&w.pending)?, w.pending_removal) {
                (None, false) => None,
                (Some(d), false) => Some(Some(d)),
                (None, true) => Some(None),
                (Some(_), true) => return Err(ManifestError::Invalid),
            };
            let entry = Entry {
                current: digest_of(&w.current)?,
                pending,
            };
            if entries.insert(w.name, entry).is_some() {
                return Err(ManifestError::Invalid);
            }
        }
        Ok(Manifest {
            generation: body.generation,
            entries,
        })
    }
}

fn tag(key: &hmac::Key, body: &[u8]) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(TAG_LABEL);
    ctx.update(body);
    ctx.sign().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_another_key_or_a_flipped_bit() {
        let key = Manifest::key(&Key256::generate().unwrap());
        let mut m = Manifest::default();
        m.begin("a", Some([1; 32]));
        m.commit("a");
        m.begin("b", Some([2; 32]));
        m.begin("a", None);
        let bytes = m.seal(&key).unwrap();
        assert_eq!(Manifest::unseal(&bytes, &key).unwrap(), m);
        let other = Manifest::key(&Key256::generate().unwrap());
        assert!(Manifest::unseal(&bytes, &other).is_err());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(Manifest::unseal(&flipped, &key).is_err(), "byte {i}");
        }
    }

    #[test]
    fn recovery_keeps_a_finished_change_and_drops_an_unfinished_one() {
        let mut m = Manifest::default();
        m.begin("a", Some([1; 32]));
        m.commit("a");
        // Crash after the record was written: the new record is there.
        m.begin("a", Some([2; 32]));
        assert!(m.recover("a", Some([2; 32])));
        assert_eq!(m.current("a"), Some([2; 32]));
        // Crash before it was written: the old record is still there, and stays current.
        m.begin("a", Some([3; 32]));
        assert!(m.recover("a", Some([2; 32])));
        assert_eq!(m.current("a"), Some([2; 32]));
        // A removal that happened, and a creation that did not.
        m.begin("a", None);
        assert!(m.recover("a", None));
        assert!(!m.contains("a"));
        m.begin("b", Some([4; 32]));
        assert!(m.recover("b", None));
        assert!(!m.contains("b") && m.names().is_empty());
        assert!(!m.recover("b", None));
    }
}
