//! `cvm-attest serve`: the HTTPS attestation service (DESIGN.md "Protocol").
//!
//! - [`config`]: the configuration file.
//! - [`tls`]: TLS 1.3 with optional admin client certificates.
//! - [`appraise`]: the verifiers for the configured mode.
//! - [`service`]: routing and the endpoints.
//! - [`metrics`]: Prometheus counters.
//!
//! [`Server::bind`] opens everything and listens; [`Server::run`] accepts connections until the shutdown
//! future completes, then stops accepting, lets in-flight requests finish (up to the grace period) and returns.

pub mod appraise;
pub mod config;
pub mod metrics;
pub mod service;
pub mod tdx_backend;
pub mod tls;

pub use config::{Config, Mode};
pub use service::{Peer, Service};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Errors starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The service could not be set up.
    #[error(transparent)]
    Setup(#[from] service::SetupError),
    /// The listener failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// A bound, ready service.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    service: Arc<Service>,
    limits: config::Limits,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Set up the service for `config` and listen on its address.
    pub async fn bind(config: &Config) -> Result<Server, ServeError> {
        let tls = tls::server_config(
            &config.tls.cert,
            &config.tls.key,
            &config.tls.admin_client_ca,
        )?;
        let service = Service::new(config)?;
        if config.mode == Mode::Simulated {
            eprintln!(
                "cvm-attest: WARNING: simulated mode: only the cvm simulator's roots are trusted, real AMD and \
                 Intel evidence is refused, and every token says simulated: true. Never use this for real secrets."
            );
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            service: Arc::new(service),
            limits: config.limits.clone(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes; then finish in-flight requests (up to the grace period).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let max = self.limits.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (tcp, addr) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        eprintln!("cvm-attest: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let service = self.service.clone();
            let mut stop = stop_rx.clone();
            let header_timeout = Duration::from_secs(self.limits.header_timeout_secs);
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(tls)) = tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let admin = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let peer = Peer { addr, admin };
                let svc = service_fn(move |req| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(service.handle(req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = async { let _ = stop.wait_for(|s| *s).await; } => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let grace = Duration::from_secs(self.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            eprintln!("cvm-attest: shutdown grace period over; closing remaining connections");
        }
    }
}

/// `cvm-attest serve --config FILE`: run the service until SIGTERM or SIGINT.
pub fn serve_blocking(config_path: &std::path::Path) -> Result<(), ServeError> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async {
        let server = Server::bind(&config).await?;
        if let Ok(addr) = server.local_addr() {
            // Scripts and tests read this line to find an ephemeral port.
            eprintln!("cvm-attest: listening on https://{addr}");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ServeError::Runtime)?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("cvm-attest: shutting down: finishing in-flight requests");
        };
        server.run(shutdown).await;
        Ok(())
    })
}
