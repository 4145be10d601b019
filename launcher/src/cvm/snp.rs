//! The SNP launch sequence of a plan through KVM (Linux `Documentation/virt/kvm/x86/amd-memory-encryption.rst`;
//! SEV-SNP ABI spec §8.16 SNP_LAUNCH_START, §8.17 SNP_LAUNCH_UPDATE, §8.18 SNP_LAUNCH_FINISH).
//!
//! Payloads are kvm-bindings' structs laid out at their `offset_of!` offsets. SNP_LAUNCH_FINISH
//! uses kvm-bindings' 88-byte `kvm_sev_snp_launch_finish` (with `vcek_disabled`): the `sev` crate's
//! 56-byte version would shift HOST_DATA by one byte (DESIGN.md, known defect).
//!
//! VMSA pages are not sent with SNP_LAUNCH_UPDATE: KVM builds and measures each vCPU's VMSA from
//! its register state during SNP_LAUNCH_FINISH (`sev_es_sync_vmsa`), so [`launch`] first gives
//! every vCPU the state of its VMSA page ([`crate::cvm::vcpu::set_from_vmsa`]): the VMSA KVM
//! builds is then the page the plan measured, for every `--vmm-type`.
//!
//! Every page but ZERO pages is sent with a page-aligned source (KVM refuses others:
//! `sev_gmem_post_populate`, `kvm_gmem_populate`): the plan's bytes, zeros for SECRETS and
//! UNMEASURED pages, the CPUID table for the CPUID page. When the firmware refuses the CPUID table
//! it writes the values it accepts into the source, and the launch fails listing each difference
//! (as QEMU's `sev_snp_cpuid_report_mismatches`; QEMU does not retry, nor does this launcher).

use std::mem::{offset_of, size_of};

use kvm_bindings::{
    kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start, kvm_sev_snp_launch_update,
    sev_cmd_id_KVM_SEV_INIT2, sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH,
    sev_cmd_id_KVM_SEV_SNP_LAUNCH_START, sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE,
};

use super::cpuid::CPUID_ENTRY_LEN;
use super::vcpu::{VcpuOps, set_from_vmsa};
use super::{AlignedPages, CvmOps, LaunchOps, OpsError, exits, get_u64, put};
use crate::plan::{LaunchPlan, LaunchUpdate};
use crate::snp::cpuid_page::{cpuid_page, mismatches};
use crate::snp::digest::PageType;

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
/// The firmware's INVALID_PARAM status (`SEV_RET_INVALID_PARAM`, include/uapi/linux/psp-sev.h):
/// for a CPUID page, it refused values and wrote the ones it accepts into the source page.
pub const SEV_RET_INVALID_PARAM: u64 = 0x16;

/// What the host chooses for an SNP launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpLaunchParams {
    /// Guest policy (ABI spec §4.3).
    pub policy: u64,
    /// HOST_DATA, reported in every attestation report.
    pub host_data: [u8; 32],
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

/// SNP_LAUNCH_UPDATE of `len` bytes at `gpa` of type `t` from `source` (`None` only for ZERO
/// pages), after making the range private; re-issued while KVM reports partial progress.
fn update(
    ops: &mut dyn LaunchOps,
    gpa: u64,
    len: u64,
    t: PageType,
    mut source: Option<&mut AlignedPages>,
) -> Result<(), OpsError> {
    // INVARIANT: KVM accepts SNP_LAUNCH_UPDATE only for private GPAs.
    exits::convert(ops, gpa, len, true)?;
    let uaddr = source.as_deref().map_or(0, AlignedPages::addr);
    let mut p = launch_update_bytes(gpa, uaddr, len, t.0);
    for _ in 0..MAX_UPDATE_RETRIES {
        ops.snp_launch_update(&mut p, source.as_deref_mut())?;
        // KVM advances gfn_start/uaddr and lowers len when it stops early; re-issue the rest.
        if get_u64(&p, offset_of!(kvm_sev_snp_launch_update, len)) == 0 {
            return Ok(());
        }
    }
    Err(OpsError::NoProgress("SNP_LAUNCH_UPDATE"))
}

