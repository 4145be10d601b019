//! `run --tee snp`: a launch plan on a `KVM_X86_SNP_VM`. The vCPUs are put in the state of the
//! plan's VMSA pages before SNP_LAUNCH_FINISH, where KVM builds and measures the VMSAs from it
//! ([`crate::cvm::snp::launch`]), so the guest's launch digest is the one `measure` prints for the
//! same inputs, for each `--vmm-type`: the VMSAs are the ones QEMU, EC2 or GCE would have.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::{HwError, HwOutcome, HwRunConfig, SEV_DEVICE, add_memory, in_memory, start_guest};
use crate::cvm::quote::NoQuoteService;
use crate::cvm::snp::{self as sequence, SnpLaunchParams};
use crate::cvm::tdx::TdVmCallInfo;
use crate::kvm::confidential::{ConfidentialVm, CvmFds, SNP_VM};
use crate::plan::{LaunchPlan, LaunchUpdate};
use crate::snp::cpuid_page::snp_cpuid;

/// Launches `plan` as an SNP guest with `launch` (the vCPUs and the plan's CPUID page get the
/// host's CPUID without the bits SNP firmware refuses) and runs it with COM1 on `console` until
/// it stops.
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
    // Step 2: memory (guest_memfd + shared mapping; private from the start).
    add_memory(
        &mut vm,
        cfg.low_ram_bytes,
        plan.firmware_gpa,
        plan.firmware_len,
    )?;
    // Step 3: vCPUs. Step 4: their CPUID and registers (the state of the plan's VMSAs), then the
    // launch: LAUNCH_START, LAUNCH_UPDATE (ranges made private first), FINISH.
    let cpuid = snp_cpuid(&vm.supported_cpuid()?);
    let vcpus = (0..u64::from(plan.vcpus))
        .map(|id| vm.create_vcpu(id))
        .collect::<Result<Vec<_>, _>>()?;
    sequence::launch(
        plan,
        &launch,
        &cpuid,
        &mut CvmFds {
            vm: &vm,
            vcpus: &vcpus,
        },
    )?;
    // Step 5: devices. Step 6: the vCPU threads.
    start_guest(
        vm,
        vcpus,
        console,
        Arc::new(NoQuoteService),
        TdVmCallInfo::default(),
        cfg.timeout,
    )
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
