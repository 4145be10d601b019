//! A model of KVM (and of the SEV firmware and TDX module under it) for the launch sequences'
//! tests: it enforces what KVM enforces and does what KVM does, written from the kernel's source
//! (each function names the kernel function it models), so that a sequence that passes here
//! would not fail on real KVM for a reason the model knows, and the digests it measures are the
//! firmware's.
//!
//! - [`x86`]: a vCPU's registers from KVM_CREATE_VCPU to the VMSA `sev_es_sync_vmsa` builds.
//! - [`sev`]: KVM_SEV_INIT2, SNP_LAUNCH_START/UPDATE/FINISH and the SNP firmware.
//! - [`tdx`]: the TDX commands and the TDX module's MRTD.
//!
//! Memory (virt/kvm/kvm_main.c `kvm_vm_ioctl_set_mem_attributes`, guest_memfd slots): guest_memfd
//! slots added with [`KvmModel::add_ram`]; per-page private attributes; every page starts shared.
//! Every call is logged in [`KvmModel::calls`].

mod sev;
mod tdx;
mod x86;

use std::collections::BTreeSet;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

pub(crate) use sev::{SnpFirmware, SnpVm};
pub(crate) use tdx::{TdxModule, TdxVm};
use x86::Vcpu;

use super::cpuid::CPUID_ENTRY_LEN;
use super::exits::MemoryOps;
use super::vcpu::{VcpuIoctl, VcpuOps};
use super::{AlignedPages, Call, CvmOps, OpsError, Target, TdxData, get_u64};

/// Which confidential VM type.
enum Tee {
    Snp(Box<sev::SnpVm>),
    Tdx(Box<tdx::TdxVm>),
}

/// The model: one VM of type SNP or TDX.
pub(crate) struct KvmModel {
    /// Every call, in order.
    pub(crate) calls: Vec<Call>,
    vcpus: Vec<Vcpu>,
    /// guest_memfd slots: (first GFN, end GFN).
    slots: Vec<(u64, u64)>,
    /// GFNs whose attributes are PRIVATE.
    private: BTreeSet<u64>,
    tee: Tee,
}

fn vcpu_error(what: &'static str, errno: i32) -> OpsError {
    OpsError::Ioctl {
        what,
        errno,
        fw_error: 0,
    }
}

impl KvmModel {
    /// A `KVM_X86_SNP_VM` on `firmware`.
    pub(crate) fn snp(firmware: SnpFirmware) -> Self {
        Self::new(Tee::Snp(Box::new(sev::SnpVm::new(firmware))))
    }

    /// A `KVM_X86_TDX_VM` on `module`.
    pub(crate) fn tdx(module: TdxModule) -> Self {
        Self::new(Tee::Tdx(Box::new(tdx::TdxVm::new(module))))
    }

    fn new(tee: Tee) -> Self {
        Self {
            calls: Vec::new(),
            vcpus: Vec::new(),
            slots: Vec::new(),
            private: BTreeSet::new(),
            tee,
        }
    }

    /// KVM_CREATE_GUEST_MEMFD + KVM_SET_USER_MEMORY_REGION2: `len` bytes of RAM at `gpa`.
    pub(crate) fn add_ram(&mut self, gpa: u64, len: u64) {
        self.slots.push((gpa / 4096, (gpa + len).div_ceil(4096)));
    }

    /// KVM_CREATE_VCPU; its index.
    pub(crate) fn create_vcpu(&mut self) -> Result<u32, OpsError> {
        if let Tee::Tdx(_) = self.tee {
            self.tdx_vcpu_create()?;
        }
        let id = u32::try_from(self.vcpus.len()).unwrap_or(u32::MAX);
        self.vcpus.push(Vcpu::new(id));
        Ok(id)
    }

    /// Whether the page at `gpa` is private.
    pub(crate) fn is_private(&self, gpa: u64) -> bool {
        self.private.contains(&(gpa / 4096))
    }

