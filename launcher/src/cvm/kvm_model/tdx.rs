//! The model's TDX VM: KVM's TDX commands (Linux arch/x86/kvm/vmx/tdx.c: `tdx_get_capabilities`,
//! `tdx_td_init`, `tdx_vcpu_create`, `tdx_vcpu_get_cpuid`, `tdx_vcpu_init` →
//! `kvm_apic_set_base` (lapic.c), `tdx_vcpu_init_mem_region` → `kvm_gmem_populate`
//! (virt/kvm/guest_memfd.c) → `tdx_gmem_post_populate`, `tdx_td_finalize`) and the TDX module's
//! MRTD (TDH.MEM.PAGE.ADD and TDH.MR.EXTEND per 256 bytes).

use std::collections::BTreeSet;

use super::KvmModel;
use super::x86::EINVAL;
use crate::cvm::cpuid::CPUID_ENTRY_LEN;
use crate::cvm::tdx::{
    CAPABILITIES_HEADER_LEN, KVM_TDX_CAPABILITIES, KVM_TDX_FINALIZE_VM, KVM_TDX_GET_CPUID,
    KVM_TDX_INIT_MEM_REGION, KVM_TDX_INIT_VCPU, KVM_TDX_INIT_VM, KVM_TDX_MEASURE_MEMORY_REGION,
    command_name,
};
use crate::cvm::{AlignedPages, OpsError, TdxData, get_u64, put};
use crate::tdx::mrtd::Mrtd;

const EINTR: i32 = 4;
const EIO: i32 = 5;
const EAGAIN: i32 = 11;
const E2BIG: i32 = 7;
const EFAULT: i32 = 14;
const EEXIST: i32 = 17;
/// The x2APIC-mode APIC base `tdx_vcpu_init` sets: the default base, EN, EXTD (BSP for vCPU 0).
const X2APIC_BASE: u64 = 0xfee0_0000 | 1 << 11 | 1 << 10;

/// The model's TDX module and the knobs of its KVM.
#[derive(Clone, Debug, Default)]
pub(crate) struct TdxModule {
    /// `supported_attrs`.
    pub(crate) attrs: u64,
    /// `supported_xfam`.
    pub(crate) xfam: u64,
    /// kernel/user TDVMCALL info words of the capabilities (R11 kernel, R11 user, R12 kernel,
    /// R12 user).
    pub(crate) tdvmcall_info: [u64; 4],
    /// The configurable CPUID bits.
    pub(crate) configurable: Vec<[u8; CPUID_ENTRY_LEN]>,
    /// The CPUID the TDX module virtualizes for the TD (KVM_TDX_GET_CPUID).
    pub(crate) td_cpuid: Vec<[u8; CPUID_ENTRY_LEN]>,
    /// INIT_VM fails this many times with -EAGAIN (TDH.MNG.CREATE out of entropy).
    pub(crate) init_vm_busy: u32,
    /// INIT_MEM_REGION stops with -EINTR after this many pages (a pending signal), each time.
    pub(crate) interrupt_every: Option<u64>,
}

/// Where the TD is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TdState {
    #[default]
    Uninitialized,
    Initialized,
    Runnable,
}

/// The TDX state of the model's VM.
#[derive(Default)]
pub(crate) struct TdxVm {
    /// The TDX module.
    pub(crate) module: TdxModule,
    state: TdState,
    /// The INIT_VM payload.
    pub(crate) init_vm: Vec<u8>,
    /// INIT_VCPU's `data` (the initial RCX) per initialized vCPU.
    pub(crate) rcx: Vec<Option<u64>>,
    /// GPAs added (TDH.MEM.PAGE.ADD), in order.
    pub(crate) added: Vec<u64>,
    added_set: BTreeSet<u64>,
    /// The MRTD the TDX module computes.
    mrtd: Option<Mrtd>,
    /// After FINALIZE_VM: the MRTD.
    pub(crate) finalized: Option<[u8; 48]>,
}

impl TdxVm {
    /// A VM before KVM_TDX_INIT_VM, on `module`.
    pub(crate) fn new(module: TdxModule) -> Self {
        Self {
            module,
            ..Self::default()
        }
    }
}

