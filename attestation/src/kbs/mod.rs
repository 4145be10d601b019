//! The KBS attestation protocol ("RCAR": Request, Challenge, Attestation, Response) as Trustee's Key Broker
//! Service defines it (`kbs/docs/kbs_attestation_protocol.md`) and Confidential Containers guests speak it
//! (guest-components' `attestation-agent/kbs_protocol`, protocol version 0.4.0). Our own implementation:
//!
//! - [`payload`]: the JSON bodies (`Request`, `Challenge`, `Attestation`, the token answer, `ErrorInformation`)
//!   and the hash algorithm the challenge selects;
//! - [`canonical`]: REPORT_DATA as the guest computes it (the hash of the RFC 8785 canonical JSON of the
//!   runtime data);
//! - [`jwk`]: the guest's `tee-pubkey` (EC P-256 for `ECDH-ES+A256KW`) and the token key's JWK;
//! - [`jwe`]: a resource as a JWE (flattened JSON, `ECDH-ES+A256KW` + `A256GCM`), sealed and opened;
//! - [`jwt`]: the attestation token (ES256 JWT) and its claims;
//! - [`evidence`] and [`snp_json`]: `tee-evidence` as guest-components' attesters wrap it (`snp`, `tdx`,
//!   `sample`), unwrapped to the bytes our verifiers check, and wrapped again for our own agent;
//! - [`session`]: the service's bounded, single-use sessions (`kbs-session-id` cookie).
//!
//! The server's routes are in `server::service::kbs`, the guest side in `cvm_agent::kbs`.

pub mod canonical;
pub mod evidence;
pub mod jwe;
pub mod jwk;
pub mod jwt;
pub mod payload;
pub mod session;
pub mod snp_json;

/// The protocol version the service speaks and the agent sends (guest-components 0.14 and later, Trustee's
/// KBS: exactly `0.4.0`).
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// `POST /kbs/v0/auth`: `Request` → `Challenge` and the session cookie.
pub const PATH_AUTH: &str = "/kbs/v0/auth";
/// `POST /kbs/v0/attest`: `Attestation` → `{"token": JWT}`.
pub const PATH_ATTEST: &str = "/kbs/v0/attest";
/// `GET /kbs/v0/resource/<repository>/<type>/<tag>`: the secret `<repository>/<type>/<tag>` as a JWE.
pub const PATH_RESOURCE: &str = "/kbs/v0/resource/";
/// `GET /kbs/v0/token-key`: the JWK Set (RFC 7517 §5) with the key that verifies the service's tokens.
pub const PATH_TOKEN_KEY: &str = "/kbs/v0/token-key";
/// Prefix of every KBS path.
pub const PATH_PREFIX: &str = "/kbs/v0/";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// The content type of every KBS body.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Largest KBS request body the service reads (512 KiB: a TDX quote with an event log fits; larger is
/// refused with 413 before parsing).
pub const MAX_BODY: usize = 512 * 1024;
/// The namespace of the `type` of error bodies (an identifier, not a link; as Trustee's KBS spells it).
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";
