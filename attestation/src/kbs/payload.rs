//! The KBS protocol's JSON bodies, in the shapes guest-components sends and expects (kbs-types 0.18):
//! field names are exactly the protocol's (`extra-params`, `runtime-data`, `tee-evidence`, ...). Requests are
//! decoded strictly: at most [`super::MAX_BODY`] bytes of one JSON value, unknown fields refused, duplicate
//! fields refused, every field of its type.

use super::jwk::EcPublicJwk;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `extra-params` key with the client's hash algorithms (`Request`).
pub const SUPPORTED_HASH_ALGORITHMS: &str = "supported-hash-algorithms";
/// The `extra-params` key with the algorithm the service selected (`Challenge`).
pub const SELECTED_HASH_ALGORITHM: &str = "selected-hash-algorithm";

/// `POST /kbs/v0/auth` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The client's protocol version (`0.4.0`).
    pub version: String,
    /// The TEE: `snp`, `tdx`, `sample`, ... (only those three are served).
    pub tee: String,
    /// `{"supported-hash-algorithms": [...]}`, or an empty string from older clients.
    #[serde(rename = "extra-params", default)]
    pub extra_params: Value,
}

/// `POST /kbs/v0/auth` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// The nonce to bind into the evidence (base64).
    pub nonce: String,
    /// `{"selected-hash-algorithm": "sha384"}`.
    #[serde(rename = "extra-params", default)]
    pub extra_params: Value,
}

/// `init-data` of an `Attestation`: the plaintext of the guest's init data (kept, not interpreted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitData {
    /// `toml` or `json`.
    pub format: String,
    /// The plaintext.
    pub body: String,
}

/// `runtime-data` of an `Attestation`: what REPORT_DATA binds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeData {
    /// The challenge's nonce.
    pub nonce: String,
    /// The guest's ephemeral public key.
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: EcPublicJwk,
}

/// `tee-evidence` of an `Attestation` (protocol 0.4.0: composite evidence).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeEvidence {
    /// The primary TEE's evidence, as its attester wraps it.
    pub primary_evidence: Value,
    /// Evidence of further devices (a JSON text; empty when there are none). Bound into REPORT_DATA.
    pub additional_evidence: String,
}

/// `POST /kbs/v0/attest` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// Optional init data (`null` when the guest has none).
    #[serde(rename = "init-data", default)]
    pub init_data: Option<InitData>,
    /// The runtime data REPORT_DATA binds.
    #[serde(rename = "runtime-data")]
    pub runtime_data: RuntimeData,
    /// The evidence.
    #[serde(rename = "tee-evidence")]
    pub tee_evidence: CompositeEvidence,
}

/// `POST /kbs/v0/attest` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The attestation token (a JWT).
    pub token: String,
}

/// Every KBS error body (RFC 7807 style, as Trustee's KBS answers): `type` is
/// [`super::ERROR_TYPE_PREFIX`] and a problem type; `detail` starts with our reason code, then `: ` and what
/// was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInformation {
    /// The problem type.
    #[serde(rename = "type")]
    pub error_type: String,
    /// `CODE: message`.
    pub detail: String,
}

impl ErrorInformation {
    /// The reason code at the start of `detail` (everything before the first `: `).
    pub fn code(&self) -> &str {
        self.detail
            .split_once(": ")
            .map_or(self.detail.as_str(), |(c, _)| c)
    }
}

