//! Evidence providers in-process: configfs-tsm against a fake tree whose `outblob` the simulator produces
//! (SNP and TDX, attested end to end), the simulated PSP socket, `--tee` selection and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeTsm, Fixture, PspSocket, Service};
use cvm_agent::provider::{self, Provider, ProviderOptions, TeeChoice};
use cvm_agent::simsock::SimSocket;
use cvm_agent::tsm::{Tsm, TsmProvider};
use cvm_agent::unlock::{self, AgentError, ServerOptions};
use cvm_attest::protocol::TeeKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
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
        let secret = rt().block_on(unlock::fetch(&opts, &tsm)).unwrap();
        assert_eq!(&secret[..], b"the database key");
        assert!(tsm.describe().contains("configfs-tsm"));
    }
}

#[test]
fn configfs_tsm_refuses_a_report_when_the_generation_changed() {
    let root = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeTsm::new("sev_guest"));
    fake.race.store(true, Ordering::SeqCst);
    let tsm = Tsm::with_fs(root.path(), fake).with_provider(TsmProvider::SevGuest);
    let e = tsm.evidence(&[1; 64]).unwrap_err().to_string();
    assert!(e.contains("generation changed"), "{e}");
    assert!(e.contains("retry"), "{e}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
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
        ..auto
    };
    let e = provider::select(&snp).err().unwrap().to_string();
    assert!(e.contains("configfs"), "{e}");
    assert_eq!("tdx".parse::<TeeChoice>().unwrap(), TeeChoice::Tdx);
    assert!("sgx".parse::<TeeChoice>().is_err());
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
    let e = rt().block_on(unlock::fetch(&opts, &p)).unwrap_err();
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
