//! Acceptance for `cvm-launch run --tee sim`: the report the test guest prints on its serial port,
//! and the one the PSP socket gives a host process, verify with
//! `cvm-attest verify --trust-root SIM/snp/ark.pem --cert SIM/snp/vcek.der` (plus the simulated
//! ASK, which is not built in), and their MEASUREMENT equals `cvm-launch measure` for the same
//! plan. The socket also serves TDX-format quotes carrying the image's MRTD (`measure --tee tdx`).
//! Skips with a printed reason where /dev/kvm is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Lingering, sim_dir, skip_without_kvm};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cvm_launch::sim_socket::EvidenceResponse;

const REPORT_DATA: &[u8; 64] = b"cvm-launch sim guest: fixed REPORT_DATA for the launcher's test.";

fn guest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/sim-guest.bin")
}

/// The `cvm-attest` binary of this workspace (built here when `cargo test -p cvm-launch` did not).
fn cvm_attest() -> PathBuf {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_cvm-launch"));
    let theirs = ours.with_file_name("cvm-attest");
    if !theirs.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "cvm-attest", "--bin", "cvm-attest"])
            .status()
            .unwrap();
        assert!(st.success(), "building cvm-attest failed");
    }
    theirs
}

fn measure_hex() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["measure", "--tee", "snp", "--firmware"])
        .arg(guest())
        .args(["--vcpus", "1", "--cpu-type", "EPYC-v4", "--format", "hex"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Verifies `report` (with `vcek`) and returns the JSON verdict.
/// `cvm-attest verify --json` of `evidence` (written to DIR/NAME) with `trust` arguments.
fn verify_with(dir: &Path, name: &str, evidence: &[u8], trust: &[&OsStr]) -> serde_json::Value {
    let ev = dir.join(name);
    std::fs::write(&ev, evidence).unwrap();
    let out = Command::new(cvm_attest())
        .arg("verify")
        .arg("--evidence")
        .arg(&ev)
        .args(trust)
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Verifies an SNP `report` against the simulated ARK, with `vcek` and the simulated ASK.
fn verify(sim: &Path, dir: &Path, report: &[u8], vcek: &Path) -> serde_json::Value {
    let (ark, chain) = (sim.join("snp/ark.pem"), sim.join("snp/cert_chain.pem"));
    let trust = [
        "--trust-root".as_ref(),
        ark.as_os_str(),
        "--cert".as_ref(),
        vcek.as_os_str(),
        "--cert".as_ref(),
        chain.as_os_str(),
    ];
    verify_with(dir, "report.bin", report, &trust)
}

#[test]
fn the_guest_report_verifies_and_carries_the_offline_measurement() {
    if skip_without_kvm("`run --tee sim`") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sim = sim_dir(tmp.path(), b"cvm-launch sim acceptance seed!!");
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["run", "--tee", "sim", "--firmware"])
        .arg(guest())
        .args(["--cpu-type", "EPYC-v4", "--sim-dir"])
        .arg(&sim)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex_report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cvm-sim-guest report "))
        .unwrap_or_else(|| panic!("no report line on the console: {stdout}"));
    let report = hex::decode(hex_report).unwrap();
    assert_eq!(report.len(), 1184);
    let v = verify(&sim, tmp.path(), &report, &sim.join("snp/vcek.der"));
    assert_eq!(v["verdict"], "accept", "{v}");
    assert_eq!(v["simulated"], true);
    assert_eq!(v["claims"]["measurement"], measure_hex());
    assert_eq!(v["claims"]["report_data"], hex::encode(REPORT_DATA));
}

#[test]
fn the_psp_socket_serves_host_processes_the_same_measurement() {
    if skip_without_kvm("`run --tee sim`") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sim = sim_dir(tmp.path(), b"cvm-launch sim acceptance seed!!");
    let sock = tmp.path().join("psp.sock");
    let image = guest();
    let mut launcher = Lingering::start(
        &[
            "run".as_ref(),
            "--tee".as_ref(),
            "sim".as_ref(),
            "--firmware".as_ref(),
            image.as_os_str(),
            "--cpu-type".as_ref(),
            "EPYC-v4".as_ref(),
            "--sim-dir".as_ref(),
            sim.as_os_str(),
            "--sim-socket".as_ref(),
            sock.as_os_str(),
            "--linger".as_ref(),
        ],
        &sock,
    );
    let body = launcher.request("snp", &[0x42; 64]);
    let tdx_body = launcher.request("tdx", &[0x43; 64]);
    drop(launcher);
    let resp: EvidenceResponse = cvm_keys::cbor::from_slice(&body).unwrap();
    let vcek = tmp.path().join("vcek-from-socket.der");
    std::fs::write(&vcek, &resp.certs[0].0).unwrap();
    let v = verify(&sim, tmp.path(), &resp.evidence.0, &vcek);
    assert_eq!(v["verdict"], "accept", "{v}");
    assert_eq!(v["claims"]["measurement"], measure_hex());
    assert_eq!(v["claims"]["report_data"], hex::encode([0x42; 64]));

    // TDX format: a quote whose MRTD is the guest image's TDVF measurement.
    let resp: EvidenceResponse = cvm_keys::cbor::from_slice(&tdx_body).unwrap();
    assert!(resp.certs.is_empty());
    let (root, collateral) = (sim.join("tdx/root.pem"), sim.join("tdx/collateral"));
    let trust = [
        "--trust-root".as_ref(),
        root.as_os_str(),
        "--collateral".as_ref(),
        collateral.as_os_str(),
    ];
    let v = verify_with(tmp.path(), "quote.bin", &resp.evidence.0, &trust);
    assert_eq!(v["verdict"], "accept", "{v}");
    assert_eq!(v["tee"], "tdx");
    assert_eq!(v["claims"]["report_data"], hex::encode([0x43; 64]));
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["measure", "--tee", "tdx", "--format", "hex", "--firmware"])
        .arg(guest())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        v["claims"]["mrtd"],
        String::from_utf8(out.stdout).unwrap().trim()
    );
}
