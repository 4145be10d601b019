//! The TDX launch sequence through KVM (Linux `Documentation/virt/kvm/x86/intel-tdx.rst`):
//! KVM_TDX_INIT_VM → KVM_TDX_INIT_VCPU per vCPU → KVM_TDX_INIT_MEM_REGION per TDVF section →
//! KVM_TDX_FINALIZE_VM. kvm-bindings has no TDX structs: they are defined here with size asserts.

use std::mem::{offset_of, size_of};

use super::{CvmOps, OpsError, TdxData, get_u64, put};
use crate::tdx::tdvf::{ATTR_MR_EXTEND, ATTR_PAGE_AUG, TdvfSection, TdvfSectionType};

/// KVM_TDX_INIT_VM.
pub const KVM_TDX_INIT_VM: u32 = 1;
/// KVM_TDX_INIT_VCPU.
pub const KVM_TDX_INIT_VCPU: u32 = 2;
/// KVM_TDX_INIT_MEM_REGION.
pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
/// KVM_TDX_FINALIZE_VM.
pub const KVM_TDX_FINALIZE_VM: u32 = 4;
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

/// Size of one `struct kvm_cpuid_entry2`.
pub const CPUID_ENTRY_LEN: usize = 40;
/// Upper bound on re-issuing a partially completed INIT_MEM_REGION.
const MAX_RETRIES: usize = 1 << 20;

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

/// What KVM does to the payload when a region completes.
pub(crate) fn complete_mem_region(b: &mut [u8]) {
    let src = get_u64(b, 0);
    let gpa = get_u64(b, 8);
    let n = get_u64(b, 16);
    let done = mem_region_bytes(src + n * 4096, gpa + n * 4096, 0);
    put(b, 0, &done);
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

/// Issues the TDX launch of a TDVF `image` with `sections`: INIT_VM, INIT_VCPU (data = TD HOB GPA)
/// for every vCPU, INIT_MEM_REGION for every section that is not PAGE_AUG, in descriptor order
/// (measured when MR_EXTEND: the order [`crate::tdx::mrtd`] replays), FINALIZE_VM.
pub fn launch(
    image: &[u8],
    sections: &[TdvfSection],
    params: &TdxLaunchParams,
    ops: &mut dyn CvmOps,
) -> Result<(), OpsError> {
    let hob = sections
        .iter()
        .find(|s| s.kind == TdvfSectionType::TD_HOB)
        .ok_or(OpsError::Missing("a TD_HOB section in the TDVF metadata"))?;
    let mut init = init_vm_bytes(params);
    ops.tdx_vm_op(KVM_TDX_INIT_VM, 0, &mut init)?;
    for vcpu in 0..params.vcpus {
        ops.tdx_vcpu_op(
            vcpu,
            KVM_TDX_INIT_VCPU,
            0,
            TdxData::Value(hob.memory_address),
        )?;
    }
    for s in sections
        .iter()
        .filter(|s| s.attributes & ATTR_PAGE_AUG == 0)
    {
        let contents = section_contents(image, s);
        let flags = if s.attributes & ATTR_MR_EXTEND != 0 {
            KVM_TDX_MEASURE_MEMORY_REGION
        } else {
            0
        };
        let mut p = mem_region_bytes(
            contents.as_ptr() as u64,
            s.memory_address,
            s.memory_data_size / 4096,
        );
        let mut done = false;
        for _ in 0..MAX_RETRIES {
            ops.tdx_vcpu_op(0, KVM_TDX_INIT_MEM_REGION, flags, TdxData::Bytes(&mut p))?;
            if get_u64(&p, 16) == 0 {
                done = true;
                break;
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
    use crate::cvm::{Recorder, Target};
    use crate::ovmf::OvmfInfo;
    use crate::synthetic::TestImage;
    use crate::tdx::mrtd::{Mrtd, mrtd_of_firmware};
    use crate::tdx::tdvf;

    #[test]
    fn recorded_regions_replay_to_the_mrtd() {
        let img = TestImage::tdvf_default().build();
        let info = OvmfInfo::parse(&img).unwrap();
        let sections = tdvf::parse(&img, &info).unwrap();
        let params = TdxLaunchParams {
            vcpus: 2,
            mrconfigid: [0xcc; 48],
            cpuid_entries: vec![[7; CPUID_ENTRY_LEN]],
            ..TdxLaunchParams::default()
        };
        let mut rec = Recorder::default();
        launch(&img, &sections, &params, &mut rec).unwrap();
        let c = &rec.calls;
        assert_eq!(
            (c[0].target.clone(), c[0].id),
            (Target::TdxVm, KVM_TDX_INIT_VM)
        );
        assert_eq!(c[0].payload.len(), 264 + 40);
        assert_eq!(&c[0].payload[16..64], &[0xcc; 48]);
        assert_eq!(c[0].payload[256], 1, "cpuid nent");
        assert_eq!(c[1].value, Some(0x80_9000));
        assert_eq!(c[2].target, Target::TdxVcpu(1));
        assert_eq!(c.last().unwrap().id, KVM_TDX_FINALIZE_VM);
        // Replay: PAGE.ADD per page, EXTEND per 256 bytes of measured regions, contents by GPA.
        let mut m = Mrtd::new();
        for call in c.iter().filter(|c| c.id == KVM_TDX_INIT_MEM_REGION) {
            let gpa = get_u64(&call.payload, 8);
            let n = get_u64(&call.payload, 16);
            let s = sections.iter().find(|s| s.memory_address == gpa).unwrap();
            let contents = section_contents(&img, s);
            for p in 0..n {
                let pg = gpa + p * 4096;
                m.page_add(pg);
                if call.flags & KVM_TDX_MEASURE_MEMORY_REGION != 0 {
                    for i in 0..16u64 {
                        let at = (p * 4096 + i * 256) as usize;
                        m.extend(pg + i * 256, contents[at..at + 256].try_into().unwrap());
                    }
                }
            }
        }
        assert_eq!(m.finish(), mrtd_of_firmware(&img).unwrap());
        assert!(
            c.iter()
                .filter(|c| c.id == KVM_TDX_INIT_MEM_REGION)
                .all(|c| get_u64(&c.payload, 8) != 0x90_0000),
            "PAGE_AUG sections are not added"
        );
    }
}
