//! The TDX launch sequence through KVM (Linux `Documentation/virt/kvm/x86/intel-tdx.rst`, "KVM
//! TDX creation flow", and arch/x86/kvm/vmx/tdx.c; QEMU's target/i386/kvm/tdx.c):
//! KVM_TDX_CAPABILITIES → KVM_TDX_INIT_VM ([`init_vm`], before any vCPU exists) → per vCPU
//! KVM_TDX_GET_CPUID → KVM_SET_CPUID2 → KVM_TDX_INIT_VCPU ([`init_vcpus`]) →
//! KVM_TDX_INIT_MEM_REGION per TDVF section → KVM_TDX_FINALIZE_VM ([`init_memory_and_finalize`]).
//!
//! The order of a vCPU's commands is the kernel's, not its document's: INIT_VCPU switches the
//! vCPU's APIC to x2APIC mode, which `kvm_apic_set_base` refuses unless the vCPU's CPUID already
//! has X2APIC (`tdx_vcpu_init`), so KVM_SET_CPUID2 comes first, as in QEMU (CPUID when it creates
//! each vCPU, INIT_VCPU when the machine is done). The CPUID comes from KVM_TDX_GET_CPUID, which
//! works before INIT_VCPU: QEMU's `kvm_arch_init_vcpu` asks for it (`tdx_check_features`) before
//! its KVM_SET_CPUID2. INIT_VM and INIT_MEM_REGION are re-issued
//! after -EAGAIN or -EINTR (the TDX module out of entropy; a signal, after which the kernel has
//! advanced the region), as QEMU does. kvm-bindings has no TDX structs: they are defined here with
//! size asserts.

use std::mem::{offset_of, size_of};

use super::cpuid::{CPUID_ENTRY_LEN, EAX, FUNCTION, INDEX, word};
use super::vcpu::VcpuOps;
use super::{AlignedPages, CvmOps, LaunchOps, OpsError, TdxData, exits, get_u64, put};
use crate::tdx::tdvf::{ATTR_MR_EXTEND, ATTR_PAGE_AUG, TdvfSection, TdvfSectionType};

/// KVM_TDX_CAPABILITIES.
pub const KVM_TDX_CAPABILITIES: u32 = 0;
/// KVM_TDX_INIT_VM.
pub const KVM_TDX_INIT_VM: u32 = 1;
/// KVM_TDX_INIT_VCPU.
pub const KVM_TDX_INIT_VCPU: u32 = 2;
/// KVM_TDX_INIT_MEM_REGION.
pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
/// KVM_TDX_FINALIZE_VM.
pub const KVM_TDX_FINALIZE_VM: u32 = 4;
/// KVM_TDX_GET_CPUID.
pub const KVM_TDX_GET_CPUID: u32 = 5;
/// INIT_MEM_REGION flag: extend MRTD with the pages (TDH.MR.EXTEND).
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1 << 0;

/// `struct kvm_tdx_cmd` (arch/x86/include/uapi/asm/kvm.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmTdxCmd {
    /// Command id.
    pub id: u32,
    /// Flags.
    pub flags: u32,
    /// Value or pointer.
    pub data: u64,
    /// TDX module status written back.
    pub hw_error: u64,
}
const _: () = assert!(size_of::<KvmTdxCmd>() == 24);

/// `struct kvm_tdx_init_vm` without its trailing `struct kvm_cpuid2` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmTdxInitVm {
    /// TD attributes.
    pub attributes: u64,
    /// Extended features allowed mask.
    pub xfam: u64,
    /// MRCONFIGID.
    pub mrconfigid: [u64; 6],
    /// MROWNER.
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u64; 6],
    /// Reserved, zero.
    pub reserved: [u64; 12],
    /// `kvm_cpuid2.nent`.
    pub cpuid_nent: u32,
    /// `kvm_cpuid2.padding`.
    pub cpuid_padding: u32,
}
const _: () = assert!(size_of::<KvmTdxInitVm>() == 264);
const _: () = assert!(offset_of!(KvmTdxInitVm, mrconfigid) == 16);
const _: () = assert!(offset_of!(KvmTdxInitVm, cpuid_nent) == 256);

