//! The service over real HTTPS on loopback, without evidence: admin endpoints and mutual TLS, request limits,
//! nonces, unknown resources, persistence, health, metrics and the token key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use cvm_attest::client::ClientError;
use cvm_attest::protocol::{self as p, AttestRequest, TeeKind};
use hyper::{Method, StatusCode};
use serve_common::{ALLOW_ALL, Fixture, Running};

fn code(e: &ClientError) -> &str {
    e.code().unwrap_or_else(|| panic!("not a refusal: {e}"))
}

fn attest_request(resource: &str, nonce: Vec<u8>) -> AttestRequest {
    AttestRequest {
        resource: resource.into(),
        nonce,
        tee: TeeKind::Snp,
        evidence: vec![0; 1184],
        certs: vec![],
        hpke_public_key: vec![9; 32],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_secrets_and_reads_the_audit_log() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let mut admin = f.admin(s.addr);
    let info = admin
        .put_secret("db-key", b"s3cret", ALLOW_ALL)
        .await
        .unwrap();
    assert_eq!((info.name.as_str(), info.value_len), ("db-key", 6));
    admin.put_secret("other", b"x", ALLOW_ALL).await.unwrap();
    assert_eq!(admin.list_secrets().await.unwrap(), ["db-key", "other"]);
    let got = admin.get_secret_info("db-key").await.unwrap();
    assert_eq!(got.policy, ALLOW_ALL);
    let bad = admin
        .put_secret("bad", b"x", "allow_debug = 3")
        .await
        .unwrap_err();
    assert_eq!(code(&bad), p::codes::BAD_REQUEST);
    admin.delete_secret("other").await.unwrap();
    let gone = admin.get_secret_info("other").await.unwrap_err();
    assert_eq!(code(&gone), "UNKNOWN_RESOURCE");
    let audit = admin.audit().await.unwrap();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"secret_put\"") && l.contains("db-key"))
    );
    assert!(audit.iter().any(|l| l.contains("\"secret_delete\"")));
    assert!(audit.iter().all(|l| !l.contains("s3cret")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_a_client_certificate_from_the_admin_ca() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    // Anonymous: the TLS connection is fine (challenge/attest need no certificate) but admin is refused.
    let mut anon = f.client(s.addr);
    for call in 0..3 {
        let e = match call {
            0 => anon.list_secrets().await.unwrap_err(),
            1 => anon.put_secret("x", b"v", ALLOW_ALL).await.unwrap_err(),
            _ => anon.audit().await.unwrap_err(),
        };
        assert_eq!(code(&e), p::codes::ADMIN_CERT_REQUIRED);
        assert!(matches!(e, ClientError::Refused { status: 403, .. }));
    }
    // A certificate from another CA: the handshake fails, nothing is served.
    let (mut foreign, _other_ca) = f.foreign_admin(s.addr);
    let e = foreign.list_secrets().await.unwrap_err();
    assert!(matches!(e, ClientError::Io(_)), "{e}");
    // Nothing was stored by anyone.
    assert!(f.admin(s.addr).list_secrets().await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_malformed_and_oversized_bodies() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    f.admin(s.addr)
        .put_secret("db", b"v", ALLOW_ALL)
        .await
        .unwrap();
    let mut c = f.client(s.addr);
    for body in [
        vec![],
        vec![0xff],
        b"{\"resource\":\"db\"}".to_vec(),
        vec![0xa1, 0x61],
    ] {
        let (status, body) = c
            .send(Method::POST, p::PATH_CHALLENGE, Some(body))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let e: p::ErrorBody = cvm_keys::cbor::from_slice(&body).unwrap();
        assert_eq!(e.code, "MALFORMED");
    }
    // Trailing bytes after a valid body.
    let mut ok = p::encode(&p::ChallengeRequest {
        resource: "db".into(),
    })
    .unwrap();
    ok.push(0);
    let (status, _) = c
        .send(Method::POST, p::PATH_CHALLENGE, Some(ok))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A wrong HPKE key length.
    let nonce = c.challenge("db").await.unwrap().nonce;
    let mut req = attest_request("db", nonce);
    req.hpke_public_key = vec![1; 31];
    assert_eq!(code(&c.attest(&req).await.unwrap_err()), "MALFORMED");
    let (status, body) = c
        .send(Method::POST, p::PATH_ATTEST, Some(vec![0; p::MAX_BODY + 1]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let e: p::ErrorBody = cvm_keys::cbor::from_slice(&body).unwrap();
    assert_eq!(e.code, p::codes::TOO_LARGE);
    let (status, _) = c.send(Method::GET, "/v1/nothing", None).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = c.send(Method::GET, p::PATH_ATTEST, None).await.unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_are_single_use_per_resource_and_expire() {
    let f = Fixture::new("", "[limits]\nnonce_ttl_secs = 1\n");
    let s = Running::start(&f.config()).await;
    let mut admin = f.admin(s.addr);
    admin.put_secret("db", b"v", ALLOW_ALL).await.unwrap();
    admin.put_secret("web", b"w", ALLOW_ALL).await.unwrap();
    let mut c = f.client(s.addr);
    // A nonce the service never issued.
    let e = c
        .attest(&attest_request("db", vec![7; 56]))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NONCE_INVALID");
    assert!(matches!(e, ClientError::Refused { status: 401, .. }));
    // A nonce for another resource.
    let web_nonce = c.challenge("web").await.unwrap().nonce;
    let e = c
        .attest(&attest_request("db", web_nonce))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NONCE_INVALID");
    // Used once (the evidence is refused), then replayed.
    let nonce = c.challenge("db").await.unwrap().nonce;
    let first = c
        .attest(&attest_request("db", nonce.clone()))
        .await
        .unwrap_err();
    assert_ne!(code(&first), "NONCE_REPLAYED");
    let e = c.attest(&attest_request("db", nonce)).await.unwrap_err();
    assert_eq!(code(&e), "NONCE_REPLAYED");
    // Expired.
    let ch = c.challenge("db").await.unwrap();
    let wait = ch.expires_at + 1 - time::OffsetDateTime::now_utc().unix_timestamp();
    tokio::time::sleep(std::time::Duration::from_millis(
        wait.max(0) as u64 * 1000 + 100,
    ))
    .await;
    let e = c.attest(&attest_request("db", ch.nonce)).await.unwrap_err();
    assert_eq!(code(&e), "NONCE_EXPIRED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_token_key_are_public() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let mut c = f.client(s.addr);
    let (status, body) = c.send(Method::GET, p::PATH_HEALTHZ, None).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    let key = c.token_key().await.unwrap();
    assert_eq!((key.len(), key[0]), (65, 4));
    let _ = c.challenge("none").await;
    let text = c.metrics().await.unwrap();
    assert!(
        text.contains("cvm_attest_requests_total{endpoint=\"challenge\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("cvm_attest_request_duration_seconds_bucket{endpoint=\"healthz\""));
    assert!(text.contains("process_cpu_seconds_total "));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_the_token_key_survive_a_restart_and_are_never_stored_in_plaintext() {
    let f = Fixture::new("", "");
    let marker = b"PLAINTEXT-MARKER-4f1c9e";
    let s = Running::start(&f.config()).await;
    f.admin(s.addr)
        .put_secret("db", marker, ALLOW_ALL)
        .await
        .unwrap();
    let key = f.client(s.addr).token_key().await.unwrap();
    s.stop().await;
    let s = Running::start(&f.config()).await;
    let info = f.admin(s.addr).get_secret_info("db").await.unwrap();
    assert_eq!(info.value_len, marker.len() as u64);
    assert_eq!(f.client(s.addr).token_key().await.unwrap(), key);
    s.stop().await;
    assert_no_plaintext(&f.path("state"), marker);
}

fn assert_no_plaintext(dir: &std::path::Path, marker: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_plaintext(&path, marker);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "{} holds the secret in plaintext",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_its_handshake_is_dropped() {
    use tokio::io::AsyncReadExt;
    let f = Fixture::new("", "[limits]\nheader_timeout_secs = 1\n");
    let s = Running::start(&f.config()).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server kept a silent connection open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    s.stop().await;
}
