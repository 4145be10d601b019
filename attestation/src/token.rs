//! The attestation result token: a COSE_Sign1 (RFC 9052 §4.2, tagged 18) signed with ES256 (ECDSA P-256
//! SHA-256, signature `r ‖ s`) over CBOR [`TokenClaims`] (EAT style, text labels).
//!
//! - protected header: `{1: -7}` (alg ES256), unprotected header: `{}`; payload: the claims map.
//! - the signature covers `Sig_structure = ["Signature1", protected, h'', payload]`.
//! - the verification key is published at `GET /v1/token-key` as a COSE_Key (RFC 9053 §7.1.1:
//!   `{1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}`); [`CoseKey::to_uncompressed`] gives the
//!   SEC1 point ring verifies with.
//!
//! The signing key (PKCS#8) is kept in the store directory with mode 0600 and created on first start, or, with
//! a PostgreSQL store, sealed under the KEK in the database and shared by the replicas.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// CBOR tag of COSE_Sign1.
const COSE_SIGN1_TAG: u8 = 0xd2;
/// COSE algorithm id of ES256.
const ALG_ES256: i64 = -7;
/// The encoded protected header `{1: -7}`.
const PROTECTED: [u8; 3] = [0xa1, 0x01, 0x26];
/// Largest token [`verify`] looks at.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Errors making, loading or checking tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key file could not be read or written.
    #[error("token key {path}: {message}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A cryptographic operation failed.
    #[error("token crypto: {0}")]
    Crypto(&'static str),
    /// CBOR encoding or decoding failed.
    #[error("token encoding: {0}")]
    Cbor(#[from] cvm_keys::cbor::CborError),
    /// The token is not a COSE_Sign1 with ES256.
    #[error("not an ES256 COSE_Sign1 token: {0}")]
    Format(&'static str),
    /// The signature does not verify with the key.
    #[error("token signature does not verify")]
    BadSignature,
}

/// The claims of an attestation result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenClaims {
    /// Issuer: `"cvm-attest"`.
    pub iss: String,
    /// `"snp"` or `"tdx"`.
    pub tee: String,
    /// The resource released.
    pub resource: String,
    /// The launch measurement: SNP MEASUREMENT or TDX MRTD.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub measurement: Vec<u8>,
    /// The evidence's REPORT_DATA (the nonce/key binding).
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub report_data: Vec<u8>,
    /// TDX TCB status (`"UpToDate"`, ...); for SNP the REPORTED_TCB as text.
    pub tcb_status: String,
    /// SHA-256 of the secret's policy TOML.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub policy_id: Vec<u8>,
    /// True when the evidence chains to a simulated root.
    pub simulated: bool,
    /// Whether CRLs were checked.
    pub revocation_checked: bool,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// SHA-256 of each piece of collateral used (certificates given with the evidence, TDX collateral).
    #[serde(with = "crate::protocol::byte_list")]
    pub collateral: Vec<Vec<u8>>,
}

/// An ES256 signing key for tokens.
#[derive(Debug)]
pub struct TokenSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl TokenSigner {
    /// A new PKCS#8 P-256 key.
    pub fn generate_pkcs8() -> Result<zeroize::Zeroizing<Vec<u8>>, TokenError> {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| TokenError::Crypto("key generation"))?;
        Ok(zeroize::Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// The signer of a PKCS#8 P-256 key (one the replicas share, from the store).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|_| TokenError::Crypto("the token key is not a P-256 PKCS#8 key"))?;
        Ok(TokenSigner { key, rng })
    }

    /// Load the PKCS#8 key at `path`, or create one there (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let err = |message: String| TokenError::KeyFile {
            path: path.to_owned(),
            message,
        };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => zeroize::Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Self::generate_pkcs8()?;
                crate::store::atomic::write_file(path, &doc, 0o600)
                    .map_err(|e| err(e.to_string()))?;
                doc
            }
            Err(e) => return Err(err(e.to_string())),
        };
        Self::from_pkcs8(&pkcs8).map_err(|_| err("not a P-256 PKCS#8 key".into()))
    }

    /// The public key as a SEC1 uncompressed point (65 bytes).
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// The public key as a COSE_Key.
    pub fn cose_key(&self) -> Result<CoseKey, TokenError> {
        CoseKey::from_uncompressed(self.public_key())
    }

    /// An ES256 signature (`r ‖ s`, 64 bytes) over `message`: the KBS protocol's JWTs use the same key.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| TokenError::Crypto("signing"))
    }

    /// Sign `claims` into a tagged COSE_Sign1.
    pub fn sign(&self, claims: &TokenClaims) -> Result<Vec<u8>, TokenError> {
        let payload = cvm_keys::cbor::to_vec(claims)?;
        let tbs = sig_structure(&payload)?;
        let sig = self
            .key
            .sign(&self.rng, &tbs)
            .map_err(|_| TokenError::Crypto("signing"))?;
        let mut out = vec![COSE_SIGN1_TAG];
        out.extend(cvm_keys::cbor::to_vec(&(
            Bstr(PROTECTED.to_vec()),
            BTreeMap::<i64, i64>::new(),
            Bstr(payload),
            Bstr(sig.as_ref().to_vec()),
        ))?);
        Ok(out)
    }
}

