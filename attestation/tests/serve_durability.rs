//! The real binary killed with SIGKILL in the middle of a burst of secret writes: every acknowledged write is
//! intact afterwards, the store is readable, and the service starts again on the same state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use cvm_attest::store::SecretStore;
use serve_common::{ALLOW_ALL, Fixture, Process};
use std::sync::{Arc, Mutex};

/// Writes the server acknowledged: (name, value).
type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let f = Fixture::new("", "");
    let mut server = Process::start(&f.path("config.toml"));
    let addr = server.addr;
    let acked: Acked = Arc::default();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let mut admin = f.admin(addr);
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u32.. {
                // Fresh names and one name overwritten in sequence per writer.
                let (name, value) = if i % 2 == 0 {
                    (
                        format!("w{writer}-{i}"),
                        format!("value {writer} {i}").into_bytes(),
                    )
                } else {
                    (format!("w{writer}-latest"), i.to_be_bytes().to_vec())
                };
                match admin.put_secret(&name, &value, ALLOW_ALL).await {
                    Ok(_) => acked.lock().unwrap().push((name, value)),
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the burst run, then kill the server without warning.
    for _ in 0..3000 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if acked.lock().unwrap().len() >= 60 {
            break;
        }
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 60);

    let kek = cvm_keys::Key256::read_file(&f.path("kek")).unwrap();
    let store = SecretStore::open(&f.path("state"), &kek).await.unwrap();
    // Every secret the manifest names decrypts and is its current record (no torn writes, no half-done
    // change), and no record lies outside the manifest.
    for name in store.list().await.unwrap() {
        store
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
    let mut latest: std::collections::HashMap<String, u32> = Default::default();
    for (name, value) in &acked {
        let got = store
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
        if name.ends_with("-latest") {
            let v = u32::from_be_bytes(value.as_slice().try_into().unwrap());
            latest.insert(name.clone(), v);
        } else {
            assert_eq!(&got.value[..], &value[..]);
        }
    }
    for (name, last_acked) in latest {
        let got = store.get(&name).await.unwrap();
        let v = u32::from_be_bytes(got.value.as_slice().try_into().unwrap());
        assert!(
            v >= last_acked,
            "{name}: {v} is older than the acknowledged {last_acked}"
        );
    }
    // And the service starts again on the same state.
    let server = Process::start(&f.path("config.toml"));
    let names = f.admin(server.addr).list_secrets().await.unwrap();
    assert!(
        names.len()
            >= acked
                .iter()
                .filter(|(n, _)| !n.ends_with("-latest"))
                .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::new("", "");
    let mut server = Process::start(&f.path("config.toml"));
    f.admin(server.addr)
        .put_secret("db", b"v", ALLOW_ALL)
        .await
        .unwrap();
    let tls = cvm_attest::client::tls_config(&f.path("pki/ca.pem"), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let body = cvm_attest::protocol::encode(&cvm_attest::protocol::ChallengeRequest {
        resource: "db".into(),
    })
    .unwrap();
    let head = format!(
        "POST /v1/challenge HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/cbor\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..2]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // SIGTERM while the request is in flight.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // New connections are no longer accepted...
    assert!(f.client(server.addr).challenge("db").await.is_err());
    // ...but the request in flight completes.
    stream.write_all(&body[2..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
