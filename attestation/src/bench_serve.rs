//! `cvm-attest bench serve`: the service's load generator. It sets up a simulated-mode service in a temporary
//! directory (sim chain, CA, KEK, one secret), starts `cvm-attest serve` as a child process, and runs N
//! concurrent HTTPS clients doing the full flow (challenge → fresh simulated evidence bound to the nonce →
//! attest → open the secret) with SNP-format and TDX-format evidence. Each client keeps its connection alive
//! (and TLS sessions resume through the shared client configuration), so handshakes do not dominate.
//!
//! It reports attestations/s, p50/p99 latency (of the attest request, and of the whole flow), errors, and the
//! server's CPU time per attestation (from the child's `process_cpu_seconds_total`, i.e. its /proc stat)
//! divided by the cost of one raw ring signature verification measured in the same run: P-384 (SNP report
//! signature) and P-256 (TDX quote signature).

use crate::client::{Client, ClientError, Evidence, EvidenceSource, tls_config};
use crate::protocol::TeeKind;
use crate::server::metrics::sample;
use crate::sim::{self, InitOptions, Simulator, SnpRequest, TdxRequest};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Options of `cvm-attest bench serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent HTTPS clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of measurement per evidence kind (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Evidence kinds: snp, tdx or both.
    #[arg(long, default_value = "both")]
    pub tee: String,
    /// Total attestations per second to offer (paced, open loop); 0: every client as fast as it can.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Worker threads of the server (default: all cores).
    #[arg(long)]
    pub server_threads: Option<usize>,
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up files failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The service failed.
    #[error("client: {0}")]
    Client(#[from] ClientError),
}

fn setup<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// The measurement every benchmark guest reports.
const MEASUREMENT: [u8; 48] = [0x42; 48];

struct SimSource {
    sim: Arc<Simulator>,
    tee: TeeKind,
}

impl EvidenceSource for SimSource {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String> {
        let evidence = match self.tee {
            TeeKind::Snp => self.sim.amd.snp_report(&SnpRequest {
                report_data: *report_data,
                measurement: MEASUREMENT,
                ..SnpRequest::default()
            }),
            TeeKind::Tdx => self.sim.intel.tdx_quote(&TdxRequest {
                report_data: *report_data,
                mrtd: MEASUREMENT,
                ..TdxRequest::default()
            }),
        }
        .map_err(|e| e.to_string())?;
        Ok(Evidence {
            tee: self.tee,
            evidence,
            certs: Vec::new(),
        })
    }
}

/// One run's figures.
#[derive(Debug)]
pub struct RunResult {
    /// Evidence kind.
    pub tee: TeeKind,
    /// Successful attestations.
    pub ok: u64,
    /// Failed flows.
    pub errors: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Attest request latencies, sorted (seconds).
    pub attest_latency: Vec<f64>,
    /// Whole-flow latencies, sorted (seconds).
    pub flow_latency: Vec<f64>,
    /// Server CPU seconds used during the run.
    pub server_cpu: f64,
    /// CPU seconds of one raw verification of this evidence kind, measured during the run.
    pub raw_under_load: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(idx).copied().unwrap_or(f64::NAN)
}

/// CPU seconds this thread has run, from /proc/thread-self/schedstat (nanoseconds on the CPU): unlike wall
/// time it does not count the time other processes on a busy box take.
fn thread_cpu_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// CPU seconds per raw ring verification of `alg` over a `len`-byte message, measured for about `budget` of
/// this thread's CPU time.
fn raw_verify_secs(
    signing: &'static signature::EcdsaSigningAlgorithm,
    verifying: &'static signature::EcdsaVerificationAlgorithm,
    len: usize,
    budget: Duration,
) -> Result<f64, BenchError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).map_err(setup)?;
    let key = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).map_err(setup)?;
    let message = vec![0xa5u8; len];
    let sig = key.sign(&rng, &message).map_err(setup)?;
    let public = signature::UnparsedPublicKey::new(verifying, key.public_key().as_ref().to_vec());
    let cpu = || thread_cpu_secs().ok_or_else(|| setup("cannot read /proc/thread-self/schedstat"));
    let start = cpu()?;
    let mut n = 0u64;
    while cpu()? - start < budget.as_secs_f64() || n < 50 {
        for _ in 0..10 {
            public.verify(&message, sig.as_ref()).map_err(setup)?;
        }
        n += 10;
    }
    Ok((cpu()? - start) / n as f64)
}

struct ServerProcess {
    child: Child,
    url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, threads: Option<usize>) -> Result<ServerProcess, BenchError> {
    let exe = std::env::current_exe().map_err(setup)?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = threads {
        cmd.env("TOKIO_WORKER_THREADS", t.to_string());
    }
    let mut child = cmd.spawn().map_err(setup)?;
    let stderr = child.stderr.take().ok_or_else(|| setup("no stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("cvm-attest: listening on ") {
                    break addr.to_owned();
                }
            }
            _ => {
                let _ = child.kill();
                return Err(setup("the server exited before listening"));
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(ServerProcess { child, url })
}

fn prepare(dir: &Path) -> Result<PathBuf, BenchError> {
    let sim_dir = dir.join("sim");
    sim::init(&sim_dir, &InitOptions::default()).map_err(setup)?;
    cvm_keys::ca::init_ca(&dir.join("pki"), &["127.0.0.1".to_string()]).map_err(setup)?;
    cvm_keys::Key256::generate()
        .map_err(setup)?
        .write_new_file(&dir.join("kek"))
        .map_err(setup)?;
    let config = "listen = \"127.0.0.1:0\"\nmode = \"simulated\"\nsim_dir = \"sim\"\n[tls]\n\
                  cert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nadmin_client_ca = \"pki/ca.pem\"\n\
                  [store]\ndir = \"state\"\nkek_file = \"kek\"\n[limits]\nnonce_ttl_secs = 120\n";
    std::fs::write(dir.join("config.toml"), config).map_err(setup)?;
    Ok(sim_dir)
}

/// The server's CPU seconds so far (a fresh connection: an idle one may have been closed by the server).
async fn server_cpu(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<f64, BenchError> {
    let text = Client::new(url, tls)?.metrics().await?;
    sample(&text, "process_cpu_seconds_total")
        .ok_or_else(|| setup("the server does not report process_cpu_seconds_total"))
}

async fn run_one(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    sim: Arc<Simulator>,
    tee: TeeKind,
    args: &BenchArgs,
) -> Result<RunResult, BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let per_client_interval = if args.rate > 0.0 {
        Some(Duration::from_secs_f64(args.clients as f64 / args.rate))
    } else {
        None
    };
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let mut client = Client::new(url, tls.clone())?;
        let source = SimSource {
            sim: sim.clone(),
            tee,
        };
        let stop = stop.clone();
        let measuring = measuring.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            let (mut attest_lat, mut flow_lat) = (Vec::new(), Vec::new());
            // Spread paced clients over the interval.
            let mut next = Instant::now()
                + per_client_interval.map_or(Duration::ZERO, |d| d.mul_f64(i as f64 / 64.0));
            while !stop.load(Ordering::Relaxed) {
                if let Some(d) = per_client_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += d;
                }
                let start = Instant::now();
                let result = flow(&mut client, &source).await;
                let flow_secs = start.elapsed().as_secs_f64();
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok(attest_secs) => {
                        ok += 1;
                        attest_lat.push(attest_secs);
                        flow_lat.push(flow_secs);
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("bench: client {i}: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (ok, errors, attest_lat, flow_lat)
        }));
    }
    // Warm-up: connections, chain caches.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = server_cpu(url, tls.clone()).await?;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    // The raw verification's cost under the same load (same caches, same neighbours), on its own thread.
    let raw_tee = tee;
    let raw = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        match raw_tee {
            TeeKind::Snp => raw_verify_secs(
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                &signature::ECDSA_P384_SHA384_FIXED,
                0x2a0,
                Duration::from_millis(300),
            ),
            TeeKind::Tdx => raw_verify_secs(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &signature::ECDSA_P256_SHA256_FIXED,
                632,
                Duration::from_millis(100),
            ),
        }
    });
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let raw_under_load = raw
        .join()
        .map_err(|_| setup("raw verify thread panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    let cpu1 = server_cpu(url, tls.clone()).await?;
    stop.store(true, Ordering::Relaxed);
    let mut r = RunResult {
        tee,
        ok: 0,
        errors: 0,
        seconds,
        attest_latency: Vec::new(),
        flow_latency: Vec::new(),
        server_cpu: cpu1 - cpu0,
        raw_under_load,
    };
    for t in tasks {
        let (ok, errors, a, f) = t.await.map_err(setup)?;
        r.ok += ok;
        r.errors += errors;
        r.attest_latency.extend(a);
        r.flow_latency.extend(f);
    }
    r.attest_latency.sort_by(f64::total_cmp);
    r.flow_latency.sort_by(f64::total_cmp);
    Ok(r)
}

/// One full flow; returns the attest request's latency.
async fn flow(client: &mut Client, source: &SimSource) -> Result<f64, ClientError> {
    let challenge = client.challenge("bench").await?;
    let keys = cvm_keys::hpke::HpkeKeyPair::generate()
        .map_err(|e| ClientError::Evidence(e.to_string()))?;
    let rd = cvm_keys::binding::report_data(&challenge.nonce, keys.public_key(), b"bench");
    let Evidence {
        tee,
        evidence,
        certs,
    } = source.evidence(&rd).map_err(ClientError::Evidence)?;
    let start = Instant::now();
    let resp = client
        .attest(&crate::protocol::AttestRequest {
            resource: "bench".into(),
            nonce: challenge.nonce,
            tee,
            evidence,
            certs,
            hpke_public_key: keys.public_key().to_vec(),
        })
        .await?;
    let secs = start.elapsed().as_secs_f64();
    let value = crate::client::open_secret(&keys, "bench", &resp.secret)?;
    if value.as_slice() != b"bench secret value" {
        return Err(ClientError::Open("the secret differs".into()));
    }
    Ok(secs)
}

/// Run the benchmark and return the report text.
pub fn run(args: &BenchArgs) -> Result<String, BenchError> {
    let tees: Vec<TeeKind> = match args.tee.as_str() {
        "snp" => vec![TeeKind::Snp],
        "tdx" => vec![TeeKind::Tdx],
        "both" => vec![TeeKind::Snp, TeeKind::Tdx],
        other => return Err(setup(format!("--tee {other:?}: expected snp, tdx or both"))),
    };
    let dir = tempfile_dir()?;
    let sim_dir = prepare(dir.path())?;
    let sim = Arc::new(Simulator::load(&sim_dir).map_err(setup)?);
    let server = start_server(dir.path(), args.server_threads)?;
    let (p384_before, p256_before) = raw_verifies()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(setup)?;
    let results = runtime.block_on(async {
        let ca = dir.path().join("pki/ca.pem");
        let admin_tls = tls_config(
            &ca,
            Some((
                &dir.path().join("pki/admin.pem"),
                &dir.path().join("pki/admin.key"),
            )),
        )?;
        let mut admin = Client::new(&server.url, admin_tls)?;
        let m = hex::encode(MEASUREMENT);
        admin
            .put_secret(
                "bench",
                b"bench secret value",
                &format!("[snp]\nmeasurements = [\"{m}\"]\n[tdx]\nmrtd = [\"{m}\"]\n"),
            )
            .await?;
        let tls = tls_config(&ca, None)?;
        let mut results = Vec::new();
        for tee in &tees {
            results.push(run_one(&server.url, tls.clone(), sim.clone(), *tee, args).await?);
        }
        Ok::<_, BenchError>(results)
    })?;
    drop(server);
    // Raw costs before and after the load, averaged: the box's state drifts during a run.
    let (p384_after, p256_after) = raw_verifies()?;
    let p384 = (p384_before + p384_after) / 2.0;
    let p256 = (p256_before + p256_after) / 2.0;
    Ok(report(args, p384, p256, &results))
}

/// CPU seconds of one raw P-384 verification over an SNP report's signed bytes and one raw P-256
/// verification over a TDX quote's signed bytes.
fn raw_verifies() -> Result<(f64, f64), BenchError> {
    let p384 = raw_verify_secs(
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        &signature::ECDSA_P384_SHA384_FIXED,
        0x2a0,
        Duration::from_millis(500),
    )?;
    let p256 = raw_verify_secs(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &signature::ECDSA_P256_SHA256_FIXED,
        632,
        Duration::from_millis(300),
    )?;
    Ok((p384, p256))
}

fn tempfile_dir() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("cvm-bench-serve")
        .tempdir()
        .map_err(setup)
}

fn report(args: &BenchArgs, p384: f64, p256: f64, results: &[RunResult]) -> String {
    let mut out = format!(
        "cvm-attest bench serve: {} clients, {} s per kind, {}\n\
         raw ring verify (this run, CPU time, mean of before and after): P-384 {:.1} us ({:.0}/s), P-256 {:.1} us ({:.0}/s)\n",
        args.clients,
        args.seconds,
        if args.rate > 0.0 {
            format!("paced at {} attestations/s offered", args.rate)
        } else {
            "closed loop (each client as fast as it can)".into()
        },
        p384 * 1e6,
        1.0 / p384,
        p256 * 1e6,
        1.0 / p256
    );
    let mut rates = Vec::new();
    for r in results {
        let (name, raw, raw_name) = match r.tee {
            TeeKind::Snp => ("SNP", p384, "P-384"),
            TeeKind::Tdx => ("TDX", p256, "P-256"),
        };
        let rate = r.ok as f64 / r.seconds;
        rates.push(rate);
        let cpu_per = if r.ok > 0 {
            r.server_cpu / r.ok as f64
        } else {
            f64::NAN
        };
        out.push_str(&format!(
            "{name}: {} attestations in {:.1} s = {:.0}/s, errors {}, attest p50 {:.2} ms p99 {:.2} ms, \
             flow p50 {:.2} ms p99 {:.2} ms, server CPU {:.0} us/attestation = {:.2} x raw {raw_name} verify \
             ({:.2} x the {:.0} us it took under this load)\n",
            r.ok,
            r.seconds,
            rate,
            r.errors,
            percentile(&r.attest_latency, 0.5) * 1e3,
            percentile(&r.attest_latency, 0.99) * 1e3,
            percentile(&r.flow_latency, 0.5) * 1e3,
            percentile(&r.flow_latency, 0.99) * 1e3,
            cpu_per * 1e6,
            cpu_per / raw,
            cpu_per / r.raw_under_load,
            r.raw_under_load * 1e6
        ));
    }
    if let [snp, tdx] = rates.as_slice() {
        out.push_str(&format!("TDX/SNP attestations/s: {:.2}\n", tdx / snp));
    }
    out
}
