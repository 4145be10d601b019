//! The SNP launch sequence of a plan through KVM (Linux `Documentation/virt/kvm/x86/amd-memory-encryption.rst`;
//! SEV-SNP ABI spec §8.16 SNP_LAUNCH_START, §8.17 SNP_LAUNCH_UPDATE, §8.18 SNP_LAUNCH_FINISH).
//!
//! Payloads are kvm-bindings' structs laid out at their `offset_of!` offsets. SNP_LAUNCH_FINISH
//! uses kvm-bindings' 88-byte `kvm_sev_snp_launch_finish` (with `vcek_disabled`): the `sev` crate's
//! 56-byte version would shift HOST_DATA by one byte (DESIGN.md, known defect).
//!
//! VMSA pages are not sent with SNP_LAUNCH_UPDATE: KVM builds and measures each vCPU's VMSA from
//! its register state during SNP_LAUNCH_FINISH, so the vCPUs must be in the state of the plan's
//! VMSA pages before [`launch`] issues FINISH.

use std::mem::{offset_of, size_of};

use kvm_bindings::{
    kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update,
    sev_cmd_id_KVM_SEV_INIT2, sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH,
    sev_cmd_id_KVM_SEV_SNP_LAUNCH_START, sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE,
};

use super::{CvmOps, OpsError, get_u64, put};
use crate::plan::{LaunchPlan, LaunchUpdate};

/// KVM_SEV_INIT2.
pub const SEV_INIT2: u32 = sev_cmd_id_KVM_SEV_INIT2;
/// KVM_SEV_SNP_LAUNCH_START.
pub const SNP_LAUNCH_START: u32 = sev_cmd_id_KVM_SEV_SNP_LAUNCH_START;
/// KVM_SEV_SNP_LAUNCH_UPDATE.
pub const SNP_LAUNCH_UPDATE: u32 = sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE;
/// KVM_SEV_SNP_LAUNCH_FINISH.
pub const SNP_LAUNCH_FINISH: u32 = sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH;

/// Size of `struct kvm_sev_snp_launch_finish` in Linux ≥ 6.11.
pub const LAUNCH_FINISH_LEN: usize = 88;
const _: () = assert!(size_of::<kvm_sev_snp_launch_finish>() == LAUNCH_FINISH_LEN);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, host_data) == 19);
const _: () = assert!(size_of::<kvm_sev_snp_launch_update>() == 64);
const _: () = assert!(size_of::<kvm_sev_snp_launch_start>() == 64);
const _: () = assert!(size_of::<kvm_sev_init>() == 48);

/// Default guest policy: SMT allowed (bit 16), reserved bit 17 set, ABI 0.0; no debug, no migration.
pub const DEFAULT_POLICY: u64 = 0x3_0000;
/// GHCB protocol version SNP guests speak.
pub const GHCB_VERSION: u16 = 2;
/// SEV_FEATURES bit 0 (SNPActive) is implied by an SNP VM; KVM's `vmsa_features` takes the rest.
const SNP_ACTIVE: u64 = 1;
/// Upper bound on re-issuing a partially completed SNP_LAUNCH_UPDATE.
const MAX_UPDATE_RETRIES: usize = 1 << 20;

/// What the host chooses for an SNP launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpLaunchParams {
    /// Guest policy (ABI spec §4.3).
    pub policy: u64,
    /// HOST_DATA, reported in every attestation report.
    pub host_data: [u8; 32],
    /// The CPUID table page KVM hands to the PSP for each CPUID page of the plan.
    pub cpuid_page: Option<Box<[u8; 4096]>>,
}

/// `kvm_sev_init` for INIT2.
pub fn init2_bytes(vmsa_features: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    put(
        &mut b,
        offset_of!(kvm_sev_init, vmsa_features),
        &vmsa_features.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(kvm_sev_init, ghcb_version),
        &GHCB_VERSION.to_le_bytes(),
    );
    b
}

/// `kvm_sev_snp_launch_start`.
pub fn launch_start_bytes(policy: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_start, policy),
        &policy.to_le_bytes(),
    );
    b
}

