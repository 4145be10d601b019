//! The request handler: routing, bodies (`Content-Type: application/cbor`, size and time limits, the strict
//! decoder), the attestation flow and, in [`admin`], the admin endpoints. One [`Service`] is shared by every
//! connection.
//!
//! What a caller learns is limited to what it may know: error messages quote at most a short prefix of any
//! input ([`crate::excerpt`]), internal failures (storage, randomness) answer a generic message and are
//! logged instead, and before a caller has attested, an unknown resource and a known one look the same (the
//! challenge answers both alike; attest appraises the evidence first and only then says `UNKNOWN_RESOURCE`).

mod admin;
mod kbs;
mod refusal;

use super::appraise::{Appraisal, Appraiser};
use super::config::{Config, Limits, Mode};
use super::metrics::Metrics;
use crate::excerpt::quote;
use crate::nonce::{NonceError, NonceService};
use crate::policy::Policy;
use crate::protocol::{self as p, codes};
use crate::reason::{Reason, Rejection};
use crate::store::backend::Spend;
use crate::store::chain::ChainKey;
use crate::store::{
    AuditRecord, Backend, BackendError, FileBackend, OpenOptions, PgBackend, SecretStore,
    StoreError,
};
use crate::token::{TokenClaims, TokenSigner};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode, header};
use refusal::{Refusal, build, malformed, reply_cbor, reply_refusal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use refusal::{Reply, status_for};

/// The token signing key's file in the state directory.
pub const TOKEN_KEY_FILE: &str = "token-key.p8";

/// Oversized bodies up to this size are read and dropped before the 413; larger ones are not read.
const DRAIN_MAX: usize = 1 << 20;

/// Who is calling, as the connection established it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the client presented a certificate from the admin CA (mutual TLS).
    pub admin: bool,
}

