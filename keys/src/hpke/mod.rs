//! HPKE (RFC 9180) on `ring`: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, and the AEADs AES-128-GCM,
//! AES-256-GCM and ChaCha20-Poly1305; modes base, psk, auth and auth_psk; sender and recipient contexts with
//! sequence numbers, and the secret-export interface.
//!
//! The protocol uses [`seal_base`] / [`open_base`] (suite X25519 / HKDF-SHA256 / AES-256-GCM) and
//! [`HpkeKeyPair::generate`].
//!
//! # X25519 with a stored private key on `ring`
//!
//! `ring::agreement` only offers *ephemeral* private keys, created from a `SecureRandom`. HPKE needs
//! DeriveKeyPair(ikm) (RFC 9180 §7.1.3) and decapsulation with a stored private key, so we build the
//! `EphemeralPrivateKey` from the stored 32 bytes through `ring::test::rand::FixedSliceRandom`, a public
//! (deprecated, doc-hidden) `SecureRandom` of ring 0.17 that returns the given bytes. For X25519, ring's key
//! generation is exactly "fill 32 bytes from the generator" (`ec/curve25519/x25519.rs`), and the scalar is
//! clamped inside the scalar multiplication, as RFC 7748 requires, so the resulting key *is* the stored key.
//! ring then performs the Diffie-Hellman (and its all-zero-output check, RFC 9180 §7.1.4) and the public-key
//! computation with its own constant-time code. We keep one construction point (`kem::x25519_private`) so a
//! future ring with a real static-key API is a one-line change. No other crypto crate is needed. The copy of
//! the scalar that ring holds inside `EphemeralPrivateKey` is consumed by each single operation; ring does
//! not zeroize it, our own copies are.

mod context;
mod kem;
mod labeled;

pub use context::{KeySchedule, RecipientContext, SenderContext};
pub use kem::HpkeKeyPair;

use ring::aead;
use zeroize::Zeroizing;

use context::key_schedule;
use kem::{decap, encap};

/// KEM id of DHKEM(X25519, HKDF-SHA256).
pub const KEM_X25519_HKDF_SHA256: u16 = 0x0020;
/// KDF id of HKDF-SHA256.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// Length of an X25519 public key / `enc` (Npk, Nenc).
pub const NPK: usize = 32;
/// Length of an X25519 private key (Nsk).
pub const NSK: usize = 32;
/// Hash output length of HKDF-SHA256 (Nh), also Nsecret of the KEM.
pub(crate) const NH: usize = 32;
/// Nonce length of every supported AEAD (Nn).
pub(crate) const NN: usize = 12;

/// Errors from HPKE operations. Deliberately coarse where detail would help an attacker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpkeError {
    /// A public key or `enc` is not 32 bytes, or the Diffie-Hellman result is the all-zero value.
    #[error("invalid X25519 public key or encapsulation")]
    InvalidPublicKey,
    /// The ciphertext did not authenticate (wrong key, info, AAD, sequence number, or tampered).
    #[error("HPKE decryption failed")]
    OpenFailed,
    /// psk and psk_id must be both given and non-empty, or both absent (RFC 9180 §5.1).
    #[error("inconsistent PSK inputs")]
    InconsistentPsk,
    /// The sequence number would overflow (RFC 9180 §5.2).
    #[error("message limit reached for this context")]
    MessageLimitReached,
    /// An export length above 255 × Nh was requested.
    #[error("export length {0} is too large")]
    ExportTooLong(usize),
    /// The system random generator or a ring primitive failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// The AEAD of an HPKE suite (RFC 9180 §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aead {
    /// AES-128-GCM (id 0x0001).
    Aes128Gcm,
    /// AES-256-GCM (id 0x0002).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (id 0x0003).
    ChaCha20Poly1305,
}

impl Aead {
    /// The registry id.
    pub fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 0x0001,
            Aead::Aes256Gcm => 0x0002,
            Aead::ChaCha20Poly1305 => 0x0003,
        }
    }

    /// The AEAD with registry id `id`, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Aead::Aes128Gcm),
            0x0002 => Some(Aead::Aes256Gcm),
            0x0003 => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }

    pub(crate) fn ring(self) -> &'static aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &aead::AES_128_GCM,
            Aead::Aes256Gcm => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// Key length (Nk).
    pub(crate) fn nk(self) -> usize {
        self.ring().key_len()
    }
}

/// HPKE mode (RFC 9180 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    Base = 0,
    Psk = 1,
    Auth = 2,
    AuthPsk = 3,
}

impl Mode {
    pub(crate) fn of(psk: bool, auth: bool) -> Self {
        match (psk, auth) {
            (false, false) => Mode::Base,
            (true, false) => Mode::Psk,
            (false, true) => Mode::Auth,
            (true, true) => Mode::AuthPsk,
        }
    }
}

/// A pre-shared key and its id, for the psk and auth_psk modes.
#[derive(Clone, Copy)]
pub struct Psk<'a> {
    /// The key (at least 32 bytes of entropy, RFC 9180 §9.5).
    pub psk: &'a [u8],
    /// Its identifier.
    pub psk_id: &'a [u8],
}

/// An HPKE suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and the given AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    /// The AEAD.
    pub aead: Aead,
}

impl Suite {
    /// The suite the cvm protocol uses: X25519 / HKDF-SHA256 / AES-256-GCM.
    pub const PROTOCOL: Suite = Suite {
        aead: Aead::Aes256Gcm,
    };