/// `kvm_sev_snp_launch_update` for `len` bytes at `gpa` from host address `uaddr`.
pub fn launch_update_bytes(gpa: u64, uaddr: u64, len: u64, page_type: u8) -> [u8; 64] {
    let mut b = [0u8; 64];
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_update, gfn_start),
        &(gpa >> 12).to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_update, uaddr),
        &uaddr.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_update, len),
        &len.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_update, type_),
        &[page_type],
    );
    b
}

/// `kvm_sev_snp_launch_finish` with HOST_DATA and no ID block.
pub fn launch_finish_bytes(host_data: &[u8; 32]) -> [u8; LAUNCH_FINISH_LEN] {
    let mut b = [0u8; LAUNCH_FINISH_LEN];
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_finish, host_data),
        host_data,
    );
    b
}

/// What KVM does to the payload when an update completes: everything consumed.
pub(crate) fn complete_update(payload: &mut [u8]) {
    let gfn = get_u64(payload, offset_of!(kvm_sev_snp_launch_update, gfn_start));
    let uaddr = get_u64(payload, offset_of!(kvm_sev_snp_launch_update, uaddr));
    let len = get_u64(payload, offset_of!(kvm_sev_snp_launch_update, len));
    put(
        payload,
        offset_of!(kvm_sev_snp_launch_update, gfn_start),
        &(gfn + len / 4096).to_le_bytes(),
    );
    if uaddr != 0 {
        put(
            payload,
            offset_of!(kvm_sev_snp_launch_update, uaddr),
            &(uaddr + len).to_le_bytes(),
        );
    }
    put(
        payload,
        offset_of!(kvm_sev_snp_launch_update, len),
        &0u64.to_le_bytes(),
    );
}

fn update(ops: &mut dyn CvmOps, gpa: u64, uaddr: u64, len: u64, t: u8) -> Result<(), OpsError> {
    let mut p = launch_update_bytes(gpa, uaddr, len, t);
    for _ in 0..MAX_UPDATE_RETRIES {
        ops.sev_op(SNP_LAUNCH_UPDATE, &mut p)?;
        // KVM advances gfn_start/uaddr and lowers len when it stops early; re-issue the rest.
        if get_u64(&p, offset_of!(kvm_sev_snp_launch_update, len)) == 0 {
            return Ok(());
        }
    }
    Err(OpsError::NoProgress("SNP_LAUNCH_UPDATE"))
}

