//! Shared set-up for the agent tests: a simulated TEE (the attestation crate's simulator), a simulated PSP
//! socket speaking the launcher's wire messages, a fake configfs-tsm tree, and a `cvm-attest serve`
//! (simulated mode) on a loopback port, run in-process on its own thread.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cvm_agent::simsock::{ByteString, EvidenceRequest, EvidenceResponse, read_frame, write_frame};
use cvm_agent::tsm::TsmFs;
use cvm_attest::client::{Client, tls_config};
use cvm_attest::server::{Config, Server};
use cvm_attest::sim::{self, InitOptions, Simulator, SnpRequest, TdxRequest};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub const MEASUREMENT: [u8; 48] = [0x5a; 48];
pub const OTHER: [u8; 48] = [0x33; 48];

pub fn sim_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        sim::init(
            &dir.path().join("sim"),
            &InitOptions {
                seed: Some(b"agent tests seed".to_vec()),
                ..InitOptions::default()
            },
        )
        .unwrap();
        dir
    })
    .path()
}

pub fn simulator() -> &'static Simulator {
    static S: OnceLock<Simulator> = OnceLock::new();
    S.get_or_init(|| Simulator::load(&sim_dir().join("sim")).unwrap())
}

pub fn policy() -> String {
    let m = hex::encode(MEASUREMENT);
    format!("[snp]\nmeasurements = [\"{m}\"]\n[tdx]\nmrtd = [\"{m}\"]\n")
}

/// A service directory: CA, KEK, configuration.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(listen: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        cvm_keys::ca::init_ca(&dir.path().join("pki"), &["127.0.0.1".to_string()]).unwrap();
        cvm_keys::Key256::generate()
            .unwrap()
            .write_new_file(&dir.path().join("kek"))
            .unwrap();
        let sim = sim_dir().join("sim");
        let config = format!(
            "listen = \"{listen}\"\nmode = \"simulated\"\nsim_dir = {:?}\n[tls]\ncert = \"pki/server.pem\"\n\
             key = \"pki/server.key\"\nadmin_client_ca = \"pki/ca.pem\"\n[store]\ndir = \"state\"\n\
             kek_file = \"kek\"\n",
            sim.display().to_string()
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

    pub fn ca(&self) -> PathBuf {
        self.path("pki/ca.pem")
    }

    pub fn admin(&self, addr: SocketAddr) -> Client {
        let tls = tls_config(
            &self.ca(),
            Some((&self.path("pki/admin.pem"), &self.path("pki/admin.key"))),
        )
        .unwrap();
        Client::new(&format!("https://{addr}"), tls).unwrap()
    }
}

/// A service on its own thread and runtime; stopped on drop.
pub struct Service {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    pub fn start(f: &Fixture) -> Service {
        let config = f.config();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(&config).await.unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().unwrap();
        Service {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Registers a secret through the admin API.
    pub fn put(&self, f: &Fixture, name: &str, value: &[u8]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            f.admin(self.addr)
                .put_secret(name, value, &policy())
                .await
                .unwrap();
        });
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A simulated PSP socket (the launcher's wire messages) whose reports carry `measurement`.
pub struct PspSocket {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl PspSocket {
    pub fn start(measurement: [u8; 48]) -> PspSocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                while let Ok(body) = read_frame(&mut s, 4096) {
                    let req: EvidenceRequest = cvm_keys::cbor::from_slice(&body).unwrap();
                    let rd: [u8; 64] = req.report_data.0.as_slice().try_into().unwrap();
                    let sim = simulator();
                    // `--tee sim` asks for an SNP report, `--tee sim-tdx` for a TDX quote.
                    let resp = match req.tee.as_str() {
                        "snp" => EvidenceResponse {
                            evidence: ByteString(
                                sim.amd
                                    .snp_report(&SnpRequest {
                                        report_data: rd,
                                        measurement,
                                        ..SnpRequest::default()
                                    })
                                    .unwrap(),
                            ),
                            certs: vec![ByteString(sim.amd.vcek_der().to_vec())],
                        },
                        "tdx" => EvidenceResponse {
                            evidence: ByteString(
                                sim.intel
                                    .tdx_quote(&TdxRequest {
                                        report_data: rd,
                                        mrtd: measurement,
                                        ..TdxRequest::default()
                                    })
                                    .unwrap(),
                            ),
                            certs: vec![],
                        },
                        other => panic!("unexpected tee {other}"),
                    };
                    let resp = cvm_keys::cbor::to_vec(&resp).unwrap();
                    if write_frame(&mut s, &resp).is_err() {
                        break;
                    }
                }
            }
        });
        PspSocket { dir, path }
    }
}

