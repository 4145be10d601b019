//! The real service binary against hostile clients on real loopback sockets: clients that pipeline requests
//! and never read the answers, an address that churns thousands of idle connections, a burst of large
//! unfinished requests, and long-lived pipelining connections. Attackers connect from 127.0.0.2 (all of
//! 127.0.0.0/8 is loopback on Linux), the legitimate client from 127.0.0.1. Every loop ends by itself (a
//! count or a deadline); the bounds on waiting are liveness limits far above what the service needs, not
//! timings under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use serve_common::{ALLOW_ALL, Fixture, Process, metric, rss_bytes, tcp_from, tls_stream};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const LEGITIMATE_WITHIN: Duration = Duration::from_secs(20);

/// Run `what` and fail the test if it does not finish within [`LEGITIMATE_WITHIN`].
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LEGITIMATE_WITHIN, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {LEGITIMATE_WITHIN:?}"))
}

/// The real binary with these limits, holding the secret "db".
async fn serving_db(limits: &str) -> (Fixture, Process) {
    let f = Fixture::new("", limits);
    let server = Process::start(&f.path("config.toml"));
    f.admin(server.addr)
        .put_secret("db", b"v", ALLOW_ALL)
        .await
        .unwrap();
    (f, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_pipeline_and_never_read_are_cut_off_and_others_served() {
    // Eight connections fill the service; a long header timeout, so only the write deadline can free them.
    let (f, server) = serving_db(
        "[limits]\nmax_connections = 8\nwrite_timeout_secs = 2\nheader_timeout_secs = 120\n",
    )
    .await;
    let addr = server.addr;
    let tls = f.anon_tls();
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let tls = tls.clone();
        attackers.push(tokio::spawn(async move {
            // A small receive window that is never read: the service's answers back up at once.
            let mut s = tls_stream(tls, addr, IpAddr::from(ATTACKER), Some(4096))
                .await
                .unwrap();
            // Requests keep coming (more than the kernel's buffers take in before the service stops
            // reading); the answers are never read. A write fails once the service has cut the connection.
            let batch = b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".repeat(64);
            let end = Instant::now() + Duration::from_secs(90);
            while Instant::now() < end {
                let left = end.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.write_all(&batch)).await {
                    Ok(Ok(())) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Ok(Err(_)) => return true,
                    Err(_) => return false,
                }
            }
            false
        }));
    }
    // Let the attackers take every connection and block the service's writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = f.client(addr);
    let status = within("a legitimate request", c.challenge("db")).await;
    assert!(status.is_ok(), "{status:?}");
    for a in attackers {
        assert!(a.await.unwrap(), "an attacker was never cut off");
    }
    let cut = metric(
        &f,
        addr,
        "cvm_attest_connections_closed_total{reason=\"write_timeout\"}",
    )
    .await;
    assert!(cut >= 8.0, "{cut}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legitimate_client_is_served_while_2000_idle_connections_churn() {
    // Default limits, but idle connections may hold a place for 30 s before their handshake times out.
    let (f, server) = serving_db("[limits]\nheader_timeout_secs = 30\n").await;
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU32::new(0));
    let mut churn = Vec::new();
    for _ in 0..2000 {
        let (stop, connected) = (stop.clone(), connected.clone());
        churn.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let Ok(Ok(mut s)) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tcp_from(addr, IpAddr::from(ATTACKER), None),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                connected.fetch_add(1, Ordering::Relaxed);
                // Idle until the service closes it (or the test ends), then reconnect at once.
                let mut byte = [0u8; 1];
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match tokio::time::timeout(Duration::from_millis(500), s.read(&mut byte)).await
                    {
                        Ok(_) => break,
                        Err(_) => continue,
                    }
                }
            }
        }));
    }
    // Let the churn get going: every attacker connected once (or a few seconds passed).
    for _ in 0..50 {
        if connected.load(Ordering::Relaxed) >= 4000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    within("/healthz", async {
        let (status, _) = f
            .client(addr)
            .send(hyper::Method::GET, cvm_attest::protocol::PATH_HEALTHZ, None)
            .await
            .unwrap();
        assert_eq!(status, hyper::StatusCode::OK);
    })
    .await;
    within("a legitimate challenge", async {
        f.client(addr).challenge("db").await.unwrap();
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.await.unwrap();
    }
    let churned = connected.load(Ordering::Relaxed);
    assert!(churned > 2000, "only {churned} connections churned");
    let text = f.client(addr).metrics().await.unwrap();
    let sample = |series: &str| cvm_attest::server::metrics::sample(&text, series).unwrap_or(0.0);
    let refused =
        sample("cvm_attest_connections_refused_total{reason=\"per_address_connections\"}");
    assert!(refused > 0.0, "{text}");
    assert_eq!(
        sample("cvm_attest_limit{limit=\"max_connections_per_address\"}"),
        64.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_idle_after_a_burst_of_large_unfinished_requests() {
    // The attacker's address may open all 300 connections at once: the bound under test is the buffers'.
    let f = Fixture::new(
        "",
        "[limits]\nmax_connections_per_address = 1000\nconnection_rate_per_address = 1000\n\
         connection_burst_per_address = 1000\nheader_timeout_secs = 120\n",
    );
    let server = Process::start(&f.path("config.toml"));
    let addr = server.addr;
    let pid = server.child.id();
    f.admin(addr)
        .put_secret("db", b"v", ALLOW_ALL)
        .await
        .unwrap();
    f.client(addr).challenge("db").await.unwrap();
    let idle = rss_bytes(pid);
    let tls = f.anon_tls();
    let mut burst = Vec::new();
    for _ in 0..300 {
        let tls = tls.clone();
        burst.push(tokio::spawn(async move {
            let mut s = tls_stream(tls, addr, IpAddr::from(ATTACKER), None)
                .await
                .unwrap();
            // A 400 KB header that never ends.
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ")
                .await;
            let pad = vec![b'a'; 16 * 1024];
            for _ in 0..25 {
                if tokio::time::timeout(Duration::from_secs(10), s.write_all(&pad))
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    break;
                }
            }
            s
        }));
    }
    let mut held = Vec::new();
    for b in burst {
        held.push(b.await.unwrap());
    }
    let peak = rss_bytes(pid);
    drop(held);
    // Wait until the service has let go of every connection.
    within("the burst's connections to close", async {
        while metric(&f, addr, "cvm_attest_connections_open").await > 1.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(pid);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "server RSS: idle {:.1} MiB, during the burst {:.1} MiB, after {:.1} MiB",
        mib(idle),
        mib(peak),
        mib(after)
    );
    assert!(
        after < idle + (32 << 20),
        "memory did not return to idle: {:.1} MiB after, {:.1} MiB idle",
        mib(after),
        mib(idle)
    );
    assert!(
        peak < idle + (96 << 20),
        "the burst held {:.1} MiB",
        mib(peak - idle)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_answers_at_most_max_requests_per_connection() {
    let f = Fixture::new("", "[limits]\nmax_requests_per_connection = 3\n");
    let server = Process::start(&f.path("config.toml"));
    let addr = server.addr;
    let mut s = tls_stream(f.anon_tls(), addr, IpAddr::from([127, 0, 0, 1]), None)
        .await
        .unwrap();
    s.write_all(&b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".repeat(5))
        .await
        .unwrap();
    let mut answers = Vec::new();
    within("the answers", s.read_to_end(&mut answers))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&answers);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
    assert_eq!(
        metric(
            &f,
            addr,
            "cvm_attest_connections_closed_total{reason=\"request_limit\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &f,
            addr,
            "cvm_attest_limit{limit=\"max_requests_per_connection\"}"
        )
        .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_max_header_bytes_is_refused_with_431() {
    let f = Fixture::new("", "[limits]\nmax_header_bytes = 8192\n");
    let server = Process::start(&f.path("config.toml"));
    let mut s = tls_stream(
        f.anon_tls(),
        server.addr,
        IpAddr::from([127, 0, 0, 1]),
        None,
    )
    .await
    .unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = within("the answer", s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}