/// The CPUID page at `gpa` from the table built from `cpuid`; when the firmware refuses it, the
/// error lists each difference between the table and the values the firmware wrote back.
fn update_cpuid(
    ops: &mut dyn LaunchOps,
    gpa: u64,
    cpuid: &[[u8; CPUID_ENTRY_LEN]],
) -> Result<(), OpsError> {
    let table = cpuid_page(cpuid)?;
    let mut source = AlignedPages::new(&table[..]);
    match update(ops, gpa, 4096, PageType::CPUID, Some(&mut source)) {
        Err(e @ OpsError::Ioctl { fw_error, .. }) if fw_error == SEV_RET_INVALID_PARAM => {
            let wrote = source.pages().next().map(|p| mismatches(&table, p));
            match wrote {
                Some(m) if !m.is_empty() => Err(OpsError::CpuidRejected(m)),
                _ => Err(e),
            }
        }
        other => other,
    }
}

/// Gives each vCPU of `plan` the CPUID `cpuid` (`KVM_SET_CPUID2`) and the register state of its
/// VMSA page, so that KVM builds exactly that page at SNP_LAUNCH_FINISH.
pub fn setup_vcpus(
    plan: &LaunchPlan,
    cpuid: &[[u8; CPUID_ENTRY_LEN]],
    ops: &mut dyn VcpuOps,
) -> Result<(), OpsError> {
    for u in &plan.updates {
        if let LaunchUpdate::Vmsa { vcpu, page, .. } = u {
            ops.set_cpuid(*vcpu, cpuid)?;
            set_from_vmsa(ops, *vcpu, page)?;
        }
    }
    Ok(())
}

/// KVM_SEV_INIT2 for `plan` (its SEV_FEATURES but SNPActive become `vmsa_features`).
/// INVARIANT: before any vCPU is created (KVM refuses INIT2 on a VM with vCPUs).
pub fn init(plan: &LaunchPlan, ops: &mut dyn CvmOps) -> Result<(), OpsError> {
    let mut init = init2_bytes(plan.guest_features & !SNP_ACTIVE);
    ops.sev_op(SEV_INIT2, &mut init)
}

