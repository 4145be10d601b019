//! Labeled HKDF-SHA256 (RFC 9180 §4): LabeledExtract and LabeledExpand with the KEM and HPKE suite ids.

use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use super::{Aead, HpkeError, KDF_HKDF_SHA256, KEM_X25519_HKDF_SHA256, NH};

/// `suite_id` of the KEM: "KEM" ‖ I2OSP(kem_id, 2).
pub(super) fn kem_suite_id() -> [u8; 5] {
    let id = KEM_X25519_HKDF_SHA256.to_be_bytes();
    [b'K', b'E', b'M', id[0], id[1]]
}

/// `suite_id` of the full suite: "HPKE" ‖ kem_id ‖ kdf_id ‖ aead_id.
pub(super) fn hpke_suite_id(aead: Aead) -> [u8; 10] {
    let k = KEM_X25519_HKDF_SHA256.to_be_bytes();
    let f = KDF_HKDF_SHA256.to_be_bytes();
    let a = aead.id().to_be_bytes();
    [b'H', b'P', b'K', b'E', k[0], k[1], f[0], f[1], a[0], a[1]]
}

/// LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" ‖ suite_id ‖ label ‖ ikm).
/// HKDF-Extract is HMAC(salt, ikm); an empty salt is the same as Nh zero bytes for HMAC (RFC 5869 §2.2).
pub(super) fn labeled_extract(
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Zeroizing<[u8; NH]> {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
    ctx.update(b"HPKE-v1");
    ctx.update(suite_id);
    ctx.update(label);
    ctx.update(ikm);
    let mut out = Zeroizing::new([0u8; NH]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// An output length for ring's HKDF-Expand.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite_id ‖ label ‖ info, L).
pub(super) fn labeled_expand(
    suite_id: &[u8],
    prk: &[u8],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), HpkeError> {
    let l = u16::try_from(out.len()).map_err(|_| HpkeError::ExportTooLong(out.len()))?;
    if out.len() > 255 * NH {
        return Err(HpkeError::ExportTooLong(out.len()));
    }
    let l = l.to_be_bytes();
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk);
    let parts: [&[u8]; 5] = [&l, b"HPKE-v1", suite_id, label, info];
    prk.expand(&parts, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| HpkeError::Crypto("HKDF-Expand"))
}
