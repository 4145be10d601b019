//! The KBS protocol's endpoints (`[kbs] enabled = true`; [`crate::kbs`] has the payloads and crypto):
//!
//! 1. `POST /kbs/v0/auth`: a `Request` (version `0.4.0`, a served TEE, the client's hash algorithms) starts a
//!    session: the answer is a `Challenge` (a nonce of [`crate::nonce`], bound to the session, and the
//!    selected hash algorithm) with the `kbs-session-id` cookie.
//! 2. `POST /kbs/v0/attest` (with the cookie): the nonce is consumed (single use, as `/v1`), the evidence is
//!    unwrapped and verified by the same verifiers as `/v1/attest` under a verification-only policy (every
//!    signature, chain, collateral and TCB-level check; debug guests, any TCB status but `Revoked` and any
//!    measurement pass here, because no resource is named yet), then REPORT_DATA must be the selected hash
//!    of the canonical runtime data (`BINDING_MISMATCH`). The session keeps the evidence and the key; the
//!    answer is `{"token": JWT}`.
//! 3. `GET /kbs/v0/resource/<repository>/<type>/<tag>` (cookie, or `Authorization: Bearer <token>` of a live
//!    session): the secret of that name is released only after the session's evidence is appraised again
//!    under the secret's own policy (the same checks and codes as `/v1/attest`), as a JWE to the attested key.
//! 4. `GET /kbs/v0/token-key`: the token key as a JWK Set.
//!
//! Errors are the protocol's `ErrorInformation` with our reason code leading `detail`. Every attestation
//! and every resource request is audited (`kbs_attest`, `kbs_resource`).

use super::refusal::{Refusal, build, malformed, method_not_allowed, no_such_endpoint};
use super::{
    Peer, Reply, Service, attestation_record, check_measurement_constrained, fresh, is_media, now,
};
use crate::excerpt::quote;
use crate::kbs::evidence::{self, KbsTee, Unwrapped};
use crate::kbs::payload::{self, Attestation, Challenge, ErrorInformation, HashAlgorithm, Request};
use crate::kbs::session::{Attested, SessionError, SessionId, Sessions};
use crate::kbs::{self as k, canonical, jwe, jwk, jwt};
use crate::nonce::NonceError;
use crate::policy::{Policy, TcbStatus};
use crate::protocol::codes;
use crate::reason::{Reason, Rejection};
use crate::server::appraise::Appraisal;
use crate::server::config::{Config, Mode};
use crate::store::{AuditRecord, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper::{Method, Request as HttpRequest, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;

/// The KBS protocol's share of the service.
#[derive(Debug)]
pub(super) struct KbsState {
    sessions: Sessions,
    allow_sample: bool,
    nonce_ttl: i64,
}

impl KbsState {
    /// The state for `config`, `None` when `[kbs]` is not enabled.
    pub(super) fn new(config: &Config) -> Result<Option<Self>, super::SetupError> {
        if !config.kbs.enabled {
            return Ok(None);
        }
        let sessions = Sessions::new(config.limits.nonce_ttl_secs, config.kbs.max_sessions)
            .map_err(|_| super::SetupError::Nonce(NonceError::Random))?;
        Ok(Some(KbsState {
            sessions,
            allow_sample: config.kbs.allow_sample && config.mode == Mode::Simulated,
            nonce_ttl: config.limits.nonce_ttl_secs,
        }))
    }
}

/// Which step a refusal comes from (it decides the problem type, and 403 becomes 401 before a resource is
/// named, as Trustee's KBS answers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Auth,
    Attest,
    Resource,
}

/// A refusal as the KBS protocol answers it.
fn reply_error(step: Step, r: &Refusal) -> Reply {
    let mut status = r.status();
    if step != Step::Resource && status == StatusCode::FORBIDDEN {
        status = StatusCode::UNAUTHORIZED;
    }
    let problem = match status.as_u16() {
        400 | 413 | 415 => "SerdeError",
        403 => "PolicyDeny",
        404 => "InvalidRequestPath",
        401 if step == Step::Resource => "TokenVerifierError",
        401 => "AttestationError",
        405 => "InvalidRequestPath",
        _ => "InternalError",
    };
    let body = ErrorInformation {
        error_type: format!("{}{problem}", k::ERROR_TYPE_PREFIX),
        detail: format!("{}: {}", r.code(), r.message()),
    };
    json_reply(status, &body, None)
}

fn json_reply<T: serde::Serialize>(status: StatusCode, body: &T, cookie: Option<String>) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut reply = build(status, k::CONTENT_TYPE_JSON, bytes);
    if let Some(c) = cookie.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        reply.headers_mut().insert(header::SET_COOKIE, c);
    }
    reply
}

