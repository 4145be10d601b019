//! Boots the repository's test guest (`guest/sim-guest.bin`) on this host's KVM with a stand-in
//! signer, and checks what the guest prints on COM1. Skips with a printed reason without /dev/kvm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

mod common;

use common::{one_vcpu_plan, skip_without_kvm};
use cvm_launch::devices::psp::ReportSigner;
use cvm_launch::measure::snp_digest;
use cvm_launch::vmm::{SimRunConfig, run_sim};

const GUEST: &[u8] = include_bytes!("../guest/sim-guest.bin");
const REPORT_DATA: &[u8; 64] = b"cvm-launch sim guest: fixed REPORT_DATA for the launcher's test.";

/// Answers `measurement ‖ report_data ‖ 0xa5…` (1184 bytes, the size of a real report).
struct Fake([u8; 48]);
impl ReportSigner for Fake {
    fn snp_report(&self, rd: &[u8; 64]) -> Result<Vec<u8>, String> {
        let mut r = self.0.to_vec();
        r.extend_from_slice(rd);
        r.resize(1184, 0xa5);
        Ok(r)
    }
    fn certs(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);
impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_prints_the_report_the_psp_signed_with_the_plan_digest() {
    if skip_without_kvm("the sim guest") {
        return;
    }
    let plan = one_vcpu_plan(GUEST.to_vec());
    let digest = snp_digest(&plan);
    let console = Console::default();
    let out = run_sim(
        &plan,
        Arc::new(Fake(digest)),
        console.clone(),
        &SimRunConfig::default(),
    )
    .unwrap();
    let text = String::from_utf8(console.0.lock().unwrap().clone()).unwrap();
    println!("{out:?}");
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("cvm-sim-guest report "))
        .unwrap_or_else(|| panic!("no report line in {text:?}"));
    let report = hex::decode(hex).unwrap();
    assert_eq!(report.len(), 1184);
    assert_eq!(&report[..48], &digest);
    assert_eq!(&report[48..112], REPORT_DATA);
    assert_eq!(out.psp_requests, 1);
    assert_eq!(out.faults, Default::default());
}

#[test]
fn a_guest_spinning_without_exits_is_stopped_at_the_timeout() {
    if skip_without_kvm("the sim guest") {
        return;
    }
    // `jmp $` at the reset vector: no exit ever.
    let mut image = vec![0xf4u8; 4096];
    image[0xff0..0xff2].copy_from_slice(&[0xeb, 0xfe]);
    let plan = one_vcpu_plan(image);
    let cfg = SimRunConfig {
        timeout: std::time::Duration::from_millis(500),
        ..SimRunConfig::default()
    };
    let t = std::time::Instant::now();
    let err = run_sim(&plan, Arc::new(Fake([0; 48])), Console::default(), &cfg).unwrap_err();
    assert!(
        matches!(err, cvm_launch::vmm::RunError::NoHalt { .. }),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}
