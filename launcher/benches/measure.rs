//! Digest throughput: `cvm-launch measure`'s SNP digest in MB/s of measured bytes, against raw
//! SHA-384 over the same bytes in the same run (DESIGN.md target: ≥ 0.9×), and against the wall
//! time of the `sev-snp-measure` tool on the same firmware when it is installed.
//!
//! `cargo bench -p cvm-launch --bench measure`. Firmware: `$CVM_OVMF_DIR/**/OVMF.fd` when set,
//! else a 2 MiB synthetic image.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cvm_launch::measure::{measured_bytes, snp_digest};
use cvm_launch::plan::{DEFAULT_GUEST_FEATURES, LaunchPlan, LaunchUpdate, SnpPlanConfig};
use cvm_launch::snp::cpu::CpuType;
use cvm_launch::snp::vmsa::VmmType;
use cvm_launch::synthetic::TestImage;

fn find_ovmf() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("CVM_OVMF_DIR")?);
    let p = dir.join("ovmf/OVMF.fd");
    p.exists().then_some(p)
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let (firmware, label, path) = match find_ovmf() {
        Some(p) => (std::fs::read(&p).unwrap(), p.display().to_string(), Some(p)),
        None => (
            TestImage {
                size: 2 << 20,
                ..TestImage::default()
            }
            .build(),
            "synthetic 2 MiB image".to_owned(),
            None,
        ),
    };
    let vcpus = 4;
    let plan = LaunchPlan::snp(SnpPlanConfig {
        firmware,
        vcpus,
        cpu: CpuType::by_name("EPYC-Milan").unwrap(),
        vmm: VmmType::Qemu,
        guest_features: DEFAULT_GUEST_FEATURES,
        kernel_hashes: None,
    })
    .unwrap();
    let bytes = measured_bytes(&plan);
    // The same bytes, contiguous, for raw SHA-384.
    let mut all = Vec::with_capacity(bytes as usize);
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data { data, .. } => all.extend_from_slice(data),
            LaunchUpdate::Vmsa { page, .. } => all.extend_from_slice(&page[..]),
            LaunchUpdate::Empty { .. } => {}
        }
    }
    let runs = 30;
    let ours = best_of(runs, || {
        std::hint::black_box(snp_digest(std::hint::black_box(&plan)));
    });
    let raw = best_of(runs, || {
        std::hint::black_box(ring::digest::digest(
            &ring::digest::SHA384,
            std::hint::black_box(&all),
        ));
    });
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!("firmware: {label}, {vcpus} vCPUs, {bytes} measured bytes, best of {runs}");
    println!(
        "snp digest (PAGE_INFO chain): {:8.1} MB/s  ({:.2} ms)",
        mbps(ours),
        ours.as_secs_f64() * 1e3
    );
    println!(
        "raw SHA-384, same bytes:      {:8.1} MB/s  ({:.2} ms)",
        mbps(raw),
        raw.as_secs_f64() * 1e3
    );
    println!(
        "ratio digest/raw:             {:8.3}  (target >= 0.9)",
        raw.as_secs_f64() / ours.as_secs_f64()
    );
    let tool_ok = Command::new("sev-snp-measure")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match (path, tool_ok) {
        (Some(p), true) => {
            let t = best_of(5, || {
                let st = Command::new("sev-snp-measure")
                    .args([
                        "--mode",
                        "snp",
                        "--vcpus",
                        "4",
                        "--vcpu-type",
                        "EPYC-Milan",
                        "--ovmf",
                    ])
                    .arg(&p)
                    .output()
                    .unwrap();
                assert!(st.status.success());
            });
            println!(
                "sev-snp-measure wall time:    {:8.2} ms  (cvm-launch digest is {:.0}x faster, process start included for the tool)",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() / ours.as_secs_f64()
            );
        }
        _ => println!("sev-snp-measure comparison skipped (needs the tool and CVM_OVMF_DIR)"),
    }
}
