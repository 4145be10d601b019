//! The vCPU threads of a confidential VM: each runs `KVM_RUN` until its guest stops and hands the
//! exits a confidential guest needs to [`crate::cvm::exits`]: port I/O to the device bus,
//! `KVM_HC_MAP_GPA_RANGE` and `KVM_EXIT_MEMORY_FAULT` to private↔shared conversions, TDX
//! GetQuote to the quote service, TDX GetTdVmCallInfo leaf 1 from the TDX capabilities. The first vCPU that stops ends the run; the others are left in
//! `KVM_RUN` and end with the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SEV_TERM,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::{HwError, HwOutcome};
use crate::cvm::exits::{
    self, KVM_HC_MAP_GPA_RANGE, QuoteService, TDVMCALL_GET_QUOTE, TDVMCALL_GET_TD_VM_CALL_INFO,
};
use crate::cvm::tdx::TdVmCallInfo;
use crate::devices::PioBus;
use crate::kvm::confidential::{
    ConfidentialVm, CvmFds, KVM_EXIT_TDX, set_tdvmcall_info, set_tdx_ret, tdx_exit,
};
use crate::kvm::vm::internal_error;
use crate::vmm::{GuestFaults, GuestStop, io_exit};

/// `KVM_ENOSYS` (include/uapi/linux/kvm_para.h): the answer to a hypercall the VMM does not handle.
const KVM_ENOSYS: u64 = 1000;
/// `KVM_SYSTEM_EVENT_TDX_FATAL` (Linux ≥ 6.16): TDG.VP.VMCALL<ReportFatalError>.
const KVM_SYSTEM_EVENT_TDX_FATAL: u32 = 7;

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct Shared {
    /// The VM (its memory for the exit handlers).
    pub vm: Arc<ConfidentialVm>,
    /// Port I/O devices.
    pub bus: Arc<Mutex<PioBus>>,
    /// Set by the i8042 device when the guest asks for a reset.
    pub reset: Arc<AtomicBool>,
    /// Who answers TDX GetQuote.
    pub quote: Arc<dyn QuoteService + Send + Sync>,
    /// The TDVMCALLs TDX GetTdVmCallInfo reports (KVM_TDX_CAPABILITIES; zero for SNP).
    pub tdvmcall: TdVmCallInfo,
}

/// Runs every vCPU on its own thread until one stops (or `timeout` passes).
pub fn run_vcpus(
    vcpus: Vec<VcpuFd>,
    shared: &Shared,
    timeout: Option<Duration>,
) -> Result<HwOutcome, HwError> {
    let (tx, rx) = mpsc::channel();
    for (id, vcpu) in (0u64..).zip(vcpus) {
        let tx = tx.clone();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let _ = tx.send(run_one(id, vcpu, &sh));
            })
            .map_err(|source| HwError::Thread { vcpu: id, source })?;
    }
    drop(tx);
    match timeout {
        Some(t) => rx.recv_timeout(t).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => HwError::Timeout(t.as_secs()),
            mpsc::RecvTimeoutError::Disconnected => HwError::NoResult,
        })?,
        None => rx.recv().map_err(|_| HwError::NoResult)?,
    }
}

/// How a `KVM_EXIT_SYSTEM_EVENT` of type `kind` ends the run.
pub fn system_event(vcpu: u64, kind: u32) -> Result<GuestStop, HwError> {
    let what = match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => return Ok(GuestStop::Shutdown),
        KVM_SYSTEM_EVENT_RESET => return Ok(GuestStop::Reset),
        KVM_SYSTEM_EVENT_SEV_TERM => {
            "the SNP guest asked to be terminated (GHCB termination request)".to_owned()
        }
        KVM_SYSTEM_EVENT_TDX_FATAL => {
            "the TD reported a fatal error (TDG.VP.VMCALL<ReportFatalError>)".to_owned()
        }
        KVM_SYSTEM_EVENT_CRASH => "the guest crashed (KVM_SYSTEM_EVENT_CRASH)".to_owned(),
        other => format!("system event {other}"),
    };
    Err(HwError::Terminated { vcpu, what })
}