/// A hash algorithm the challenge may select for REPORT_DATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256 (REPORT_DATA: 32 bytes, then zeros).
    Sha256,
    /// SHA-384 (the guest side's default when the challenge selects none).
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// The lowercase name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// The algorithm for a name (any case), if we support it.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(name))
    }

    /// The digest of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlgorithm::Sha256 => &ring::digest::SHA256,
            HashAlgorithm::Sha384 => &ring::digest::SHA384,
            HashAlgorithm::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, bytes).as_ref().to_vec()
    }

    /// The service's choice for a `Request`'s `extra-params`: SHA-384 when offered (or when the client lists
    /// none: the guest side's default), else SHA-512, else SHA-256; `None` when the client lists only
    /// algorithms we do not support.
    pub fn select(extra_params: &Value) -> Option<Self> {
        let Some(list) = extra_params
            .get(SUPPORTED_HASH_ALGORITHMS)
            .and_then(Value::as_array)
        else {
            return Some(HashAlgorithm::Sha384);
        };
        let offered: Vec<HashAlgorithm> = list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(HashAlgorithm::parse)
            .collect();
        [Self::Sha384, Self::Sha512, Self::Sha256]
            .into_iter()
            .find(|h| offered.contains(h))
    }

    /// The algorithm a `Challenge`'s `extra-params` selects: the named one, or SHA-384 when it names none
    /// (Trustee's KBS sends an empty string); `None` for a name we do not support.
    pub fn selected(extra_params: &Value) -> Option<Self> {
        match extra_params.get(SELECTED_HASH_ALGORITHM) {
            None => Some(HashAlgorithm::Sha384),
            Some(v) => v.as_str().and_then(HashAlgorithm::parse),
        }
    }
}

/// Why a body does not decode.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Larger than [`super::MAX_BODY`].
    #[error("the body is {len} bytes; at most {max} are read")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not the expected JSON.
    #[error("{}", crate::excerpt::truncate(.0.to_string()))]
    Json(#[from] serde_json::Error),
}

/// Decode a request body of type `T`: at most [`super::MAX_BODY`] bytes, one JSON value, the fields of `T`.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PayloadError> {
    if body.len() > super::MAX_BODY {
        return Err(PayloadError::TooLarge {
            len: body.len(),
            max: super::MAX_BODY,
        });
    }
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_service_prefers_sha384_and_falls_back_in_order() {
        let s = |v: Value| HashAlgorithm::select(&json!({ SUPPORTED_HASH_ALGORITHMS: v }));
        assert_eq!(
            s(json!(["sha256", "sha384", "sha512", "sm3"])),
            Some(HashAlgorithm::Sha384)
        );
        assert_eq!(s(json!(["SHA512", "sha256"])), Some(HashAlgorithm::Sha512));
        assert_eq!(s(json!(["sha256"])), Some(HashAlgorithm::Sha256));
        assert_eq!(s(json!(["sm3"])), None);
        assert_eq!(
            HashAlgorithm::select(&json!("")),
            Some(HashAlgorithm::Sha384)
        );
        assert_eq!(
            HashAlgorithm::selected(&json!("")),
            Some(HashAlgorithm::Sha384)
        );
        assert_eq!(
            HashAlgorithm::selected(&json!({ SELECTED_HASH_ALGORITHM: "SHA256" })),
            Some(HashAlgorithm::Sha256)
        );
        assert_eq!(
            HashAlgorithm::selected(&json!({ SELECTED_HASH_ALGORITHM: "sm3" })),
            None
        );
    }

    #[test]
    fn requests_with_unknown_or_duplicate_fields_are_refused() {
        let ok = br#"{"version":"0.4.0","tee":"snp","extra-params":""}"#;
        assert_eq!(decode::<Request>(ok).unwrap().tee, "snp");
        for bad in [
            &br#"{"version":"0.4.0","tee":"snp","extra-params":"","more":1}"#[..],
            br#"{"version":"0.4.0","tee":"snp","tee":"tdx"}"#,
            br#"{"version":"0.4.0","tee":7}"#,
            br#"{"version":"0.4.0","tee":"snp"} {}"#,
        ] {
            assert!(
                decode::<Request>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            decode::<Request>(&vec![b' '; super::super::MAX_BODY + 1]),
            Err(PayloadError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_reason_code_leads_the_detail() {
        let e = ErrorInformation {
            error_type: "x".into(),
            detail: "NONCE_REPLAYED: the nonce was already used".into(),
        };
        assert_eq!(e.code(), "NONCE_REPLAYED");
    }
}
