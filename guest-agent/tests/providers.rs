//! Evidence providers in-process: configfs-tsm against a fake tree that models the kernel's `report.c`
//! (generation, privlevel_floor, auxblob, transient TDX errors, racing writers) and whose `outblob` the
//! simulator produces (SNP and TDX, attested end to end), configfs mounting, the simulated PSP socket,
//! `--tee` selection and its errors, and evidence collection outside the network time limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Aux, FakeTsm, Fixture, PspSocket, Service, simulator};
use cvm_agent::certtable::{CertKind, HostCert};
use cvm_agent::configfs::{Configfs, Mounter};
use cvm_agent::provider::{self, Provider, ProviderError, ProviderOptions, TeeChoice};
use cvm_agent::retry::Backoff;
use cvm_agent::simsock::SimSocket;
use cvm_agent::tsm::{Tsm, TsmProvider};
use cvm_agent::unlock::{self, AgentError, ServerOptions};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use cvm_attest::snp::AttestationReport;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Retries without waiting (the delays are not under test).
const QUICK: Backoff = Backoff {
    attempts: 5,
    first: Duration::from_millis(1),
    max: Duration::from_millis(2),
    budget: Duration::from_secs(60),
};

fn snp_tsm(fake: &Arc<FakeTsm>, root: &Path) -> Tsm {
    Tsm::with_fs(root, fake.clone()).with_provider(TsmProvider::SevGuest)
}

fn vmpl_of(report: &[u8]) -> u32 {
    AttestationReport::parse(report).unwrap().vmpl
}

#[test]
fn configfs_tsm_snp_and_tdx_reports_attest_end_to_end() {
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    s.put(&f, "db", b"the database key");
    for (name, kind, certs) in [
        ("sev_guest", TeeKind::Snp, 1),
        ("tdx_guest", TeeKind::Tdx, 0),
    ] {
        let root = tempfile::tempdir().unwrap();
        let tsm = Tsm::with_fs(root.path(), Arc::new(FakeTsm::new(name)));
        let probed = tsm.probe().unwrap();
        assert_eq!(probed.name(), name);
        let ev = tsm.evidence(&[7; 64]).unwrap();
        assert_eq!(ev.tee, kind);
        assert_eq!(ev.certs.len(), certs);
        assert!(!ev.evidence.is_empty());
        // Every entry was removed.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
        let mut opts = ServerOptions::new(&s.url(), &f.ca(), "db");
        // The service holds the simulated chain; a VCEK sent alone to a cold service is refused (CHAIN_INVALID).
        opts.send_certs = false;
        let secret = rt()
            .block_on(unlock::fetch(&opts, Arc::new(tsm.clone())))
            .unwrap();
        assert_eq!(&secret[..], b"the database key");
        assert!(tsm.describe().contains("configfs-tsm"));
    }
}

#[test]
fn configfs_tsm_refuses_a_report_when_the_generation_changed() {
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeTsm::new("sev_guest"));
    fake.race("outblob", usize::MAX);
    let e = snp_tsm(&fake, root.path())
        .evidence(&[1; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("generation changed"), "{e}");
    assert!(e.contains("retry"), "{e}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn a_writer_racing_anywhere_between_our_first_write_and_last_read_is_caught() {
    // The ABI document: read generation before writing, and after reading outblob check that it went up
    // by exactly the number of our writes. A write by someone else right after our inblob write changes the
    // report we read, so it must be caught like one during the read.
    for (provider, steps) in [
        (
            "sev_guest",
            &["privlevel", "inblob", "outblob", "auxblob"][..],
        ),
        ("tdx_guest", &["inblob", "outblob"][..]),
    ] {
        for step in steps {
            let root = tempfile::tempdir().unwrap();
            let fake = Arc::new(FakeTsm::new(provider));
            fake.race(step, usize::MAX);
            let e = Tsm::with_fs(root.path(), fake.clone())
                .evidence(&[1; 64])
                .unwrap_err();
            assert!(
                matches!(e, ProviderError::Raced { .. }),
                "{provider}, race at {step}: {e}"
            );
            let writes = if provider == "sev_guest" { 2 } else { 1 };
            assert!(
                e.to_string()
                    .contains(&format!("from 0 to {} ", writes + 1)),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("make it {writes}")), "{e}");
        }
    }
}