/// The `Set-Cookie` value for a session.
fn session_cookie(id: &SessionId, ttl: i64) -> String {
    format!(
        "{}={}; Path=/kbs/v0; Max-Age={ttl}; Secure; HttpOnly; SameSite=Strict",
        k::SESSION_COOKIE,
        id.to_cookie()
    )
}

/// The session id of the request's `kbs-session-id` cookie, if it has one.
fn session_from_cookie<B>(req: &HttpRequest<B>) -> Option<Result<SessionId, Refusal>> {
    let value = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == k::SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())?;
    Some(SessionId::from_cookie(&value).ok_or_else(|| {
        Refusal::reason(&Rejection::new(
            Reason::NonceInvalid,
            "the kbs-session-id cookie is not one this service issued",
        ))
    }))
}

fn session_refusal(e: SessionError) -> Refusal {
    match e {
        SessionError::Rejected(r) => Refusal::reason(&r),
        SessionError::Full(_) => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::OVERLOADED,
            e.to_string(),
        ),
        SessionError::Random => Refusal::internal(e),
    }
}

fn unauthenticated(message: &str) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED, message)
}

/// The nonce's MAC context: the session it was issued for.
fn nonce_context(id: &SessionId) -> String {
    format!("kbs-session:{}", id.to_cookie())
}

/// The policy of the attest step: every check of the evidence itself, no requirement that only a resource's
/// policy can state (debug, TCB status other than `Revoked`, measurements). Its id names it in tokens.
fn verification_policy() -> Policy {
    Policy {
        allow_debug: true,
        accept_tcb_status: [
            "UpToDate",
            "SWHardeningNeeded",
            "ConfigurationNeeded",
            "ConfigurationAndSWHardeningNeeded",
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
        ]
        .into_iter()
        .filter_map(TcbStatus::parse)
        .collect(),
        allow_any_measurement: true,
        ..Policy::default()
    }
}

/// The id tokens give the verification policy.
const VERIFICATION_POLICY_ID: &str = "cvm-attest/kbs-verification";

/// Evidence checked by a verifier, or accepted as `sample`.
enum Checked {
    Verified(Appraisal),
    Sample { report_data: Vec<u8> },
}

impl Checked {
    fn report_data(&self) -> Vec<u8> {
        match self {
            Checked::Verified(a) => a.report_data().unwrap_or_default(),
            Checked::Sample { report_data } => {
                let mut rd = report_data.clone();
                rd.resize(canonical::REPORT_DATA_LEN, 0);
                rd
            }
        }
    }

    fn measurement(&self) -> Option<Vec<u8>> {
        match self {
            Checked::Verified(a) => a.measurement(),
            Checked::Sample { .. } => None,
        }
    }

    fn simulated(&self) -> bool {
        match self {
            Checked::Verified(a) => a.verdict.simulated,
            Checked::Sample { .. } => true,
        }
    }

    fn outcome(&self) -> Result<(), Rejection> {
        match self {
            Checked::Verified(a) => a.verdict.outcome.clone(),
            Checked::Sample { .. } => Ok(()),
        }
    }

    fn claims(&self) -> Value {
        match self {
            Checked::Verified(a) => a.verdict.claims.clone(),
            Checked::Sample { report_data } => json!({
                "svn": "1",
                "report_data": hex::encode(report_data),
            }),
        }
    }

    fn tcb_status(&self) -> String {
        match self {
            Checked::Verified(a) => a.tcb_status(),
            Checked::Sample { .. } => String::new(),
        }
    }

    fn revocation_checked(&self) -> bool {
        match self {
            Checked::Verified(a) => a.revocation_checked(),
            Checked::Sample { .. } => false,
        }
    }
}