/// What the fake configfs-tsm entry's `auxblob` does.
#[derive(Clone, Debug)]
pub enum Aux {
    /// The host's table with these certificates (default: the simulated VCEK).
    Table(Vec<cvm_agent::certtable::HostCert>),
    /// No `auxblob` file (a provider that hides it).
    Absent,
    /// Zero bytes: the host supplied no certificates (`sev_report_new` leaves `auxblob` unset).
    Empty,
    /// Reading fails with this errno.
    Fails(i32),
}

/// A fake configfs-tsm tree in a temp dir, modelling `drivers/virt/coco/guest/report.c` (formerly
/// `drivers/virt/coco/tsm.c`) and its two providers:
/// - a new entry has `provider`, `generation` 0 and (for `sev_guest`, `sev_report_attr_visible`)
///   `privlevel_floor`; `tsm_report_privlevel_store` refuses a level below the floor or above 3 with
///   `EINVAL` before counting the write; every accepted write (`privlevel`, `inblob`) bumps `generation`
///   (`try_advance_write_generation`);
/// - `outblob` is produced from `inblob` when read: an SNP report at the written `privlevel` (0 when none was
///   written, which the firmware refuses below the floor: `sev_report_new` maps INVALID_PARAM to `EINVAL`)
///   or a TDX quote; a TDX read can first fail `busy` times with `EBUSY` (`tdx_report_new` while an earlier
///   quote is in flight);
/// - `auxblob` per [`Aux`];
/// - another writer can bump `generation` right after a given attribute is written or while one is read
///   (`race_at`), `race_times` times (`usize::MAX`: always).
pub struct FakeTsm {
    pub provider: &'static str,
    pub measurement: [u8; 48],
    pub floor: u32,
    pub aux: Mutex<Aux>,
    /// The SNP report says it was signed by the VLEK (SIGNING_KEY 1).
    pub vlek_signed: AtomicBool,
    pub busy: AtomicUsize,
    pub race_at: Mutex<Option<&'static str>>,
    pub race_times: AtomicUsize,
    /// Every attribute write, in order: (name, bytes).
    pub writes: Mutex<Vec<(String, Vec<u8>)>>,
}

/// The report's flags word with SIGNING_KEY set to VLEK (1 in bits 4:2).
pub fn mark_vlek_signed(report: &mut [u8]) {
    report[0x48] = (report[0x48] & !0x1c) | (1 << 2);
}

impl FakeTsm {
    pub fn new(provider: &'static str) -> FakeTsm {
        FakeTsm {
            provider,
            measurement: MEASUREMENT,
            floor: 0,
            aux: Mutex::new(Aux::Table(vec![cvm_agent::certtable::HostCert {
                kind: cvm_agent::certtable::CertKind::Vcek,
                der: simulator().amd.vcek_der().to_vec(),
            }])),
            vlek_signed: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            race_at: Mutex::new(None),
            race_times: AtomicUsize::new(0),
            writes: Mutex::new(Vec::new()),
        }
    }

    /// Another writer bumps `generation` at `at`, `times` times.
    pub fn race(&self, at: &'static str, times: usize) {
        *self.race_at.lock().unwrap() = Some(at);
        self.race_times.store(times, Ordering::SeqCst);
    }

