//! `run --tee snp`: a launch plan on a `KVM_X86_SNP_VM`. The vCPUs are put in the state of the
//! plan's VMSA pages before SNP_LAUNCH_FINISH, where KVM builds and measures the VMSAs from it,
//! so the guest's launch digest is the one `measure` prints for the same inputs.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use kvm_ioctls::VcpuFd;

use super::{HwError, HwOutcome, HwRunConfig, SEV_DEVICE, add_memory, in_memory, start_guest};
use crate::cvm::quote::NoQuoteService;
use crate::cvm::snp::{self as sequence, SnpLaunchParams};
use crate::kvm::confidential::{ConfidentialVm, CvmFds, CvmVmError, SNP_VM};
use crate::kvm::vm::{set_long_mode_state, set_reset_state};
use crate::plan::{BootEntry, LaunchPlan, LaunchUpdate};
use crate::snp::cpuid_page::cpuid_page;
use crate::snp::digest::PageType;
use crate::snp::vmsa;

/// Launches `plan` as an SNP guest with `launch` (its CPUID page, if the plan has one, is built
/// here from the CPUID the vCPUs get) and runs it with COM1 on `console` until it stops.
pub fn run<W: Write + Send + 'static>(
    plan: &LaunchPlan,
    launch: SnpLaunchParams,
    cfg: &HwRunConfig,
    console: W,
) -> Result<HwOutcome, HwError> {
    check_layout(plan, cfg)?;
    // Step 1: the VM, the SEV firmware device, the exits and interrupt model, KVM_SEV_INIT2.
    // INVARIANT: INIT2 before any vCPU exists.
    let mut vm = ConfidentialVm::create(SNP_VM)?;
    vm.open_sev_device(Path::new(SEV_DEVICE))?;
    vm.enable_map_gpa_range_exits()?;
    vm.enable_split_irqchip()?;
    sequence::init(
        plan,
        &mut CvmFds {
            vm: &vm,
            vcpus: &[],
        },
    )?;
    // Step 2: memory (guest_memfd + shared mapping; everything starts shared).
    add_memory(
        &mut vm,
        cfg.low_ram_bytes,
        plan.firmware_gpa,
        plan.firmware_len,
    )?;
    // Step 3: vCPUs with the host's CPUID, in the plan's initial state.
    let cpuid = vm.supported_cpuid()?;
    let vcpus = (0..u64::from(plan.vcpus))
        .map(|id| vm.create_vcpu(id))
        .collect::<Result<Vec<_>, _>>()?;
    for v in &vcpus {
        vm.set_cpuid(v, &cpuid)?;
    }
    set_initial_state(plan, &vcpus)?;
    // Step 4: the launch: LAUNCH_START, LAUNCH_UPDATE (ranges made private first), FINISH.
    let has_cpuid_page = plan.updates.iter().any(|u| {
        matches!(
            u,
            LaunchUpdate::Empty {
                page_type: PageType::CPUID,
                ..
            }
        )
    });
    let params = SnpLaunchParams {
        cpuid_page: if has_cpuid_page {
            Some(cpuid_page(&cpuid).map_err(|e| HwError::Layout(e.to_string()))?)
        } else {
            None
        },
        ..launch
    };
    sequence::launch(
        plan,
        &params,
        &mut CvmFds {
            vm: &vm,
            vcpus: &vcpus,
        },
    )?;
    // Step 5: devices. Step 6: the vCPU threads.
    start_guest(vm, vcpus, console, Arc::new(NoQuoteService), cfg.timeout)
}

/// Every update of the plan must land in guest memory.
fn check_layout(plan: &LaunchPlan, cfg: &HwRunConfig) -> Result<(), HwError> {
    for u in &plan.updates {
        let (gpa, len) = match u {
            LaunchUpdate::Data { gpa, data, .. } => (*gpa, data.len() as u64),
            LaunchUpdate::Empty { gpa, pages, .. } => (*gpa, pages.saturating_mul(4096)),
            LaunchUpdate::Vmsa { .. } => continue,
        };
        if !in_memory(
            gpa,
            len,
            cfg.low_ram_bytes,
            plan.firmware_gpa,
            plan.firmware_len,
        ) {
            return Err(HwError::Layout(format!(
                "the plan places {len:#x} bytes at GPA {gpa:#x}, outside guest RAM (raise --memory)"
            )));
        }
    }
    Ok(())
}

/// Puts each vCPU in the state its VMSA page describes: the BSP at the reset vector or a direct
/// boot's long-mode entry, the APs at their reset address.
fn set_initial_state(plan: &LaunchPlan, vcpus: &[VcpuFd]) -> Result<(), HwError> {
    for u in &plan.updates {
        let LaunchUpdate::Vmsa { vcpu, eip, page } = u else {
            continue;
        };
        let Some(fd) = vcpus.get(*vcpu as usize) else {
            return Err(HwError::Layout(format!(
                "the plan has a VMSA for vCPU {vcpu}, which does not exist"
            )));
        };
        match (vcpu, plan.entry) {
            (0, BootEntry::LongMode(e)) => set_long_mode_state(fd, &e),
            _ => set_reset_state(fd, *eip, vmsa::rdx(page)),
        }
        .map_err(CvmVmError::from)?;
    }
    Ok(())
}
