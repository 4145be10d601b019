//! The service's KBS sessions: what `/kbs/v0/auth` starts, `/kbs/v0/attest` completes once, and resource
//! requests use until the session expires (the nonce lifetime after auth).
//!
//! A session id (the `kbs-session-id` cookie) is `random(16) ‖ expires_at(8) ‖ HMAC-SHA256` in hex, so an
//! id the service never issued is told from one that expired (`NONCE_INVALID` / `NONCE_EXPIRED`) without
//! keeping either. The table holds at most `capacity` sessions; expired ones are dropped first, and when it is
//! full of live ones new sessions are refused (`OVERLOADED`) rather than live ones forgotten. A session
//! holds the unwrapped evidence and the guest's public key, never a secret: each resource request appraises
//! the evidence again under that resource's policy and encrypts to the key.

use super::evidence::{KbsTee, Unwrapped};
use super::jwk::EcPublicJwk;
use super::payload::HashAlgorithm;
use crate::reason::{Reason, Rejection};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

const RANDOM_LEN: usize = 16;
const EXPIRY_LEN: usize = 8;
const MAC_LEN: usize = 32;
const ID_LEN: usize = RANDOM_LEN + EXPIRY_LEN + MAC_LEN;

/// A session id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// The cookie value (lowercase hex).
    pub fn to_cookie(&self) -> String {
        hex::encode(self.0)
    }

    /// A cookie value, if it has the form of one.
    pub fn from_cookie(text: &str) -> Option<Self> {
        let mut id = [0u8; ID_LEN];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(SessionId(id))
    }

    fn key(&self) -> [u8; RANDOM_LEN] {
        let mut k = [0u8; RANDOM_LEN];
        k.copy_from_slice(&self.0[..RANDOM_LEN]);
        k
    }

    /// When the session expires (Unix seconds).
    pub fn expires_at(&self) -> i64 {
        let mut e = [0u8; EXPIRY_LEN];
        e.copy_from_slice(&self.0[RANDOM_LEN..RANDOM_LEN + EXPIRY_LEN]);
        i64::from_be_bytes(e)
    }
}

/// What a successful attestation leaves in its session.
#[derive(Debug)]
pub struct Attested {
    /// The evidence, unwrapped.
    pub evidence: Unwrapped,
    /// The key resources are encrypted to.
    pub tee_pubkey: EcPublicJwk,
    /// The token's `jti`.
    pub token_id: String,
    /// Whether the evidence was simulated (or `sample`).
    pub simulated: bool,
}

/// One session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The TEE the request named.
    pub tee: KbsTee,
    /// The hash the challenge selected.
    pub hash: HashAlgorithm,
    /// The attestation, once it succeeded.
    pub attested: Option<Arc<Attested>>,
}

/// Why a session cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Refused for a protocol reason (`NONCE_INVALID`, `NONCE_EXPIRED`, `NONCE_REPLAYED`).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The table is full of live sessions.
    #[error("too many KBS sessions in progress ({0}); retry later")]
    Full(usize),
    /// The system random generator failed.
    #[error("no randomness for a session id")]
    Random,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<[u8; RANDOM_LEN], Session>,
    by_expiry: BTreeSet<(i64, [u8; RANDOM_LEN])>,
    by_token: HashMap<String, [u8; RANDOM_LEN]>,
}

impl Table {
    fn remove(&mut self, key: &[u8; RANDOM_LEN], expires_at: i64) {
        if let Some(s) = self.sessions.remove(key)
            && let Some(a) = &s.attested
        {
            self.by_token.remove(&a.token_id);
        }
        self.by_expiry.remove(&(expires_at, *key));
    }

    fn evict(&mut self, now: i64) {
        while let Some(&(exp, key)) = self.by_expiry.first() {
            if exp >= now {
                break;
            }
            self.remove(&key, exp);
        }
    }
}