#[test]
fn a_single_race_is_retried_with_a_fresh_entry() {
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeTsm::new("sev_guest"));
    fake.race("inblob", 1);
    let ev = snp_tsm(&fake, root.path()).evidence(&[3; 64]).unwrap();
    assert_eq!(&ev.evidence[0x50..0x90], &[3; 64][..]);
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn privlevel_is_the_floor_unless_asked_and_a_lower_level_names_the_floor() {
    // An SVSM guest at VMPL 2: the kernel's privlevel_floor is 2 (sev_guest_probe: the VMPCK it uses).
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeTsm {
        floor: 2,
        ..FakeTsm::new("sev_guest")
    });
    let ev = snp_tsm(&fake, root.path()).evidence(&[1; 64]).unwrap();
    assert_eq!(vmpl_of(&ev.evidence), 2);
    assert_eq!(
        fake.writes.lock().unwrap()[0],
        ("privlevel".to_string(), b"2".to_vec())
    );
    // Above the floor: as asked.
    let ev = snp_tsm(&fake, root.path())
        .with_privlevel(3)
        .evidence(&[1; 64])
        .unwrap();
    assert_eq!(vmpl_of(&ev.evidence), 3);
    // Below it: refused before anything is written, naming the floor and what to do.
    fake.writes.lock().unwrap().clear();
    let e = snp_tsm(&fake, root.path())
        .with_privlevel(1)
        .evidence(&[1; 64])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("VMPL 1 is below this guest's privlevel_floor 2") && e.contains("--vmpl 2"),
        "{e}"
    );
    assert!(fake.writes.lock().unwrap().is_empty());
    // TDX entries have no privlevel: none is written.
    let tdx = Arc::new(FakeTsm::new("tdx_guest"));
    Tsm::with_fs(root.path(), tdx.clone())
        .evidence(&[1; 64])
        .unwrap();
    let names: Vec<String> = tdx
        .writes
        .lock()
        .unwrap()
        .iter()
        .map(|w| w.0.clone())
        .collect();
    assert_eq!(names, ["inblob"]);
}

#[test]
fn auxblob_read_errors_are_errors_and_only_absent_or_empty_means_no_certificates() {
    let root = tempfile::tempdir().unwrap();
    for (aux, required, expect) in [
        (Aux::Fails(libc::EIO), false, Err("read auxblob")),
        (Aux::Fails(libc::EFBIG), true, Err("read auxblob")),
        (Aux::Absent, false, Ok(0)),
        (Aux::Empty, false, Ok(0)),
        (Aux::Absent, true, Err("no VCEK")),
        (Aux::Empty, true, Err("certificate table: empty")),
    ] {
        let fake = Arc::new(FakeTsm::new("sev_guest"));
        *fake.aux.lock().unwrap() = aux.clone();
        let got = snp_tsm(&fake, root.path())
            .with_certs_required(required)
            .evidence(&[1; 64]);
        match (got, expect) {
            (Ok(ev), Ok(n)) => assert_eq!(ev.certs.len(), n, "{aux:?}"),
            (Err(e), Err(m)) => assert!(e.to_string().contains(m), "{aux:?}: {e}"),
            (got, expect) => panic!("{aux:?}: {:?} vs {expect:?}", got.map(|e| e.certs.len())),
        }
    }
}

#[test]
fn transient_tdx_outblob_errors_are_retried() {
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeTsm::new("tdx_guest"));
    fake.busy.store(3, Ordering::SeqCst);
    let ev = Tsm::with_fs(root.path(), fake.clone())
        .with_backoff(QUICK)
        .evidence(&[5; 64])
        .unwrap();
    assert_eq!(ev.tee, TeeKind::Tdx);
    assert_eq!(fake.busy.load(Ordering::SeqCst), 0);
    // Bounded: a quote that stays busy ends in the kernel's error.
    fake.busy.store(100, Ordering::SeqCst);
    let e = Tsm::with_fs(root.path(), fake.clone())
        .with_backoff(QUICK)
        .evidence(&[5; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("read outblob") && e.contains("busy"), "{e}");
    assert_eq!(fake.busy.load(Ordering::SeqCst), 100 - 5);
}