fn fail(id: u32, errno: i32) -> OpsError {
    OpsError::Ioctl {
        what: command_name(id),
        errno,
        fw_error: 0,
    }
}

impl KvmModel {
    fn td(&mut self) -> Result<&mut TdxVm, OpsError> {
        match &mut self.tee {
            super::Tee::Tdx(t) => Ok(t),
            super::Tee::Snp(_) => Err(fail(0, EINVAL)),
        }
    }

    /// `tdx_vcpu_create`: vCPUs exist only after INIT_VM.
    pub(super) fn tdx_vcpu_create(&mut self) -> Result<(), OpsError> {
        let td = self.td()?;
        if td.state != TdState::Initialized {
            return Err(fail(0, EIO));
        }
        td.rcx.push(None);
        Ok(())
    }

    /// `tdx_vm_ioctl`: CAPABILITIES, INIT_VM, FINALIZE_VM.
    pub(super) fn tdx_vm_command(&mut self, id: u32, payload: &mut [u8]) -> Result<(), OpsError> {
        let no_vcpus = self.vcpus.is_empty();
        let td = self.td()?;
        match id {
            KVM_TDX_CAPABILITIES => {
                let cpuid = td.module.configurable.clone();
                let capacity = get_u64(payload, CAPABILITIES_HEADER_LEN) as u32 as usize;
                if cpuid.len() > capacity {
                    return Err(fail(id, E2BIG));
                }
                put(payload, 0, &td.module.attrs.to_le_bytes());
                put(payload, 8, &td.module.xfam.to_le_bytes());
                for (i, w) in td.module.tdvmcall_info.iter().enumerate() {
                    put(payload, 16 + 8 * i, &w.to_le_bytes());
                }
                put(
                    payload,
                    CAPABILITIES_HEADER_LEN,
                    &(cpuid.len() as u32).to_le_bytes(),
                );
                for (i, e) in cpuid.iter().enumerate() {
                    put(
                        payload,
                        CAPABILITIES_HEADER_LEN + 8 + i * CPUID_ENTRY_LEN,
                        e,
                    );
                }
                Ok(())
            }
            KVM_TDX_INIT_VM => {
                if td.state != TdState::Uninitialized || !no_vcpus {
                    return Err(fail(id, EINVAL));
                }
                if td.module.init_vm_busy > 0 {
                    td.module.init_vm_busy -= 1;
                    return Err(fail(id, EAGAIN));
                }
                if get_u64(payload, 0) & !td.module.attrs != 0 {
                    return Err(fail(id, EINVAL));
                }
                td.init_vm = payload.to_vec();
                td.state = TdState::Initialized;
                td.mrtd = Some(Mrtd::new());
                Ok(())
            }
            KVM_TDX_FINALIZE_VM => {
                if td.state != TdState::Initialized || !payload.is_empty() {
                    return Err(fail(id, EINVAL));
                }
                td.state = TdState::Runnable;
                td.finalized = td.mrtd.take().map(Mrtd::finish);
                Ok(())
            }
            _ => Err(fail(id, EINVAL)),
        }
    }

    /// `tdx_vcpu_ioctl`: INIT_VCPU and GET_CPUID (INIT_MEM_REGION: [`Self::tdx_init_mem_region`]).
    pub(super) fn tdx_vcpu_command(
        &mut self,
        vcpu: u32,
        id: u32,
        flags: u32,
        data: TdxData<'_>,
    ) -> Result<(), OpsError> {
        let i = vcpu as usize;
        if i >= self.vcpus.len() {
            return Err(OpsError::Missing("a vCPU for a vCPU-level command"));
        }
        if self.td()?.state != TdState::Initialized {
            return Err(fail(id, EINVAL));
        }
        match (id, data) {
            (KVM_TDX_GET_CPUID, TdxData::Bytes(b)) => {
                let cpuid = self.td()?.module.td_cpuid.clone();
                let capacity = get_u64(b, 0) as u32 as usize;
                put(b, 0, &(cpuid.len() as u32).to_le_bytes());
                if cpuid.len() > capacity {
                    return Err(fail(id, E2BIG));
                }
                for (k, e) in cpuid.iter().enumerate() {
                    put(b, 8 + k * CPUID_ENTRY_LEN, e);
                }
                Ok(())
            }
            (KVM_TDX_INIT_VCPU, TdxData::Value(rcx)) => {
                if flags != 0 || self.td()?.rcx.get(i).copied().flatten().is_some() {
                    return Err(fail(id, EINVAL));
                }
                // TDX requires X2APIC: kvm_apic_set_base refuses x2APIC mode unless the vCPU's
                // CPUID (KVM_SET_CPUID2, before this command) has it.
                let base = X2APIC_BASE | if i == 0 { 1 << 8 } else { 0 };
                self.vcpus[i].apic_set_base(base).map_err(|e| fail(id, e))?;
                if let Some(slot) = self.td()?.rcx.get_mut(i) {
                    *slot = Some(rcx);
                }
                Ok(())
            }
            _ => Err(fail(id, EINVAL)),
        }
    }