/// Errors setting up the service.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The KEK could not be read.
    #[error("store.kek_file: {0}")]
    Kek(#[from] cvm_keys::keyfile::KeyFileError),
    /// The state directory could not be created.
    #[error("store.dir = {path}: {source}")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The secret store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The backend could not be opened (the state directory, or the database).
    #[error("store: {0}")]
    Backend(#[from] BackendError),
    /// The token key could not be loaded or created.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// The nonce service could not start.
    #[error(transparent)]
    Nonce(#[from] NonceError),
    /// The verifiers could not be set up.
    #[error(transparent)]
    Appraise(#[from] super::appraise::AppraiseSetupError),
}

/// The shared state of the service.
#[derive(Debug)]
pub struct Service {
    store: SecretStore,
    backend: Arc<dyn Backend>,
    audit_key: ChainKey,
    backend_notes: Vec<String>,
    nonces: NonceService,
    signer: TokenSigner,
    appraiser: Appraiser,
    metrics: Metrics,
    limits: Limits,
    /// The KBS protocol's state, when `[kbs] enabled = true`.
    kbs: Option<kbs::KbsState>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Whether a request's `Content-Type` is `media` (parameters aside, case-insensitive).
fn is_media(value: Option<&header::HeaderValue>, media: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(media))
}

/// Whether a request's `Content-Type` is `application/cbor`.
fn is_cbor(value: Option<&header::HeaderValue>) -> bool {
    is_media(value, p::CONTENT_TYPE_CBOR)
}

impl Service {
    /// Open the store (the state directory, or the database: its schema applied), the shared keys (nonce
    /// MAC key, token key), and set up the verifiers.
    pub async fn new(config: &Config) -> Result<Self, SetupError> {
        let kek = cvm_keys::Key256::read_file(&config.store.kek_file)?;
        let audit_key = ChainKey::from_kek(&kek);
        let mut backend_notes = Vec::new();
        let backend: Arc<dyn Backend> = match (&config.store.dir, &config.store.postgres) {
            (_, Some(pg)) => {
                let (backend, applied) = PgBackend::connect(pg, audit_key.clone()).await?;
                backend_notes.push(format!(
                    "store: {} (schema version {}{})",
                    pg.location(),
                    crate::store::postgres::schema::VERSION,
                    if applied.is_empty() {
                        String::new()
                    } else {
                        format!("; applied now: {applied:?}")
                    }
                ));
                Arc::new(backend)
            }
            (Some(dir), None) => {
                crate::store::atomic::create_private_dir(dir).map_err(|source| {
                    SetupError::StateDir {
                        path: dir.clone(),
                        source,
                    }
                })?;
                Arc::new(FileBackend::open(dir, audit_key.clone())?)
            }
            (None, None) => {
                return Err(SetupError::Store(StoreError::Internal(
                    "[store] names neither dir nor [store.postgres]".into(),
                )));
            }
        };
        let store = SecretStore::open_with(
            backend.clone(),
            &kek,
            OpenOptions {
                adopt_existing: config.store.allow_adopt_existing,
            },
        )
        .await?;
        // Keys every replica of a shared store must hold alike; the file store makes its own.
        let nonce_key = crate::nonce::generate_key()?;
        let nonce_key = store
            .shared_key("nonce MAC key", &nonce_key)
            .await?
            .unwrap_or(nonce_key);
        let nonces = NonceService::with_key(&nonce_key, config.limits.nonce_ttl_secs)?;
        let signer = match store
            .shared_key("token signing key", &TokenSigner::generate_pkcs8()?)
            .await?
        {
            Some(pkcs8) => TokenSigner::from_pkcs8(&pkcs8)?,
            None => match &config.store.dir {
                Some(dir) => TokenSigner::load_or_create(&dir.join(TOKEN_KEY_FILE))?,
                None => {
                    return Err(SetupError::Store(StoreError::Internal(
                        "the store keeps no token key".into(),
                    )));
                }
            },
        };
        let appraiser = Appraiser::new(config)?;
        let kbs = kbs::KbsState::new(config)?;
        Ok(Service {
            store,
            backend,
            audit_key,
            backend_notes,
            nonces,
            signer,
            appraiser,
            metrics: Metrics::default(),
            limits: config.limits.clone(),
            kbs,
        })
    }

    /// The service's mode.
    pub fn mode(&self) -> Mode {
        self.appraiser.mode()
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What opening the store found worth telling the operator, and the store's generation.
    pub fn store_warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.backend_notes.clone();
        out.extend(
            self.store
                .warnings()
                .iter()
                .map(|w| format!("WARNING: {w}")),
        );
        out.push(format!(
            "secret store generation {} (it only grows: a lower value later means the store was rolled back)",
            self.store.generation()
        ));
        out
    }

    /// Handle one request.
    pub async fn handle(&self, req: Request<Incoming>, peer: Peer) -> Reply {
        let start = Instant::now();
        let (endpoint, reply) = self.route(req, peer).await;
        self.metrics
            .request(endpoint, reply.status().as_u16(), start.elapsed());
        reply
    }

    async fn route(&self, req: Request<Incoming>, peer: Peer) -> (&'static str, Reply) {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::POST, p::PATH_CHALLENGE) => ("challenge", self.challenge(req).await),
            (Method::POST, p::PATH_ATTEST) => ("attest", self.attest(req, peer).await),
            (Method::GET, p::PATH_TOKEN_KEY) => ("token_key", self.token_key()),
            (Method::GET, p::PATH_HEALTHZ) => ("healthz", self.healthz().await),
            (Method::GET, p::PATH_METRICS) => ("metrics", self.metrics_text()),
            (
                _,
                p::PATH_CHALLENGE
                | p::PATH_ATTEST
                | p::PATH_TOKEN_KEY
                | p::PATH_HEALTHZ
                | p::PATH_METRICS,
            ) => ("other", reply_refusal(refusal::method_not_allowed())),
            (method, path) if self.kbs.is_some() && path.starts_with(crate::kbs::PATH_PREFIX) => {
                self.kbs_route(method, path, req, peer).await
            }
            (method, path)
                if path == p::PATH_ADMIN_AUDIT
                    || path == p::PATH_ADMIN_AUDIT_VERIFY
                    || path.starts_with(p::PATH_ADMIN_SECRETS) =>
            {
                if !peer.admin {
                    self.audit_refused_admin(
                        peer.addr,
                        admin::secret_name(path),
                        codes::ADMIN_CERT_REQUIRED,
                    )
                    .await;
                    return (
                        "admin",
                        reply_refusal(Refusal::new(
                            StatusCode::FORBIDDEN,
                            codes::ADMIN_CERT_REQUIRED,
                            "admin endpoints need a client certificate from the admin CA",
                        )),
                    );
                }
                ("admin", self.admin(method, path, req, peer).await)
            }
            _ => ("other", reply_refusal(refusal::no_such_endpoint())),
        }
    }

    /// 200 `ok` when the store can be reached, 503 otherwise (not ready: a load balancer sends no
    /// attestation here until it is back).
    async fn healthz(&self) -> Reply {
        match self.backend.check().await {
            Ok(()) => build(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            Err(_) => build(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"store unavailable\n".to_vec(),
            ),
        }
    }

    fn metrics_text(&self) -> Reply {
        let mut text = self.metrics.render();
        text.push_str(&super::metrics::render_audit(self.backend.audit_counts()));
        text.push_str(&super::metrics::render_limits(&self.limits));
        text.push_str(&super::metrics::render_store(self.store.generation()));
        build(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            text.into_bytes(),
        )
    }

    /// Record a refused admin attempt (no admin certificate, or one the admin CA did not issue).
    pub async fn audit_refused_admin(
        &self,
        addr: SocketAddr,
        resource: Option<&str>,
        reason: &str,
    ) {
        let record = AuditRecord {
            reason: Some(reason.into()),
            ..audit_record(
                "admin_refused",
                addr,
                resource.unwrap_or_default(),
                "refuse",
            )
        };
        if let Err(e) = self.backend.append_audit(&record).await {
            eprintln!("cvm-attest: audit log write failed: {e}");
        }
    }

    /// The body of a request that must carry CBOR: its content type, size and arrival time checked.
    async fn body(&self, req: Request<Incoming>) -> Result<Bytes, Refusal> {
        if !is_cbor(req.headers().get(header::CONTENT_TYPE)) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "request bodies are CBOR: send them with Content-Type: application/cbor",
            ));
        }
        self.read_body(req, p::MAX_BODY).await
    }

    /// A request body of at most `max` bytes (at most [`DRAIN_MAX`]), received in time.
    async fn read_body(&self, req: Request<Incoming>, max: usize) -> Result<Bytes, Refusal> {
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::TOO_LARGE,
                format!("request bodies are limited to {max} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > DRAIN_MAX as u64) {
            // Not worth reading: answer now (the connection closes with the body unread).
            return Err(too_large());
        }
        let read = async {
            use http_body_util::BodyExt;
            let mut body = req.into_body();
            let mut buf = Vec::new();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| malformed(format!("cannot read the body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    total = total.saturating_add(data.len());
                    if total > DRAIN_MAX {
                        return Err(too_large());
                    }
                    if total <= max {
                        buf.extend_from_slice(&data);
                    }
                }
            }
            // Oversized bodies up to DRAIN_MAX are read to the end and dropped, so that the client sees the
            // 413 instead of a reset connection.
            if total > max {
                return Err(too_large());
            }
            Ok(Bytes::from(buf))
        };
        match tokio::time::timeout(Duration::from_secs(self.limits.body_timeout_secs), read).await {
            Err(_) => Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                codes::TIMEOUT,
                "the request body was not received in time",
            )),
            Ok(r) => r,
        }
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, Refusal> {
        let body = self.body(req).await?;
        p::decode(&body).map_err(|e| malformed(format!("bad CBOR body: {e}")))
    }

    /// A nonce for any well-formed resource name: whether a secret of that name exists is not said here.
    async fn challenge(&self, req: Request<Incoming>) -> Reply {
        let result = async {
            let r: p::ChallengeRequest = self.decode(req).await?;
            check_resource_name(&r.resource)?;
            let (nonce, expires_at) = self
                .nonces
                .issue(&r.resource, now())
                .map_err(Refusal::internal)?;
            Ok::<_, Refusal>(p::ChallengeResponse { nonce, expires_at })
        }
        .await;
        match result {
            Ok(r) => reply_cbor(StatusCode::OK, &r),
            Err(r) => reply_refusal(r),
        }
    }

    async fn attest(&self, req: Request<Incoming>, peer: Peer) -> Reply {
        let mut record = attestation_record("attest", peer);
        let result = self.attest_inner(req, &mut record).await;
        let (reply, outcome) = match result {
            Ok(r) => {
                record.verdict = "release".into();
                (reply_cbor(StatusCode::OK, &r), "release")
            }
            Err(r) => {
                record.reason = Some(r.code().to_owned());
                let code = match Reason::from_code(r.code()) {
                    Some(reason) => reason.code(),
                    None if r.code() == codes::STORE_UNAVAILABLE => codes::STORE_UNAVAILABLE,
                    None => "other",
                };
                (reply_refusal(r), code)
            }
        };
        let tee = match record.tee.as_deref() {
            Some("snp") => "snp",
            Some("tdx") => "tdx",
            _ => "unknown",
        };
        self.metrics.verdict(tee, outcome);
        if let Err(e) = self.backend.append_audit(&record).await {
            // No secret leaves without its audit record.
            let e = StoreError::Backend(e);
            return reply_refusal(Refusal::store(&e));
        }
        reply
    }

    /// The attestation: request, nonce, evidence (appraised under the secret's policy, or under the default
    /// policy when there is no such secret, so that only attested callers learn which names exist), binding,
    /// and only then the secret.
    async fn attest_inner(
        &self,
        req: Request<Incoming>,
        record: &mut AuditRecord,
    ) -> Result<p::AttestResponse, Refusal> {
        let r: p::AttestRequest = self.decode(req).await?;
        let tee: crate::Tee = r.tee.into();
        record.tee = Some(tee.as_str().to_owned());
        check_resource_name(&r.resource)?;
        record.resource.clone_from(&r.resource);
        if r.hpke_public_key.len() != p::HPKE_PUBLIC_KEY_LEN {
            return Err(malformed(format!(
                "hpke_public_key must be {} bytes",
                p::HPKE_PUBLIC_KEY_LEN
            )));
        }
        let at = now();
        let nonce = self
            .nonces
            .check(&r.nonce, &r.resource, at)
            .map_err(|rej| Refusal::reason(&rej))?;
        record.nonce = Some(hex::encode(nonce.id));
        // Both from the store in one call: spending the nonce (across every replica) and reading the secret.
        let (spent, secret) = self
            .store
            .spend_and_get(nonce.id, nonce.expires_at, at, &r.resource)
            .await
            .map_err(|e| Refusal::store(&e))?;
        fresh(spent)?;
        if let Err(e) = &secret
            && e.is_unavailable()
        {
            return Err(Refusal::store(e));
        }
        // The policy's report_data is for offline use: here REPORT_DATA is checked against the binding below.
        let mut policy = match &secret {
            Ok(s) => s.policy.clone(),
            Err(_) => Policy::default(),
        };
        policy.snp.report_data = None;
        policy.tdx.report_data = None;
        let appraisal = self
            .appraiser
            .appraise(tee, &r.evidence, &r.certs, &policy, at);
        record.simulated = appraisal.verdict.simulated;
        record.measurement = appraisal.measurement().map(hex::encode);
        if let Err(rej) = &appraisal.verdict.outcome {
            return Err(Refusal::reason(rej));
        }
        check_binding(&appraisal, &r)?;
        let secret = secret.map_err(|e| match e {
            StoreError::NotFound(_) => Refusal::reason(&Rejection::new(
                Reason::UnknownResource,
                format!("there is no secret named {}", quote(&r.resource)),
            )),
            other => Refusal::store(&other),
        })?;
        check_measurement_constrained(&secret.policy, tee)?;
        let (enc, ciphertext) = cvm_keys::hpke::seal_base(
            &r.hpke_public_key,
            &cvm_keys::binding::secret_info(r.resource.as_bytes()),
            b"",
            &secret.value,
        )
        .map_err(|e| malformed(format!("cannot seal to hpke_public_key: {e}")))?;
        let claims = TokenClaims {
            iss: "cvm-attest".into(),
            tee: tee.as_str().into(),
            resource: r.resource.clone(),
            measurement: appraisal.measurement().unwrap_or_default(),
            report_data: appraisal.report_data().unwrap_or_default(),
            tcb_status: appraisal.tcb_status(),
            policy_id: secret.policy_id.to_vec(),
            simulated: appraisal.verdict.simulated,
            revocation_checked: appraisal.revocation_checked(),
            iat: at,
            exp: at.saturating_add(self.limits.token_ttl_secs),
            collateral: appraisal.collateral.clone(),
        };
        let token = self.signer.sign(&claims).map_err(Refusal::internal)?;
        Ok(p::AttestResponse {
            token,
            secret: p::SealedSecret {
                enc: enc.to_vec(),
                ciphertext,
            },
        })
    }

    fn token_key(&self) -> Reply {
        match self.signer.cose_key().and_then(|k| k.to_cbor()) {
            Ok(bytes) => build(StatusCode::OK, "application/cose-key", bytes),
            Err(e) => reply_refusal(Refusal::internal(e)),
        }
    }
}

