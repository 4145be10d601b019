//! `cvm-attest serve`: the HTTPS attestation service (DESIGN.md "Protocol").
//!
//! - [`config`]: the configuration file and the ranges of its values.
//! - [`preflight`]: the files it names (key permissions, the admin CA) checked before starting.
//! - [`tls`]: TLS 1.3 with optional admin client certificates.
//! - [`admission`]: per-address connection limits, decided at accept.
//! - [`connection`]: one connection and the deadlines of its phases ([`deadline`] for writes).
//! - [`appraise`]: the verifiers for the configured mode.
//! - [`service`]: routing, the endpoints and the admin API.
//! - [`metrics`]: Prometheus counters.
//!
//! [`Server::bind`] opens everything and listens; [`Server::run`] accepts connections until the shutdown
//! future completes, then stops accepting, lets in-flight requests finish (up to the grace period) and returns.

pub mod admission;
pub mod appraise;
pub mod config;
pub mod connection;
pub mod deadline;
pub mod metrics;
pub mod preflight;
pub mod service;
pub mod tdx_backend;
pub mod tls;

pub use config::{Config, Mode};
pub use service::{Peer, Service};

use admission::{Admission, AdmissionLimits};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Errors starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A file the configuration names is unsafe or unusable.
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
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
    warnings: Vec<String>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Check the files `config` names, set up the service and listen on its address. Warnings (a loose
    /// state directory, simulated mode) are logged and kept in [`Server::warnings`].
    pub async fn bind(config: &Config) -> Result<Server, ServeError> {
        let mut warnings = preflight::check(config)?;
        let tls = tls::server_config(
            &config.tls.cert,
            &config.tls.key,
            &config.tls.admin_client_ca,
        )?;
        let service = Service::new(config).await?;
        warnings.extend(service.store_warnings());
        if config.mode == Mode::Simulated {
            warnings.push(
                "WARNING: simulated mode: only the cvm simulator's roots are trusted, real AMD and Intel \
                 evidence is refused, and every token says simulated: true. Never use this for real secrets."
                    .into(),
            );
        }
        if config.kbs.enabled && config.kbs.allow_sample {
            warnings.push(
                "WARNING: [kbs] allow_sample = true: unsigned `sample` evidence is accepted over the KBS protocol \
                 (simulated mode only); its tokens say simulated."
                    .into(),
            );
        }
        for w in &warnings {
            eprintln!("cvm-attest: {w}");
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
            warnings,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What [`Server::bind`] warned about.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Serve until `shutdown` completes; then finish in-flight requests (up to the grace period).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let max = self.limits.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let admission = Admission::new(
            AdmissionLimits {
                per_address: self.limits.max_connections_per_address,
                rate: f64::from(self.limits.connection_rate_per_address),
                burst: f64::from(self.limits.connection_burst_per_address),
            },
            max,
        );
        let connection_limits = connection::ConnectionLimits::from(&self.limits);
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
            let stats = &self.service.metrics().connections;
            let admitted = match admission.admit(addr.ip(), Instant::now()) {
                Ok(a) => a,
                Err(why) => {
                    // Closed before any TLS work; the permit goes back at once.
                    stats.refused(why);
                    continue;
                }
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let service = self.service.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let _held = (permit, admitted, Open(service.clone()));
                connection::serve(tcp, addr, acceptor, service, connection_limits, stop).await;
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

/// A connection being served; dropping it (however the task ends) counts it finished.
struct Open(Arc<Service>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .metrics()
            .connections
            .finished
            .fetch_add(1, Ordering::Relaxed);
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
