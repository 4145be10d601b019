//! A resource as a JWE (RFC 7516) in the flattened JSON serialization, the KBS protocol's `Response`:
//! `ECDH-ES+A256KW` key management (RFC 7518 §4.6: ephemeral-static ECDH on P-256, the Concat KDF with
//! SHA-256 over `AlgorithmID = "ECDH-ES+A256KW"` and empty `apu`/`apv`, then AES-256 key wrap, RFC 3394)
//! and `A256GCM` content encryption with a fresh 256-bit CEK and 96-bit IV; the AAD is the ASCII of the
//! encoded protected header.
//!
//! The protected header is written compactly with `alg`, `enc` first and every other member sorted
//! (`{"alg":…,"enc":…,"epk":{"crv":…,"kty":…,"x":…,"y":…}}`): guest-components recomputes the AAD by
//! re-serializing the header it decoded (kbs-types' `ProtectedHeader::generate_aad`), which gives back
//! exactly these bytes, while standard JOSE libraries use the bytes as sent.

use super::jwk::{ALG_ECDH_ES_A256KW, COORD_LEN, CRV_P256, EcPublicJwk};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The content encryption algorithm.
pub const ENC_A256GCM: &str = "A256GCM";
/// Bytes of the content encryption key.
const CEK_LEN: usize = 32;
/// Bytes of an AES key-wrapped CEK (RFC 3394: one more 64-bit block).
const WRAPPED_LEN: usize = CEK_LEN + 8;
/// Bytes of the GCM tag.
const TAG_LEN: usize = 16;
/// Largest protected header [`open`] decodes.
const MAX_HEADER: usize = 4096;

/// Why a JWE could not be made or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JweError {
    /// The recipient's key or the header's `epk` is not a P-256 point.
    #[error("the key agreement failed: the public key is not a P-256 point")]
    Agreement,
    /// The system random generator failed.
    #[error("no randomness")]
    Random,
    /// The JWE is not one this implementation makes.
    #[error("unsupported JWE: {0}")]
    Unsupported(String),
    /// A member is not base64url without padding, or has the wrong length.
    #[error("JWE member {0} is malformed")]
    Member(&'static str),
    /// The key does not unwrap or the ciphertext does not authenticate (another key, or tampered).
    #[error("the JWE does not decrypt with this key (another key, or tampered)")]
    Decrypt,
}

/// The flattened JSON serialization (the members guest-components' `Response` reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwe {
    /// base64url of the protected header.
    pub protected: String,
    /// base64url of the wrapped CEK.
    pub encrypted_key: String,
    /// base64url of the IV.
    pub iv: String,
    /// base64url of the ciphertext.
    pub ciphertext: String,
    /// base64url of the authentication tag.
    pub tag: String,
}

/// The protected header members [`open`] reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    enc: String,
    epk: EpkMembers,
}

#[derive(Deserialize)]
struct EpkMembers {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

/// Concat KDF (NIST SP 800-56A §5.8.1, RFC 7518 §4.6.2) for a 256-bit key: one SHA-256 round over
/// `counter 1 ‖ Z ‖ len ‖ "ECDH-ES+A256KW" ‖ 0 (apu) ‖ 0 (apv) ‖ 256`.
fn concat_kdf(z: &[u8]) -> Zeroizing<[u8; 32]> {
    let alg = ALG_ECDH_ES_A256KW.as_bytes();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&1u32.to_be_bytes());
    ctx.update(z);
    ctx.update(&u32::try_from(alg.len()).unwrap_or(u32::MAX).to_be_bytes());
    ctx.update(alg);
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&256u32.to_be_bytes());
    let mut kek = Zeroizing::new([0u8; 32]);
    kek.copy_from_slice(ctx.finish().as_ref());
    kek
}

