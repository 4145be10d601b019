//! The service against a careless operator and a hostile caller, over real HTTPS on loopback: unsafe
//! configurations refused at start, policies that would release to anyone refused, racing admin writes that
//! stay linearizable, a strict request decoder, short error messages, no difference between unknown and
//! known resources before attesting, and refused admin attempts in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use cvm_attest::client::ClientError;
use cvm_attest::protocol::{self as p};
use cvm_attest::server::{Config, ServeError, Server};
use serve_common::{ALLOW_ALL, Fixture, Running, post, raw_exchange, status_and_body};
use std::os::unix::fs::PermissionsExt;

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn bind_error(config: &Config) -> String {
    match Server::bind(config).await {
        Ok(_) => panic!("the service started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn refuses_to_start_with_a_kek_or_tls_key_others_can_read() {
    let f = Fixture::new("", "");
    chmod(&f.path("kek"), 0o644);
    let e = bind_error(&f.config()).await;
    assert!(
        e.starts_with("store.kek_file = ") && e.contains("chmod 600"),
        "{e}"
    );
    chmod(&f.path("kek"), 0o600);
    chmod(&f.path("pki/server.key"), 0o640);
    let e = bind_error(&f.config()).await;
    assert!(e.starts_with("tls.key = "), "{e}");
    chmod(&f.path("pki/server.key"), 0o600);
    Server::bind(&f.config()).await.unwrap();
}

#[tokio::test]
async fn warns_about_a_state_directory_others_may_enter() {
    let f = Fixture::new("", "");
    std::fs::create_dir(f.path("state")).unwrap();
    chmod(&f.path("state"), 0o777);
    let server = Server::bind(&f.config()).await.unwrap();
    assert!(
        server
            .warnings()
            .iter()
            .any(|w| w.contains("store.dir") && w.contains("0777") && w.contains("chmod 700")),
        "{:?}",
        server.warnings()
    );
    chmod(&f.path("state"), 0o700);
    let server = Server::bind(&f.config()).await.unwrap();
    assert!(!server.warnings().iter().any(|w| w.contains("store.dir")));
}

#[tokio::test]
async fn refuses_an_admin_client_ca_that_is_a_leaf_certificate() {
    let f = Fixture::new("", "");
    let text = std::fs::read_to_string(f.path("config.toml"))
        .unwrap()
        .replace(
            "admin_client_ca = \"pki/ca.pem\"",
            "admin_client_ca = \"pki/admin.pem\"",
        );
    std::fs::write(f.path("config.toml"), text).unwrap();
    let e = bind_error(&f.config()).await;
    assert!(
        e.starts_with("tls.admin_client_ca = ") && e.contains("is not a CA certificate"),
        "{e}"
    );
}

#[test]
fn refuses_zero_and_huge_timeouts_naming_the_key() {
    for (line, key) in [
        ("header_timeout_secs = 0", "limits.header_timeout_secs"),
        (
            "header_timeout_secs = 18446744073709551",
            "limits.header_timeout_secs",
        ),
        ("body_timeout_secs = 0", "limits.body_timeout_secs"),
        (
            "write_timeout_secs = 9223372036854775807",
            "limits.write_timeout_secs",
        ),
        (
            "nonce_ttl_secs = 9223372036854775807",
            "limits.nonce_ttl_secs",
        ),
    ] {
        let f = Fixture::new("", &format!("[limits]\n{line}\n"));
        let e = Config::load(&f.path("config.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains("out of range"), "{line}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_policies_that_release_to_anyone_or_name_impossible_values() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let mut admin = f.admin(s.addr);
    let m = "5a".repeat(48);
    for (policy, says) in [
        ("", "constrains no launch measurement"),
        (
            "allow_debug = false\n[snp]\nvmpl = [0]\n",
            "constrains no launch measurement",
        ),
        (
            &*format!("[snp]\nmeasurements = [\"{m}\"]\nvmpl = [7]\n"),
            "vmpl = 7",
        ),
        (
            &*format!("[snp]\nmeasurements = [\"{}\"]\n", &m[2..]),
            "expected 96 hex digits",
        ),
        (
            &*format!("[tdx]\nmrtd = [\"{m}\"]\nmrconfigid = \"abcd\"\n"),
            "expected 96 hex digits",
        ),
        (
            &*format!("[snp]\nmeasurements = [\"{m}\"]\nhost_data = \"{m}\"\n"),
            "expected 64 hex digits",
        ),
        ("[snp]\nmeasurements = []\n", "accepts nothing"),
    ] {
        let e = admin.put_secret("db", b"v", policy).await.unwrap_err();
        match &e {
            ClientError::Refused {
                status: 400,
                code,
                message,
            } => {
                assert_eq!(code, p::codes::BAD_REQUEST);
                assert!(message.contains(says), "{policy:?}: {message}");
            }
            other => panic!("{policy:?}: {other}"),
        }
    }
    assert!(admin.list_secrets().await.unwrap().is_empty());
    admin
        .put_secret(
            "db",
            b"v",
            &format!("[snp]\nmeasurements = [\"{m}\"]\nvmpl = [0, 3]\n"),
        )
        .await
        .unwrap();
    admin.put_secret("any", b"v", ALLOW_ALL).await.unwrap();
    s.stop().await;
}

/// One admin operation's answer: PUT and GET give the stored value's length, DELETE gives whether there
/// was something to delete; `None` is 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Put(Option<u64>),
    Get(Option<u64>),
    Delete(bool),
}

/// Whether some order of `answers`, applied to a secret of value length `start` (or none), explains every
/// answer and ends in `end`.
fn linearizable(start: Option<u64>, put_len: u64, answers: &[Answer; 3], end: Option<u64>) -> bool {
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    ORDERS.iter().any(|order| {
        let mut state = start;
        order.iter().all(|&i| match answers[i] {
            Answer::Put(got) => {
                state = Some(put_len);
                got == state
            }
            Answer::Get(got) => got == state,
            Answer::Delete(deleted) => {
                let ok = deleted == state.is_some();
                state = None;
                ok
            }
        }) && state == end
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_admin_puts_deletes_and_gets_on_one_name_are_linearizable() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let (mut putter, mut deleter, mut getter, mut checker) = (
        f.admin(s.addr),
        f.admin(s.addr),
        f.admin(s.addr),
        f.admin(s.addr),
    );
    let len = |r: Result<p::SecretInfo, ClientError>| match r {
        Ok(info) => Some(info.value_len),
        Err(e) if e.code() == Some("UNKNOWN_RESOURCE") => None,
        Err(e) => panic!("{e}"),
    };
    let mut state: Option<u64> = None;
    let mut put_404 = 0;
    for round in 0..50u64 {
        let value = vec![b'v'; 10 + round as usize];
        let (put, delete, get) = tokio::join!(
            putter.put_secret("race", &value, ALLOW_ALL),
            deleter.delete_secret("race"),
            getter.get_secret_info("race"),
        );
        let put = len(put);
        put_404 += usize::from(put.is_none());
        let delete = match delete {
            Ok(()) => true,
            Err(e) if e.code() == Some("UNKNOWN_RESOURCE") => false,
            Err(e) => panic!("{e}"),
        };
        let answers = [
            Answer::Put(put),
            Answer::Delete(delete),
            Answer::Get(len(get)),
        ];
        let end = len(checker.get_secret_info("race").await);
        assert!(
            linearizable(state, value.len() as u64, &answers, end),
            "round {round}: from {state:?}, answers {answers:?} and then {end:?} match no order of the three"
        );
        state = end;
    }
    assert_eq!(put_404, 0, "a PUT answered 404 for a secret it stored");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_need_the_cbor_content_type_and_exact_types() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let body = p::encode(&p::ChallengeRequest {
        resource: "db".into(),
    })
    .unwrap();
    let answer = |headers: &'static str, body: Vec<u8>| {
        let f = &f;
        let addr = s.addr;
        async move {
            status_and_body(&raw_exchange(f, addr, &post(p::PATH_CHALLENGE, headers, &body)).await)
        }
    };
    // The right body without a content type, or with another one: 415.
    for headers in [
        "",
        "content-type: application/json\r\n",
        "content-type: text/plain\r\n",
    ] {
        let (status, reply) = answer(headers, body.clone()).await;
        assert_eq!(status, 415, "{headers:?}");
        let e: p::ErrorBody = cvm_keys::cbor::from_slice(&reply).unwrap();
        assert_eq!(e.code, p::codes::UNSUPPORTED_MEDIA_TYPE);
    }
    let (status, _) = answer("content-type: application/cbor\r\n", body.clone()).await;
    assert_eq!(status, 200);
    // Lenient encodings of the same request: bytes for text, an array for the map, the self-describe tag,
    // a non-minimal length.
    let mut as_bytes = body.clone();
    let at = as_bytes.len() - 3;
    as_bytes[at] = 0x42;
    let as_array = [&[0x81][..], &body[body.len() - 3..]].concat();
    let tagged = [&[0xd9, 0xd9, 0xf7][..], &body].concat();
    let long_len = [
        &body[..body.len() - 3],
        &[0x78, 0x02],
        &body[body.len() - 2..],
    ]
    .concat();
    for bad in [as_bytes, as_array, tagged, long_len] {
        let (status, reply) = answer("content-type: application/cbor\r\n", bad.clone()).await;
        assert_eq!(status, 400, "{bad:02x?}");
        let e: p::ErrorBody = cvm_keys::cbor::from_slice(&reply).unwrap();
        assert_eq!(e.code, "MALFORMED");
    }
    // tee as an integer (the variant index the codec would take).
    let mut c = f.client(s.addr);
    let nonce = c.challenge("db").await.unwrap().nonce;
    let req = p::encode(&p::AttestRequest {
        resource: "db".into(),
        nonce,
        tee: p::TeeKind::Snp,
        evidence: vec![0; 8],
        certs: vec![],
        hpke_public_key: vec![1; 32],
    })
    .unwrap();
    let at = req
        .windows(4)
        .position(|w| w == [0x63, b's', b'n', b'p'])
        .unwrap();
    let int_tee = [&req[..at], &[0x00], &req[at + 4..]].concat();
    let (status, _) = c
        .send(hyper::Method::POST, p::PATH_ATTEST, Some(int_tee))
        .await
        .unwrap();
    assert_eq!(status, hyper::StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_quote_only_a_short_prefix_of_the_input() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let mut c = f.client(s.addr);
    let name = "N".repeat(65_000);
    let e = c.challenge(&name).await.unwrap_err();
    let ClientError::Refused { code, message, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(code, "MALFORMED");
    assert!(
        message.len() < 400 && message.contains("65000 bytes"),
        "{}",
        message.len()
    );
    let mut admin = f.admin(s.addr);
    let huge_policy = format!("[snp]\nmeasurements = [\"{}\"]\n", "q".repeat(60_000));
    let e = admin
        .put_secret("db", b"v", &huge_policy)
        .await
        .unwrap_err();
    let ClientError::Refused { message, .. } = &e else {
        panic!("{e}");
    };
    assert!(message.len() <= 400, "{}", message.len());
    let (status, body) = admin
        .send(
            hyper::Method::GET,
            &format!("{}/{}", p::PATH_ADMIN_SECRETS, "é".repeat(4000)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, hyper::StatusCode::BAD_REQUEST);
    assert!(body.len() < 500, "{}", body.len());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_challenge_answers_alike_for_unknown_known_and_unreadable_resources() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let mut admin = f.admin(s.addr);
    admin.put_secret("db", b"v", ALLOW_ALL).await.unwrap();
    admin.put_secret("broken", b"v", ALLOW_ALL).await.unwrap();
    s.stop().await;
    // A record that no longer decrypts (here: tampered).
    let record = f.path("state/secrets/broken.secret");
    let mut bytes = std::fs::read(&record).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&record, bytes).unwrap();
    let s = Running::start(&f.config()).await;
    let state = f.path("state").display().to_string();
    let (mut answers, mut refusals) = (Vec::new(), Vec::new());
    for name in ["db", "nope", "broken"] {
        let raw = raw_exchange(
            &f,
            s.addr,
            &post(
                p::PATH_CHALLENGE,
                "content-type: application/cbor\r\n",
                &p::encode(&p::ChallengeRequest {
                    resource: name.into(),
                })
                .unwrap(),
            ),
        )
        .await;
        let (status, body) = status_and_body(&raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(
            !text.contains(&state) && !text.contains("secrets/"),
            "{text}"
        );
        let r: p::ChallengeResponse = cvm_keys::cbor::from_slice(&body).unwrap();
        answers.push((status, r.nonce.len(), body.len()));
        // Attesting with garbage: the same refusal whichever the name.
        let mut c = f.client(s.addr);
        let e = c
            .attest(&p::AttestRequest {
                resource: name.into(),
                nonce: r.nonce,
                tee: p::TeeKind::Snp,
                evidence: vec![0; 1184],
                certs: vec![],
                hpke_public_key: vec![1; 32],
            })
            .await
            .unwrap_err();
        assert!(!e.to_string().contains(&state), "{e}");
        let ClientError::Refused { status, code, .. } = e else {
            panic!("{name}: {e}");
        };
        refusals.push((status, code));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert!(refusals.iter().all(|r| *r == refusals[0]), "{refusals:?}");
    assert_eq!(refusals[0].0, 403, "{refusals:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_attempts_are_audited() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    let mut anon = f.client(s.addr);
    assert!(anon.list_secrets().await.is_err());
    assert!(anon.put_secret("db", b"v", ALLOW_ALL).await.is_err());
    // A client certificate from another CA: the handshake fails, and that is recorded too.
    let (mut foreign, _other_ca) = f.foreign_admin(s.addr);
    assert!(foreign.list_secrets().await.is_err());
    // The failed handshake's record is written by the service after the client saw the failure.
    let mut admin = f.admin(s.addr);
    let (mut audit, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        audit = admin.audit().await.unwrap();
        refused = audit
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["event"] == "admin_refused")
            .collect();
        if refused.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reasons: Vec<&str> = refused
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "ADMIN_CERT_REQUIRED",
            "ADMIN_CERT_REQUIRED",
            "ADMIN_CERT_INVALID"
        ],
        "{audit:?}"
    );
    assert_eq!(refused[1]["resource"], "db");
    assert!(
        refused
            .iter()
            .all(|r| r["verdict"] == "refuse" && r["peer"].is_string())
    );
    s.stop().await;
}

#[tokio::test]
async fn the_bind_error_of_a_missing_kek_names_its_key() {
    let f = Fixture::new("", "");
    std::fs::remove_file(f.path("kek")).unwrap();
    let e = Server::bind(&f.config()).await.unwrap_err();
    assert!(matches!(e, ServeError::Preflight(_)), "{e}");
    assert!(e.to_string().starts_with("store.kek_file = "), "{e}");
}