/// `struct kvm_tdx_init_mem_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmTdxInitMemRegion {
    /// Host address of the source bytes.
    pub source_addr: u64,
    /// Guest-physical address.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}
const _: () = assert!(size_of::<KvmTdxInitMemRegion>() == 24);

/// Size of `struct kvm_tdx_capabilities` before its `struct kvm_cpuid2` (supported_attrs,
/// supported_xfam, four TDVMCALL info words, reserved[250]).
pub const CAPABILITIES_HEADER_LEN: usize = 2048;
/// Size of the `struct kvm_cpuid2` header (nent, padding).
const CPUID2_HEADER_LEN: usize = 8;
/// CPUID entries asked for in KVM_TDX_CAPABILITIES and KVM_TDX_GET_CPUID (KVM_MAX_CPUID_ENTRIES).
pub const MAX_CPUID_ENTRIES: u32 = 256;
/// TD attribute SEPT_VE_DISABLE (bit 28): EPT violations on pending pages are not turned into
/// #VE; Linux guests refuse to run without it.
pub const ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;

/// The name of TDX command `id` (for errors).
pub fn command_name(id: u32) -> &'static str {
    match id {
        KVM_TDX_CAPABILITIES => "KVM_TDX_CAPABILITIES",
        KVM_TDX_INIT_VM => "KVM_TDX_INIT_VM",
        KVM_TDX_INIT_VCPU => "KVM_TDX_INIT_VCPU",
        KVM_TDX_INIT_MEM_REGION => "KVM_TDX_INIT_MEM_REGION",
        KVM_TDX_FINALIZE_VM => "KVM_TDX_FINALIZE_VM",
        KVM_TDX_GET_CPUID => "KVM_TDX_GET_CPUID",
        _ => "KVM_MEMORY_ENCRYPT_OP (TDX)",
    }
}

/// The TDVMCALLs GetTdVmCallInfo leaf 1 reports (KVM_TDX_CAPABILITIES'
/// `kernel_tdvmcallinfo_1_r11`, `user_tdvmcallinfo_1_r11`, `kernel_tdvmcallinfo_1_r12`,
/// `user_tdvmcallinfo_1_r12`): those KVM handles itself, and those it leaves to the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdVmCallInfo {
    /// R11 bits KVM handles.
    pub kernel_r11: u64,
    /// R11 bits KVM leaves to userspace.
    pub user_r11: u64,
    /// R12 bits KVM handles.
    pub kernel_r12: u64,
    /// R12 bits KVM leaves to userspace.
    pub user_r12: u64,
}

/// What KVM_TDX_CAPABILITIES reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxCapabilities {
    /// TD attributes the host allows.
    pub supported_attrs: u64,
    /// XFAM bits the host allows.
    pub supported_xfam: u64,
    /// The TDVMCALLs for GetTdVmCallInfo.
    pub tdvmcall_info: TdVmCallInfo,
    /// The configurable CPUID bits (`kvm_cpuid_entry2`: a set bit may be configured).
    pub cpuid: Vec<[u8; CPUID_ENTRY_LEN]>,
}

/// A `struct kvm_cpuid2` buffer with room for `n` entries (`nent = n`).
pub fn cpuid2_bytes(n: u32) -> Vec<u8> {
    let mut b = vec![0u8; CPUID2_HEADER_LEN + n as usize * CPUID_ENTRY_LEN];
    put(&mut b, 0, &n.to_le_bytes());
    b
}

/// The entries of a `struct kvm_cpuid2` buffer (at most as many as fit).
pub fn parse_cpuid2(b: &[u8]) -> Vec<[u8; CPUID_ENTRY_LEN]> {
    let nent = b
        .get(..4)
        .and_then(|n| n.try_into().ok())
        .map_or(0, u32::from_le_bytes) as usize;
    b.get(CPUID2_HEADER_LEN..)
        .unwrap_or_default()
        .chunks_exact(CPUID_ENTRY_LEN)
        .take(nent)
        .filter_map(|e| e.try_into().ok())
        .collect()
}