    /// `tdx_vcpu_init_mem_region`: page by page (`kvm_gmem_populate` of one page,
    /// `tdx_gmem_post_populate`), `region` advanced as pages are added; a pending signal stops it
    /// with -EINTR.
    pub(super) fn tdx_init_mem_region(
        &mut self,
        vcpu: u32,
        flags: u32,
        region: &mut [u8; 24],
        source: &AlignedPages,
    ) -> Result<(), OpsError> {
        let id = KVM_TDX_INIT_MEM_REGION;
        let initialized = {
            let td = self.td()?;
            td.state == TdState::Initialized
                && td.rcx.get(vcpu as usize).copied().flatten().is_some()
        };
        if !initialized {
            return Err(fail(id, EINVAL));
        }
        if flags & !KVM_TDX_MEASURE_MEMORY_REGION != 0 {
            return Err(fail(id, EINVAL));
        }
        let (mut src, mut gpa, mut pages) =
            (get_u64(region, 0), get_u64(region, 8), get_u64(region, 16));
        if !src.is_multiple_of(4096)
            || !gpa.is_multiple_of(4096)
            || pages == 0
            || gpa.checked_add(pages * 4096).is_none()
        {
            return Err(fail(id, EINVAL));
        }
        let mut done = 0;
        let mut ret = Ok(());
        while pages > 0 {
            if self.td()?.module.interrupt_every.is_some_and(|n| done == n) {
                ret = Err(fail(id, EINTR));
                break;
            }
            if let Err(errno) = self.tdx_add_page(gpa, src, flags, source) {
                ret = Err(fail(id, errno));
                break;
            }
            src += 4096;
            gpa += 4096;
            pages -= 1;
            done += 1;
        }
        put(region, 0, &src.to_le_bytes());
        put(region, 8, &gpa.to_le_bytes());
        put(region, 16, &pages.to_le_bytes());
        ret
    }

    /// `kvm_gmem_populate` of one page, then TDH.MEM.PAGE.ADD (and TDH.MR.EXTEND when measured).
    fn tdx_add_page(
        &mut self,
        gpa: u64,
        src: u64,
        flags: u32,
        source: &AlignedPages,
    ) -> Result<(), i32> {
        let gfn = gpa / 4096;
        if self.slot_end(gfn).is_none() || !self.private.contains(&gfn) {
            return Err(EINVAL);
        }
        let index = src
            .checked_sub(source.addr())
            .filter(|off| *off < source.len())
            .ok_or(EFAULT)?
            / 4096;
        let page = *source.pages().nth(index as usize).ok_or(EFAULT)?;
        let td = self.td().map_err(|_| EINVAL)?;
        if !td.added_set.insert(gpa) {
            return Err(EEXIST);
        }
        td.added.push(gpa);
        if let Some(m) = td.mrtd.as_mut() {
            m.page_add(gpa);
            if flags & KVM_TDX_MEASURE_MEMORY_REGION != 0 {
                for (k, chunk) in page.chunks_exact(256).enumerate() {
                    let mut c = [0u8; 256];
                    c.copy_from_slice(chunk);
                    m.extend(gpa + 256 * k as u64, &c);
                }
            }
        }
        Ok(())
    }
}