#[test]
fn the_reports_signing_key_picks_the_vlek_over_a_vcek_in_auxblob() {
    let root = tempfile::tempdir().unwrap();
    let amd = &simulator().amd;
    let fake = Arc::new(FakeTsm::new("sev_guest"));
    *fake.aux.lock().unwrap() = Aux::Table(vec![
        HostCert {
            kind: CertKind::Vcek,
            der: amd.vcek_der().to_vec(),
        },
        HostCert {
            kind: CertKind::Vlek,
            der: b"the VLEK".to_vec(),
        },
        HostCert {
            kind: CertKind::Ask,
            der: b"the ASVK".to_vec(),
        },
    ]);
    let ev = snp_tsm(&fake, root.path()).evidence(&[1; 64]).unwrap();
    assert_eq!(ev.certs[0], amd.vcek_der());
    fake.vlek_signed.store(true, Ordering::SeqCst);
    let ev = snp_tsm(&fake, root.path()).evidence(&[1; 64]).unwrap();
    assert_eq!(ev.certs, [b"the VLEK".to_vec(), b"the ASVK".to_vec()]);
}

/// A mount table and mount point in a temp dir, and a mounter that records what it is asked and, like the
/// kernel, makes `tsm/report` appear when configfs is mounted.
struct FakeMounts {
    dir: tempfile::TempDir,
    root: AtomicBool,
    fail: AtomicBool,
    mounted: Mutex<Vec<PathBuf>>,
}

impl FakeMounts {
    fn new(root: bool) -> Arc<FakeMounts> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("mountinfo"), "").unwrap();
        Arc::new(FakeMounts {
            dir,
            root: AtomicBool::new(root),
            fail: AtomicBool::new(false),
            mounted: Mutex::new(Vec::new()),
        })
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn configfs(self: &Arc<Self>) -> Configfs {
        Configfs {
            mount_point: self.mount_point(),
            mountinfo: self.dir.path().join("mountinfo"),
            mounter: self.clone(),
        }
    }

    fn options(self: &Arc<Self>, tee: TeeChoice, fake: Arc<FakeTsm>) -> ProviderOptions {
        ProviderOptions {
            tee,
            tsm_root: Some(self.mount_point().join("tsm/report")),
            tdx_guest: Some(self.dir.path().join("no-tdx_guest")),
            configfs: self.configfs(),
            tsm_fs: Some(fake),
            ..ProviderOptions::default()
        }
    }
}

impl Mounter for FakeMounts {
    fn is_root(&self) -> bool {
        self.root.load(Ordering::SeqCst)
    }
    fn mount_configfs(&self, at: &Path) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        self.mounted.lock().unwrap().push(at.to_owned());
        std::fs::create_dir_all(at.join("tsm/report"))?;
        std::fs::write(
            self.dir.path().join("mountinfo"),
            format!(
                "38 22 0:34 / {} rw,relatime - configfs configfs rw\n",
                at.display()
            ),
        )
    }
}