    /// The end GFN of the slot holding `gfn`.
    fn slot_end(&self, gfn: u64) -> Option<u64> {
        self.slots
            .iter()
            .find(|(s, e)| (*s..*e).contains(&gfn))
            .map(|&(_, e)| e)
    }

    /// SNP: the launch digest so far, the VMSAs KVM built at FINISH, the accepted CPUID pages.
    pub(crate) fn snp_state(&self) -> &SnpVm {
        match &self.tee {
            Tee::Snp(s) => s,
            Tee::Tdx(_) => panic!("not an SNP VM"),
        }
    }

    /// TDX: the MRTD after FINALIZE_VM, the added GPAs in order, each vCPU's initial RCX.
    pub(crate) fn tdx_state(&self) -> &TdxVm {
        match &self.tee {
            Tee::Tdx(t) => t,
            Tee::Snp(_) => panic!("not a TDX VM"),
        }
    }

    /// The CPUID vCPU `vcpu` was given.
    pub(crate) fn vcpu_cpuid(&self, vcpu: u32) -> &[[u8; CPUID_ENTRY_LEN]] {
        &self.vcpus[vcpu as usize].cpuid
    }

    fn log(&mut self, target: Target, id: u32, flags: u32, payload: &[u8], value: Option<u64>) {
        self.calls.push(Call {
            target,
            id,
            flags,
            payload: payload.to_vec(),
            value,
        });
    }

    fn vcpu(&mut self, i: u32) -> Result<&mut Vcpu, OpsError> {
        self.vcpus
            .get_mut(i as usize)
            .ok_or(OpsError::Missing("a vCPU the model created"))
    }

    fn log_vcpu(&mut self, vcpu: u32, ioctl: VcpuIoctl, bytes: &[u8]) {
        self.log(Target::Vcpu(vcpu), ioctl as u32, 0, bytes, None);
    }
}

impl CvmOps for KvmModel {
    fn sev_op(&mut self, id: u32, payload: &mut [u8]) -> Result<(), OpsError> {
        self.log(Target::SevVm, id, 0, payload, None);
        self.sev_command(id, payload)
    }

    fn snp_launch_update(
        &mut self,
        payload: &mut [u8; 64],
        source: Option<&mut AlignedPages>,
    ) -> Result<(), OpsError> {
        self.log(
            Target::SevVm,
            super::snp::SNP_LAUNCH_UPDATE,
            0,
            payload,
            None,
        );
        KvmModel::snp_launch_update(self, payload, source)
    }

    fn tdx_vm_op(&mut self, id: u32, flags: u32, payload: &mut [u8]) -> Result<(), OpsError> {
        self.log(Target::TdxVm, id, flags, payload, None);
        self.tdx_vm_command(id, payload)
    }

    fn tdx_vcpu_op(
        &mut self,
        vcpu: u32,
        id: u32,
        flags: u32,
        data: TdxData<'_>,
    ) -> Result<(), OpsError> {
        match &data {
            TdxData::Value(v) => self.log(Target::TdxVcpu(vcpu), id, flags, &[], Some(*v)),
            TdxData::Bytes(b) => self.log(Target::TdxVcpu(vcpu), id, flags, b, None),
        }
        self.tdx_vcpu_command(vcpu, id, flags, data)
    }

    fn tdx_init_mem_region(
        &mut self,
        vcpu: u32,
        flags: u32,
        region: &mut [u8; 24],
        source: &AlignedPages,
    ) -> Result<(), OpsError> {
        let id = super::tdx::KVM_TDX_INIT_MEM_REGION;
        self.log(Target::TdxVcpu(vcpu), id, flags, region, None);
        KvmModel::tdx_init_mem_region(self, vcpu, flags, region, source)
    }
}