/// Issues the SNP launch of `plan`: INIT2, LAUNCH_START, one LAUNCH_UPDATE per plan update (in
/// plan order, the order the digest is computed in), LAUNCH_FINISH with HOST_DATA.
///
/// `uaddr` of data pages is the address of the plan's bytes: KVM copies them into guest_memfd.
pub fn launch(
    plan: &LaunchPlan,
    params: &SnpLaunchParams,
    ops: &mut dyn CvmOps,
) -> Result<(), OpsError> {
    let mut init = init2_bytes(plan.guest_features & !SNP_ACTIVE);
    ops.sev_op(SEV_INIT2, &mut init)?;
    let mut start = launch_start_bytes(params.policy);
    ops.sev_op(SNP_LAUNCH_START, &mut start)?;
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data {
                gpa,
                page_type,
                data,
            } => update(
                ops,
                *gpa,
                data.as_ptr() as u64,
                data.len() as u64,
                page_type.0,
            )?,
            LaunchUpdate::Empty {
                gpa,
                page_type,
                pages,
            } => {
                let uaddr = if *page_type == crate::snp::digest::PageType::CPUID {
                    let page = params.cpuid_page.as_ref().ok_or(OpsError::Missing(
                        "a CPUID table page for the plan's CPUID page",
                    ))?;
                    page.as_ptr() as u64
                } else {
                    0
                };
                update(ops, *gpa, uaddr, pages * 4096, page_type.0)?;
            }
            // INVARIANT: vCPU registers must equal the plan's VMSA pages before FINISH.
            LaunchUpdate::Vmsa { .. } => {}
        }
    }
    let mut finish = launch_finish_bytes(&params.host_data);
    ops.sev_op(SNP_LAUNCH_FINISH, &mut finish)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvm::{Recorder, Target};
    use crate::measure::snp_digest;
    use crate::plan::{DEFAULT_GUEST_FEATURES, SnpPlanConfig};
    use crate::snp::cpu::CpuType;
    use crate::snp::digest::{LaunchDigest, PageType};
    use crate::snp::vmsa::VmmType;
    use crate::synthetic::TestImage;

    fn plan() -> LaunchPlan {
        LaunchPlan::snp(SnpPlanConfig {
            firmware: TestImage::default().build(),
            vcpus: 2,
            cpu: CpuType::by_name("EPYC-Genoa").unwrap(),
            vmm: VmmType::Qemu,
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel_hashes: None,
        })
        .unwrap()
    }

    fn params() -> SnpLaunchParams {
        SnpLaunchParams {
            policy: DEFAULT_POLICY,
            host_data: core::array::from_fn(|i| i as u8 + 1),
            cpuid_page: Some(Box::new([0; 4096])),
        }
    }

    #[test]
    fn host_data_arrives_unshifted_in_the_88_byte_finish() {
        let p = plan();
        let mut rec = Recorder::default();
        launch(&p, &params(), &mut rec).unwrap();
        let last = rec.calls.last().unwrap();
        assert_eq!((last.target.clone(), last.id), (Target::SevVm, 102));
        assert_eq!(last.payload.len(), 88);
        // id_block_en, auth_key_en, vcek_disabled at 16..19, then HOST_DATA.
        assert_eq!(&last.payload[16..19], &[0, 0, 0]);
        assert_eq!(&last.payload[19..51], &params().host_data);
        assert!(last.payload[51..].iter().all(|&b| b == 0));
    }

    #[test]
    fn recorded_updates_replay_to_the_plan_digest() {
        let p = plan();
        let mut rec = Recorder::default();
        launch(&p, &params(), &mut rec).unwrap();
        assert_eq!(rec.calls[0].id, SEV_INIT2);
        assert_eq!(
            get_u64(&rec.calls[0].payload, 0),
            0,
            "SNPActive is not a vmsa_feature"
        );
        assert_eq!(rec.calls[1].id, SNP_LAUNCH_START);
        assert_eq!(get_u64(&rec.calls[1].payload, 0), DEFAULT_POLICY);
        // Replay what the PSP measures from the recorded LAUNCH_UPDATE arguments, reading the data
        // pages through the recorded uaddr ranges of the plan, then the VMSAs KVM adds at FINISH.
        let mut ld = LaunchDigest::new();
        let mut data = p.updates.iter().filter_map(|u| match u {
            LaunchUpdate::Data { data, .. } => Some(data),
            _ => None,
        });
        for c in rec.calls.iter().filter(|c| c.id == SNP_LAUNCH_UPDATE) {
            let gpa = get_u64(&c.payload, 0) << 12;
            let len = get_u64(&c.payload, 16);
            let t = PageType(c.payload[24]);
            if t == PageType::NORMAL {
                let d = data.next().unwrap();
                assert_eq!(get_u64(&c.payload, 8), d.as_ptr() as u64);
                assert_eq!(len, d.len() as u64);
                ld.update_normal(gpa, d);
            } else {
                ld.update_empty(t, gpa, len / 4096);
            }
        }
        for u in &p.updates {
            if let LaunchUpdate::Vmsa { page, .. } = u {
                ld.update_vmsa(page);
            }
        }
        assert_eq!(ld.value(), &snp_digest(&p));
    }

    #[test]
    fn a_cpuid_page_needs_a_table() {
        let mut prm = params();
        prm.cpuid_page = None;
        assert!(matches!(
            launch(&plan(), &prm, &mut Recorder::default()),
            Err(OpsError::Missing(_))
        ));
    }
}
