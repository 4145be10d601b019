//! `run --tee tdx`: a TDVF firmware image on a `KVM_X86_TDX_VM`: TD parameters from
//! KVM_TDX_CAPABILITIES, INIT_VM, vCPUs with the TD's CPUID then INIT_VCPU, the TDVF sections added
//! (and measured where the metadata says so, giving the MRTD `measure --tee tdx` prints),
//! FINALIZE_VM; GetQuote goes to the quote service, GetTdVmCallInfo is answered from the
//! capabilities.
//!
//! The TD HOB section is given a HOB list describing guest RAM as QEMU's (`tdvf_hob_create`,
//! hw/i386/tdvf-hob.c): the TD_HOB and TEMP_MEM sections accepted, the rest unaccepted
//! ([`crate::tdx::td_hob`]).

use std::io::Write;
use std::sync::Arc;

use super::{HwError, HwOutcome, HwRunConfig, add_memory, in_memory, start_guest};
use crate::cvm::exits::QuoteService;
use crate::cvm::tdx::{self as sequence, ATTR_SEPT_VE_DISABLE, TdxLaunchParams};
use crate::kvm::confidential::{ConfidentialVm, CvmFds, TDX_VM};
use crate::ovmf::OvmfInfo;
use crate::plan::{FOUR_GIB, MAX_FIRMWARE_LEN};
use crate::tdx::td_hob::{accepted, td_hob};
use crate::tdx::tdvf::{self, TdvfSectionType};

/// What the host chooses for a TD besides its firmware.
#[derive(Clone, Debug)]
pub struct TdxRunParams {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// MRCONFIGID (reported in every TD quote).
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
}

/// Launches the TDVF `image` as a TD and runs it with COM1 on `console` until it stops.
pub fn run<W: Write + Send + 'static>(
    image: &[u8],
    p: &TdxRunParams,
    quote: Arc<dyn QuoteService + Send + Sync>,
    cfg: &HwRunConfig,
    console: W,
) -> Result<HwOutcome, HwError> {
    let len = image.len();
    if len == 0 || !len.is_multiple_of(4096) || len > MAX_FIRMWARE_LEN {
        return Err(HwError::Layout(format!(
            "firmware image is {len} bytes: it must be a non-zero multiple of 4096 of at most 64 MiB"
        )));
    }
    let info = OvmfInfo::parse(image).map_err(|e| HwError::Layout(format!("firmware: {e}")))?;
    let sections =
        tdvf::parse(image, &info).map_err(|e| HwError::Layout(format!("firmware: {e}")))?;
    let (fw_gpa, fw_len) = (FOUR_GIB - len as u64, len as u64);
    for s in &sections {
        if !in_memory(
            s.memory_address,
            s.memory_data_size,
            cfg.low_ram_bytes,
            fw_gpa,
            fw_len,
        ) {
            return Err(HwError::Layout(format!(
                "TDVF section at {:#x} size {:#x} lies outside guest RAM (raise --memory)",
                s.memory_address, s.memory_data_size
            )));
        }
    }
    let hob = sections
        .iter()
        .find(|s| s.kind == TdvfSectionType::TD_HOB)
        .ok_or_else(|| HwError::Layout("the TDVF metadata has no TD_HOB section".into()))?;
    let hob_list = td_hob(
        hob.memory_address,
        hob.memory_data_size,
        cfg.low_ram_bytes as u64,
        &accepted(&sections),
    )
    .map_err(|e| HwError::Layout(e.to_string()))?;
    // Step 1: the VM, the exits and interrupt model (TDX requires a split irqchip).
    let mut vm = ConfidentialVm::create(TDX_VM)?;
    vm.enable_map_gpa_range_exits()?;
    vm.enable_split_irqchip()?;
    // Step 2: TD parameters. INVARIANT: INIT_VM before any vCPU exists.
    let caps = sequence::capabilities(&mut CvmFds {
        vm: &vm,
        vcpus: &[],
    })?;
    let params = TdxLaunchParams {
        attributes: ATTR_SEPT_VE_DISABLE & caps.supported_attrs,
        xfam: caps.supported_xfam,
        mrconfigid: p.mrconfigid,
        mrowner: p.mrowner,
        mrownerconfig: [0; 48],
        cpuid_entries: sequence::configurable_cpuid(&caps.cpuid, &vm.supported_cpuid()?),
        vcpus: p.vcpus,
    };
    sequence::init_vm(
        &params,
        &mut CvmFds {
            vm: &vm,
            vcpus: &[],
        },
    )?;
    // Step 3: memory (private from the start).
    add_memory(&mut vm, cfg.low_ram_bytes, fw_gpa, fw_len)?;
    // Step 4: vCPUs: the CPUID the TDX module virtualizes, then INIT_VCPU.
    let vcpus = (0..u64::from(p.vcpus))
        .map(|id| vm.create_vcpu(id))
        .collect::<Result<Vec<_>, _>>()?;
    sequence::init_vcpus(
        &sections,
        p.vcpus,
        &mut CvmFds {
            vm: &vm,
            vcpus: &vcpus,
        },
    )?;
    // Step 5: the TDVF sections (made private first), then FINALIZE_VM.
    sequence::init_memory_and_finalize(
        image,
        &sections,
        &hob_list,
        &mut CvmFds {
            vm: &vm,
            vcpus: &vcpus,
        },
    )?;
    // Step 6: devices. Step 7: the vCPU threads.
    start_guest(vm, vcpus, console, quote, caps.tdvmcall_info, cfg.timeout)
}