/// The KVM_TDX_CAPABILITIES payload with room for `n` CPUID entries.
pub fn capabilities_bytes(n: u32) -> Vec<u8> {
    let mut b = vec![0u8; CAPABILITIES_HEADER_LEN];
    b.extend_from_slice(&cpuid2_bytes(n));
    b
}

/// Reads a KVM_TDX_CAPABILITIES payload the kernel filled.
pub fn parse_capabilities(b: &[u8]) -> TdxCapabilities {
    TdxCapabilities {
        supported_attrs: get_u64(b, 0),
        supported_xfam: get_u64(b, 8),
        tdvmcall_info: TdVmCallInfo {
            kernel_r11: get_u64(b, 16),
            user_r11: get_u64(b, 24),
            kernel_r12: get_u64(b, 32),
            user_r12: get_u64(b, 40),
        },
        cpuid: parse_cpuid2(b.get(CAPABILITIES_HEADER_LEN..).unwrap_or_default()),
    }
}

/// The CPUID entries for INIT_VM: for each leaf/sub-leaf the TDX module lets the host configure,
/// what KVM supports on this host (`supported`, KVM_GET_SUPPORTED_CPUID) restricted to the
/// configurable bits. Leaves KVM does not report are left out (the TDX module's defaults apply).
pub fn configurable_cpuid(
    configurable: &[[u8; CPUID_ENTRY_LEN]],
    supported: &[[u8; CPUID_ENTRY_LEN]],
) -> Vec<[u8; CPUID_ENTRY_LEN]> {
    let key = |e: &[u8; CPUID_ENTRY_LEN]| (word(e, FUNCTION), word(e, INDEX));
    configurable
        .iter()
        .filter_map(|c| {
            let s = supported.iter().find(|s| key(s) == key(c))?;
            let mut e = *s;
            for w in EAX..EAX + 4 {
                put(&mut e, w * 4, &(word(s, w) & word(c, w)).to_le_bytes());
            }
            Some(e)
        })
        .collect()
}

/// Upper bound on re-issuing INIT_VM and a partially completed INIT_MEM_REGION (QEMU retries
/// INIT_VM 10000 times).
const MAX_RETRIES: usize = 1 << 20;
/// `EINTR`, `EAGAIN`: the kernel asks for the command again.
const RETRY_ERRNOS: [i32; 2] = [4, 11];

/// Whether `e` asks for the command again (-EINTR, -EAGAIN).
fn again(e: &OpsError) -> bool {
    matches!(e, OpsError::Ioctl { errno, .. } if RETRY_ERRNOS.contains(errno))
}

/// What the host chooses for a TDX launch.
#[derive(Clone, Debug)]
pub struct TdxLaunchParams {
    /// TD attributes (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, …).
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// CPUID entries (`kvm_cpuid_entry2`, 40 bytes each), from KVM_TDX_GET_CPUID / supported CPUID.
    pub cpuid_entries: Vec<[u8; CPUID_ENTRY_LEN]>,
    /// Number of vCPUs.
    pub vcpus: u32,
}

impl Default for TdxLaunchParams {
    fn default() -> Self {
        Self {
            attributes: 0,
            xfam: 0,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid_entries: Vec::new(),
            vcpus: 1,
        }
    }
}

/// The INIT_VM payload.
pub fn init_vm_bytes(p: &TdxLaunchParams) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<KvmTdxInitVm>()];
    put(
        &mut b,
        offset_of!(KvmTdxInitVm, attributes),
        &p.attributes.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(KvmTdxInitVm, xfam),
        &p.xfam.to_le_bytes(),
    );
    put(&mut b, offset_of!(KvmTdxInitVm, mrconfigid), &p.mrconfigid);
    put(&mut b, offset_of!(KvmTdxInitVm, mrowner), &p.mrowner);
    put(
        &mut b,
        offset_of!(KvmTdxInitVm, mrownerconfig),
        &p.mrownerconfig,
    );
    let nent = u32::try_from(p.cpuid_entries.len()).unwrap_or(u32::MAX);
    put(
        &mut b,
        offset_of!(KvmTdxInitVm, cpuid_nent),
        &nent.to_le_bytes(),
    );
    for e in &p.cpuid_entries {
        b.extend_from_slice(e);
    }
    b
}

