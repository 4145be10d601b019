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

use super::{AlignedPages, CvmOps, LaunchOps, OpsError, exits, get_u64, put};
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

/// Size of the ID block (SEV-SNP ABI spec §8.18, Table "ID Block": LD, FAMILY_ID, IMAGE_ID,
/// VERSION, GUEST_SVN, POLICY).
pub const ID_BLOCK_LEN: usize = 96;
/// Size of the ID authentication information structure (ABI spec §8.18, Table "ID
/// Authentication Information Structure").
pub const ID_AUTH_LEN: usize = 4096;
/// Offset of AUTH_KEY_ALGO in the ID authentication information: non-zero when it carries an
/// author key (then AUTH_KEY_EN is set).
const ID_AUTH_AUTH_KEY_ALGO: usize = 4;

/// The name of SEV command `id` (for errors).
pub fn command_name(id: u32) -> &'static str {
    match id {
        SEV_INIT2 => "KVM_SEV_INIT2",
        SNP_LAUNCH_START => "KVM_SEV_SNP_LAUNCH_START",
        SNP_LAUNCH_UPDATE => "KVM_SEV_SNP_LAUNCH_UPDATE",
        SNP_LAUNCH_FINISH => "KVM_SEV_SNP_LAUNCH_FINISH",
        _ => "KVM_MEMORY_ENCRYPT_OP (SEV)",
    }
}

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
    /// The ID block and its authentication information for SNP_LAUNCH_FINISH.
    pub id: Option<IdBlock>,
}

/// An ID block with its ID authentication information (SEV-SNP ABI spec §8.18): the PSP checks
/// the signature and puts the IDs and key digests into every attestation report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdBlock {
    /// The 96-byte ID block.
    pub block: Box<[u8; ID_BLOCK_LEN]>,
    /// The 4096-byte ID authentication information.
    pub auth: Box<[u8; ID_AUTH_LEN]>,
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

/// `kvm_sev_snp_launch_finish` with HOST_DATA and, when given, the ID block: its address,
/// its authentication information's address, ID_BLOCK_EN = 1 and AUTH_KEY_EN = 1 when the
/// authentication information names an author key algorithm.
pub fn launch_finish_bytes(host_data: &[u8; 32], id: Option<&IdBlock>) -> [u8; LAUNCH_FINISH_LEN] {
    let mut b = [0u8; LAUNCH_FINISH_LEN];
    put(
        &mut b,
        offset_of!(kvm_sev_snp_launch_finish, host_data),
        host_data,
    );
    if let Some(id) = id {
        put(
            &mut b,
            offset_of!(kvm_sev_snp_launch_finish, id_block_uaddr),
            &(id.block.as_ptr() as u64).to_le_bytes(),
        );
        put(
            &mut b,
            offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr),
            &(id.auth.as_ptr() as u64).to_le_bytes(),
        );
        put(
            &mut b,
            offset_of!(kvm_sev_snp_launch_finish, id_block_en),
            &[1],
        );
        let author_key = id
            .auth
            .get(ID_AUTH_AUTH_KEY_ALGO..ID_AUTH_AUTH_KEY_ALGO + 4)
            .is_some_and(|a| a.iter().any(|&x| x != 0));
        put(
            &mut b,
            offset_of!(kvm_sev_snp_launch_finish, auth_key_en),
            &[u8::from(author_key)],
        );
    }
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

