//! `cvm-agent --protocol kbs`: the guest side of the KBS attestation protocol, as guest-components'
//! `kbs_protocol` client speaks it, so the agent fetches a resource from `cvm-attest serve` with `[kbs]` or
//! from Trustee's KBS:
//!
//! 1. `POST /kbs/v0/auth` `{"version": "0.4.0", "tee": …, "extra-params": {"supported-hash-algorithms": …}}`
//!    → the challenge and the `kbs-session-id` cookie;
//! 2. a fresh P-256 key (ring, used once), REPORT_DATA = the selected hash (SHA-384 when the challenge
//!    names none) of the canonical runtime data, evidence from the provider, wrapped as guest-components'
//!    attesters wrap it;
//! 3. `POST /kbs/v0/attest` with the cookie → the token;
//! 4. `GET /kbs/v0/resource/<repository>/<type>/<tag>` with the cookie → the JWE, opened with the key.
//!
//! Refusals carry the `ErrorInformation` of the server: our service's reason code leads `detail`; for
//! another KBS the code is its problem type.

use crate::provider::Provider;
use crate::unlock::{ServerOptions, collect};
use cvm_attest::client::{Client, ClientError, Evidence};
use cvm_attest::kbs::evidence::tdx_to_json;
use cvm_attest::kbs::jwk::EcPublicJwk;
use cvm_attest::kbs::payload::{
    Challenge, ErrorInformation, HashAlgorithm, SUPPORTED_HASH_ALGORITHMS, TokenResponse,
};
use cvm_attest::kbs::{self as k, canonical, jwe, snp_json};
use cvm_attest::protocol::TeeKind;
use hyper::{Method, StatusCode, header};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// A refusal from the answer's status and `ErrorInformation` body.
fn refusal(status: StatusCode, body: &[u8]) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorInformation>(body) {
        Ok(e) => {
            let code = e.code();
            let ours = !code.is_empty()
                && code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            let code = if ours {
                code.to_owned()
            } else {
                e.error_type
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            };
            (code, e.detail)
        }
        Err(_) => (
            format!("HTTP_{}", status.as_u16()),
            String::from_utf8_lossy(body.get(..200).unwrap_or(body)).into_owned(),
        ),
    };
    ClientError::Refused {
        status: status.as_u16(),
        code,
        message,
    }
}

fn io(e: impl std::fmt::Display) -> ClientError {
    ClientError::Io(e.to_string())
}

/// One exchange under the per-exchange time limit.
async fn timed<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| ClientError::Io(format!("{what} timed out after {limit:?}")))?
}

/// The JSON answer of a successful exchange, or the refusal.
fn answer<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    what: &str,
) -> Result<T, ClientError> {
    if !status.is_success() {
        return Err(refusal(status, body));
    }
    serde_json::from_slice(body).map_err(|e| ClientError::Io(format!("{what}: bad answer: {e}")))
}

/// The `kbs-session-id` value of a `Set-Cookie` header.
fn session_cookie(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == k::SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The guest side's wrapping of our provider's evidence.
fn wrap(ev: &Evidence) -> Result<Value, ClientError> {
    match ev.tee {
        TeeKind::Snp => {
            let certs = (!ev.certs.is_empty()).then_some(ev.certs.as_slice());
            snp_json::to_json(&ev.evidence, certs)
                .map_err(|e| ClientError::Evidence(format!("the SNP report: {e}")))
        }
        TeeKind::Tdx => Ok(tdx_to_json(&ev.evidence)),
    }
}

/// One attempt: auth, key, evidence, attest, resource.
pub async fn attempt(
    opts: &ServerOptions,
    client: &mut Client,
    provider: &Arc<dyn Provider>,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let tee = provider.tee().ok_or_else(|| {
        ClientError::Evidence(
            "the provider does not name its TEE: pass --tee snp or --tee tdx".into(),
        )
    })?;
    let tee_name = match tee {
        TeeKind::Snp => "snp",
        TeeKind::Tdx => "tdx",
    };
    let request = json!({
        "version": k::PROTOCOL_VERSION,
        "tee": tee_name,
        "extra-params": { SUPPORTED_HASH_ALGORITHMS: ["sha256", "sha384", "sha512"] },
    });
    let json_body = |v: &Value| Some((k::CONTENT_TYPE_JSON, v.to_string().into_bytes()));
    let (status, headers, body) = timed(
        opts.timeout,
        "auth",
        client.exchange(Method::POST, k::PATH_AUTH, json_body(&request), &[]),
    )
    .await?;
    let challenge: Challenge = answer(status, &body, "auth")?;
    let session = session_cookie(&headers)
        .ok_or_else(|| ClientError::Io("auth: the answer sets no kbs-session-id cookie".into()))?;
    let cookie = [(header::COOKIE, format!("{}={session}", k::SESSION_COOKIE))];
    let hash = HashAlgorithm::selected(&challenge.extra_params).ok_or_else(|| {
        ClientError::Io(format!(
            "auth: the challenge selects a hash algorithm the agent does not support: {}",
            challenge.extra_params
        ))
    })?;
    let rng = ring::rand::SystemRandom::new();
    let key = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(io)?;
    let public = key.compute_public_key().map_err(io)?;
    let jwk = EcPublicJwk::from_uncompressed(public.as_ref()).map_err(io)?;
    let report_data = canonical::report_data(hash, &challenge.nonce, &jwk, "");
    let evidence = collect(
        provider.clone(),
        report_data,
        opts.send_certs,
        opts.evidence_timeout,
    )
    .await?;
    if evidence.tee != tee {
        return Err(ClientError::Evidence(format!(
            "the provider named {tee_name} but gave {:?} evidence",
            evidence.tee
        )));
    }
    let attestation = json!({
        "init-data": null,
        "runtime-data": { "nonce": challenge.nonce, "tee-pubkey": jwk },
        "tee-evidence": { "primary_evidence": wrap(&evidence)?, "additional_evidence": "" },
    });
    let (status, _, body) = timed(
        opts.timeout,
        "attest",
        client.exchange(
            Method::POST,
            k::PATH_ATTEST,
            json_body(&attestation),
            &cookie,
        ),
    )
    .await?;
    let _token: TokenResponse = answer(status, &body, "attest")?;
    let path = format!("{}{}", k::PATH_RESOURCE, opts.resource);
    let (status, _, body) = timed(
        opts.timeout,
        "resource",
        client.exchange(Method::GET, &path, None, &cookie),
    )
    .await?;
    let sealed: jwe::Jwe = answer(status, &body, "resource")?;
    jwe::open(key, &sealed).map_err(|e| ClientError::Open(e.to_string()))
}

/// Whether `resource` is a KBS resource path (`<repository>/<type>/<tag>`).
pub fn valid_resource(resource: &str) -> bool {
    cvm_attest::protocol::valid_kbs_resource_path(resource)
}
