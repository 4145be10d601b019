//! The request handler: routing, body limits, the attestation flow and the admin endpoints. One
//! [`Service`] is shared by every connection.

use super::appraise::{Appraisal, Appraiser};
use super::config::{Config, Limits, Mode};
use super::metrics::Metrics;
use crate::nonce::{NonceError, NonceService};
use crate::protocol::{self as p, ErrorBody, codes};
use crate::reason::{Reason, Rejection};
use crate::store::{AuditLog, AuditRecord, SecretStore, StoreError};
use crate::token::{TokenClaims, TokenSigner};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Oversized bodies up to this size are read and dropped before the 413; larger ones are not read.
const DRAIN_MAX: usize = 1 << 20;

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

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
    #[error("key-encryption key: {0}")]
    Kek(#[from] cvm_keys::keyfile::KeyFileError),
    /// The state directory could not be used.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(std::io::Error),
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
    audit: AuditLog,
    nonces: NonceService,
    signer: TokenSigner,
    appraiser: Appraiser,
    metrics: Metrics,
    limits: Limits,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A refusal on the wire: status and body.
struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    fn reason(r: &Rejection) -> Self {
        Refusal {
            status: status_for(r.reason),
            body: ErrorBody::reason(r.reason, r.message.clone()),
        }
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            message.to_string(),
        )
    }
}

/// The HTTP status for a reason code: 400 malformed, 401 nonce problems, 404 unknown resource, 403 the rest.
pub fn status_for(reason: Reason) -> StatusCode {
    match reason {
        Reason::Malformed => StatusCode::BAD_REQUEST,
        Reason::NonceInvalid | Reason::NonceExpired | Reason::NonceReplayed => {
            StatusCode::UNAUTHORIZED
        }
        Reason::UnknownResource => StatusCode::NOT_FOUND,
        _ => StatusCode::FORBIDDEN,
    }
}

fn reply_cbor<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
    match p::encode(value) {
        Ok(bytes) => build(status, p::CONTENT_TYPE_CBOR, bytes),
        Err(e) => build(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string().into_bytes(),
        ),
    }
}

