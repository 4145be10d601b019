//! Fuzz target for the launcher's firmware parsers and plan: the OVMF footer table and SEV metadata, the
//! TDVF metadata, the SNP launch plan and its digest, and the TDX MRTD. Byte 0 picks the vCPU count and
//! VMM type; the rest, padded to whole pages, is the firmware image. Must never panic.
#![no_main]

use cvm_launch::measure::snp_digest;
use cvm_launch::plan::{LaunchPlan, SnpPlanConfig};
use cvm_launch::snp::cpu::CpuType;
use cvm_launch::snp::kernel_hashes::KernelHashes;
use cvm_launch::snp::vmsa::VmmType;
use cvm_launch::tdx::mrtd::mrtd_of_firmware;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, image)) = data.split_first() else {
        return;
    };
    let _ = mrtd_of_firmware(image);
    let mut firmware = image.to_vec();
    firmware.resize(image.len().div_ceil(4096).max(1) * 4096, 0);
    let Some(cpu) = CpuType::by_name("EPYC-Milan") else {
        return;
    };
    let vmm = [VmmType::Qemu, VmmType::Ec2, VmmType::Gce][usize::from(sel >> 6) % 3];
    let cfg = SnpPlanConfig {
        firmware,
        vcpus: u32::from(sel & 0x0f),
        cpu,
        vmm,
        guest_features: 1,
        kernel_hashes: (sel & 0x10 != 0).then(|| KernelHashes::new(b"k", None, Some("c"))),
    };
    if let Ok(plan) = LaunchPlan::snp(cfg) {
        let _ = snp_digest(&plan);
    }
});