/// The protected header for an ephemeral key (see the module doc for its exact form).
fn protected_header(epk: &EcPublicJwk) -> String {
    format!(
        "{{\"alg\":\"{ALG_ECDH_ES_A256KW}\",\"enc\":\"{ENC_A256GCM}\",\"epk\":{{\"crv\":\"{CRV_P256}\",\"kty\":\"EC\",\
         \"x\":\"{}\",\"y\":\"{}\"}}}}",
        epk.x_b64(),
        epk.y_b64()
    )
}

fn aes_key(cek: &[u8]) -> Result<LessSafeKey, JweError> {
    UnboundKey::new(&AES_256_GCM, cek)
        .map(LessSafeKey::new)
        .map_err(|_| JweError::Decrypt)
}

/// Encrypt `plaintext` to `recipient`.
pub fn seal(recipient: &EcPublicJwk, plaintext: &[u8]) -> Result<Jwe, JweError> {
    let rng = SystemRandom::new();
    let ephemeral =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| JweError::Random)?;
    let epk_point = ephemeral
        .compute_public_key()
        .map_err(|_| JweError::Random)?;
    let epk = EcPublicJwk::from_uncompressed(epk_point.as_ref()).map_err(|_| JweError::Random)?;
    let point = recipient.uncompressed();
    let kek = agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&ECDH_P256, &point),
        concat_kdf,
    )
    .map_err(|_| JweError::Agreement)?;
    let mut cek = Zeroizing::new([0u8; CEK_LEN]);
    rng.fill(cek.as_mut()).map_err(|_| JweError::Random)?;
    let mut wrapped = [0u8; WRAPPED_LEN];
    aes_kw::KekAes256::from(*kek)
        .wrap(cek.as_ref(), &mut wrapped)
        .map_err(|_| JweError::Random)?;
    let protected = URL_SAFE_NO_PAD.encode(protected_header(&epk));
    let mut iv = [0u8; NONCE_LEN];
    rng.fill(&mut iv).map_err(|_| JweError::Random)?;
    let mut ciphertext = plaintext.to_vec();
    let tag = aes_key(cek.as_ref())?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(protected.as_bytes()),
            &mut ciphertext,
        )
        .map_err(|_| JweError::Random)?;
    Ok(Jwe {
        protected,
        encrypted_key: URL_SAFE_NO_PAD.encode(wrapped),
        iv: URL_SAFE_NO_PAD.encode(iv),
        ciphertext: URL_SAFE_NO_PAD.encode(ciphertext),
        tag: URL_SAFE_NO_PAD.encode(tag.as_ref()),
    })
}

fn member<const N: usize>(name: &'static str, text: &str) -> Result<[u8; N], JweError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or(JweError::Member(name))
}