/// The INIT_MEM_REGION payload.
pub fn mem_region_bytes(source_addr: u64, gpa: u64, nr_pages: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    put(
        &mut b,
        offset_of!(KvmTdxInitMemRegion, source_addr),
        &source_addr.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(KvmTdxInitMemRegion, gpa),
        &gpa.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(KvmTdxInitMemRegion, nr_pages),
        &nr_pages.to_le_bytes(),
    );
    b
}

/// The bytes a section starts with in guest memory: its raw data from the image, zero-padded.
fn section_contents(image: &[u8], s: &TdvfSection) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(s.memory_data_size).unwrap_or(0)];
    let raw = image
        .get(s.data_offset as usize..)
        .and_then(|r| r.get(..s.raw_data_size as usize))
        .unwrap_or(&[]);
    if let Some(dst) = v.get_mut(..raw.len()) {
        dst.copy_from_slice(raw);
    }
    v
}

/// KVM_TDX_CAPABILITIES.
pub fn capabilities(ops: &mut dyn CvmOps) -> Result<TdxCapabilities, OpsError> {
    let mut b = capabilities_bytes(MAX_CPUID_ENTRIES);
    ops.tdx_vm_op(KVM_TDX_CAPABILITIES, 0, &mut b)?;
    Ok(parse_capabilities(&b))
}

/// KVM_TDX_INIT_VM with `params`, re-issued after -EAGAIN/-EINTR. INVARIANT: before any vCPU is
/// created.
pub fn init_vm(params: &TdxLaunchParams, ops: &mut dyn CvmOps) -> Result<(), OpsError> {
    let mut init = init_vm_bytes(params);
    for _ in 0..MAX_RETRIES {
        match ops.tdx_vm_op(KVM_TDX_INIT_VM, 0, &mut init) {
            Err(e) if again(&e) => continue,
            other => return other,
        }
    }
    Err(OpsError::NoProgress("KVM_TDX_INIT_VM"))
}

/// For each of `vcpus` vCPUs: KVM_TDX_GET_CPUID (the CPUID the TDX module virtualizes for the
/// TD), KVM_SET_CPUID2 with it, then KVM_TDX_INIT_VCPU (data = the TD HOB's GPA, the initial RCX).
/// INVARIANT: CPUID before INIT_VCPU (see the module documentation).
pub fn init_vcpus(
    sections: &[TdvfSection],
    vcpus: u32,
    ops: &mut dyn LaunchOps,
) -> Result<(), OpsError> {
    let hob = sections
        .iter()
        .find(|s| s.kind == TdvfSectionType::TD_HOB)
        .ok_or(OpsError::Missing("a TD_HOB section in the TDVF metadata"))?;
    for vcpu in 0..vcpus {
        let mut c = cpuid2_bytes(MAX_CPUID_ENTRIES);
        ops.tdx_vcpu_op(vcpu, KVM_TDX_GET_CPUID, 0, TdxData::Bytes(&mut c))?;
        VcpuOps::set_cpuid(ops, vcpu, &parse_cpuid2(&c))?;
        ops.tdx_vcpu_op(
            vcpu,
            KVM_TDX_INIT_VCPU,
            0,
            TdxData::Value(hob.memory_address),
        )?;
    }
    Ok(())
}