fn update(ops: &mut dyn LaunchOps, gpa: u64, uaddr: u64, len: u64, t: u8) -> Result<(), OpsError> {
    // INVARIANT: KVM accepts SNP_LAUNCH_UPDATE only for private GPAs.
    exits::convert(ops, gpa, len, true)?;
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

/// KVM_SEV_INIT2 for `plan` (its SEV_FEATURES but SNPActive become `vmsa_features`).
/// INVARIANT: before any vCPU is created (KVM refuses INIT2 on a VM with vCPUs).
pub fn init(plan: &LaunchPlan, ops: &mut dyn CvmOps) -> Result<(), OpsError> {
    let mut init = init2_bytes(plan.guest_features & !SNP_ACTIVE);
    ops.sev_op(SEV_INIT2, &mut init)
}

/// Issues the SNP launch of `plan` after [`init`] and vCPU creation: LAUNCH_START, one
/// LAUNCH_UPDATE per plan update (in plan order, the order the digest is computed in), each
/// preceded by KVM_SET_MEMORY_ATTRIBUTES making its range private, LAUNCH_FINISH with HOST_DATA
/// and the optional ID block.
///
/// `uaddr` of data pages is a page-aligned copy of the plan's bytes: KVM copies them into
/// guest_memfd.
pub fn launch(
    plan: &LaunchPlan,
    params: &SnpLaunchParams,
    ops: &mut dyn LaunchOps,
) -> Result<(), OpsError> {
    let mut start = launch_start_bytes(params.policy);
    ops.sev_op(SNP_LAUNCH_START, &mut start)?;
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data {
                gpa,
                page_type,
                data,
            } => {
                let pages = AlignedPages::new(data);
                update(ops, *gpa, pages.addr(), pages.len(), page_type.0)?;
            }
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
    let mut finish = launch_finish_bytes(&params.host_data, params.id.as_ref());
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

    /// INIT2, then the launch (vCPUs would be created in between).
    fn init_and_launch(
        p: &LaunchPlan,
        prm: &SnpLaunchParams,
        rec: &mut Recorder,
    ) -> Result<(), OpsError> {
        init(p, rec)?;
        launch(p, prm, rec)
    }

    fn params() -> SnpLaunchParams {
        SnpLaunchParams {
            policy: DEFAULT_POLICY,
            host_data: core::array::from_fn(|i| i as u8 + 1),
            cpuid_page: Some(Box::new([0; 4096])),
            id: None,
        }
    }

    #[test]
    fn host_data_arrives_unshifted_in_the_88_byte_finish() {
        let p = plan();
        let mut rec = Recorder::default();
        init_and_launch(&p, &params(), &mut rec).unwrap();
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
        init_and_launch(&p, &params(), &mut rec).unwrap();
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
                assert_eq!(get_u64(&c.payload, 8) % 4096, 0, "page-aligned source");
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
    fn every_update_range_is_made_private_just_before_it() {
        let p = plan();
        let mut rec = Recorder::default();
        init_and_launch(&p, &params(), &mut rec).unwrap();
        let mut updates = 0;
        for (i, c) in rec.calls.iter().enumerate() {
            if c.id != SNP_LAUNCH_UPDATE || c.target != Target::SevVm {
                continue;
            }
            updates += 1;
            let a = &rec.calls[i - 1];
            assert_eq!(a.target, Target::MemoryAttributes);
            let gpa = get_u64(&c.payload, 0) << 12;
            let len = get_u64(&c.payload, 16);
            assert_eq!(get_u64(&a.payload, 0), gpa);
            assert_eq!(get_u64(&a.payload, 8), len);
            assert_eq!(get_u64(&a.payload, 16), 8, "KVM_MEMORY_ATTRIBUTE_PRIVATE");
        }
        assert_eq!(updates, 7);
    }

    #[test]
    fn an_id_block_sets_its_flags_and_keeps_host_data_unshifted() {
        let mut prm = params();
        let mut auth = Box::new([0u8; ID_AUTH_LEN]);
        prm.id = Some(IdBlock {
            block: Box::new([0xb1; ID_BLOCK_LEN]),
            auth: auth.clone(),
        });
        let mut rec = Recorder::default();
        init_and_launch(&plan(), &prm, &mut rec).unwrap();
        let fin = &rec.calls.last().unwrap().payload;
        let id = prm.id.as_ref().unwrap();
        assert_eq!(get_u64(fin, 0), id.block.as_ptr() as u64);
        assert_eq!(get_u64(fin, 8), id.auth.as_ptr() as u64);
        assert_eq!(&fin[16..19], &[1, 0, 0], "ID block, no author key");
        assert_eq!(&fin[19..51], &prm.host_data);
        assert!(fin[51..].iter().all(|&b| b == 0));
        // An author key algorithm in the authentication information sets AUTH_KEY_EN.
        auth[4] = 1;
        let with_author = IdBlock {
            block: Box::new([0xb1; ID_BLOCK_LEN]),
            auth,
        };
        let fin = launch_finish_bytes(&prm.host_data, Some(&with_author));
        assert_eq!(&fin[16..19], &[1, 1, 0]);
        assert_eq!(&fin[19..51], &prm.host_data);
        assert_eq!(
            &launch_finish_bytes(&prm.host_data, None)[..19],
            &[0; 19],
            "no ID block: no addresses, no flags"
        );
    }

    #[test]
    fn a_cpuid_page_needs_a_table() {
        let mut prm = params();
        prm.cpuid_page = None;
        assert!(matches!(
            init_and_launch(&plan(), &prm, &mut Recorder::default()),
            Err(OpsError::Missing(_))
        ));
    }
}
