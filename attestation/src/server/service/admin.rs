//! The admin endpoints (mutual TLS with a certificate from the admin CA; the router audits refused
//! attempts): `PUT/GET/DELETE /v1/admin/secrets/{name}`, `GET /v1/admin/secrets`, `GET /v1/admin/audit`,
//! `GET /v1/admin/audit/verify` (the hash chain checked over the whole log).
//! A write answers from what it stored, never from a re-read, and the store makes operations on one name
//! linearizable, so every answer matches one order of the operations.

use super::refusal::{
    Refusal, build, method_not_allowed, no_such_endpoint, reply_cbor, reply_refusal,
};
use super::{Peer, Reply, Service, now};
use crate::excerpt::quote;
use crate::protocol::{self as p, codes};
use crate::reason::{Reason, Rejection};
use crate::store::{AuditRecord, StoreError, StoredSecret};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

/// The secret named by an admin path, if it names a valid one.
pub(super) fn secret_name(path: &str) -> Option<&str> {
    path.strip_prefix(p::PATH_ADMIN_SECRETS)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|name| p::valid_resource_name(name))
}

impl Service {
    pub(super) async fn admin(
        &self,
        method: Method,
        path: &str,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Reply {
        self.admin_inner(method, path, req, peer)
            .await
            .unwrap_or_else(reply_refusal)
    }

    async fn admin_inner(
        &self,
        method: Method,
        path: &str,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Reply, Refusal> {
        if path == p::PATH_ADMIN_AUDIT || path == p::PATH_ADMIN_AUDIT_VERIFY {
            if method != Method::GET {
                return Err(method_not_allowed());
            }
            let backend_refusal = |e| Refusal::store(&StoreError::Backend(e));
            if path == p::PATH_ADMIN_AUDIT {
                let records = self
                    .backend
                    .audit_tail(10_000)
                    .await
                    .map_err(backend_refusal)?;
                return Ok(reply_cbor(StatusCode::OK, &p::AuditResponse { records }));
            }
            let check = crate::store::verify_audit(self.backend.as_ref(), self.audit_key.clone())
                .await
                .map_err(backend_refusal)?;
            return Ok(reply_cbor(
                StatusCode::OK,
                &p::AuditVerifyResponse {
                    ok: check.problem_count == 0,
                    records: check.records,
                    unchained: check.unchained,
                    head_seq: check.head.seq,
                    head_tag: hex::encode(check.head.tag),
                    problem_count: check.problem_count,
                    problems: check.problems,
                },
            ));
        }
        let rest = path.strip_prefix(p::PATH_ADMIN_SECRETS).unwrap_or_default();
        if rest.is_empty() || rest == "/" {
            if method != Method::GET {
                return Err(method_not_allowed());
            }
            let names = self.store.list().await.map_err(store_refusal)?;
            return Ok(reply_cbor(StatusCode::OK, &p::SecretList { names }));
        }
        let Some(name) = rest.strip_prefix('/') else {
            return Err(no_such_endpoint());
        };
        if !p::valid_resource_name(name) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                format!("{} is not a valid secret name", quote(name)),
            ));
        }
        match method {
            Method::PUT => {
                let put: p::PutSecretRequest = self.decode(req).await?;
                let stored = self
                    .store
                    .put(name, &put.value, &put.policy, now())
                    .await
                    .map_err(store_refusal)?;
                if stored.policy.allow_any_measurement {
                    eprintln!(
                        "cvm-attest: WARNING: secret {name:?} is released to guests of any launch measurement \
                         (its policy says allow_any_measurement = true)"
                    );
                }
                self.backend
                    .append_audit(&admin_record("secret_put", name, peer))
                    .await
                    .map_err(|e| Refusal::store(&StoreError::Backend(e)))?;
                Ok(reply_cbor(StatusCode::OK, &info(&stored)))
            }
            Method::GET => {
                let stored = self.store.get(name).await.map_err(store_refusal)?;
                Ok(reply_cbor(StatusCode::OK, &info(&stored)))
            }
            Method::DELETE => {
                self.store.delete(name).await.map_err(store_refusal)?;
                self.backend
                    .append_audit(&admin_record("secret_delete", name, peer))
                    .await
                    .map_err(|e| Refusal::store(&StoreError::Backend(e)))?;
                Ok(build(
                    StatusCode::NO_CONTENT,
                    p::CONTENT_TYPE_CBOR,
                    Vec::new(),
                ))
            }
            _ => Err(method_not_allowed()),
        }
    }
}

/// What the admin API says about a secret: its policy and facts about the value, never the value.
fn info(s: &StoredSecret) -> p::SecretInfo {
    p::SecretInfo {
        name: s.name.clone(),
        policy: s.policy_toml.clone(),
        policy_id: hex::encode(s.policy_id),
        value_len: s.value.len() as u64,
        updated_at: s.updated_at,
    }
}

/// The audit record of an admin change.
fn admin_record(event: &str, name: &str, peer: Peer) -> AuditRecord {
    super::audit_record(event, peer.addr, name, "ok")
}

fn store_refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::NotFound(_) => {
            Refusal::reason(&Rejection::new(Reason::UnknownResource, e.to_string()))
        }
        StoreError::BadName(_) | StoreError::BadPolicy(_) => {
            Refusal::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, e.to_string())
        }
        other => Refusal::store(&other),
    }
}
