//! A guest that reboots ends the run cleanly: an i8042 reset (what Linux's `reboot=k` and
//! `panic=-1` do) returns `Ok` with how the guest stopped, as a halt does. Tiny real-mode images
//! at the reset vector; skips without /dev/kvm. (A triple fault maps to `GuestStop::TripleFault`
//! the same way; this host's KVM emulates real-mode exception delivery and reports an emulation
//! failure instead of a shutdown, so no test here provokes one.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

mod common;

use common::{one_vcpu_plan, skip_without_kvm};
use cvm_launch::devices::psp::ReportSigner;
use cvm_launch::vmm::{GuestStop, SimRunConfig, run_sim};

struct NoSigner;
impl ReportSigner for NoSigner {
    fn snp_report(&self, _: &[u8; 64]) -> Result<Vec<u8>, String> {
        Err("not used".into())
    }
    fn certs(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// A one-page image whose reset vector (offset 0xff0) holds `code`; the rest is zero.
fn stop_with(code: &[u8]) -> GuestStop {
    let mut image = vec![0u8; 4096];
    image[0xff0..0xff0 + code.len()].copy_from_slice(code);
    let plan = one_vcpu_plan(image);
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
    if skip_without_kvm("the test guests") {
        return;
    }
    // mov al, 0xfe; out 0x64, al; hlt
    assert_eq!(stop_with(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4]), GuestStop::Reset);
}

#[test]
fn hlt_still_ends_a_firmware_run_as_halted() {
    if skip_without_kvm("the test guests") {
        return;
    }
    assert_eq!(stop_with(&[0xf4]), GuestStop::Halted);
}
