//! Shared set-up for the `serve_*` tests: a CA with server and admin certificates, a KEK, a configuration
//! file, and a service on an ephemeral loopback port (in-process or as the real binary).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cvm_attest::client::{Client, tls_config};
use cvm_attest::server::{Config, Server};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tokio::sync::oneshot;

/// A policy that lets any (non-debug) guest have the secret: tests that never attest use it.
pub const ALLOW_ALL: &str = "allow_any_measurement = true\n";

/// A directory with everything a service needs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// CA, KEK and config; `extra` is appended to the configuration (e.g. `mode`, `[limits]`).
    pub fn new(top: &str, limits: &str) -> Fixture {
        Fixture::with_store(
            top,
            "[store]\ndir = \"state\"\nkek_file = \"kek\"\n",
            limits,
        )
    }

    /// CA, KEK and config with `store` as its `[store]` table(s).
    pub fn with_store(top: &str, store: &str, limits: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        cvm_keys::ca::init_ca(&dir.path().join("pki"), &["127.0.0.1".to_string()]).unwrap();
        cvm_keys::Key256::generate()
            .unwrap()
            .write_new_file(&dir.path().join("kek"))
            .unwrap();
        let config = format!(
            "listen = \"127.0.0.1:0\"\n{top}\n[tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n\
             admin_client_ca = \"pki/ca.pem\"\n{store}{limits}\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Fixture { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> Config {
        Config::load(&self.path("config.toml")).unwrap()
    }

    /// The TLS configuration of an anonymous client.
    pub fn anon_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        tls_config(&self.path("pki/ca.pem"), None).unwrap()
    }

    /// An anonymous client.
    pub fn client(&self, addr: SocketAddr) -> Client {
        let tls = tls_config(&self.path("pki/ca.pem"), None).unwrap();
        Client::new(&format!("https://{addr}"), tls).unwrap()
    }

    /// A client with an admin certificate from another CA (the handshake fails), and that CA's directory.
    pub fn foreign_admin(&self, addr: SocketAddr) -> (Client, tempfile::TempDir) {
        let other = tempfile::tempdir().unwrap();
        cvm_keys::ca::init_ca(other.path(), &["127.0.0.1".to_string()]).unwrap();
        let tls = tls_config(
            &self.path("pki/ca.pem"),
            Some((
                &other.path().join("admin.pem"),
                &other.path().join("admin.key"),
            )),
        )
        .unwrap();
        (Client::new(&format!("https://{addr}"), tls).unwrap(), other)
    }

    /// A client with the admin certificate.
    pub fn admin(&self, addr: SocketAddr) -> Client {
        let tls = tls_config(
            &self.path("pki/ca.pem"),
            Some((&self.path("pki/admin.pem"), &self.path("pki/admin.key"))),
        )
        .unwrap();
        Client::new(&format!("https://{addr}"), tls).unwrap()
    }
}

/// A service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(config: &Config) -> Running {
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Running {
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

/// The real binary, `cvm-attest serve --config`, its stderr kept.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(config: &Path) -> Process {
        Process::try_start(config)
            .unwrap_or_else(|log| panic!("server exited before listening: {log}"))
    }

    /// The server, or what it printed before it exited without listening.
    pub fn try_start(config: &Path) -> Result<Process, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    log.lock().unwrap().push(line.clone());
                    if let Some(a) = line.strip_prefix("cvm-attest: listening on https://") {
                        break a.parse().unwrap();
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(log.lock().unwrap().join("\n"));
                }
            }
        };
        // Keep draining stderr so the server never blocks on it.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Ok(Process { child, addr, log })
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulator of the `serve_*` tests, made once per test binary (key generation is slow).
pub fn sim_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        cvm_attest::sim::init(
            &dir.path().join("sim"),
            &cvm_attest::sim::InitOptions {
                seed: Some(b"serve tests seed".to_vec()),
                ..cvm_attest::sim::InitOptions::default()
            },
        )
        .unwrap();
        dir
    })
    .path()
}

/// The simulator in [`sim_dir`].
pub fn simulator() -> &'static cvm_attest::sim::Simulator {
    static S: std::sync::OnceLock<cvm_attest::sim::Simulator> = std::sync::OnceLock::new();
    S.get_or_init(|| cvm_attest::sim::Simulator::load(&sim_dir().join("sim")).unwrap())
}

/// A TLS connection to the service made by hand (requests the protocol client would never send), from
/// `local` (any loopback address: 127.0.0.0/8 is all loopback on Linux) with an optional small receive
/// buffer (so that a client that does not read fills its window quickly).
pub async fn tls_stream(
    tls: std::sync::Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    local: std::net::IpAddr,
    recv_buffer: Option<u32>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tcp_from(addr, local, recv_buffer).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
}

/// A TCP connection to `addr` from `local` (port chosen by the kernel).
pub async fn tcp_from(
    addr: SocketAddr,
    local: std::net::IpAddr,
    recv_buffer: Option<u32>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect(addr).await
}

/// Send `request` (raw HTTP/1.1 bytes, which should say `connection: close`) over a fresh TLS connection
/// and return everything the service answers until it closes.
pub async fn raw_exchange(f: &Fixture, addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls_stream(f.anon_tls(), addr, [127, 0, 0, 1].into(), None)
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    s.flush().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out)).await;
    out
}

/// A POST of `body` to `path` with the given extra header lines (each ending in `\r\n`).
pub fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The status code and body of a raw HTTP/1.1 answer.
pub fn status_and_body(answer: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| answer[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// One sample of the server's metrics (0 when absent).
pub async fn metric(f: &Fixture, addr: SocketAddr, series: &str) -> f64 {
    let text = f.client(addr).metrics().await.unwrap();
    cvm_attest::server::metrics::sample(&text, series).unwrap_or(0.0)
}

/// The resident memory of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}
