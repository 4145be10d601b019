//! DHKEM(X25519, HKDF-SHA256) (RFC 9180 §4.1, §7.1): key pairs, DeriveKeyPair, Encap/Decap and their
//! authenticated variants. See the parent module for how a stored X25519 key is used with `ring`.

use std::fmt;

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::labeled::{kem_suite_id, labeled_expand, labeled_extract};
use super::{HpkeError, NH, NPK, NSK};

/// Builds a ring X25519 private key holding exactly `sk` (see the module documentation for why this is
/// sound). This is the only place that does so.
#[allow(deprecated)]
pub(super) fn x25519_private(sk: &[u8; NSK]) -> Result<EphemeralPrivateKey, HpkeError> {
    let fixed = ring::test::rand::FixedSliceRandom { bytes: &sk[..] };
    EphemeralPrivateKey::generate(&X25519, &fixed).map_err(|_| HpkeError::Crypto("X25519 key"))
}

/// X25519(sk, pk) with ring's validation (wrong length or all-zero result → error).
pub(super) fn dh(sk: &[u8; NSK], pk: &[u8]) -> Result<Zeroizing<[u8; 32]>, HpkeError> {
    let private = x25519_private(sk)?;
    let mut out = Zeroizing::new([0u8; 32]);
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, pk), |ss| {
        out.copy_from_slice(ss)
    })
    .map_err(|_| HpkeError::InvalidPublicKey)?;
    Ok(out)
}

/// An X25519 key pair for HPKE. The private key is zeroized on drop and never printed.
#[derive(Clone)]
pub struct HpkeKeyPair {
    sk: Zeroizing<[u8; NSK]>,
    pk: [u8; NPK],
}

impl fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HpkeKeyPair(public {})", hex::encode(self.pk))
    }
}

impl HpkeKeyPair {
    /// A fresh random key pair (GenerateKeyPair).
    pub fn generate() -> Result<Self, HpkeError> {
        let mut sk = Zeroizing::new([0u8; NSK]);
        SystemRandom::new()
            .fill(&mut sk[..])
            .map_err(|_| HpkeError::Crypto("random"))?;
        Self::from_private_bytes(&sk)
    }

    /// DeriveKeyPair(ikm) for DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1.3): deterministic from `ikm`.
    pub fn derive(ikm: &[u8]) -> Result<Self, HpkeError> {
        let suite = kem_suite_id();
        let dkp_prk = labeled_extract(&suite, b"", b"dkp_prk", ikm);
        let mut sk = Zeroizing::new([0u8; NSK]);
        labeled_expand(&suite, &dkp_prk[..], b"sk", b"", &mut sk[..])?;
        Self::from_private_bytes(&sk)
    }

    /// The key pair of a stored private key (DeserializePrivateKey).
    pub fn from_private_bytes(sk: &[u8; NSK]) -> Result<Self, HpkeError> {
        let public = x25519_private(sk)?
            .compute_public_key()
            .map_err(|_| HpkeError::Crypto("X25519 public key"))?;
        let mut pk = [0u8; NPK];
        pk.copy_from_slice(public.as_ref());
        Ok(Self {
            sk: Zeroizing::new(*sk),
            pk,
        })
    }

    /// The public key (SerializePublicKey), 32 bytes.
    pub fn public_key(&self) -> &[u8; NPK] {
        &self.pk
    }

    /// The private key bytes (SerializePrivateKey); keep them secret.
    pub fn private_bytes(&self) -> &[u8; NSK] {
        &self.sk
    }
}

/// ExtractAndExpand(dh, kem_context) (RFC 9180 §4.1).
pub(super) fn extract_and_expand(
    dh: &[u8],
    kem_context: &[u8],
) -> Result<Zeroizing<[u8; NH]>, HpkeError> {
    let suite = kem_suite_id();
    let eae_prk = labeled_extract(&suite, b"", b"eae_prk", dh);
    let mut shared = Zeroizing::new([0u8; NH]);
    labeled_expand(
        &suite,
        &eae_prk[..],
        b"shared_secret",
        kem_context,
        &mut shared[..],
    )?;
    Ok(shared)
}

/// Encap / AuthEncap with a given ephemeral key pair. Returns (shared_secret, enc).
pub(super) fn encap(
    ephemeral: &HpkeKeyPair,
    pk_r: &[u8],
    sender: Option<&HpkeKeyPair>,
) -> Result<(Zeroizing<[u8; NH]>, [u8; NPK]), HpkeError> {
    if pk_r.len() != NPK {
        return Err(HpkeError::InvalidPublicKey);
    }
    let enc = ephemeral.pk;
    let mut dh_all = Zeroizing::new(Vec::with_capacity(64));
    dh_all.extend_from_slice(&dh(&ephemeral.sk, pk_r)?[..]);
    let mut kem_context = Vec::with_capacity(3 * NPK);
    kem_context.extend_from_slice(&enc);
    kem_context.extend_from_slice(pk_r);
    if let Some(s) = sender {
        dh_all.extend_from_slice(&dh(&s.sk, pk_r)?[..]);
        kem_context.extend_from_slice(&s.pk);
    }
    Ok((extract_and_expand(&dh_all, &kem_context)?, enc))
}

/// Decap / AuthDecap.
pub(super) fn decap(
    enc: &[u8],
    recipient: &HpkeKeyPair,
    pk_s: Option<&[u8]>,
) -> Result<Zeroizing<[u8; NH]>, HpkeError> {
    if enc.len() != NPK {
        return Err(HpkeError::InvalidPublicKey);
    }
    let mut dh_all = Zeroizing::new(Vec::with_capacity(64));
    dh_all.extend_from_slice(&dh(&recipient.sk, enc)?[..]);
    let mut kem_context = Vec::with_capacity(3 * NPK);
    kem_context.extend_from_slice(enc);
    kem_context.extend_from_slice(&recipient.pk);
    if let Some(pk_s) = pk_s {
        if pk_s.len() != NPK {
            return Err(HpkeError::InvalidPublicKey);
        }
        dh_all.extend_from_slice(&dh(&recipient.sk, pk_s)?[..]);
        kem_context.extend_from_slice(pk_s);
    }
    extract_and_expand(&dh_all, &kem_context)
}