fn build(status: StatusCode, content_type: &str, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn reply_refusal(r: Refusal) -> Reply {
    reply_cbor(r.status, &r.body)
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::reason(&Rejection::new(Reason::Malformed, message))
}

impl Service {
    /// Open the store, the audit log and the token key, and set up the verifiers.
    pub fn new(config: &Config) -> Result<Self, SetupError> {
        crate::store::atomic::create_private_dir(&config.store.dir).map_err(|source| {
            StoreError::Io {
                path: config.store.dir.clone(),
                source,
            }
        })?;
        let kek = cvm_keys::Key256::read_file(&config.store.kek_file)?;
        let store = SecretStore::open(&config.store.dir, &kek)?;
        let audit = AuditLog::open(&config.store.dir).map_err(SetupError::Audit)?;
        let signer = TokenSigner::load_or_create(&config.store.dir.join("token-key.p8"))?;
        let nonces = NonceService::new(
            config.limits.nonce_ttl_secs,
            crate::nonce::DEFAULT_REPLAY_CAPACITY,
        )?;
        let appraiser = Appraiser::new(config)?;
        Ok(Service {
            store,
            audit,
            nonces,
            signer,
            appraiser,
            metrics: Metrics::default(),
            limits: config.limits.clone(),
        })
    }

    /// The service's mode.
    pub fn mode(&self) -> Mode {
        self.appraiser.mode()
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
            (Method::GET, p::PATH_HEALTHZ) => (
                "healthz",
                build(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            ),
            (Method::GET, p::PATH_METRICS) => {
                let mut text = self.metrics.render();
                text.push_str(&super::metrics::render_audit(self.audit.commit_counts()));
                (
                    "metrics",
                    build(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        text.into_bytes(),
                    ),
                )
            }
            (
                _,
                p::PATH_CHALLENGE
                | p::PATH_ATTEST
                | p::PATH_TOKEN_KEY
                | p::PATH_HEALTHZ
                | p::PATH_METRICS,
            ) => (
                "other",
                reply_refusal(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    codes::METHOD_NOT_ALLOWED,
                    "method not allowed here",
                )),
            ),
            (method, path)
                if path == p::PATH_ADMIN_AUDIT || path.starts_with(p::PATH_ADMIN_SECRETS) =>
            {
                if !peer.admin {
                    return (
                        "admin",
                        reply_refusal(Refusal::new(
                            StatusCode::FORBIDDEN,
                            codes::ADMIN_CERT_REQUIRED,
                            "admin endpoints need a client certificate from the admin CA",
                        )),
                    );
                }
                (
                    "admin",
                    self.admin(method, path.to_owned(), req, peer).await,
                )
            }
            _ => (
                "other",
                reply_refusal(Refusal::new(
                    StatusCode::NOT_FOUND,
                    codes::NOT_FOUND,
                    "no such endpoint",
                )),
            ),
        }
    }

    async fn body(&self, req: Request<Incoming>) -> Result<Bytes, Refusal> {
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::TOO_LARGE,
                format!("request bodies are limited to {} bytes", p::MAX_BODY),
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
                    if total <= p::MAX_BODY {
                        buf.extend_from_slice(&data);
                    }
                }
            }
            // Oversized bodies up to DRAIN_MAX are read to the end and dropped, so that the client sees the
            // 413 instead of a reset connection.
            if total > p::MAX_BODY {
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

    async fn challenge(&self, req: Request<Incoming>) -> Reply {
        let result = async {
            let r: p::ChallengeRequest = self.decode(req).await?;
            self.known_resource(&r.resource)?;
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

    fn known_resource(&self, name: &str) -> Result<Arc<crate::store::StoredSecret>, Refusal> {
        if !p::valid_resource_name(name) {
            return Err(malformed(format!("{name:?} is not a valid resource name")));
        }
        match self.store.get(name) {
            Ok(s) => Ok(s),
            Err(StoreError::NotFound(_)) => Err(Refusal::reason(&Rejection::new(
                Reason::UnknownResource,
                format!("there is no secret named {name:?}"),
            ))),
            Err(e) => Err(Refusal::internal(e)),
        }
    }

    async fn attest(&self, req: Request<Incoming>, peer: Peer) -> Reply {
        let mut record = AuditRecord {
            time: now(),
            event: "attest".into(),
            resource: String::new(),
            verdict: "refuse".into(),
            reason: None,
            tee: None,
            measurement: None,
            simulated: false,
            peer: Some(peer.addr.to_string()),
        };
        let result = self.attest_inner(req, &mut record).await;
        let (reply, outcome) = match result {
            Ok(r) => {
                record.verdict = "release".into();
                (reply_cbor(StatusCode::OK, &r), "release")
            }
            Err(r) => {
                record.reason = Some(r.body.code.clone());
                let code = Reason::from_code(&r.body.code).map_or("other", Reason::code);
                (reply_refusal(r), code)
            }
        };
        let tee = match record.tee.as_deref() {
            Some("snp") => "snp",
            Some("tdx") => "tdx",
            _ => "unknown",
        };
        self.metrics.verdict(tee, outcome);
        if let Err(e) = self.audit.append(&record).await {
            // No secret leaves without its audit record.
            eprintln!("cvm-attest: audit log write failed: {e}");
            return reply_refusal(Refusal::internal("audit log unavailable"));
        }
        reply
    }

    async fn attest_inner(
        &self,
        req: Request<Incoming>,
        record: &mut AuditRecord,
    ) -> Result<p::AttestResponse, Refusal> {
        let r: p::AttestRequest = self.decode(req).await?;
        record.resource.clone_from(&r.resource);
        let tee: crate::Tee = r.tee.into();
        record.tee = Some(tee.as_str().to_owned());
        if r.hpke_public_key.len() != p::HPKE_PUBLIC_KEY_LEN {
            return Err(malformed(format!(
                "hpke_public_key must be {} bytes",
                p::HPKE_PUBLIC_KEY_LEN
            )));
        }
        let secret = self.known_resource(&r.resource)?;
        let at = now();
        self.nonces
            .consume(&r.nonce, &r.resource, at)
            .map_err(|e| match e {
                NonceError::Rejected(rej) => Refusal::reason(&rej),
                NonceError::Full => Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::OVERLOADED,
                    e.to_string(),
                ),
                NonceError::Random => Refusal::internal(e),
            })?;
        // The policy's report_data is for offline use: here REPORT_DATA is checked against the binding below.
        let mut policy = secret.policy.clone();
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

    async fn admin(
        &self,
        method: Method,
        path: String,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Reply {
        let result = async {
            if path == p::PATH_ADMIN_AUDIT {
                if method != Method::GET {
                    return Err(method_not_allowed());
                }
                let records = self.audit.tail(10_000).map_err(Refusal::internal)?;
                return Ok(reply_cbor(StatusCode::OK, &p::AuditResponse { records }));
            }
            let rest = path.strip_prefix(p::PATH_ADMIN_SECRETS).unwrap_or_default();
            if rest.is_empty() || rest == "/" {
                if method != Method::GET {
                    return Err(method_not_allowed());
                }
                let names = self.store.list().map_err(Refusal::internal)?;
                return Ok(reply_cbor(StatusCode::OK, &p::SecretList { names }));
            }
            let Some(name) = rest.strip_prefix('/') else {
                return Err(Refusal::new(
                    StatusCode::NOT_FOUND,
                    codes::NOT_FOUND,
                    "no such endpoint",
                ));
            };
            if !p::valid_resource_name(name) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_REQUEST,
                    format!("{name:?} is not a valid secret name"),
                ));
            }
            let name = name.to_owned();
            match method {
                Method::PUT => {
                    let put: p::PutSecretRequest = self.decode(req).await?;
                    let at = now();
                    self.store
                        .put(&name, &put.value, &put.policy, at)
                        .map_err(store_refusal)?;
                    self.audit
                        .append(&admin_record("secret_put", &name, peer))
                        .await
                        .map_err(Refusal::internal)?;
                    self.info(&name).map(|i| reply_cbor(StatusCode::OK, &i))
                }
                Method::GET => self.info(&name).map(|i| reply_cbor(StatusCode::OK, &i)),
                Method::DELETE => {
                    self.store.delete(&name).map_err(store_refusal)?;
                    self.audit
                        .append(&admin_record("secret_delete", &name, peer))
                        .await
                        .map_err(Refusal::internal)?;
                    Ok(build(
                        StatusCode::NO_CONTENT,
                        p::CONTENT_TYPE_CBOR,
                        Vec::new(),
                    ))
                }
                _ => Err(method_not_allowed()),
            }
        }
        .await;
        result.unwrap_or_else(reply_refusal)
    }

    fn info(&self, name: &str) -> Result<p::SecretInfo, Refusal> {
        let s = self.store.get(name).map_err(store_refusal)?;
        Ok(p::SecretInfo {
            name: s.name.clone(),
            policy: s.policy_toml.clone(),
            policy_id: hex::encode(s.policy_id),
            value_len: s.value.len() as u64,
            updated_at: s.updated_at,
        })
    }
}

/// The audit record of an admin change.
fn admin_record(event: &str, name: &str, peer: Peer) -> AuditRecord {
    AuditRecord {
        time: now(),
        event: event.into(),
        resource: name.into(),
        verdict: "ok".into(),
        reason: None,
        tee: None,
        measurement: None,
        simulated: false,
        peer: Some(peer.addr.to_string()),
    }
}

fn method_not_allowed() -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "method not allowed here",
    )
}

fn store_refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::NotFound(_) => {
            Refusal::reason(&Rejection::new(Reason::UnknownResource, e.to_string()))
        }
        StoreError::BadName(_) | StoreError::BadPolicy(_) => {
            Refusal::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, e.to_string())
        }
        other => Refusal::internal(other),
    }
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
pub type SharedService = Arc<Service>;