impl Service {
    fn kbs_state(&self) -> Result<&KbsState, Refusal> {
        self.kbs.as_ref().ok_or_else(no_such_endpoint)
    }

    /// Route a `/kbs/v0/*` request.
    pub(super) async fn kbs_route(
        &self,
        method: Method,
        path: &str,
        req: HttpRequest<Incoming>,
        peer: Peer,
    ) -> (&'static str, Reply) {
        match (method, path) {
            (Method::POST, k::PATH_AUTH) => ("kbs_auth", self.kbs_auth(req).await),
            (Method::POST, k::PATH_ATTEST) => ("kbs_attest", self.kbs_attest(req, peer).await),
            (Method::GET, k::PATH_TOKEN_KEY) => ("kbs_token_key", self.kbs_token_key()),
            (Method::GET, p) if p.starts_with(k::PATH_RESOURCE) => {
                let name = p.trim_start_matches(k::PATH_RESOURCE).to_owned();
                ("kbs_resource", self.kbs_resource(&name, req, peer).await)
            }
            (_, k::PATH_AUTH | k::PATH_ATTEST | k::PATH_TOKEN_KEY) => {
                ("kbs_other", reply_error(Step::Auth, &method_not_allowed()))
            }
            _ => ("kbs_other", reply_error(Step::Auth, &no_such_endpoint())),
        }
    }

