//! Stateless, single-use challenge nonces (DESIGN.md "Protocol" step 1).
//!
//! A nonce is `random(16) ‖ expires_at(8, big-endian) ‖ HMAC-SHA256(key, random ‖ expires_at ‖ resource)`
//! (56 bytes). The service keeps no state per challenge: it recognizes its own nonces by the MAC, which also
//! binds the resource. Single use comes from spending each nonce's random part, its identity, in the store
//! ([`crate::store::Backend::spend_nonce`]): the file store keeps a bounded [`ReplaySet`] in memory until
//! each nonce expires, and its MAC key is random per start (a restart forgets the replay set, so it must
//! also forget the nonces issued before it); replicas sharing a PostgreSQL store share one MAC key and one
//! table of spent nonces, so any replica accepts another's challenge, once.

use crate::reason::{Reason, Rejection};
use crate::store::backend::Spend;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, HashSet};

/// Random bytes per nonce: its identity.
pub const RANDOM_LEN: usize = 16;
/// Bytes of the expiry.
const EXPIRY_LEN: usize = 8;
/// Bytes of the MAC.
const MAC_LEN: usize = 32;
/// Length of every nonce this service issues.
pub const NONCE_LEN: usize = RANDOM_LEN + EXPIRY_LEN + MAC_LEN;
/// Length of the MAC key.
pub const KEY_LEN: usize = 32;

/// Default validity of a nonce, in seconds.
pub const DEFAULT_TTL_SECS: i64 = 60;
/// Default capacity of the in-memory replay set: beyond it, new challenges are still issued, but
/// attestations are refused as overloaded until old entries expire (never forget an unexpired nonce).
pub const DEFAULT_REPLAY_CAPACITY: usize = 1 << 20;

/// Why a nonce could not be issued besides the protocol's reasons.
#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    /// The system random generator failed.
    #[error("no randomness for a nonce")]
    Random,
    /// The MAC key has the wrong length.
    #[error("the nonce MAC key must be {KEY_LEN} bytes")]
    BadKey,
}

/// A nonce whose MAC and expiry were checked: what is left is to spend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedNonce {
    /// Its random part, which identifies it.
    pub id: [u8; RANDOM_LEN],
    /// When it expires, Unix seconds.
    pub expires_at: i64,
}

/// Issues nonces and checks their MAC and expiry.
pub struct NonceService {
    key: hmac::Key,
    ttl: i64,
    rng: SystemRandom,
}