/// Decrypt `jwe` with the private key whose public half it was sealed to (consumed: the guest's key is
/// ephemeral). Only `ECDH-ES+A256KW` on P-256 with `A256GCM` is accepted.
pub fn open(private: EphemeralPrivateKey, jwe: &Jwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
    if jwe.protected.len() > MAX_HEADER {
        return Err(JweError::Member("protected"));
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(&jwe.protected)
        .map_err(|_| JweError::Member("protected"))?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|e| JweError::Unsupported(crate::excerpt::truncate(e.to_string())))?;
    if header.alg != ALG_ECDH_ES_A256KW
        || header.enc != ENC_A256GCM
        || header.epk.kty != "EC"
        || header.epk.crv != CRV_P256
    {
        return Err(JweError::Unsupported(format!(
            "alg {}, enc {}, epk {} {}: expected {ALG_ECDH_ES_A256KW}, {ENC_A256GCM}, EC {CRV_P256}",
            crate::excerpt::quote(&header.alg),
            crate::excerpt::quote(&header.enc),
            crate::excerpt::quote(&header.epk.kty),
            crate::excerpt::quote(&header.epk.crv)
        )));
    }
    let epk = EcPublicJwk {
        x: member::<COORD_LEN>("epk.x", &header.epk.x)?,
        y: member::<COORD_LEN>("epk.y", &header.epk.y)?,
    };
    let wrapped = member::<WRAPPED_LEN>("encrypted_key", &jwe.encrypted_key)?;
    let iv = member::<NONCE_LEN>("iv", &jwe.iv)?;
    let tag = member::<TAG_LEN>("tag", &jwe.tag)?;
    let mut data = URL_SAFE_NO_PAD
        .decode(&jwe.ciphertext)
        .map_err(|_| JweError::Member("ciphertext"))?;
    let point = epk.uncompressed();
    let kek = agree_ephemeral(
        private,
        &UnparsedPublicKey::new(&ECDH_P256, &point),
        concat_kdf,
    )
    .map_err(|_| JweError::Agreement)?;
    let mut cek = Zeroizing::new([0u8; CEK_LEN]);
    aes_kw::KekAes256::from(*kek)
        .unwrap(&wrapped, cek.as_mut())
        .map_err(|_| JweError::Decrypt)?;
    data.extend_from_slice(&tag);
    let mut data = Zeroizing::new(data);
    let len = aes_key(cek.as_ref())?
        .open_in_place(
            Nonce::assume_unique_for_key(iv),
            Aad::from(jwe.protected.as_bytes()),
            &mut data,
        )
        .map_err(|_| JweError::Decrypt)?
        .len();
    data.truncate(len);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (EphemeralPrivateKey, EcPublicJwk) {
        let k = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new()).unwrap();
        let p = EcPublicJwk::from_uncompressed(k.compute_public_key().unwrap().as_ref()).unwrap();
        (k, p)
    }

    #[test]
    fn a_sealed_resource_opens_with_its_key_only() {
        let (k, p) = key();
        let jwe = seal(&p, b"the secret").unwrap();
        assert_eq!(open(k, &jwe).unwrap().as_slice(), b"the secret");
        let (other, _) = key();
        assert_eq!(open(other, &jwe), Err(JweError::Decrypt));
    }

    #[test]
    fn every_tampered_member_is_refused() {
        let (_, p) = key();
        let jwe = seal(&p, b"the secret").unwrap();
        for field in 0..5 {
            let mut t = jwe.clone();
            let m = match field {
                0 => &mut t.protected,
                1 => &mut t.encrypted_key,
                2 => &mut t.iv,
                3 => &mut t.ciphertext,
                _ => &mut t.tag,
            };
            let c = if m.starts_with('A') { "B" } else { "A" };
            m.replace_range(0..1, c);
            let (k2, _) = key();
            assert!(open(k2, &t).is_err(), "member {field}");
        }
    }

    #[test]
    fn the_protected_header_survives_re_serialization_as_guest_components_does_it() {
        // kbs-types' ProtectedHeader::generate_aad: serde_json of {alg, enc, ...other members in map order}.
        let (_, p) = key();
        let jwe = seal(&p, b"x").unwrap();
        let json = URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap();
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).unwrap();
        let mut again = format!(
            "{{\"alg\":{},\"enc\":{}",
            serde_json::to_string(&v["alg"]).unwrap(),
            serde_json::to_string(&v["enc"]).unwrap()
        );
        for (k, val) in v.iter().filter(|(k, _)| *k != "alg" && *k != "enc") {
            again.push_str(&format!(",{}:{}", serde_json::to_string(k).unwrap(), val));
        }
        again.push('}');
        assert_eq!(again.as_bytes(), json.as_slice());
    }

    #[test]
    fn concat_kdf_is_one_sha256_round_over_the_rfc_7518_fields() {
        // RFC 7518 §4.6.2: counter, Z, AlgorithmID (length-prefixed), PartyUInfo and PartyVInfo (empty,
        // length-prefixed), SuppPubInfo (the key length in bits).
        let z = [7u8; 32];
        let mut input = vec![0, 0, 0, 1];
        input.extend_from_slice(&z);
        input.extend_from_slice(&[0, 0, 0, 14]);
        input.extend_from_slice(b"ECDH-ES+A256KW");
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let want = ring::digest::digest(&ring::digest::SHA256, &input);
        assert_eq!(concat_kdf(&z).as_slice(), want.as_ref());
    }
}