    /// A JSON request body of type `T` (`Content-Type: application/json`, at most [`k::MAX_BODY`] bytes).
    async fn kbs_decode<T: serde::de::DeserializeOwned>(
        &self,
        req: HttpRequest<Incoming>,
    ) -> Result<T, Refusal> {
        if !is_media(
            req.headers().get(header::CONTENT_TYPE),
            k::CONTENT_TYPE_JSON,
        ) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "KBS request bodies are JSON: send them with Content-Type: application/json",
            ));
        }
        let body = self.read_body(req, k::MAX_BODY).await?;
        payload::decode(&body).map_err(|e| malformed(format!("bad JSON body: {e}")))
    }

    async fn kbs_auth(&self, req: HttpRequest<Incoming>) -> Reply {
        match self.kbs_auth_inner(req).await {
            Ok((challenge, cookie)) => json_reply(StatusCode::OK, &challenge, Some(cookie)),
            Err(r) => reply_error(Step::Auth, &r),
        }
    }

    async fn kbs_auth_inner(
        &self,
        req: HttpRequest<Incoming>,
    ) -> Result<(Challenge, String), Refusal> {
        let state = self.kbs_state()?;
        let r: Request = self.kbs_decode(req).await?;
        if r.version != k::PROTOCOL_VERSION {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                Reason::UnsupportedVersion.code(),
                format!(
                    "KBS Client Protocol Version Mismatch: expect {} while the request is {}",
                    k::PROTOCOL_VERSION,
                    quote(&r.version)
                ),
            ));
        }
        let tee = KbsTee::parse(&r.tee).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                Reason::UnsupportedTeeType.code(),
                format!(
                    "tee {} is not served: this service verifies \"snp\" and \"tdx\" evidence",
                    quote(&r.tee)
                ),
            )
        })?;
        if tee == KbsTee::Sample && !state.allow_sample {
            return Err(sample_refused());
        }
        let hash = HashAlgorithm::select(&r.extra_params).ok_or_else(|| {
            malformed("extra-params lists no hash algorithm this service supports (sha256, sha384, sha512)")
        })?;
        let at = now();
        let id = state
            .sessions
            .create(tee, hash, at)
            .map_err(session_refusal)?;
        let (nonce, _) = self
            .nonces
            .issue(&nonce_context(&id), at)
            .map_err(Refusal::internal)?;
        let challenge = Challenge {
            nonce: STANDARD.encode(nonce),
            extra_params: json!({ payload::SELECTED_HASH_ALGORITHM: hash.as_str() }),
        };
        Ok((challenge, session_cookie(&id, state.nonce_ttl)))
    }

    async fn kbs_attest(&self, req: HttpRequest<Incoming>, peer: Peer) -> Reply {
        let mut record = attestation_record("kbs_attest", peer);
        let result = self.kbs_attest_inner(req, &mut record).await;
        let (reply, outcome) = match result {
            Ok((token, cookie)) => {
                record.verdict = "accept".into();
                (
                    json_reply(
                        StatusCode::OK,
                        &payload::TokenResponse { token },
                        Some(cookie),
                    ),
                    "accept",
                )
            }
            Err(r) => {
                record.reason = Some(r.code().to_owned());
                let code = Reason::from_code(r.code()).map_or("other", Reason::code);
                (reply_error(Step::Attest, &r), code)
            }
        };
        self.kbs_finish(record, outcome, reply, Step::Attest).await
    }

    /// Count the verdict, write the audit record (no answer leaves without it) and answer.
    async fn kbs_finish(
        &self,
        record: AuditRecord,
        outcome: &'static str,
        reply: Reply,
        step: Step,
    ) -> Reply {
        let tee = match record.tee.as_deref() {
            Some("snp") => "snp",
            Some("tdx") => "tdx",
            Some("sample") => "sample",
            _ => "unknown",
        };
        self.metrics.verdict(tee, outcome);
        if let Err(e) = self.backend.append_audit(&record).await {
            return reply_error(
                step,
                &Refusal::internal(format!("audit log write failed: {e}")),
            );
        }
        reply
    }

    async fn kbs_attest_inner(
        &self,
        req: HttpRequest<Incoming>,
        record: &mut AuditRecord,
    ) -> Result<(String, String), Refusal> {
        let state = self.kbs_state()?;
        let id = session_from_cookie(&req).ok_or_else(|| {
            unauthenticated(
                "send the kbs-session-id cookie of POST /kbs/v0/auth with the attestation",
            )
        })??;
        let at = now();
        let session = state.sessions.get(&id, at).map_err(session_refusal)?;
        record.tee = Some(session.tee.as_str().to_owned());
        let a: Attestation = self.kbs_decode(req).await?;
        a.runtime_data
            .tee_pubkey
            .check_on_curve()
            .map_err(|e| malformed(e.to_string()))?;
        let nonce = STANDARD
            .decode(&a.runtime_data.nonce)
            .map_err(|_| Refusal::reason(&invalid_nonce()))?;
        let nonce = self
            .nonces
            .check(&nonce, &nonce_context(&id), at)
            .map_err(|rej| Refusal::reason(&rej))?;
        record.nonce = Some(hex::encode(nonce.id));
        // Spent in the store, so a nonce is single use across every replica.
        let spend = self
            .backend
            .spend_nonce(nonce.id, nonce.expires_at, at)
            .await
            .map_err(|e| Refusal::store(&e.into()))?;
        fresh(spend)?;
        let unwrapped =
            evidence::unwrap(session.tee, &a.tee_evidence.primary_evidence).map_err(malformed)?;
        let checked = self.kbs_check(state, &unwrapped, &verification_policy(), at)?;
        record.simulated = checked.simulated();
        record.measurement = checked.measurement().map(hex::encode);
        checked.outcome().map_err(|r| Refusal::reason(&r))?;
        let expected = canonical::report_data(
            session.hash,
            &a.runtime_data.nonce,
            &a.runtime_data.tee_pubkey,
            &a.tee_evidence.additional_evidence,
        );
        if checked.report_data() != expected {
            return Err(Refusal::reason(&Rejection::new(
                Reason::BindingMismatch,
                format!(
                    "REPORT_DATA is not the {} of the canonical JSON of the runtime data (nonce, tee-pubkey, \
                     additional-evidence), zero-padded to 64 bytes",
                    session.hash.as_str()
                ),
            )));
        }
        let token_id = hex::encode(random_bytes()?);
        let claims = token_claims(&TokenFacts {
            tee: session.tee,
            checked: &checked,
            attestation: &a,
            unwrapped: &unwrapped,
            token_id: &token_id,
            iat: at,
            exp: at.saturating_add(self.limits.token_ttl_secs),
        });
        let token = jwt::sign(&self.signer, &claims).map_err(Refusal::internal)?;
        state
            .sessions
            .attest(
                &id,
                Attested {
                    evidence: unwrapped,
                    tee_pubkey: a.runtime_data.tee_pubkey,
                    token_id,
                    simulated: checked.simulated(),
                },
                at,
            )
            .map_err(session_refusal)?;
        Ok((token, session_cookie(&id, (id.expires_at() - at).max(0))))
    }

    /// Verify unwrapped evidence under `policy` at `at` (`sample`: only where allowed).
    fn kbs_check(
        &self,
        state: &KbsState,
        ev: &Unwrapped,
        policy: &Policy,
        at: i64,
    ) -> Result<Checked, Refusal> {
        match ev.tee.verifier() {
            Some(tee) => Ok(Checked::Verified(self.appraiser.appraise(
                tee,
                &ev.evidence,
                &ev.certs,
                policy,
                at,
            ))),
            None if state.allow_sample => {
                eprintln!(
                    "cvm-attest: WARNING: KBS sample evidence accepted (unsigned test evidence; \
                     [kbs] allow_sample = true in simulated mode)"
                );
                Ok(Checked::Sample {
                    report_data: ev.evidence.clone(),
                })
            }
            None => Err(sample_refused()),
        }
    }

    async fn kbs_resource(&self, name: &str, req: HttpRequest<Incoming>, peer: Peer) -> Reply {
        let mut record = attestation_record("kbs_resource", peer);
        record.resource = crate::excerpt::truncate(name.to_owned());
        let (reply, outcome) = match self.kbs_resource_inner(name, &req, &mut record).await {
            Ok(jwe) => {
                record.verdict = "release".into();
                (json_reply(StatusCode::OK, &jwe, None), "release")
            }
            Err(r) => {
                record.reason = Some(r.code().to_owned());
                let code = Reason::from_code(r.code()).map_or("other", Reason::code);
                (reply_error(Step::Resource, &r), code)
            }
        };
        self.kbs_finish(record, outcome, reply, Step::Resource)
            .await
    }

    /// The session a resource request authenticates with: a Bearer token of this service (unexpired, its
    /// session live), else the session cookie (attested).
    fn kbs_authenticated<B>(
        &self,
        state: &KbsState,
        req: &HttpRequest<B>,
        at: i64,
    ) -> Result<Arc<Attested>, Refusal> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            let claims = jwt::verify(token.trim(), self.signer.public_key())
                .map_err(|e| unauthenticated(&e.to_string()))?;
            let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
            if at > exp {
                return Err(Refusal::reason(&Rejection::new(
                    Reason::NonceExpired,
                    format!("the token expired at {exp} (now {at}); attest again"),
                )));
            }
            let jti = claims
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return state.sessions.by_token(jti, at).map_err(session_refusal);
        }
        let id = session_from_cookie(req).ok_or_else(|| {
            unauthenticated(
                "send the kbs-session-id cookie of an attested session or Authorization: Bearer <token> \
                 (POST /kbs/v0/auth, then POST /kbs/v0/attest)",
            )
        })??;
        let session = state.sessions.get(&id, at).map_err(session_refusal)?;
        session.attested.ok_or_else(|| {
            unauthenticated("this KBS session is not attested yet: POST /kbs/v0/attest first")
        })
    }

    async fn kbs_resource_inner<B>(
        &self,
        name: &str,
        req: &HttpRequest<B>,
        record: &mut AuditRecord,
    ) -> Result<jwe::Jwe, Refusal> {
        let state = self.kbs_state()?;
        let at = now();
        let session = self.kbs_authenticated(state, req, at)?;
        record.tee = Some(session.evidence.tee.as_str().to_owned());
        record.simulated = session.simulated;
        if !crate::protocol::valid_kbs_resource_path(name) {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                Reason::UnknownResource.code(),
                format!(
                    "{} is not a resource path: use <repository>/<type>/<tag>, each 1-128 of A-Z a-z 0-9 . _ - \
                     (not starting with '.')",
                    quote(name)
                ),
            ));
        }
        let secret = self.store.get(name).await.map_err(|e| match e {
            StoreError::NotFound(_) => Refusal::reason(&Rejection::new(
                Reason::UnknownResource,
                format!("there is no resource {}", quote(name)),
            )),
            other => Refusal::store(&other),
        })?;
        // As in /v1: REPORT_DATA is checked against the binding (done at attest), not the policy.
        let mut policy = secret.policy.clone();
        policy.snp.report_data = None;
        policy.tdx.report_data = None;
        let checked = self.kbs_check(state, &session.evidence, &policy, at)?;
        record.measurement = checked.measurement().map(hex::encode);
        checked.outcome().map_err(|r| Refusal::reason(&r))?;
        match session.evidence.tee.verifier() {
            Some(tee) => check_measurement_constrained(&secret.policy, tee)?,
            None if secret.policy.allow_any_measurement => {}
            None => {
                return Err(Refusal::reason(&Rejection::new(
                    Reason::PolicyMeasurement,
                    "sample evidence has no launch measurement: only a secret whose policy says \
                     allow_any_measurement = true is released to it",
                )));
            }
        }
        jwe::seal(&session.tee_pubkey, &secret.value)
            .map_err(|e| malformed(format!("cannot encrypt to tee-pubkey: {e}")))
    }

    fn kbs_token_key(&self) -> Reply {
        match jwk::token_key_set(self.signer.public_key()) {
            Ok(set) => json_reply(StatusCode::OK, &set, None),
            Err(e) => reply_error(Step::Auth, &Refusal::internal(e)),
        }
    }
}