/// KVM_TDX_INIT_MEM_REGION for every TDVF section of `image` that is not PAGE_AUG, in
/// descriptor order (measured when MR_EXTEND: the order [`crate::tdx::mrtd`] replays), each
/// preceded by KVM_SET_MEMORY_ATTRIBUTES making it private and re-issued until every page is
/// added (after partial progress, -EINTR or -EAGAIN the kernel has advanced the region); then
/// KVM_TDX_FINALIZE_VM. The TD_HOB section starts with `td_hob` ([`crate::tdx::td_hob`]).
pub fn init_memory_and_finalize(
    image: &[u8],
    sections: &[TdvfSection],
    td_hob: &[u8],
    ops: &mut dyn LaunchOps,
) -> Result<(), OpsError> {
    for s in sections
        .iter()
        .filter(|s| s.attributes & ATTR_PAGE_AUG == 0)
    {
        let mut bytes = section_contents(image, s);
        if s.kind == TdvfSectionType::TD_HOB {
            let n = td_hob.len().min(bytes.len());
            put(&mut bytes, 0, td_hob.get(..n).unwrap_or_default());
        }
        let contents = AlignedPages::new(&bytes);
        let flags = if s.attributes & ATTR_MR_EXTEND != 0 {
            KVM_TDX_MEASURE_MEMORY_REGION
        } else {
            0
        };
        // INVARIANT: KVM accepts INIT_MEM_REGION only for private GPAs (intel-tdx.rst).
        exits::convert(ops, s.memory_address, s.memory_data_size, true)?;
        let mut p = mem_region_bytes(contents.addr(), s.memory_address, s.memory_data_size / 4096);
        let mut done = false;
        for _ in 0..MAX_RETRIES {
            match ops.tdx_init_mem_region(0, flags, &mut p, &contents) {
                Err(e) if again(&e) => continue,
                Err(e) => return Err(e),
                Ok(()) if get_u64(&p, 16) == 0 => {
                    done = true;
                    break;
                }
                Ok(()) => {}
            }
        }
        if !done {
            return Err(OpsError::NoProgress("KVM_TDX_INIT_MEM_REGION"));
        }
    }
    ops.tdx_vm_op(KVM_TDX_FINALIZE_VM, 0, &mut [])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvm::Target;
    use crate::cvm::cpuid::entry;
    use crate::cvm::kvm_model::{KvmModel, TdxModule};
    use crate::ovmf::OvmfInfo;
    use crate::plan::FOUR_GIB;
    use crate::synthetic::TestImage;
    use crate::tdx::mrtd::mrtd_of_firmware;
    use crate::tdx::tdvf;

    /// A TDX module whose TD CPUID has X2APIC (CPUID.1.ECX[21], fixed to 1 for TDs).
    fn module() -> TdxModule {
        TdxModule {
            attrs: ATTR_SEPT_VE_DISABLE,
            xfam: 0xe7,
            tdvmcall_info: [0, 1 << 1, 0, 0],
            configurable: vec![entry([7, 0, 1, 0, 0xff, 0, 0])],
            td_cpuid: vec![
                entry([0, 0, 0, 0x23, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
                entry([1, 0, 0, 0x806f8, 0, 0xf7fa_3203 | 1 << 21, 0x1f8b_fbff]),
            ],
            ..TdxModule::default()
        }
    }

    struct Launched {
        kvm: KvmModel,
        img: Vec<u8>,
        sections: Vec<TdvfSection>,
    }

    /// `hardware::tdx::run`'s sequence on the model: INIT_VM, memory, vCPUs, their CPUID and
    /// INIT_VCPU, the TDVF sections, FINALIZE_VM.
    fn launch(m: TdxModule, vcpus: u32) -> Result<Launched, OpsError> {
        let img = TestImage::tdvf_default().build();
        let info = OvmfInfo::parse(&img).unwrap();
        let sections = tdvf::parse(&img, &info).unwrap();
        let params = TdxLaunchParams {
            vcpus,
            mrconfigid: [0xcc; 48],
            cpuid_entries: vec![[7; CPUID_ENTRY_LEN]],
            ..TdxLaunchParams::default()
        };
        let mut kvm = KvmModel::tdx(m);
        init_vm(&params, &mut kvm)?;
        kvm.add_ram(0, 16 << 20);
        kvm.add_ram(FOUR_GIB - img.len() as u64, img.len() as u64);
        for _ in 0..vcpus {
            kvm.create_vcpu()?;
        }
        init_vcpus(&sections, vcpus, &mut kvm)?;
        init_memory_and_finalize(&img, &sections, &[0xaa; 64], &mut kvm)?;
        Ok(Launched { kvm, img, sections })
    }

    #[test]
    fn the_mrtd_the_tdx_module_computes_is_the_firmwares() {
        let l = launch(module(), 2).unwrap();
        let td = l.kvm.tdx_state();
        assert_eq!(td.finalized, Some(mrtd_of_firmware(&l.img).unwrap()));
        assert!(
            !td.added.contains(&0x90_0000),
            "PAGE_AUG sections are not added"
        );
        let hob = l
            .sections
            .iter()
            .find(|s| s.kind == TdvfSectionType::TD_HOB)
            .unwrap();
        assert_eq!(
            td.rcx,
            [Some(hob.memory_address); 2],
            "RCX = the TD HOB for every vCPU"
        );
        let c = &l.kvm.calls;
        assert_eq!(
            (c[0].target.clone(), c[0].id),
            (Target::TdxVm, KVM_TDX_INIT_VM)
        );
        assert_eq!(c[0].payload.len(), 264 + 40);
        assert_eq!(&c[0].payload[16..64], &[0xcc; 48]);
        assert_eq!(c[0].payload[256], 1, "cpuid nent");
        assert_eq!(c.last().unwrap().id, KVM_TDX_FINALIZE_VM);
        assert_eq!(c.last().unwrap().payload, Vec::<u8>::new());
        // Every region is made private right before it is added.
        for (i, call) in c
            .iter()
            .enumerate()
            .filter(|(_, c)| c.id == KVM_TDX_INIT_MEM_REGION)
        {
            let a = &c[i - 1];
            assert_eq!(a.target, Target::MemoryAttributes);
            assert_eq!(get_u64(&a.payload, 0), get_u64(&call.payload, 8));
            assert_eq!(get_u64(&a.payload, 8), get_u64(&call.payload, 16) * 4096);
            assert_eq!(get_u64(&a.payload, 16), 8, "private");
        }
    }

    #[test]
    fn each_vcpu_gets_the_tds_cpuid_before_init_vcpu() {
        let l = launch(module(), 2).unwrap();
        for v in 0..2u32 {
            let calls: Vec<(Target, u32)> = l
                .kvm
                .calls
                .iter()
                .filter(|c| c.target == Target::TdxVcpu(v) || c.target == Target::Vcpu(v))
                .map(|c| (c.target.clone(), c.id))
                .take(3)
                .collect();
            assert_eq!(
                calls,
                [
                    (Target::TdxVcpu(v), KVM_TDX_GET_CPUID),
                    (
                        Target::Vcpu(v),
                        crate::cvm::vcpu::VcpuIoctl::SetCpuid as u32
                    ),
                    (Target::TdxVcpu(v), KVM_TDX_INIT_VCPU),
                ]
            );
            assert_eq!(l.kvm.vcpu_cpuid(v), &module().td_cpuid[..]);
        }
    }

    #[test]
    fn init_vcpu_fails_when_the_vcpus_cpuid_lacks_x2apic() {
        let mut m = module();
        m.td_cpuid[1] = entry([1, 0, 0, 0x806f8, 0, 0xf7da_3203, 0x1f8b_fbff]);
        match launch(m, 1) {
            Err(OpsError::Ioctl { what, errno, .. }) => {
                assert_eq!((what, errno), ("KVM_TDX_INIT_VCPU", 22));
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn init_vm_is_reissued_while_the_tdx_module_is_out_of_entropy() {
        let l = launch(
            TdxModule {
                init_vm_busy: 3,
                ..module()
            },
            1,
        )
        .unwrap();
        let tries = l
            .kvm
            .calls
            .iter()
            .filter(|c| c.id == KVM_TDX_INIT_VM && c.target == Target::TdxVm)
            .count();
        assert_eq!(tries, 4);
        assert!(l.kvm.tdx_state().finalized.is_some());
    }

    #[test]
    fn an_interrupted_init_mem_region_resumes_where_the_kernel_stopped() {
        let l = launch(
            TdxModule {
                interrupt_every: Some(1),
                ..module()
            },
            1,
        )
        .unwrap();
        assert_eq!(
            l.kvm.tdx_state().finalized,
            Some(mrtd_of_firmware(&l.img).unwrap())
        );
        let regions = l
            .kvm
            .calls
            .iter()
            .filter(|c| c.id == KVM_TDX_INIT_MEM_REGION)
            .count();
        let pages: u64 = l
            .sections
            .iter()
            .filter(|s| s.attributes & ATTR_PAGE_AUG == 0)
            .map(|s| s.memory_data_size / 4096)
            .sum();
        assert_eq!(regions as u64, pages, "one page per try");
    }

    #[test]
    fn mrconfigid_and_mrowner_reach_init_vm_at_their_offsets() {
        let params = TdxLaunchParams {
            attributes: ATTR_SEPT_VE_DISABLE,
            xfam: 0xe7,
            mrconfigid: [1; 48],
            mrowner: [2; 48],
            ..TdxLaunchParams::default()
        };
        let mut kvm = KvmModel::tdx(module());
        init_vm(&params, &mut kvm).unwrap();
        let p = &kvm.calls[0].payload;
        assert_eq!(get_u64(p, 0), 1 << 28);
        assert_eq!(get_u64(p, 8), 0xe7);
        assert_eq!(&p[16..64], &[1; 48]);
        assert_eq!(&p[64..112], &[2; 48]);
        assert_eq!(&p[112..160], &[0; 48]);
        assert_eq!(p.len(), 264, "no CPUID entries");
    }

    fn kvm_entry(leaf: u32, sub: u32, regs: [u32; 4]) -> [u8; CPUID_ENTRY_LEN] {
        entry([leaf, sub, 0, regs[0], regs[1], regs[2], regs[3]])
    }

    #[test]
    fn capabilities_and_cpuid_buffers_parse_what_the_kernel_writes() {
        let mut kvm = KvmModel::tdx(module());
        let c = capabilities(&mut kvm).unwrap();
        assert_eq!(c.supported_attrs, ATTR_SEPT_VE_DISABLE);
        assert_eq!(c.supported_xfam, 0xe7);
        assert_eq!(
            c.tdvmcall_info,
            TdVmCallInfo {
                user_r11: 1 << 1,
                ..TdVmCallInfo::default()
            }
        );
        assert_eq!(c.cpuid, vec![entry([7, 0, 1, 0, 0xff, 0, 0])]);
        let mut caps = capabilities_bytes(2);
        assert_eq!(caps.len(), 2048 + 8 + 80);
        assert_eq!(
            &caps[2048..2052],
            &2u32.to_le_bytes(),
            "nent is the capacity"
        );
        caps[16..24].copy_from_slice(&5u64.to_le_bytes());
        caps[32..40].copy_from_slice(&6u64.to_le_bytes());
        let c = parse_capabilities(&caps);
        assert_eq!(
            (c.tdvmcall_info.kernel_r11, c.tdvmcall_info.kernel_r12),
            (5, 6)
        );
        assert!(
            parse_cpuid2(&[9, 0, 0, 0]).is_empty(),
            "nent beyond the buffer"
        );
    }

    #[test]
    fn init_vm_cpuid_is_what_kvm_supports_within_the_configurable_bits() {
        let configurable = [
            kvm_entry(7, 0, [0, 0x0f, 0, 0]),
            kvm_entry(0x8000_0008, 0, [0xff, 0, 0, 0]),
        ];
        let supported = [
            kvm_entry(1, 0, [1, 1, 1, 1]),
            kvm_entry(7, 0, [9, 0x3c, 9, 9]),
        ];
        assert_eq!(
            configurable_cpuid(&configurable, &supported),
            vec![kvm_entry(7, 0, [0, 0x0c, 0, 0])]
        );
    }
}