/// Issues the SNP launch of `plan` after [`init`] and vCPU creation: the vCPUs' CPUID (`cpuid`,
/// [`crate::snp::cpuid_page::snp_cpuid`] of the host's) and registers ([`setup_vcpus`]),
/// LAUNCH_START, one LAUNCH_UPDATE per plan update (in plan order, the order the digest is
/// computed in), each preceded by KVM_SET_MEMORY_ATTRIBUTES making its range private,
/// LAUNCH_FINISH with HOST_DATA and the optional ID block.
///
/// Sources are page-aligned copies KVM copies into guest_memfd: the plan's bytes for NORMAL pages,
/// zeros for SECRETS and UNMEASURED pages, the table built from `cpuid` for CPUID pages.
pub fn launch(
    plan: &LaunchPlan,
    params: &SnpLaunchParams,
    cpuid: &[[u8; CPUID_ENTRY_LEN]],
    ops: &mut dyn LaunchOps,
) -> Result<(), OpsError> {
    // INVARIANT: the vCPUs hold their VMSA's state before FINISH, where KVM builds the VMSAs.
    setup_vcpus(plan, cpuid, ops)?;
    let mut start = launch_start_bytes(params.policy);
    ops.sev_op(SNP_LAUNCH_START, &mut start)?;
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data {
                gpa,
                page_type,
                data,
            } => {
                let mut pages = AlignedPages::new(data);
                let len = pages.len();
                update(ops, *gpa, len, *page_type, Some(&mut pages))?;
            }
            LaunchUpdate::Empty {
                gpa,
                page_type: PageType::ZERO,
                pages,
            } => update(ops, *gpa, pages * 4096, PageType::ZERO, None)?,
            LaunchUpdate::Empty {
                gpa,
                page_type: PageType::CPUID,
                ..
            } => update_cpuid(ops, *gpa, cpuid)?,
            LaunchUpdate::Empty {
                gpa,
                page_type,
                pages,
            } => {
                let n = usize::try_from(*pages).map_err(|_| OpsError::BadRange {
                    gpa: *gpa,
                    size: *pages,
                })?;
                let mut zeros = AlignedPages::zeroed(n);
                update(ops, *gpa, pages * 4096, *page_type, Some(&mut zeros))?;
            }
            LaunchUpdate::Vmsa { .. } => {}
        }
    }
    let mut finish = launch_finish_bytes(&params.host_data, params.id.as_ref());
    ops.sev_op(SNP_LAUNCH_FINISH, &mut finish)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvm::Target;
    use crate::cvm::cpuid::{EAX, entry, word};
    use crate::cvm::kvm_model::{KvmModel, SnpFirmware};
    use crate::linux::{LinuxPlanConfig, bzimage};
    use crate::measure::snp_digest;
    use crate::plan::{DEFAULT_GUEST_FEATURES, SnpPlanConfig};
    use crate::snp::cpu::CpuType;
    use crate::snp::cpuid_page::{CpuidMismatch, snp_cpuid};
    use crate::snp::vmsa::VmmType;
    use crate::synthetic::TestImage;

    fn plan_for(vmm: VmmType) -> LaunchPlan {
        LaunchPlan::snp(SnpPlanConfig {
            firmware: TestImage::default().build(),
            vcpus: 2,
            cpu: CpuType::by_name("EPYC-Genoa").unwrap(),
            vmm,
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel_hashes: None,
        })
        .unwrap()
    }

    fn plan() -> LaunchPlan {
        plan_for(VmmType::Qemu)
    }

    fn linux_plan(vmm: VmmType) -> LaunchPlan {
        LaunchPlan::linux(LinuxPlanConfig {
            kernel: bzimage::synthetic(0x020f, 1, &[0xcc; 6000]),
            initrd: Some(vec![7; 5000]),
            cmdline: "console=ttyS0".into(),
            ram_mib: 64,
            cpu: CpuType::by_name("EPYC-v4").unwrap(),
            vmm,
            guest_features: DEFAULT_GUEST_FEATURES,
        })
        .unwrap()
    }

    fn params() -> SnpLaunchParams {
        SnpLaunchParams {
            policy: DEFAULT_POLICY,
            host_data: core::array::from_fn(|i| i as u8 + 1),
            id: None,
        }
    }

    /// A host's `KVM_GET_SUPPORTED_CPUID`, with the bits SNP firmware refuses and KVM's XSAVE
    /// sizes for its largest XCR0.
    fn host_cpuid() -> Vec<[u8; 40]> {
        vec![
            entry([0, 0, 0, 0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry([
                1,
                0,
                0,
                0xa1_0f11,
                0x0080_0800,
                0xfeda_3203 | 1 << 24,
                0x178b_fbff,
            ]),
            entry([7, 0, 1, 0, 0xf1bf_07ab | 1 << 1, 0x0040_069c, 0xfc00_0010]),
            entry([0xd, 0, 1, 0x2e7, 0x988, 0x988, 0]),
            entry([0xd, 1, 1, 0xf, 0x988, 0, 0]),
            entry([0x8000_0000, 0, 0, 0x8000_0021, 0, 0, 0]),
            entry([0x8000_0001, 0, 0, 0xa1_0f11, 0, 0x75c2_37ff, 0x2fd3_fbff]),
            entry([0x8000_0008, 0, 0, 0x3030, 0x0300_d20f | 1 << 25, 0, 0]),
        ]
    }

    /// A model KVM with the plan's memory and vCPUs, after INIT2, as `hardware::snp::run` leaves
    /// it before the launch.
    fn vm(p: &LaunchPlan, firmware: SnpFirmware) -> KvmModel {
        let mut kvm = KvmModel::snp(firmware);
        init(p, &mut kvm).unwrap();
        kvm.add_ram(0, 64 << 20);
        if p.firmware_len > 0 {
            kvm.add_ram(p.firmware_gpa, p.firmware_len);
        }
        for _ in 0..p.vcpus {
            kvm.create_vcpu().unwrap();
        }
        kvm
    }

    fn launched(p: &LaunchPlan, cpuid: &[[u8; 40]]) -> Result<KvmModel, OpsError> {
        let mut kvm = vm(p, SnpFirmware::default());
        launch(p, &params(), cpuid, &mut kvm).map(|()| kvm)
    }

    fn assert_kvm_measures_the_plan(p: &LaunchPlan, what: &str) {
        let kvm = launched(p, &snp_cpuid(&host_cpuid())).unwrap();
        let (digest, vmsas) = (&kvm.snp_state().digest, &kvm.snp_state().vmsas);
        let planned: Vec<_> = p
            .updates
            .iter()
            .filter_map(|u| match u {
                LaunchUpdate::Vmsa { page, .. } => Some(page),
                _ => None,
            })
            .collect();
        assert_eq!(vmsas.len(), planned.len(), "{what}");
        for (i, (built, planned)) in vmsas.iter().zip(planned).enumerate() {
            let differ: Vec<usize> = (0..4096).filter(|&b| built[b] != planned[b]).collect();
            assert!(
                differ.is_empty(),
                "{what}: vCPU {i}: KVM's VMSA differs from the plan's at offsets {differ:#x?}"
            );
        }
        assert_eq!(digest.value(), &snp_digest(p), "{what}");
    }

    #[test]
    fn the_vmsas_kvm_builds_from_the_vcpus_are_the_plans_for_every_vmm_type() {
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            assert_kvm_measures_the_plan(&plan_for(vmm), vmm.name());
        }
    }

    #[test]
    fn a_direct_boot_vmsa_kvm_builds_is_the_plans_long_mode_vmsa() {
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            assert_kvm_measures_the_plan(&linux_plan(vmm), vmm.name());
        }
    }

    #[test]
    fn secrets_and_unmeasured_pages_are_sent_with_a_source() {
        // GCE measures SNP_SEC_MEM as UNMEASURED pages; every plan has a SECRETS page.
        let p = plan_for(VmmType::Gce);
        let kvm = launched(&p, &snp_cpuid(&host_cpuid())).unwrap();
        let types: Vec<(u8, u64)> = kvm
            .calls
            .iter()
            .filter(|c| c.id == SNP_LAUNCH_UPDATE)
            .map(|c| (c.payload[24], get_u64(&c.payload, 8)))
            .collect();
        for t in [PageType::UNMEASURED, PageType::SECRETS, PageType::CPUID] {
            let (_, uaddr) = types.iter().find(|(ty, _)| *ty == t.0).unwrap();
            assert!(*uaddr != 0 && uaddr % 4096 == 0, "{t:?} at {uaddr:#x}");
        }
        assert!(
            types
                .iter()
                .filter(|(t, _)| *t == PageType::ZERO.0)
                .all(|(_, uaddr)| *uaddr == 0),
            "ZERO pages go without a source"
        );
    }

    #[test]
    fn the_cpuid_page_never_carries_the_bits_the_firmware_refuses() {
        let cpuid = snp_cpuid(&host_cpuid());
        let kvm = launched(&plan(), &cpuid).unwrap();
        let pages = &kvm.snp_state().cpuid_pages;
        assert_eq!(pages.len(), 1);
        let page = &pages[0];
        let function = |leaf: u32, index: u32| {
            (0..u32::from_le_bytes(page[..4].try_into().unwrap()) as usize)
                .map(|i| &page[16 + i * 48..16 + (i + 1) * 48])
                .find(|f| f[..8] == [leaf.to_le_bytes(), index.to_le_bytes()].concat()[..])
                .unwrap()
        };
        let reg =
            |f: &[u8], r: usize| u32::from_le_bytes(f[24 + 4 * r..28 + 4 * r].try_into().unwrap());
        assert_eq!(reg(function(1, 0), 2) & 1 << 24, 0, "TSC_DEADLINE");
        assert_eq!(reg(function(7, 0), 1) & 1 << 1, 0, "TSC_ADJUST");
        assert_eq!(reg(function(7, 0), 3) & 0xfc00_0000, 0, "SPEC_CTRL..SSBD");
        assert_eq!(reg(function(0x8000_0008, 0), 1) & 1 << 25, 0, "VIRT_SSBD");
        assert_eq!(reg(function(0xd, 0), 1), 0x240);
        assert_eq!(reg(function(0xd, 1), 1), 0x240);
        // The vCPUs run with the same CPUID as the page describes.
        for v in 0..2 {
            let leaf7 = kvm.vcpu_cpuid(v).iter().find(|e| word(e, 0) == 7).unwrap();
            assert_eq!(word(leaf7, EAX + 3) & 0xfc00_0000, 0);
        }
        // KVM's raw CPUID is refused by the firmware.
        assert!(launched(&plan(), &host_cpuid()).is_err());
    }

    #[test]
    fn a_refused_cpuid_page_fails_naming_each_difference() {
        // A firmware that also refuses a bit QEMU does not know about (8000_0001.ECX[0]).
        let mut firmware = SnpFirmware::default();
        firmware.refuses.push((0x8000_0001, None, 2, 1));
        let p = plan();
        let mut kvm = vm(&p, firmware);
        let e = launch(&p, &params(), &snp_cpuid(&host_cpuid()), &mut kvm).unwrap_err();
        let OpsError::CpuidRejected(m) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            m,
            &[CpuidMismatch::Function {
                leaf: 0x8000_0001,
                index: 0,
                provided: [0xa1_0f11, 0, 0x75c2_37ff, 0x2fd3_fbff],
                expected: [0xa1_0f11, 0, 0x75c2_37fe, 0x2fd3_fbff],
            }]
        );
        let text = e.to_string();
        assert!(text.contains("function 0x80000001 index 0x0"), "{text}");
    }

    #[test]
    fn partial_progress_is_reissued_until_every_page_is_measured() {
        let p = plan();
        let mut kvm = vm(
            &p,
            SnpFirmware {
                pages_per_call: Some(1),
                ..SnpFirmware::default()
            },
        );
        launch(&p, &params(), &snp_cpuid(&host_cpuid()), &mut kvm).unwrap();
        assert_eq!(kvm.snp_state().digest.value(), &snp_digest(&p));
    }

    #[test]
    fn host_data_arrives_unshifted_in_the_88_byte_finish() {
        let kvm = launched(&plan(), &snp_cpuid(&host_cpuid())).unwrap();
        let last = kvm.calls.last().unwrap();
        assert_eq!((last.target.clone(), last.id), (Target::SevVm, 102));
        assert_eq!(last.payload.len(), 88);
        // id_block_en, auth_key_en, vcek_disabled at 16..19, then HOST_DATA.
        assert_eq!(&last.payload[16..19], &[0, 0, 0]);
        assert_eq!(&last.payload[19..51], &params().host_data);
        assert!(last.payload[51..].iter().all(|&b| b == 0));
    }

    #[test]
    fn init2_and_start_carry_the_features_and_policy() {
        let kvm = launched(&plan(), &snp_cpuid(&host_cpuid())).unwrap();
        let c: Vec<_> = kvm
            .calls
            .iter()
            .filter(|c| c.target == Target::SevVm)
            .collect();
        assert_eq!(c[0].id, SEV_INIT2);
        assert_eq!(
            get_u64(&c[0].payload, 0),
            0,
            "SNPActive is not a vmsa_feature"
        );
        assert_eq!(c[1].id, SNP_LAUNCH_START);
        assert_eq!(get_u64(&c[1].payload, 0), DEFAULT_POLICY);
    }

    #[test]
    fn every_update_range_is_made_private_just_before_it() {
        let kvm = launched(&plan(), &snp_cpuid(&host_cpuid())).unwrap();
        let mut updates = 0;
        for (i, c) in kvm.calls.iter().enumerate() {
            if c.id != SNP_LAUNCH_UPDATE || c.target != Target::SevVm {
                continue;
            }
            updates += 1;
            let a = &kvm.calls[i - 1];
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
        let p = plan();
        let mut kvm = vm(&p, SnpFirmware::default());
        launch(&p, &prm, &snp_cpuid(&host_cpuid()), &mut kvm).unwrap();
        let fin = &kvm.calls.last().unwrap().payload;
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
    fn a_host_cpuid_too_large_for_a_cpuid_page_is_refused() {
        let many = vec![entry([1, 0, 0, 0, 0, 0, 0]); 65];
        assert!(matches!(
            launched(&plan(), &many),
            Err(OpsError::CpuidPage(_))
        ));
    }
}
