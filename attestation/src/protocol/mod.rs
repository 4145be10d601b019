//! The wire protocol of DESIGN.md "Protocol": the CBOR bodies of every endpoint, their size limits and the
//! paths. Byte fields are CBOR byte strings, keys are text strings. Decoding a request is strict: the body
//! must be in the strict form of [`strict`] (one map, shortest lengths, no tags, no trailing bytes), every
//! field must have its exact type (text is text, bytes are bytes, `tee` is one of its names) and unknown
//! fields are refused; the codec itself stays behind [`cvm_keys::cbor`].

pub mod strict;

use crate::excerpt::quote;
use crate::reason::Reason;
use serde::{Deserialize, Serialize};

/// Largest request body the service reads (64 KiB): anything larger is refused with 413 before parsing,
/// limiting the memory a peer can make the service allocate.
pub const MAX_BODY: usize = 64 * 1024;
/// Shortest nonce the protocol allows.
pub const MIN_NONCE_LEN: usize = 32;
/// Longest resource (secret) name.
pub const MAX_RESOURCE_LEN: usize = 128;
/// Length of an X25519 HPKE public key.
pub const HPKE_PUBLIC_KEY_LEN: usize = cvm_keys::hpke::NPK;
/// Most certificates an attest request may carry.
pub const MAX_CERTS: usize = 8;

/// `POST /v1/challenge`.
pub const PATH_CHALLENGE: &str = "/v1/challenge";
/// `POST /v1/attest`.
pub const PATH_ATTEST: &str = "/v1/attest";
/// `GET /v1/token-key`: the token verification key as a COSE_Key (CBOR).
pub const PATH_TOKEN_KEY: &str = "/v1/token-key";
/// Prefix of `PUT/GET/DELETE /v1/admin/secrets/{name}`; `GET /v1/admin/secrets` lists.
pub const PATH_ADMIN_SECRETS: &str = "/v1/admin/secrets";
/// `GET /v1/admin/audit`.
pub const PATH_ADMIN_AUDIT: &str = "/v1/admin/audit";
/// Admin: check the audit log's hash chain.
pub const PATH_ADMIN_AUDIT_VERIFY: &str = "/v1/admin/audit/verify";
/// `GET /healthz`.
pub const PATH_HEALTHZ: &str = "/healthz";
/// `GET /metrics` (Prometheus text).
pub const PATH_METRICS: &str = "/metrics";
/// The content type of every CBOR body.
pub const CONTENT_TYPE_CBOR: &str = "application/cbor";

/// The TEE named in an attest request: the text `"snp"` or `"tdx"` on the wire (nothing else decodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// AMD SEV-SNP: `evidence` is an attestation report.
    Snp,
    /// Intel TDX: `evidence` is a quote.
    Tdx,
}

impl<'de> Deserialize<'de> for TeeKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match text::deserialize(d)?.as_str() {
            "snp" => Ok(TeeKind::Snp),
            "tdx" => Ok(TeeKind::Tdx),
            other => Err(serde::de::Error::custom(format!(
                "tee must be \"snp\" or \"tdx\", not {}",
                quote(other)
            ))),
        }
    }
}

/// A serde helper that accepts a CBOR text string only (the codec would also turn a UTF-8 byte string into
/// a `String`): `#[serde(deserialize_with = "text::deserialize")]`.
pub mod text {
    use serde::Deserializer;
    use serde::de::{self, Visitor};
    use std::fmt;

    /// Deserializes a text string, refusing every other type.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
        }
        d.deserialize_string(V)
    }
}

impl From<TeeKind> for crate::Tee {
    fn from(t: TeeKind) -> Self {
        match t {
            TeeKind::Snp => crate::Tee::Snp,
            TeeKind::Tdx => crate::Tee::Tdx,
        }
    }
}

/// Body of `POST /v1/challenge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The secret the guest will ask for.
    #[serde(deserialize_with = "text::deserialize")]
    pub resource: String,
}

/// Answer to `POST /v1/challenge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// The nonce (at least [`MIN_NONCE_LEN`] bytes) to bind into the evidence.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub nonce: Vec<u8>,
    /// When the nonce stops being accepted, Unix seconds.
    pub expires_at: i64,
}

/// Body of `POST /v1/attest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The secret asked for (the same as in the challenge).
    #[serde(deserialize_with = "text::deserialize")]
    pub resource: String,
    /// The nonce from the challenge.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub nonce: Vec<u8>,
    /// Which TEE produced `evidence`.
    pub tee: TeeKind,
    /// The SNP attestation report or TDX quote.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub evidence: Vec<u8>,
    /// DER certificates: the VCEK/VLEK for SNP (may be empty when the service holds it).
    #[serde(with = "byte_list")]
    pub certs: Vec<Vec<u8>>,
    /// The guest's ephemeral X25519 public key (32 bytes).
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub hpke_public_key: Vec<u8>,
}

/// A secret sealed with HPKE base mode to the guest's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// The HPKE encapsulated key.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub enc: Vec<u8>,
    /// The AES-256-GCM ciphertext and tag.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub ciphertext: Vec<u8>,
}