impl MemoryOps for KvmModel {
    /// `kvm_vm_ioctl_set_mem_attributes`: whole pages, no flags, PRIVATE or nothing.
    fn set_memory_attributes(&mut self, payload: &[u8; 32]) -> Result<(), OpsError> {
        self.log(Target::MemoryAttributes, 0, 0, payload, None);
        let (gpa, size, attrs, flags) = (
            get_u64(payload, 0),
            get_u64(payload, 8),
            get_u64(payload, 16),
            get_u64(payload, 24),
        );
        if size == 0
            || !gpa.is_multiple_of(4096)
            || !size.is_multiple_of(4096)
            || flags != 0
            || attrs & !8 != 0
        {
            return Err(vcpu_error("KVM_SET_MEMORY_ATTRIBUTES", x86::EINVAL));
        }
        for gfn in gpa / 4096..(gpa + size) / 4096 {
            if attrs == 8 {
                self.private.insert(gfn);
            } else {
                self.private.remove(&gfn);
            }
        }
        Ok(())
    }

    fn read_shared(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), OpsError> {
        Err(OpsError::BadRange {
            gpa,
            size: buf.len() as u64,
        })
    }

    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OpsError> {
        Err(OpsError::BadRange {
            gpa,
            size: data.len() as u64,
        })
    }
}