/// A CBOR byte string.
#[derive(Serialize, Deserialize)]
struct Bstr(#[serde(with = "cvm_keys::cbor::bytes")] Vec<u8>);

/// `Sig_structure = ["Signature1", protected, external_aad = h'', payload]` (RFC 9052 §4.4).
fn sig_structure(payload: &[u8]) -> Result<Vec<u8>, TokenError> {
    Ok(cvm_keys::cbor::to_vec(&(
        "Signature1",
        Bstr(PROTECTED.to_vec()),
        Bstr(Vec::new()),
        Bstr(payload.to_vec()),
    ))?)
}

/// Verify a token with a SEC1 uncompressed P-256 public key and return its claims (expiry is the caller's
/// decision: compare `exp` with the time).
pub fn verify(token: &[u8], public_key: &[u8]) -> Result<TokenClaims, TokenError> {
    let body = token.strip_prefix(&[COSE_SIGN1_TAG]).unwrap_or(token);
    let (protected, unprotected, payload, sig): (Bstr, BTreeMap<i64, i64>, Bstr, Bstr) =
        cvm_keys::cbor::from_slice_capped(body, MAX_TOKEN_LEN)?;
    let header: BTreeMap<i64, i64> = cvm_keys::cbor::from_slice(&protected.0)?;
    if header.get(&1) != Some(&ALG_ES256) || header.len() != 1 || !unprotected.is_empty() {
        return Err(TokenError::Format(
            "the protected header must be exactly {1: -7}",
        ));
    }
    // The signature covers the protected header bytes as sent.
    let tbs = cvm_keys::cbor::to_vec(&(
        "Signature1",
        Bstr(protected.0),
        Bstr(Vec::new()),
        Bstr(payload.0.clone()),
    ))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(&tbs, &sig.0)
        .map_err(|_| TokenError::BadSignature)?;
    Ok(cvm_keys::cbor::from_slice(&payload.0)?)
}

/// A P-256 public key as a COSE_Key (EC2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoseKey {
    /// The x coordinate (32 bytes).
    pub x: Vec<u8>,
    /// The y coordinate (32 bytes).
    pub y: Vec<u8>,
}

impl CoseKey {
    /// From a SEC1 uncompressed point.
    pub fn from_uncompressed(point: &[u8]) -> Result<Self, TokenError> {
        match point {
            [0x04, rest @ ..] if rest.len() == 64 => {
                let (x, y) = rest.split_at(32);
                Ok(CoseKey {
                    x: x.to_vec(),
                    y: y.to_vec(),
                })
            }
            _ => Err(TokenError::Format("not an uncompressed P-256 point")),
        }
    }

    /// The SEC1 uncompressed point.
    pub fn to_uncompressed(&self) -> Vec<u8> {
        let mut p = vec![0x04];
        p.extend_from_slice(&self.x);
        p.extend_from_slice(&self.y);
        p
    }

    /// Encode as CBOR.
    pub fn to_cbor(&self) -> Result<Vec<u8>, TokenError> {
        Ok(cvm_keys::cbor::to_vec(self)?)
    }

    /// Decode from CBOR (EC2, ES256, P-256 only).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, TokenError> {
        let map: BTreeMap<i64, KeyParam> = cvm_keys::cbor::from_slice_capped(bytes, 1024)?;
        let int = |k: i64| match map.get(&k) {
            Some(KeyParam::Int(v)) => Some(*v),
            _ => None,
        };
        let coord = |k: i64| match map.get(&k) {
            Some(KeyParam::Bytes(b)) if b.len() == 32 => Some(b.clone()),
            _ => None,
        };
        if int(1) != Some(2) || int(3) != Some(ALG_ES256) || int(-1) != Some(1) {
            return Err(TokenError::Format("COSE_Key is not EC2 / ES256 / P-256"));
        }
        match (coord(-2), coord(-3)) {
            (Some(x), Some(y)) => Ok(CoseKey { x, y }),
            _ => Err(TokenError::Format("COSE_Key coordinates missing")),
        }
    }
}

/// A COSE_Key parameter value.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyParam {
    Int(i64),
    Bytes(#[serde(with = "cvm_keys::cbor::bytes")] Vec<u8>),
}

impl Serialize for CoseKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry(&1i64, &2i64)?;
        m.serialize_entry(&3i64, &ALG_ES256)?;
        m.serialize_entry(&-1i64, &1i64)?;
        m.serialize_entry(&-2i64, &Bstr(self.x.clone()))?;
        m.serialize_entry(&-3i64, &Bstr(self.y.clone()))?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            iss: "cvm-attest".into(),
            tee: "snp".into(),
            resource: "db".into(),
            measurement: vec![1; 48],
            report_data: vec![2; 64],
            tcb_status: "UpToDate".into(),
            policy_id: vec![3; 32],
            simulated: true,
            revocation_checked: false,
            iat: 10,
            exp: 20,
            collateral: vec![vec![4; 32]],
        }
    }

    #[test]
    fn a_token_verifies_with_the_published_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let signer = TokenSigner::load_or_create(&dir.path().join("k")).unwrap();
        let token = signer.sign(&claims()).unwrap();
        assert_eq!(token[0], 0xd2);
        let key = CoseKey::from_cbor(&signer.cose_key().unwrap().to_cbor().unwrap()).unwrap();
        assert_eq!(verify(&token, &key.to_uncompressed()).unwrap(), claims());
        // The same key after a reload.
        let again = TokenSigner::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let other = TokenSigner::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(verify(&token, other.public_key()).is_err());
        for i in 1..token.len() {
            let mut t = token.clone();
            t[i] ^= 0x01;
            assert!(verify(&t, signer.public_key()).is_err(), "byte {i}");
        }
    }
}