/// Answer to `POST /v1/attest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestResponse {
    /// The attestation result: a COSE_Sign1 (ES256) over the claims (see [`crate::token`]).
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub token: Vec<u8>,
    /// The secret, sealed to `hpke_public_key`.
    pub secret: SealedSecret,
}

/// Every error body: `{code, message}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A reason code of DESIGN.md, or one of the transport codes of [`codes`].
    pub code: String,
    /// What was wrong, in words.
    pub message: String,
}

/// Error codes for refusals that are not about evidence (DESIGN.md's reason codes cover the rest).
pub mod codes {
    /// The body is larger than [`super::MAX_BODY`].
    pub const TOO_LARGE: &str = "TOO_LARGE";
    /// No such endpoint or admin object.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The method is not allowed on this path.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// An admin endpoint was called without an admin client certificate.
    pub const ADMIN_CERT_REQUIRED: &str = "ADMIN_CERT_REQUIRED";
    /// The service is at capacity.
    pub const OVERLOADED: &str = "OVERLOADED";
    /// The body was not read in time.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// The service failed internally (storage, randomness).
    pub const INTERNAL: &str = "INTERNAL";
    /// An admin request is not valid (bad name, bad policy).
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// A request body without `Content-Type: application/cbor` (HTTP 415; KBS: `application/json`).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// KBS: a resource request without a session cookie or Bearer token of an attested session (HTTP 401).
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The store (the PostgreSQL database) cannot be reached now: nothing was released; retry (HTTP 503).
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
}

impl ErrorBody {
    /// An error body for a reason code.
    pub fn reason(reason: Reason, message: impl Into<String>) -> Self {
        ErrorBody {
            code: reason.code().to_owned(),
            message: message.into(),
        }
    }
}

/// Body of `PUT /v1/admin/secrets/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// The secret value.
    #[serde(with = "cvm_keys::cbor::bytes")]
    pub value: Vec<u8>,
    /// The appraisal policy (TOML text of DESIGN.md).
    #[serde(deserialize_with = "text::deserialize")]
    pub policy: String,
}

/// Answer to `GET /v1/admin/secrets/{name}`: the policy and facts about the value, never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretInfo {
    /// The secret's name.
    pub name: String,
    /// The policy TOML.
    pub policy: String,
    /// The policy id: lowercase hex SHA-256 of the policy TOML.
    pub policy_id: String,
    /// Length of the value in bytes.
    pub value_len: u64,
    /// When it was stored, Unix seconds.
    pub updated_at: i64,
}

/// Answer to `GET /v1/admin/secrets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretList {
    /// Secret names, sorted.
    pub names: Vec<String>,
}

/// Answer to `GET /v1/admin/audit`: the audit log's JSON lines, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditResponse {
    /// One JSON object per line.
    pub records: Vec<String>,
}

/// Answer to `GET /v1/admin/audit/verify`: what a check of the audit log's hash chain found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerifyResponse {
    /// Whether the chain is whole: no record deleted, edited, reordered or inserted.
    pub ok: bool,
    /// Chained records checked.
    pub records: u64,
    /// Lines before the chain (written by a cvm-attest without it).
    pub unchained: u64,
    /// The newest record's number (compare with a value noted earlier: cutting the newest records off
    /// leaves a shorter chain that is whole).
    pub head_seq: u64,
    /// The newest record's tag, lowercase hex.
    pub head_tag: String,
    /// How many problems were found.
    pub problem_count: u64,
    /// The first problems, in words.
    pub problems: Vec<String>,
}

/// Whether `name` is a valid resource (secret) name: 1 to [`MAX_RESOURCE_LEN`] bytes of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` (so it is also a safe file name), or a KBS resource path
/// ([`valid_kbs_resource_path`]).
pub fn valid_resource_name(name: &str) -> bool {
    valid_name_component(name) || valid_kbs_resource_path(name)
}

/// Whether `name` is `<repository>/<type>/<tag>`: exactly three components separated by `/`, each a valid
/// single name (1 or more of `A-Z a-z 0-9 . _ -`, not starting with `.`), at most [`MAX_RESOURCE_LEN`] bytes
/// in all. The KBS protocol's `GET /kbs/v0/resource/<repository>/<type>/<tag>` releases the secret of that
/// name.
pub fn valid_kbs_resource_path(name: &str) -> bool {
    name.len() <= MAX_RESOURCE_LEN
        && name.split('/').count() == 3
        && name.split('/').all(valid_name_component)
}

fn valid_name_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RESOURCE_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Serde helpers for a list of CBOR byte strings.
pub mod byte_list {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::ser::{SerializeSeq, Serializer};
    use std::fmt;

