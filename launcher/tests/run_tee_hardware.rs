//! `run --tee snp|tdx` on a host whose KVM lacks the VM type stops before doing anything, says
//! why and what to do, and exits 2. (On an SNP or TDX host the test prints a skip line.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::Command;

const GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guest/sim-guest.bin");

fn refused(tee: &str, probe_field: &str, expect: &[&str]) {
    let probe = cvm_launch::probe::probe();
    let present = match probe_field {
        "snp" => probe.snp_vm,
        _ => probe.tdx_vm,
    };
    if present {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: this host's KVM offers {tee} VMs; the refusal is for hosts without them"
        );
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args([
            "run",
            "--tee",
            tee,
            "--firmware",
            GUEST,
            "--cpu-type",
            "EPYC-v4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing ran");
    for e in expect {
        assert!(stderr.contains(e), "{e:?} missing from {stderr}");
    }
}

#[test]
fn run_tee_snp_without_snp_vms_exits_2_with_the_reason() {
    let expect: &[&str] = if cvm_launch::probe::kvm_usable().is_ok() {
        &[
            "offers no SNP VMs",
            "KVM_X86_SNP_VM=4",
            "use --tee sim",
            "README",
        ]
    } else {
        &["/dev/kvm"]
    };
    refused("snp", "snp", expect);
}

#[test]
fn run_tee_tdx_without_tdx_vms_exits_2_with_the_reason() {
    let expect: &[&str] = if cvm_launch::probe::kvm_usable().is_ok() {
        &[
            "offers no TDX VMs",
            "KVM_X86_TDX_VM=5",
            "use --tee sim",
            "README",
        ]
    } else {
        &["/dev/kvm"]
    };
    refused("tdx", "tdx", expect);
}
