//! Answers: CBOR bodies, and refusals as `{code, message}` with their HTTP status. A refusal's message is
//! cut to [`crate::excerpt::MAX_MESSAGE`] bytes, and an internal failure is logged in full while the client
//! gets a generic sentence (storage paths and the like never leave the service).

use crate::protocol::{self as p, ErrorBody, codes};
use crate::reason::{Reason, Rejection};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode, header};

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// A refusal on the wire: status and body.
pub(super) struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: crate::excerpt::truncate(message.into()),
            },
        }
    }

    pub(super) fn reason(r: &Rejection) -> Self {
        Refusal::new(status_for(r.reason), r.reason.code(), r.message.clone())
    }

    /// A failure of the service itself: the details go to the service log only.
    pub(super) fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("cvm-attest: internal error: {detail}");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "the service failed internally; its log has the details",
        )
    }

    /// The store could not be reached: 503 `STORE_UNAVAILABLE` (the client may retry); the details go to
    /// the service log only.
    pub(super) fn unavailable(detail: impl std::fmt::Display) -> Self {
        eprintln!("cvm-attest: store unavailable: {detail}");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::STORE_UNAVAILABLE,
            "the service's store cannot be reached now; nothing was released; retry later",
        )
    }

    /// A store failure: unavailable when the storage could not be reached, internal otherwise.
    pub(super) fn store(e: &crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            Refusal::unavailable(e)
        } else {
            Refusal::internal(e)
        }
    }

    /// The refusal's code.
    pub(super) fn code(&self) -> &str {
        &self.body.code
    }

    /// The refusal's message.
    pub(super) fn message(&self) -> &str {
        &self.body.message
    }

    /// The refusal's HTTP status.
    pub(super) fn status(&self) -> StatusCode {
        self.status
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

pub(super) fn reply_cbor<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
    match p::encode(value) {
        Ok(bytes) => build(status, p::CONTENT_TYPE_CBOR, bytes),
        Err(e) => reply_refusal(Refusal::internal(format!("encoding an answer: {e}"))),
    }
}

pub(super) fn build(status: StatusCode, content_type: &str, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(super) fn reply_refusal(r: Refusal) -> Reply {
    match p::encode(&r.body) {
        Ok(bytes) => build(r.status, p::CONTENT_TYPE_CBOR, bytes),
        Err(_) => build(r.status, "text/plain", r.body.code.into_bytes()),
    }
}

pub(super) fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::reason(&Rejection::new(Reason::Malformed, message))
}

pub(super) fn method_not_allowed() -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "method not allowed here",
    )
}

pub(super) fn no_such_endpoint() -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such endpoint")
}
