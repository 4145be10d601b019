//! One plan for both: `measure --tee sim --kernel K` prints the SNP digest that the simulated PSP
//! of `run --tee sim --kernel K` (same --memory and --append) puts in its reports. The kernel is a
//! synthetic bzImage whose 64-bit entry point halts. Skips the run without /dev/kvm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::{Lingering, sim_dir, skip_without_kvm};
use cvm_launch::linux::bzimage;
use cvm_launch::sim_socket::EvidenceResponse;

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

    if skip_without_kvm("the run half of this test") {
        return;
    }
    let sim = sim_dir(tmp.path(), b"cvm-launch direct boot measurement");
    let sock = tmp.path().join("psp.sock");
    let mut run: Vec<&OsStr> = vec!["run".as_ref(), "--tee".as_ref(), "sim".as_ref()];
    run.extend(["--kernel".as_ref(), kernel.as_os_str()]);
    run.extend(args.iter().map(OsStr::new));
    run.extend(["--sim-dir".as_ref(), sim.as_os_str()]);
    run.extend([
        "--sim-socket".as_ref(),
        sock.as_os_str(),
        "--linger".as_ref(),
    ]);
    let body = Lingering::start(&run, &sock).request("snp", &[9; 64]);
    let resp: EvidenceResponse = cvm_keys::cbor::from_slice(&body).unwrap();
    assert_eq!(hex::encode(&resp.evidence.0[MEASUREMENT]), expected);
}