/// A resource name must be a valid secret name (the message quotes a prefix of it only).
fn check_resource_name(name: &str) -> Result<(), Refusal> {
    if p::valid_resource_name(name) {
        Ok(())
    } else {
        Err(malformed(format!(
            "{} is not a valid resource name: use 1-128 of A-Z a-z 0-9 . _ - (not starting with '.'), or \
             <repository>/<type>/<tag> of such components",
            quote(name)
        )))
    }
}

/// An audit record of `event` by the client at `addr` about `resource` with `verdict`, before anything
/// else is known.
fn audit_record(event: &str, addr: SocketAddr, resource: &str, verdict: &str) -> AuditRecord {
    AuditRecord {
        time: now(),
        event: event.into(),
        resource: resource.into(),
        verdict: verdict.into(),
        reason: None,
        tee: None,
        measurement: None,
        simulated: false,
        peer: Some(addr.to_string()),
        nonce: None,
    }
}

/// The audit record of an attestation by `peer`, a refusal until it succeeds.
fn attestation_record(event: &str, peer: Peer) -> AuditRecord {
    audit_record(event, peer.addr, "", "refuse")
}

/// Whether the store spent the nonce now, else the refusal: replayed (spent before, on any replica), or too
/// many outstanding nonces.
fn fresh(spend: Spend) -> Result<(), Refusal> {
    match spend {
        Spend::Fresh => Ok(()),
        Spend::Replayed => Err(Refusal::reason(&crate::nonce::replayed())),
        Spend::Full => Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::OVERLOADED,
            "too many outstanding nonces; retry later",
        )),
    }
}