fn run_one(id: u64, mut vcpu: VcpuFd, sh: &Shared) -> Result<HwOutcome, HwError> {
    let mut faults = GuestFaults::default();
    let mut exits = 0u64;
    let mut mem = CvmFds {
        vm: &sh.vm,
        vcpus: &[],
    };
    loop {
        let mut exit = match vcpu.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(source) => return Err(HwError::KvmRun { vcpu: id, source }),
        };
        exits += 1;
        let handled = io_exit(
            &mut exit,
            &mut sh.bus.lock().unwrap_or_else(PoisonError::into_inner),
            &mut faults,
        );
        let stop = if handled {
            sh.reset.load(Ordering::Acquire).then_some(GuestStop::Reset)
        } else {
            match exit {
                VcpuExit::Hypercall(h) => {
                    *h.ret = if h.nr == KVM_HC_MAP_GPA_RANGE {
                        exits::map_gpa_range(&mut mem, &h.args)
                    } else {
                        faults.unexpected_exits += 1;
                        KVM_ENOSYS.wrapping_neg()
                    };
                    None
                }
                VcpuExit::MemoryFault { flags, gpa, size } => {
                    exits::memory_fault(&mut mem, flags, gpa, size)
                        .map_err(|source| HwError::MemoryFault { vcpu: id, source })?;
                    None
                }
                VcpuExit::Unsupported(KVM_EXIT_TDX) => {
                    let e = tdx_exit(&mut vcpu);
                    match e.nr {
                        TDVMCALL_GET_QUOTE => {
                            let ret = exits::get_quote(&mut mem, sh.quote.as_ref(), e.gpa, e.size);
                            set_tdx_ret(&mut vcpu, ret);
                        }
                        // KVM preset success and zeros; the leaf is in `gpa`'s place.
                        TDVMCALL_GET_TD_VM_CALL_INFO => {
                            if let Some(r) = exits::tdvmcall_info(e.gpa, &sh.tdvmcall) {
                                set_tdvmcall_info(&mut vcpu, &r);
                            }
                        }
                        // KVM preset the return code; the TDVMCALL completes with it.
                        _ => faults.unexpected_exits += 1,
                    }
                    None
                }
                VcpuExit::Hlt => Some(GuestStop::Halted),
                VcpuExit::Shutdown => Some(GuestStop::TripleFault),
                VcpuExit::SystemEvent(kind, _) => Some(system_event(id, kind)?),
                VcpuExit::FailEntry(reason, _) => {
                    return Err(HwError::FailEntry { vcpu: id, reason });
                }
                VcpuExit::InternalError => {
                    let detail = internal_error(&mut vcpu);
                    return Err(HwError::InternalError { vcpu: id, detail });
                }
                VcpuExit::Intr => None,
                _ => {
                    faults.unexpected_exits += 1;
                    None
                }
            }
        };
        if let Some(stop) = stop {
            return Ok(HwOutcome {
                stop,
                vcpu: id,
                exits,
                faults,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_events_end_the_run_cleanly_or_as_a_failure() {
        assert_eq!(
            system_event(0, KVM_SYSTEM_EVENT_SHUTDOWN).unwrap(),
            GuestStop::Shutdown
        );
        assert_eq!(
            system_event(0, KVM_SYSTEM_EVENT_RESET).unwrap(),
            GuestStop::Reset
        );
        for (kind, says) in [
            (KVM_SYSTEM_EVENT_SEV_TERM, "GHCB termination"),
            (KVM_SYSTEM_EVENT_TDX_FATAL, "ReportFatalError"),
            (KVM_SYSTEM_EVENT_CRASH, "crashed"),
            (99, "system event 99"),
        ] {
            let e = system_event(3, kind).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("vCPU 3"), "{e}");
        }
    }
}