fn sample_refused() -> Refusal {
    Refusal::reason(&Rejection::new(
        Reason::SimulatedNotAllowed,
        "sample evidence is unsigned: only a service in simulated mode with [kbs] allow_sample = true accepts it",
    ))
}

fn invalid_nonce() -> Rejection {
    Rejection::new(
        Reason::NonceInvalid,
        "runtime-data.nonce is not the nonce of this session's challenge",
    )
}

fn random_bytes() -> Result<[u8; 16], Refusal> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Refusal::internal("no randomness for a token id"))?;
    Ok(b)
}

/// What a token says.
struct TokenFacts<'a> {
    tee: KbsTee,
    checked: &'a Checked,
    attestation: &'a Attestation,
    unwrapped: &'a Unwrapped,
    token_id: &'a str,
    iat: i64,
    exp: i64,
}

/// The token's claims: the registered claims, our verdict under `cvm`, the guest's key under `tee-pubkey`
/// (where Trustee's KBS looks for it) and, in the shape of Trustee's EAR token (`submods.cpu0`), the status,
/// the policy id and the annotated evidence (the verifier's claims under the TEE's name, REPORT_DATA, the
/// runtime data, and digests of what was kept but not checked: init data, the event log, additional
/// evidence).
fn token_claims(f: &TokenFacts<'_>) -> Value {
    let digest = |bytes: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA384, bytes));
    let init_data = f.attestation.init_data.as_ref().map(
        |d| json!({"format": d.format, "sha384": digest(d.body.as_bytes()), "checked": false}),
    );
    let event_log = f
        .unwrapped
        .event_log
        .map(|(len, h)| json!({"length": len, "sha384": hex::encode(h), "checked": false}));
    let additional = &f.attestation.tee_evidence.additional_evidence;
    let additional = (!additional.is_empty())
        .then(|| json!({"sha384": digest(additional.as_bytes()), "checked": false}));
    let measurement = f.checked.measurement().map(hex::encode);
    let mut annotated = json!({
        "report_data": hex::encode(f.checked.report_data()),
        "runtime_data_claims": {
            "nonce": f.attestation.runtime_data.nonce,
            "tee-pubkey": f.attestation.runtime_data.tee_pubkey,
        },
        "init_data": init_data,
        "cc_eventlog": event_log,
        "additional_evidence": additional,
    });
    annotated[f.tee.as_str()] = f.checked.claims();
    json!({
        "iss": "cvm-attest",
        "iat": f.iat,
        "exp": f.exp,
        "jti": f.token_id,
        "ear.verifier-id": {
            "developer": "cvm",
            "build": concat!("cvm-attest ", env!("CARGO_PKG_VERSION")),
        },
        "submods": {
            "cpu0": {
                "ear.status": "affirming",
                "ear.appraisal-policy-id": VERIFICATION_POLICY_ID,
                "ear.veraison.annotated-evidence": annotated,
            }
        },
        "tee-pubkey": f.attestation.runtime_data.tee_pubkey,
        "cvm": {
            "tee": f.tee.as_str(),
            "measurement": measurement,
            "tcb_status": f.checked.tcb_status(),
            "policy_id": VERIFICATION_POLICY_ID,
            "simulated": f.checked.simulated(),
            "revocation_checked": f.checked.revocation_checked(),
        },
    })
}