/// A secret is released only under a policy that constrains the launch measurement of the guest's TEE, or
/// says `allow_any_measurement = true`.
fn check_measurement_constrained(policy: &Policy, tee: crate::Tee) -> Result<(), Refusal> {
    if policy.allow_any_measurement || policy.constrains_measurement(tee) {
        return Ok(());
    }
    Err(Refusal::reason(&Rejection::new(
        Reason::PolicyMeasurement,
        format!(
            "the secret's policy constrains no {} launch measurement ({}): the service releases it to no {} \
             guest until the policy names the measurements (or says allow_any_measurement = true)",
            tee.as_str().to_uppercase(),
            if tee == crate::Tee::Snp {
                "[snp] measurements"
            } else {
                "[tdx] mrtd"
            },
            tee.as_str().to_uppercase(),
        ),
    )))
}

/// Step after verification: the evidence's REPORT_DATA must bind the nonce, the HPKE key and the resource.
fn check_binding(appraisal: &Appraisal, r: &p::AttestRequest) -> Result<(), Refusal> {
    let report_data = appraisal.report_data().unwrap_or_default();
    if cvm_keys::binding::verify(
        &report_data,
        &r.nonce,
        &r.hpke_public_key,
        r.resource.as_bytes(),
    ) {
        Ok(())
    } else {
        Err(Refusal::reason(&Rejection::new(
            Reason::BindingMismatch,
            "REPORT_DATA is not SHA-512(\"cvm-attest/v1\" ‖ 0 ‖ nonce ‖ hpke_public_key ‖ resource)",
        )))
    }
}

/// Shared handle to the service.
pub type SharedService = std::sync::Arc<Service>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_application_cbor_is_a_cbor_body() {
        let v = |s: &'static str| header::HeaderValue::from_static(s);
        assert!(is_cbor(Some(&v("application/cbor"))));
        assert!(is_cbor(Some(&v("Application/CBOR; charset=binary"))));
        for bad in ["application/json", "text/plain", "application/cbor-seq", ""] {
            assert!(!is_cbor(Some(&v(bad))), "{bad}");
        }
        assert!(!is_cbor(None));
    }
}