    fn bump(&self, entry: &Path) -> std::io::Result<()> {
        let g: u64 = std::fs::read_to_string(entry.join("generation"))?
            .trim()
            .parse()
            .unwrap();
        std::fs::write(entry.join("generation"), format!("{}\n", g + 1))
    }

    fn maybe_race(&self, entry: &Path, step: &str) -> std::io::Result<()> {
        if *self.race_at.lock().unwrap() != Some(step) {
            return Ok(());
        }
        let left = self.race_times.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        if left != usize::MAX {
            self.race_times.store(left - 1, Ordering::SeqCst);
        }
        self.bump(entry)
    }

    fn errno(n: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(n)
    }
}

impl TsmFs for FakeTsm {
    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)?;
        std::fs::write(path.join("provider"), format!("{}\n", self.provider))?;
        if self.provider == "sev_guest" {
            std::fs::write(path.join("privlevel_floor"), format!("{}\n", self.floor))?;
        }
        std::fs::write(path.join("generation"), "0\n")
    }
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let entry = path.parent().unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.writes
            .lock()
            .unwrap()
            .push((name.clone(), data.to_vec()));
        match name.as_str() {
            "privlevel" => {
                let v: u32 = std::str::from_utf8(data)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or_else(|| Self::errno(libc::EINVAL))?;
                if self.provider != "sev_guest" {
                    return Err(Self::errno(libc::EACCES));
                }
                if self.floor > v || v > 3 {
                    return Err(Self::errno(libc::EINVAL));
                }
            }
            "inblob" if data.len() > 64 => return Err(Self::errno(libc::EINVAL)),
            "inblob" => {}
            _ => return Err(Self::errno(libc::EACCES)),
        }
        std::fs::write(path, data)?;
        self.bump(entry)?;
        self.maybe_race(entry, &name)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let entry = path.parent().unwrap();
        let sim = simulator();
        match path.file_name().and_then(|n| n.to_str()) {
            Some("outblob") => {
                self.maybe_race(entry, "outblob")?;
                let rd: [u8; 64] = std::fs::read(entry.join("inblob"))?.try_into().unwrap();
                if self.provider == "sev_guest" {
                    let vmpl: u32 = std::fs::read_to_string(entry.join("privlevel"))
                        .map(|t| t.trim().parse().unwrap())
                        .unwrap_or(0);
                    if vmpl < self.floor {
                        return Err(Self::errno(libc::EINVAL));
                    }
                    let mut report = sim
                        .amd
                        .snp_report(&SnpRequest {
                            report_data: rd,
                            measurement: self.measurement,
                            vmpl,
                            ..SnpRequest::default()
                        })
                        .unwrap();
                    if self.vlek_signed.load(Ordering::SeqCst) {
                        mark_vlek_signed(&mut report);
                    }
                    Ok(report)
                } else {
                    let busy = self.busy.load(Ordering::SeqCst);
                    if busy > 0 {
                        self.busy.store(busy - 1, Ordering::SeqCst);
                        return Err(Self::errno(libc::EBUSY));
                    }
                    Ok(sim
                        .intel
                        .tdx_quote(&TdxRequest {
                            report_data: rd,
                            mrtd: self.measurement,
                            ..TdxRequest::default()
                        })
                        .unwrap())
                }
            }
            Some("auxblob") if self.provider == "sev_guest" => {
                self.maybe_race(entry, "auxblob")?;
                match &*self.aux.lock().unwrap() {
                    Aux::Table(certs) => Ok(cvm_agent::certtable::encode(certs)),
                    Aux::Absent => Err(std::io::ErrorKind::NotFound.into()),
                    Aux::Empty => Ok(Vec::new()),
                    Aux::Fails(n) => Err(Self::errno(*n)),
                }
            }
            _ => std::fs::read(path),
        }
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir_all(path)
    }
}

/// Runs the agent binary.
pub fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