    /// SetupS for any mode: base (no `psk`, no `sender`), psk, auth (`sender` = the sender's static key
    /// pair) or auth_psk. Returns `enc` and the sender context. The ephemeral key is fresh and random.
    pub fn setup_sender(
        &self,
        pk_r: &[u8],
        info: &[u8],
        psk: Option<Psk<'_>>,
        sender: Option<&HpkeKeyPair>,
    ) -> Result<([u8; NPK], SenderContext), HpkeError> {
        let ephemeral = HpkeKeyPair::generate()?;
        self.setup_sender_with_ephemeral(&ephemeral, pk_r, info, psk, sender)
    }

    /// Like [`Suite::setup_sender`] with a caller-chosen ephemeral key pair. Only for deterministic tests
    /// (test vectors): reusing an ephemeral key breaks HPKE's security.
    pub fn setup_sender_with_ephemeral(
        &self,
        ephemeral: &HpkeKeyPair,
        pk_r: &[u8],
        info: &[u8],
        psk: Option<Psk<'_>>,
        sender: Option<&HpkeKeyPair>,
    ) -> Result<([u8; NPK], SenderContext), HpkeError> {
        let mode = Mode::of(psk.is_some(), sender.is_some());
        let (shared, enc) = encap(ephemeral, pk_r, sender)?;
        let ctx = key_schedule(self.aead, mode, &shared, info, psk)?;
        Ok((enc, SenderContext(ctx)))
    }

    /// SetupR for any mode: `psk` for psk/auth_psk, `pk_s` (the sender's public key) for auth/auth_psk.
    pub fn setup_recipient(
        &self,
        recipient: &HpkeKeyPair,
        enc: &[u8],
        info: &[u8],
        psk: Option<Psk<'_>>,
        pk_s: Option<&[u8]>,
    ) -> Result<RecipientContext, HpkeError> {
        let mode = Mode::of(psk.is_some(), pk_s.is_some());
        let shared = decap(enc, recipient, pk_s)?;
        Ok(RecipientContext(key_schedule(
            self.aead, mode, &shared, info, psk,
        )?))
    }
}

/// Single-shot base-mode encryption for the protocol suite (X25519 / HKDF-SHA256 / AES-256-GCM):
/// returns `(enc, ciphertext)`.
pub fn seal_base(
    pk_r: &[u8],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; NPK], Vec<u8>), HpkeError> {
    let (enc, mut ctx) = Suite::PROTOCOL.setup_sender(pk_r, info, None, None)?;
    Ok((enc, ctx.seal(aad, pt)?))
}

/// Single-shot base-mode decryption for the protocol suite; the plaintext is zeroized on drop.
pub fn open_base(
    recipient: &HpkeKeyPair,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    Suite::PROTOCOL
        .setup_recipient(recipient, enc, info, None, None)?
        .open(aad, ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_base_round_trips_and_refuses_a_wrong_key_or_info() {
        let kp = HpkeKeyPair::generate().unwrap();
        let (enc, ct) = seal_base(kp.public_key(), b"info", b"", b"secret").unwrap();
        assert_eq!(
            &open_base(&kp, &enc, b"info", b"", &ct).unwrap()[..],
            b"secret"
        );
        assert_eq!(
            open_base(&kp, &enc, b"other", b"", &ct).unwrap_err(),
            HpkeError::OpenFailed
        );
        let other = HpkeKeyPair::generate().unwrap();
        assert!(open_base(&other, &enc, b"info", b"", &ct).is_err());
    }

    #[test]
    fn refuses_a_small_order_public_key() {
        // The all-zero point has small order: the DH output is zero and must be refused (RFC 9180 §7.1.4).
        assert_eq!(
            seal_base(&[0u8; 32], b"", b"", b"x").unwrap_err(),
            HpkeError::InvalidPublicKey
        );
        assert_eq!(
            seal_base(&[1u8; 31], b"", b"", b"x").unwrap_err(),
            HpkeError::InvalidPublicKey
        );
    }

    #[test]
    fn open_base_refuses_a_tampered_ciphertext_or_enc() {
        let kp = HpkeKeyPair::generate().unwrap();
        let (enc, ct) = seal_base(kp.public_key(), b"i", b"a", b"secret").unwrap();
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 1;
            assert!(open_base(&kp, &enc, b"i", b"a", &t).is_err(), "byte {i}");
        }
        let mut e = enc;
        e[0] ^= 1;
        assert!(open_base(&kp, &e, b"i", b"a", &ct).is_err());
        assert!(open_base(&kp, &enc, b"i", b"b", &ct).is_err());
        assert!(open_base(&kp, &enc[..31], b"i", b"a", &ct).is_err());
    }

    #[test]
    fn rejects_an_export_longer_than_255_hashes() {
        let kp = HpkeKeyPair::generate().unwrap();
        let (_, ctx) = Suite::PROTOCOL
            .setup_sender(kp.public_key(), b"", None, None)
            .unwrap();
        let mut ok = vec![0u8; 255 * 32];
        ctx.export(b"c", &mut ok).unwrap();
        let mut too_long = vec![0u8; 255 * 32 + 1];
        assert_eq!(
            ctx.export(b"c", &mut too_long),
            Err(HpkeError::ExportTooLong(255 * 32 + 1))
        );
    }

    #[test]
    fn refuses_half_given_psk_inputs() {
        let kp = HpkeKeyPair::generate().unwrap();
        let psk = Psk {
            psk: b"",
            psk_id: b"id",
        };
        assert!(matches!(
            Suite::PROTOCOL.setup_sender(kp.public_key(), b"", Some(psk), None),
            Err(HpkeError::InconsistentPsk)
        ));
    }
}