#[test]
fn without_configfs_mounted_root_mounts_it_and_others_are_told_to() {
    // As root: mounted at the configfs mount point, then configfs-tsm serves the report.
    let m = FakeMounts::new(true);
    let p =
        provider::select(&m.options(TeeChoice::Tdx, Arc::new(FakeTsm::new("tdx_guest")))).unwrap();
    assert!(p.describe().contains("configfs-tsm"), "{}", p.describe());
    assert_eq!(*m.mounted.lock().unwrap(), [m.mount_point()]);
    assert_eq!(p.evidence(&[2; 64]).unwrap().tee, TeeKind::Tdx);
    // Mounted now: not mounted again.
    provider::select(&m.options(TeeChoice::Tdx, Arc::new(FakeTsm::new("tdx_guest")))).unwrap();
    assert_eq!(m.mounted.lock().unwrap().len(), 1);

    // Not root: nothing is mounted, and the message says to mount configfs, not to change the kernel.
    let m = FakeMounts::new(false);
    let e = provider::select(&m.options(TeeChoice::Tdx, Arc::new(FakeTsm::new("tdx_guest"))))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("configfs is not mounted at")
            && e.contains("mount -t configfs configfs")
            && e.contains("as root"),
        "{e}"
    );
    assert!(m.mounted.lock().unwrap().is_empty());

    // With a /dev/tdx_guest that offers no quotes (a 6.7+ kernel), the device's error carries the note.
    let mut with_device = m.options(TeeChoice::Tdx, Arc::new(FakeTsm::new("tdx_guest")));
    with_device.tdx_guest = Some("/dev/null".into());
    let p = provider::select(&with_device).unwrap();
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("TDX_CMD_GET_REPORT0 on /dev/null")
            && e.contains("configfs-tsm was not used: tdx: configfs is not mounted"),
        "{e}"
    );

    // Root, but mounting fails: said, with the command.
    let m = FakeMounts::new(true);
    m.fail.store(true, Ordering::SeqCst);
    let e = provider::select(&m.options(TeeChoice::Snp, Arc::new(FakeTsm::new("sev_guest"))))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("mounting it failed") && e.contains("mount -t configfs"),
        "{e}"
    );

    // No mount point: the kernel has no configfs.
    let m = FakeMounts::new(true);
    std::fs::remove_dir(m.mount_point()).unwrap();
    let e = provider::select(&m.options(TeeChoice::Tdx, Arc::new(FakeTsm::new("tdx_guest"))))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no configfs"), "{e}");
    assert!(m.mounted.lock().unwrap().is_empty());
}

#[test]
fn a_tsm_root_outside_the_configfs_mount_point_is_used_as_it_is() {
    let m = FakeMounts::new(true);
    let elsewhere = tempfile::tempdir().unwrap();
    let opts = ProviderOptions {
        tsm_root: Some(elsewhere.path().to_owned()),
        ..m.options(TeeChoice::Tdx, Arc::new(FakeTsm::new("tdx_guest")))
    };
    assert!(provider::select(&opts).is_ok());
    assert!(m.mounted.lock().unwrap().is_empty());
}

#[test]
fn sim_socket_serves_snp_evidence_with_the_vcek() {
    let psp = PspSocket::start(common::MEASUREMENT);
    let p = SimSocket::new(&psp.path, TeeKind::Snp);
    let ev = p.evidence(&[9; 64]).unwrap();
    assert_eq!(ev.tee, TeeKind::Snp);
    // REPORT_DATA sits at offset 0x50 of an SNP report.
    assert_eq!(&ev.evidence[0x50..0x90], &[9; 64][..]);
    assert_eq!(ev.certs.len(), 1);
}

#[test]
fn selection_explains_what_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("no-tsm");
    let auto = ProviderOptions {
        tee: TeeChoice::Auto,
        sim_socket: None,
        tsm_root: Some(missing.clone()),
        ..ProviderOptions::default()
    };
    let e = provider::select(&auto).err().unwrap().to_string();
    assert!(e.contains("--tee sim --sim-socket"), "{e}");
    let sim = ProviderOptions {
        tee: TeeChoice::Sim,
        ..auto.clone()
    };
    assert!(
        provider::select(&sim)
            .err()
            .unwrap()
            .to_string()
            .contains("--sim-socket")
    );
    // auto falls through to the socket when given one.
    let with_sock = ProviderOptions {
        sim_socket: Some(empty.path().join("psp.sock")),
        ..auto.clone()
    };
    assert!(
        provider::select(&with_sock)
            .unwrap()
            .describe()
            .starts_with("sim")
    );
    let snp = ProviderOptions {
        tee: TeeChoice::Snp,
        ..auto.clone()
    };
    let e = provider::select(&snp).err().unwrap().to_string();
    assert!(e.contains("configfs"), "{e}");
    // Both TDX device names are looked for when none is given.
    if tdx_devices_absent() {
        let tdx = ProviderOptions {
            tee: TeeChoice::Tdx,
            ..auto
        };
        let e = provider::select(&tdx).err().unwrap().to_string();
        assert!(
            e.contains("no /dev/tdx_guest or /dev/tdx-guest either"),
            "{e}"
        );
    }
    assert_eq!("tdx".parse::<TeeChoice>().unwrap(), TeeChoice::Tdx);
    assert!("sgx".parse::<TeeChoice>().is_err());
}

