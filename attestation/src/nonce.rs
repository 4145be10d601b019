//! Stateless, single-use challenge nonces (DESIGN.md "Protocol" step 1).
//!
//! A nonce is `random(16) ‖ expires_at(8, big-endian) ‖ HMAC-SHA256(key, random ‖ expires_at ‖ resource)`
//! (56 bytes). The service keeps no state per challenge: it recognizes its own nonces by the MAC, which also
//! binds the resource. Single use comes from a bounded replay set holding every accepted nonce until its
//! expiry. The MAC key is random per process start: a restart forgets the replay set, so it must also forget
//! the nonces issued before it.

use crate::reason::{Reason, Rejection};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Random bytes per nonce.
const RANDOM_LEN: usize = 16;
/// Bytes of the expiry.
const EXPIRY_LEN: usize = 8;
/// Bytes of the MAC.
const MAC_LEN: usize = 32;
/// Length of every nonce this service issues.
pub const NONCE_LEN: usize = RANDOM_LEN + EXPIRY_LEN + MAC_LEN;

/// Default validity of a nonce, in seconds.
pub const DEFAULT_TTL_SECS: i64 = 60;
/// Default capacity of the replay set: beyond it, new challenges are still issued, but attestations are
/// refused as overloaded until old entries expire (never forget an unexpired nonce).
pub const DEFAULT_REPLAY_CAPACITY: usize = 1 << 20;

/// Why a nonce could not be consumed besides the protocol's reasons.
#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    /// The system random generator failed.
    #[error("no randomness for a nonce")]
    Random,
    /// The replay set is full of unexpired nonces.
    #[error("too many outstanding nonces; retry later")]
    Full,
    /// The nonce is refused for a protocol reason.
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

/// Issues and checks nonces.
pub struct NonceService {
    key: hmac::Key,
    ttl: i64,
    rng: SystemRandom,
    replay: Mutex<ReplaySet>,
}

impl std::fmt::Debug for NonceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceService")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The nonces consumed and not yet expired, with their expiry for eviction.
#[derive(Debug, Default)]
struct ReplaySet {
    seen: HashSet<[u8; RANDOM_LEN]>,
    by_expiry: BTreeMap<(i64, [u8; RANDOM_LEN]), ()>,
    capacity: usize,
}

impl ReplaySet {
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
}

impl NonceService {
    /// A service with a fresh random MAC key, nonces valid for `ttl` seconds, remembering at most
    /// `replay_capacity` consumed nonces.
    pub fn new(ttl: i64, replay_capacity: usize) -> Result<Self, NonceError> {
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| NonceError::Random)?;
        Ok(NonceService {
            key,
            ttl,
            rng,
            replay: Mutex::new(ReplaySet {
                capacity: replay_capacity,
                ..ReplaySet::default()
            }),
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

    /// Check that `nonce` was issued by this service for `resource` (`NONCE_INVALID`), has not expired at `now`
    /// (`NONCE_EXPIRED`) and was never consumed (`NONCE_REPLAYED`); then consume it.
    pub fn consume(&self, nonce: &[u8], resource: &str, now: i64) -> Result<(), NonceError> {
        let (random, rest) = nonce.split_at_checked(RANDOM_LEN).ok_or_else(invalid)?;
        let (expiry, mac) = rest.split_at_checked(EXPIRY_LEN).ok_or_else(invalid)?;
        if mac.len() != MAC_LEN {
            return Err(invalid().into());
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
            )
            .into());
        }
        let id: [u8; RANDOM_LEN] = random.try_into().map_err(|_| invalid())?;
        let mut set = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        set.evict(now);
        if set.seen.contains(&id) {
            return Err(Rejection::new(
                Reason::NonceReplayed,
                "the nonce was already used; every challenge is good for one attestation",
            )
            .into());
        }
        if set.seen.len() >= set.capacity {
            return Err(NonceError::Full);
        }
        set.seen.insert(id);
        set.by_expiry.insert((expires_at, id), ());
        Ok(())
    }

    /// How many consumed nonces are remembered now.
    pub fn remembered(&self) -> usize {
        self.replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }
}

fn invalid() -> Rejection {
    Rejection::new(
        Reason::NonceInvalid,
        "the nonce was not issued by this service for this resource",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: NonceError) -> Reason {
        match e {
            NonceError::Rejected(r) => r.reason,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_nonce_is_good_once_for_its_resource_until_it_expires() {
        let s = NonceService::new(60, 10).unwrap();
        let (n, exp) = s.issue("db", 1000).unwrap();
        assert_eq!((n.len(), exp), (NONCE_LEN, 1060));
        assert_eq!(
            reason(s.consume(&n, "other", 1001).unwrap_err()),
            Reason::NonceInvalid
        );
        assert_eq!(
            reason(s.consume(&n, "db", 1061).unwrap_err()),
            Reason::NonceExpired
        );
        s.consume(&n, "db", 1060).unwrap();
        assert_eq!(
            reason(s.consume(&n, "db", 1001).unwrap_err()),
            Reason::NonceReplayed
        );
    }

    #[test]
    fn rejects_every_truncation_and_bit_flip() {
        let s = NonceService::new(60, 10).unwrap();
        let (n, _) = s.issue("db", 0).unwrap();
        for cut in 0..n.len() {
            assert_eq!(
                reason(s.consume(&n[..cut], "db", 0).unwrap_err()),
                Reason::NonceInvalid
            );
        }
        for i in 0..n.len() * 8 {
            let mut m = n.clone();
            m[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                reason(s.consume(&m, "db", 0).unwrap_err()),
                Reason::NonceInvalid
            );
        }
        let other = NonceService::new(60, 10).unwrap();
        assert_eq!(
            reason(other.consume(&n, "db", 0).unwrap_err()),
            Reason::NonceInvalid
        );
    }

    #[test]
    fn the_replay_set_is_bounded_and_forgets_only_expired_nonces() {
        let s = NonceService::new(10, 2).unwrap();
        let a = s.issue("r", 0).unwrap().0;
        let b = s.issue("r", 0).unwrap().0;
        let c = s.issue("r", 5).unwrap().0;
        s.consume(&a, "r", 1).unwrap();
        s.consume(&b, "r", 1).unwrap();
        assert!(matches!(s.consume(&c, "r", 2), Err(NonceError::Full)));
        // At 11, a and b have expired and are evicted; c (expiry 15) fits.
        s.consume(&c, "r", 11).unwrap();
        assert_eq!(s.remembered(), 1);
    }
}
