//! One plan for both: `measure --tee sim --kernel K` prints the SNP digest that the simulated PSP
//! of `run --tee sim --kernel K` (same --memory and --append) puts in its reports. The kernel is a
//! synthetic bzImage whose 64-bit entry point halts. Skips the run without /dev/kvm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cvm_launch::linux::bzimage;
use cvm_launch::sim_socket::{EvidenceResponse, request};

/// MEASUREMENT in an SNP attestation report (SEV-SNP ABI, Table "ATTESTATION_REPORT").
const MEASUREMENT: std::ops::Range<usize> = 0x90..0xc0;

fn measure(kernel: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["measure", "--tee", "sim", "--format", "hex", "--kernel"])
        .arg(kernel)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_direct_boot_measurement_is_what_the_simulated_psp_signs() {
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("bzImage");
    std::fs::write(&kernel, bzimage::synthetic(0x020f, 1, &[0xf4; 0x1000])).unwrap();
    let args = ["--memory", "64", "--append", "console=ttyS0"];
    let expected = measure(&kernel, &args);
    assert_eq!(expected.len(), 96);
    assert_ne!(
        expected,
        measure(&kernel, &["--memory", "128"]),
        "RAM size is in the plan"
    );

    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: /dev/kvm is missing or not accessible; the run half of this test needs KVM"
        );
        return;
    }
    let sim = tmp.path().join("sim");
    let opts = cvm_attest::sim::InitOptions {
        seed: Some(b"cvm-launch direct boot measurement".to_vec()),
        ..cvm_attest::sim::InitOptions::default()
    };
    cvm_attest::sim::init(&sim, &opts).unwrap();
    let sock = tmp.path().join("psp.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["run", "--tee", "sim", "--kernel"])
        .arg(&kernel)
        .args(args)
        .arg("--sim-dir")
        .arg(&sim)
        .arg("--sim-socket")
        .arg(&sock)
        .arg("--linger")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let body = loop {
        match request(&sock, "snp", &[9; 64]) {
            Ok(b) => break b,
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                child.kill().unwrap();
                panic!("the PSP socket did not answer: {e}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let resp: EvidenceResponse = cvm_keys::cbor::from_slice(&body).unwrap();
    assert_eq!(hex::encode(&resp.evidence.0[MEASUREMENT]), expected);
}
