//! One admitted connection, from the TLS handshake to its close. Every phase has a deadline:
//!
//! 1. the TLS handshake within `header_timeout_secs`;
//! 2. each request's head (request line and headers, at most `max_header_bytes`) within
//!    `header_timeout_secs` of when the service starts waiting for it, idle keep-alive time included;
//! 3. each request's body within `body_timeout_secs` (in [`super::service`]);
//! 4. each answer taken by the client within `write_timeout_secs` once the socket stops taking it
//!    ([`super::deadline`]).
//!
//! Requests on one connection are answered one at a time; those a client sends ahead of reading the answers
//! (pipelined) wait in the connection's read buffer of at most `max_header_bytes`, the rest stays unread in
//! the kernel, and after `max_requests_per_connection` answers the connection is closed.

use super::deadline::WriteDeadline;
use super::service::{Peer, Service};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The per-connection limits of [`super::config::Limits`].
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// TLS handshake, and each request head.
    pub header_timeout: Duration,
    /// Each answer, once the socket stops taking it.
    pub write_timeout: Duration,
    /// Request head and read buffer size.
    pub max_header_bytes: usize,
    /// Answers per connection.
    pub max_requests: u32,
}

impl From<&super::config::Limits> for ConnectionLimits {
    fn from(l: &super::config::Limits) -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(l.header_timeout_secs),
            write_timeout: Duration::from_secs(l.write_timeout_secs),
            max_header_bytes: l.max_header_bytes,
            max_requests: l.max_requests_per_connection,
        }
    }
}

/// Serve one connection until it closes, fails a deadline, or `stop` turns true (then in-flight requests
/// finish and the connection closes).
pub async fn serve(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    service: Arc<Service>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let stats = &service.metrics().connections;
    let io = WriteDeadline::new(tcp, limits.write_timeout, stats.write_timeouts.clone());
    let tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            if refused_client_certificate(&e) {
                service
                    .audit_refused_admin(addr, None, "ADMIN_CERT_INVALID")
                    .await;
            }
            return;
        }
        Err(_) => {
            stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let admin = tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    let peer = Peer { addr, admin };
    let answered = Arc::new(AtomicU32::new(0));
    let svc_service = service.clone();
    let svc = service_fn(move |req| {
        let service = svc_service.clone();
        let n = answered.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        async move {
            let mut reply = service.handle(req, peer).await;
            if n >= limits.max_requests {
                // hyper closes the connection after an answer that says so.
                reply
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                if n == limits.max_requests {
                    service
                        .metrics()
                        .connections
                        .request_limit_closes
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, std::convert::Infallible>(reply)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if result.is_err_and(|e| e.is_timeout()) {
        stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a failed handshake failed because the client's certificate was refused (a certificate not from
/// the admin CA): an admin attempt to audit.
fn refused_client_certificate(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}
