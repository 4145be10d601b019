//! A guest that reboots ends the run cleanly: an i8042 reset (what Linux's `reboot=k` and
//! `panic=-1` do) returns `Ok` with how the guest stopped, as a halt does. Tiny real-mode images
//! at the reset vector; skips without /dev/kvm. (A triple fault maps to `GuestStop::TripleFault`
//! the same way; this host's KVM emulates real-mode exception delivery and reports an emulation
//! failure instead of a shutdown, so no test here provokes one.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cvm_launch::devices::psp::ReportSigner;
use cvm_launch::plan::{DEFAULT_GUEST_FEATURES, LaunchPlan, SnpPlanConfig};
use cvm_launch::snp::cpu::CpuType;
use cvm_launch::snp::vmsa::VmmType;
use cvm_launch::vmm::{GuestStop, SimRunConfig, run_sim};
use std::io::Write as _;

struct NoSigner;
impl ReportSigner for NoSigner {
    fn snp_report(&self, _: &[u8; 64]) -> Result<Vec<u8>, String> {
        Err("not used".into())
    }
    fn certs(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A one-page image whose reset vector (offset 0xff0) holds `code`; the rest is zero.
fn stop_with(code: &[u8]) -> GuestStop {
    let mut image = vec![0u8; 4096];
    image[0xff0..0xff0 + code.len()].copy_from_slice(code);
    let plan = LaunchPlan::snp(SnpPlanConfig {
        firmware: image,
        vcpus: 1,
        cpu: CpuType::by_name("EPYC-v4").unwrap(),
        vmm: VmmType::Qemu,
        guest_features: DEFAULT_GUEST_FEATURES,
        kernel_hashes: None,
    })
    .unwrap();
    let cfg = SimRunConfig {
        timeout: std::time::Duration::from_secs(30),
        ..SimRunConfig::default()
    };
    run_sim(&plan, Arc::new(NoSigner), std::io::sink(), &cfg)
        .unwrap()
        .stop
}

#[test]
fn an_i8042_reset_ends_the_run_as_a_reboot() {
    if !kvm_usable() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: /dev/kvm is missing or not accessible; the test guests need KVM"
        );
        return;
    }
    // mov al, 0xfe; out 0x64, al; hlt
    assert_eq!(stop_with(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4]), GuestStop::Reset);
}

#[test]
fn hlt_still_ends_a_firmware_run_as_halted() {
    if !kvm_usable() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: /dev/kvm is missing or not accessible; the test guests need KVM"
        );
        return;
    }
    assert_eq!(stop_with(&[0xf4]), GuestStop::Halted);
}