/// The sessions of one service.
pub struct Sessions {
    key: hmac::Key,
    rng: SystemRandom,
    ttl: i64,
    capacity: usize,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn invalid() -> Rejection {
    Rejection::new(
        Reason::NonceInvalid,
        "no such KBS session: start with POST /kbs/v0/auth and send its kbs-session-id cookie",
    )
}

impl Sessions {
    /// Sessions that live `ttl` seconds, at most `capacity` at once, under a fresh random MAC key.
    pub fn new(ttl: i64, capacity: usize) -> Result<Self, SessionError> {
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| SessionError::Random)?;
        Ok(Sessions {
            key,
            rng,
            ttl,
            capacity,
            table: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a session at `now`.
    pub fn create(
        &self,
        tee: KbsTee,
        hash: HashAlgorithm,
        now: i64,
    ) -> Result<SessionId, SessionError> {
        let mut id = [0u8; ID_LEN];
        self.rng
            .fill(&mut id[..RANDOM_LEN])
            .map_err(|_| SessionError::Random)?;
        let expires_at = now.saturating_add(self.ttl);
        id[RANDOM_LEN..RANDOM_LEN + EXPIRY_LEN].copy_from_slice(&expires_at.to_be_bytes());
        let tag = hmac::sign(&self.key, &id[..RANDOM_LEN + EXPIRY_LEN]);
        id[RANDOM_LEN + EXPIRY_LEN..].copy_from_slice(tag.as_ref());
        let id = SessionId(id);
        let mut t = self.lock();
        t.evict(now);
        if t.sessions.len() >= self.capacity {
            return Err(SessionError::Full(self.capacity));
        }
        t.sessions.insert(
            id.key(),
            Session {
                tee,
                hash,
                attested: None,
            },
        );
        t.by_expiry.insert((expires_at, id.key()));
        Ok(id)
    }

    /// Check an id's MAC and expiry.
    fn check(&self, id: &SessionId, now: i64) -> Result<(), Rejection> {
        hmac::verify(
            &self.key,
            &id.0[..RANDOM_LEN + EXPIRY_LEN],
            &id.0[RANDOM_LEN + EXPIRY_LEN..],
        )
        .map_err(|_| invalid())?;
        if now > id.expires_at() {
            return Err(Rejection::new(
                Reason::NonceExpired,
                format!(
                    "the KBS session expired at {} (now {now}); attest again (POST /kbs/v0/auth)",
                    id.expires_at()
                ),
            ));
        }
        Ok(())
    }

    /// The session `id` at `now`.
    pub fn get(&self, id: &SessionId, now: i64) -> Result<Session, SessionError> {
        self.check(id, now)?;
        let t = self.lock();
        t.sessions
            .get(&id.key())
            .cloned()
            .ok_or_else(|| invalid().into())
    }

    /// Record the attestation of session `id` (once: a second one is `NONCE_REPLAYED`).
    pub fn attest(&self, id: &SessionId, attested: Attested, now: i64) -> Result<(), SessionError> {
        self.check(id, now)?;
        let mut t = self.lock();
        let token_id = attested.token_id.clone();
        let session = t.sessions.get_mut(&id.key()).ok_or_else(invalid)?;
        if session.attested.is_some() {
            return Err(Rejection::new(
                Reason::NonceReplayed,
                "this KBS session is already attested; every challenge is good for one attestation",
            )
            .into());
        }
        session.attested = Some(Arc::new(attested));
        t.by_token.insert(token_id, id.key());
        Ok(())
    }

    /// The attested session whose token has `token_id`, with its id's expiry, at `now`.
    pub fn by_token(&self, token_id: &str, now: i64) -> Result<Arc<Attested>, SessionError> {
        let mut t = self.lock();
        t.evict(now);
        let key = t.by_token.get(token_id).copied().ok_or_else(|| {
            Rejection::new(
                Reason::NonceExpired,
                "the token's KBS session is over (sessions last the nonce lifetime): attest again",
            )
        })?;
        t.sessions
            .get(&key)
            .and_then(|s| s.attested.clone())
            .ok_or_else(|| invalid().into())
    }

    /// How many sessions are held now.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: SessionError) -> Reason {
        match e {
            SessionError::Rejected(r) => r.reason,
            other => panic!("{other}"),
        }
    }

    fn attested(token: &str) -> Attested {
        Attested {
            evidence: Unwrapped {
                tee: KbsTee::Sample,
                evidence: vec![],
                certs: vec![],
                event_log: None,
            },
            tee_pubkey: EcPublicJwk {
                x: [1; 32],
                y: [2; 32],
            },
            token_id: token.into(),
            simulated: true,
        }
    }

    #[test]
    fn a_session_is_attested_once_and_expires_with_its_ttl() {
        let s = Sessions::new(60, 10).unwrap();
        let id = s.create(KbsTee::Snp, HashAlgorithm::Sha384, 1000).unwrap();
        assert_eq!(id.expires_at(), 1060);
        let again = SessionId::from_cookie(&id.to_cookie()).unwrap();
        assert!(s.get(&again, 1060).unwrap().attested.is_none());
        s.attest(&id, attested("t"), 1001).unwrap();
        assert_eq!(
            reason(s.attest(&id, attested("u"), 1002).unwrap_err()),
            Reason::NonceReplayed
        );
        assert!(s.by_token("t", 1002).is_ok());
        assert_eq!(reason(s.get(&id, 1061).unwrap_err()), Reason::NonceExpired);
        assert_eq!(
            reason(s.by_token("t", 1061).unwrap_err()),
            Reason::NonceExpired
        );
        let mut forged = id;
        forged.0[RANDOM_LEN] ^= 1;
        assert_eq!(
            reason(s.get(&forged, 1001).unwrap_err()),
            Reason::NonceInvalid
        );
        let other = Sessions::new(60, 10).unwrap();
        assert_eq!(
            reason(other.get(&id, 1001).unwrap_err()),
            Reason::NonceInvalid
        );
    }

    #[test]
    fn the_table_is_bounded_and_forgets_only_expired_sessions() {
        let s = Sessions::new(10, 2).unwrap();
        s.create(KbsTee::Tdx, HashAlgorithm::Sha384, 0).unwrap();
        s.create(KbsTee::Tdx, HashAlgorithm::Sha384, 0).unwrap();
        assert!(matches!(
            s.create(KbsTee::Tdx, HashAlgorithm::Sha384, 5),
            Err(SessionError::Full(2))
        ));
        s.create(KbsTee::Tdx, HashAlgorithm::Sha384, 11).unwrap();
        assert_eq!(s.len(), 1);
    }
}