impl VcpuOps for KvmModel {
    fn set_cpuid(&mut self, vcpu: u32, entries: &[[u8; CPUID_ENTRY_LEN]]) -> Result<(), OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::SetCpuid, &entries.concat());
        self.vcpu(vcpu)?.cpuid = entries.to_vec();
        Ok(())
    }

    fn get_sregs(&mut self, vcpu: u32) -> Result<kvm_sregs, OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::GetSregs, &[]);
        Ok(self.vcpu(vcpu)?.get_sregs())
    }

    fn set_sregs(&mut self, vcpu: u32, sregs: &kvm_sregs) -> Result<(), OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::SetSregs, &[]);
        self.vcpu(vcpu)?
            .set_sregs(sregs)
            .map_err(|e| vcpu_error("KVM_SET_SREGS", e))
    }

    fn set_regs(&mut self, vcpu: u32, regs: &kvm_regs) -> Result<(), OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::SetRegs, &[]);
        self.vcpu(vcpu)?.set_regs(regs);
        Ok(())
    }

    fn set_fpu(&mut self, vcpu: u32, fpu: &kvm_fpu) -> Result<(), OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::SetFpu, &[]);
        self.vcpu(vcpu)?.set_fpu(fpu);
        Ok(())
    }

    fn set_xcr0(&mut self, vcpu: u32, xcr0: u64) -> Result<(), OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::SetXcr0, &xcr0.to_le_bytes());
        self.vcpu(vcpu)?
            .set_xcr0(xcr0)
            .map_err(|e| vcpu_error("KVM_SET_XCRS", e))
    }

    fn set_msr(&mut self, vcpu: u32, index: u32, value: u64) -> Result<(), OpsError> {
        self.log_vcpu(vcpu, VcpuIoctl::SetMsr, &value.to_le_bytes());
        self.vcpu(vcpu)?
            .set_msr(index, value)
            .map_err(|e| vcpu_error("KVM_SET_MSRS", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvm::exits::attributes_bytes;
    use crate::cvm::snp::{SNP_LAUNCH_START, init2_bytes, launch_start_bytes, launch_update_bytes};
    use crate::snp::digest::PageType;
    use crate::snp::vmsa::offset;

    /// An SNP VM after INIT2 and LAUNCH_START with one private page of RAM at 0x1000.
    fn started() -> KvmModel {
        let mut kvm = KvmModel::snp(SnpFirmware::default());
        kvm.sev_op(super::super::snp::SEV_INIT2, &mut init2_bytes(0))
            .unwrap();
        kvm.sev_op(SNP_LAUNCH_START, &mut launch_start_bytes(0x3_0000))
            .unwrap();
        kvm.add_ram(0, 0x10_0000);
        kvm.set_memory_attributes(&attributes_bytes(0x1000, 0x1000, true))
            .unwrap();
        kvm
    }

    fn eio(r: Result<(), OpsError>) -> bool {
        matches!(r, Err(OpsError::Ioctl { errno: 5, .. }))
    }

    #[test]
    fn only_zero_pages_may_come_without_a_source() {
        for t in [
            PageType::NORMAL,
            PageType::SECRETS,
            PageType::UNMEASURED,
            PageType::CPUID,
        ] {
            let mut kvm = started();
            let mut p = launch_update_bytes(0x1000, 0, 4096, t.0);
            assert!(eio(kvm.snp_launch_update(&mut p, None)), "{t:?}");
        }
        let mut kvm = started();
        let mut p = launch_update_bytes(0x1000, 0, 4096, PageType::ZERO.0);
        kvm.snp_launch_update(&mut p, None).unwrap();
        assert_eq!(get_u64(&p, 16), 0, "len consumed");
    }

    #[test]
    fn a_source_that_is_not_page_aligned_is_refused() {
        let mut kvm = started();
        let mut src = AlignedPages::zeroed(2);
        let mut p = launch_update_bytes(0x1000, src.addr() + 8, 4096, PageType::NORMAL.0);
        assert!(matches!(
            kvm.snp_launch_update(&mut p, Some(&mut src)),
            Err(OpsError::Ioctl { errno: 22, .. })
        ));
    }

    #[test]
    fn shared_or_repeated_pages_are_refused() {
        let mut kvm = started();
        let mut src = AlignedPages::zeroed(1);
        let mut shared = launch_update_bytes(0x2000, src.addr(), 4096, PageType::NORMAL.0);
        assert!(eio(kvm.snp_launch_update(&mut shared, Some(&mut src))));
        let mut p = launch_update_bytes(0x1000, src.addr(), 4096, PageType::NORMAL.0);
        kvm.snp_launch_update(&mut p, Some(&mut src)).unwrap();
        let mut again = launch_update_bytes(0x1000, src.addr(), 4096, PageType::NORMAL.0);
        assert!(eio(kvm.snp_launch_update(&mut again, Some(&mut src))));
    }

    #[test]
    fn a_vcpu_left_alone_gets_kvms_reset_vmsa() {
        let mut kvm = started();
        kvm.create_vcpu().unwrap();
        let mut finish = [0u8; 88];
        kvm.sev_op(super::super::snp::SNP_LAUNCH_FINISH, &mut finish)
            .unwrap();
        let v = &kvm.snp_state().vmsas[0];
        let attrib = |at: usize| u16::from_le_bytes([v[at + 2], v[at + 3]]);
        // init_vmcb's attributes (not QEMU's 0x9b/0x93/0x8b) after no KVM_SET_SREGS at all.
        assert_eq!(
            (attrib(offset::CS), attrib(offset::SS), attrib(offset::TR)),
            (0x9a, 0x92, 0x83)
        );
        assert_eq!(get_u64(&v[..], offset::RDX), 0x600, "KVM's reset RDX");
        assert_eq!(get_u64(&v[..], offset::CR0), 0x10, "CD/NW cleared by KVM");
        assert_eq!(get_u64(&v[..], offset::EFER), 0x1000, "SVME");
        assert_eq!(get_u64(&v[..], offset::SEV_FEATURES), 1, "SNPActive");
        assert_eq!(
            u32::from_le_bytes(v[offset::MXCSR..offset::MXCSR + 4].try_into().unwrap()),
            0x1f80
        );
    }

    #[test]
    fn init2_after_a_vcpu_exists_is_refused() {
        let mut kvm = KvmModel::snp(SnpFirmware::default());
        kvm.create_vcpu().unwrap();
        assert!(
            kvm.sev_op(super::super::snp::SEV_INIT2, &mut init2_bytes(0))
                .is_err()
        );
        let mut kvm = KvmModel::snp(SnpFirmware::default());
        assert!(
            kvm.sev_op(super::super::snp::SEV_INIT2, &mut init2_bytes(1))
                .is_err(),
            "SNPActive is KVM's to set"
        );
    }
}