fn tdx_devices_absent() -> bool {
    cvm_agent::tdxguest::TDX_GUEST_DEVICES
        .iter()
        .all(|d| !Path::new(d).exists())
}

#[test]
fn a_refusal_is_not_retried_and_says_what_to_do() {
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    s.put(&f, "db", b"k");
    let psp = PspSocket::start(common::OTHER);
    let p = SimSocket::new(&psp.path, TeeKind::Snp);
    let mut opts = ServerOptions::new(&s.url(), &f.ca(), "db");
    opts.attempts = 5;
    opts.send_certs = false;
    opts.backoff = std::time::Duration::from_secs(5);
    let t = std::time::Instant::now();
    let e = rt()
        .block_on(unlock::fetch(&opts, Arc::new(p)))
        .unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(4));
    match &e {
        AgentError::Refused(r) => {
            assert_eq!(r.code, "POLICY_MEASUREMENT");
            assert!(r.hint.contains("cvm-launch measure"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(e.exit_code(), 3);
}

/// A provider that takes `delay` before answering (a quote that takes the kernel its full wait), counting
/// its calls.
struct Slow {
    inner: SimSocket,
    delay: Duration,
    calls: AtomicUsize,
}

impl Provider for Slow {
    fn describe(&self) -> String {
        "slow".into()
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.inner.evidence(report_data)
    }
}

#[test]
fn slow_evidence_is_not_cut_by_the_network_time_limit_nor_collected_twice() {
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    s.put(&f, "db", b"worth the wait");
    let psp = PspSocket::start(common::MEASUREMENT);
    let slow = Arc::new(Slow {
        inner: SimSocket::new(&psp.path, TeeKind::Snp),
        // Longer than the per-exchange limit below, well inside the evidence limit.
        delay: Duration::from_millis(2500),
        calls: AtomicUsize::new(0),
    });
    let mut opts = ServerOptions::new(&s.url(), &f.ca(), "db");
    opts.send_certs = false;
    opts.attempts = 3;
    opts.backoff = Duration::from_millis(10);
    opts.timeout = Duration::from_secs(1);
    let secret = rt().block_on(unlock::fetch(&opts, slow.clone())).unwrap();
    assert_eq!(&secret[..], b"worth the wait");
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1);

    // Past the evidence limit: an evidence error (exit 5), not a network retry with fresh evidence.
    let slower = Arc::new(Slow {
        inner: SimSocket::new(&psp.path, TeeKind::Snp),
        delay: Duration::from_secs(3),
        calls: AtomicUsize::new(0),
    });
    opts.evidence_timeout = Duration::from_secs(1);
    opts.timeout = Duration::from_secs(30);
    let e = rt()
        .block_on(unlock::fetch(&opts, slower.clone()))
        .unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("--evidence-timeout-secs"), "{e}");
    assert_eq!(slower.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn sim_socket_errors_name_the_socket_and_the_code() {
    use cvm_agent::simsock::{ErrorResponse, read_frame, write_frame};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("psp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut s = conn.unwrap();
            let _ = read_frame(&mut s, 4096).unwrap();
            let body = cvm_keys::cbor::to_vec(&ErrorResponse {
                code: "SIGNER_FAILED".into(),
                message: "no key".into(),
            })
            .unwrap();
            write_frame(&mut s, &body).unwrap();
        }
    });
    let e = SimSocket::new(&path, TeeKind::Snp)
        .evidence(&[0; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("SIGNER_FAILED") && e.contains("psp.sock"), "{e}");
    let e = SimSocket::new(&dir.path().join("absent.sock"), TeeKind::Snp)
        .evidence(&[0; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cvm-launch run --tee sim"), "{e}");
}