    struct Bytes<'a>(&'a [u8]);
    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[derive(serde::Deserialize)]
    struct Owned(#[serde(with = "cvm_keys::cbor::bytes")] Vec<u8>);

    /// Serializes a list of byte strings.
    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&Bytes(item))?;
        }
        seq.end()
    }

    /// Deserializes a list of at most [`super::MAX_CERTS`] byte strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Vec<u8>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of byte strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Owned(item)) = seq.next_element()? {
                    if out.len() == super::MAX_CERTS {
                        return Err(de::Error::custom("too many certificates"));
                    }
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// Why a request body does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not in the strict CBOR form.
    #[error(transparent)]
    Strict(#[from] strict::StrictError),
    /// The body does not have the request's fields and types.
    #[error(transparent)]
    Cbor(#[from] cvm_keys::cbor::CborError),
}

/// Decodes a request body of type `T`: at most [`MAX_BODY`] bytes in the strict form of [`strict`], then
/// exactly the fields and types of `T`.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if body.len() > MAX_BODY {
        return Err(cvm_keys::cbor::CborError::TooLarge {
            len: body.len(),
            max: MAX_BODY,
        }
        .into());
    }
    strict::check_body(body)?;
    Ok(cvm_keys::cbor::from_slice_capped(body, MAX_BODY)?)
}

/// Encodes a body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, cvm_keys::cbor::CborError> {
    cvm_keys::cbor::to_vec(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attest_request_round_trips_with_byte_strings() {
        let req = AttestRequest {
            resource: "db".into(),
            nonce: vec![1; 40],
            tee: TeeKind::Tdx,
            evidence: vec![2; 10],
            certs: vec![vec![3; 5], vec![]],
            hpke_public_key: vec![4; 32],
        };
        let bytes = encode(&req).unwrap();
        // The nonce is a byte string (major type 2, length 40: 0x58 0x28), not an array.
        assert!(bytes.windows(2).any(|w| w == [0x58, 0x28]));
        assert_eq!(decode::<AttestRequest>(&bytes).unwrap(), req);
        for cut in 0..bytes.len() {
            assert!(decode::<AttestRequest>(&bytes[..cut]).is_err());
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<AttestRequest>(&trailing).is_err());
    }

    /// `{"resource": <item>}` with the given encoded item.
    fn challenge_with(item: &[u8]) -> Vec<u8> {
        let mut body = vec![0xa1, 0x68];
        body.extend_from_slice(b"resource");
        body.extend_from_slice(item);
        body
    }

    #[test]
    fn the_decoder_wants_exact_types() {
        let ok = challenge_with(&[0x62, b'd', b'b']);
        assert_eq!(decode::<ChallengeRequest>(&ok).unwrap().resource, "db");
        // The same letters as a byte string, a top-level array, an integer key, the self-describe tag.
        for bad in [
            challenge_with(&[0x42, b'd', b'b']),
            vec![0x81, 0x62, b'd', b'b'],
            vec![0xa1, 0x00, 0x62, b'd', b'b'],
            [&[0xd9, 0xd9, 0xf7][..], &ok].concat(),
        ] {
            assert!(decode::<ChallengeRequest>(&bad).is_err(), "{bad:02x?}");
        }
        // tee: only the texts "snp" and "tdx"; not an integer (a variant index), not bytes.
        let req = AttestRequest {
            resource: "db".into(),
            nonce: vec![1; 40],
            tee: TeeKind::Tdx,
            evidence: vec![2; 10],
            certs: vec![],
            hpke_public_key: vec![4; 32],
        };
        let good = encode(&req).unwrap();
        let at = good
            .windows(4)
            .position(|w| w == [0x63, b't', b'd', b'x'])
            .unwrap();
        for replacement in [
            &[0x01][..],
            &[0x43, b't', b'd', b'x'],
            &[0x63, b's', b'e', b'v'],
        ] {
            let bad = [&good[..at], replacement, &good[at + 4..]].concat();
            let e = decode::<AttestRequest>(&bad).unwrap_err();
            assert!(e.to_string().len() < 200, "{e}");
        }
        let long_tee = {
            let name = "x".repeat(60_000);
            let mut item = vec![0x79, 0xea, 0x60];
            item.extend_from_slice(name.as_bytes());
            [&good[..at], &item, &good[at + 4..]].concat()
        };
        let e = decode::<AttestRequest>(&long_tee).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("60000 bytes"), "{}", e.len());
    }

    #[test]
    fn resource_names_are_safe_file_names() {
        assert!(valid_resource_name("db-key_1.v2"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(!valid_resource_name(bad), "{bad}");
        }
    }

    #[test]
    fn kbs_resource_paths_have_exactly_three_valid_components() {
        for good in ["default/key/db", "a/b/c", "repo.1/type_x/tag-2"] {
            assert!(
                valid_resource_name(good) && valid_kbs_resource_path(good),
                "{good}"
            );
        }
        for bad in [
            "a/b",
            "a/b/c/d",
            "/b/c",
            "a//c",
            "a/b/",
            "a/../c",
            "a/./c",
            "a/.b/c",
            "a/b c/d",
            "a/b/c\\d",
            &format!("{}/b/c", "x".repeat(125)),
        ] {
            assert!(!valid_resource_name(bad), "{bad}");
        }
        assert!(valid_resource_name(&format!("{}/b/c", "x".repeat(124))));
    }
}