impl std::fmt::Debug for NonceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A fresh random MAC key.
pub fn generate_key() -> Result<zeroize::Zeroizing<Vec<u8>>, NonceError> {
    let mut key = zeroize::Zeroizing::new(vec![0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| NonceError::Random)?;
    Ok(key)
}

impl NonceService {
    /// A service with a fresh random MAC key and nonces valid for `ttl` seconds.
    pub fn new(ttl: i64) -> Result<Self, NonceError> {
        Self::with_key(&generate_key()?, ttl)
    }

    /// A service with the MAC key `key` ([`KEY_LEN`] bytes, shared by replicas).
    pub fn with_key(key: &[u8], ttl: i64) -> Result<Self, NonceError> {
        if key.len() != KEY_LEN {
            return Err(NonceError::BadKey);
        }
        Ok(NonceService {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            ttl,
            rng: SystemRandom::new(),
        })
    }

    fn mac(&self, random: &[u8], expiry: &[u8], resource: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(random);
        ctx.update(expiry);
        ctx.update(resource.as_bytes());
        ctx.sign()
    }

    /// A new nonce for `resource`, and its expiry (Unix seconds).
    pub fn issue(&self, resource: &str, now: i64) -> Result<(Vec<u8>, i64), NonceError> {
        let mut random = [0u8; RANDOM_LEN];
        self.rng.fill(&mut random).map_err(|_| NonceError::Random)?;
        let expires_at = now.saturating_add(self.ttl);
        let expiry = expires_at.to_be_bytes();
        let mut nonce = Vec::with_capacity(NONCE_LEN);
        nonce.extend_from_slice(&random);
        nonce.extend_from_slice(&expiry);
        nonce.extend_from_slice(self.mac(&random, &expiry, resource).as_ref());
        Ok((nonce, expires_at))
    }

    /// Check that `nonce` was issued with this key for `resource` (`NONCE_INVALID`) and has not expired at
    /// `now` (`NONCE_EXPIRED`). Whether it was spent is the store's to say.
    pub fn check(&self, nonce: &[u8], resource: &str, now: i64) -> Result<CheckedNonce, Rejection> {
        let (random, rest) = nonce.split_at_checked(RANDOM_LEN).ok_or_else(invalid)?;
        let (expiry, mac) = rest.split_at_checked(EXPIRY_LEN).ok_or_else(invalid)?;
        if mac.len() != MAC_LEN {
            return Err(invalid());
        }
        let mut ctx_input = Vec::with_capacity(RANDOM_LEN + EXPIRY_LEN + resource.len());
        ctx_input.extend_from_slice(random);
        ctx_input.extend_from_slice(expiry);
        ctx_input.extend_from_slice(resource.as_bytes());
        hmac::verify(&self.key, &ctx_input, mac).map_err(|_| invalid())?;
        let expires_at = i64::from_be_bytes(expiry.try_into().map_err(|_| invalid())?);
        if now > expires_at {
            return Err(Rejection::new(
                Reason::NonceExpired,
                format!("the nonce expired at {expires_at} (now {now}); ask for a new challenge"),
            ));
        }
        Ok(CheckedNonce {
            id: random.try_into().map_err(|_| invalid())?,
            expires_at,
        })
    }
}

/// The refusal of a nonce that was already spent.
pub fn replayed() -> Rejection {
    Rejection::new(
        Reason::NonceReplayed,
        "the nonce was already used; every challenge is good for one attestation",
    )
}

fn invalid() -> Rejection {
    Rejection::new(
        Reason::NonceInvalid,
        "the nonce was not issued by this service for this resource",
    )
}

/// The nonces spent and not yet expired, in memory (the file store's), with their expiry for eviction.
#[derive(Debug)]
pub struct ReplaySet {
    seen: HashSet<[u8; RANDOM_LEN]>,
    by_expiry: BTreeMap<(i64, [u8; RANDOM_LEN]), ()>,
    capacity: usize,
}

impl ReplaySet {
    /// An empty set remembering at most `capacity` unexpired nonces.
    pub fn new(capacity: usize) -> Self {
        ReplaySet {
            seen: HashSet::new(),
            by_expiry: BTreeMap::new(),
            capacity,
        }
    }

    /// Forget nonces that expired before `now` (they are refused as expired anyway).
    fn evict(&mut self, now: i64) {
        while let Some((&(exp, id), _)) = self.by_expiry.first_key_value() {
            if exp >= now {
                break;
            }
            self.by_expiry.remove(&(exp, id));
            self.seen.remove(&id);
        }
    }

    /// Spend `id` (valid until `expires_at`) at `now`.
    pub fn spend(&mut self, id: [u8; RANDOM_LEN], expires_at: i64, now: i64) -> Spend {
        self.evict(now);
        if self.seen.contains(&id) {
            return Spend::Replayed;
        }
        if self.seen.len() >= self.capacity {
            return Spend::Full;
        }
        self.seen.insert(id);
        self.by_expiry.insert((expires_at, id), ());
        Spend::Fresh
    }

    /// How many spent nonces are remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_good_once_for_its_resource_until_it_expires() {
        let s = NonceService::new(60).unwrap();
        let mut spent = ReplaySet::new(10);
        let (n, exp) = s.issue("db", 1000).unwrap();
        assert_eq!((n.len(), exp), (NONCE_LEN, 1060));
        assert_eq!(
            s.check(&n, "other", 1001).unwrap_err().reason,
            Reason::NonceInvalid
        );
        assert_eq!(
            s.check(&n, "db", 1061).unwrap_err().reason,
            Reason::NonceExpired
        );
        let c = s.check(&n, "db", 1060).unwrap();
        assert_eq!(c.expires_at, 1060);
        assert_eq!(spent.spend(c.id, c.expires_at, 1060), Spend::Fresh);
        assert_eq!(spent.spend(c.id, c.expires_at, 1001), Spend::Replayed);
    }

    #[test]
    fn rejects_every_truncation_and_bit_flip() {
        let s = NonceService::new(60).unwrap();
        let (n, _) = s.issue("db", 0).unwrap();
        for cut in 0..n.len() {
            assert_eq!(
                s.check(&n[..cut], "db", 0).unwrap_err().reason,
                Reason::NonceInvalid
            );
        }
        for i in 0..n.len() * 8 {
            let mut m = n.clone();
            m[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                s.check(&m, "db", 0).unwrap_err().reason,
                Reason::NonceInvalid
            );
        }
        let other = NonceService::new(60).unwrap();
        assert_eq!(
            other.check(&n, "db", 0).unwrap_err().reason,
            Reason::NonceInvalid
        );
    }

    #[test]
    fn services_with_one_key_accept_each_others_nonces() {
        let key = generate_key().unwrap();
        let a = NonceService::with_key(&key, 60).unwrap();
        let b = NonceService::with_key(&key, 60).unwrap();
        let (n, _) = a.issue("db", 0).unwrap();
        b.check(&n, "db", 1).unwrap();
        assert!(matches!(
            NonceService::with_key(&key[..31], 60),
            Err(NonceError::BadKey)
        ));
    }

    #[test]
    fn the_replay_set_is_bounded_and_forgets_only_expired_nonces() {
        let s = NonceService::new(10).unwrap();
        let mut spent = ReplaySet::new(2);
        let a = s.check(&s.issue("r", 0).unwrap().0, "r", 0).unwrap();
        let b = s.check(&s.issue("r", 0).unwrap().0, "r", 0).unwrap();
        let c = s.check(&s.issue("r", 5).unwrap().0, "r", 5).unwrap();
        assert_eq!(spent.spend(a.id, a.expires_at, 1), Spend::Fresh);
        assert_eq!(spent.spend(b.id, b.expires_at, 1), Spend::Fresh);
        assert_eq!(spent.spend(c.id, c.expires_at, 2), Spend::Full);
        // At 11, a and b have expired and are evicted; c (expiry 15) fits.
        assert_eq!(spent.spend(c.id, c.expires_at, 11), Spend::Fresh);
        assert_eq!(spent.len(), 1);
    }
}
