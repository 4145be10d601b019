//! The `snp` and `tdx` backends of `cvm-launch run`: a launch on a real confidential VM, in
//! Firecracker's order (create VM → memory → vCPUs → launch sequence → devices → vCPU threads →
//! handle exits), over [`crate::kvm::confidential`] and the sequences of [`crate::cvm`].
//!
//! - [`snp::run`]: KVM_X86_SNP_VM; the plan of `measure --tee snp` / `run --tee sim`.
//! - [`tdx::run`]: KVM_X86_TDX_VM; a TDVF firmware image.
//! - [`vcpu_loop`]: one thread per vCPU; serial I/O, MAP_GPA_RANGE, memory faults, GetQuote.
//!
//! Not run on SNP or TDX hardware: this project has none. On hosts without those VM types
//! `cvm-launch run` stops before reaching this module (`run::hardware_refusal`).

pub mod snp;
pub mod tdx;
pub mod vcpu_loop;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_ioctls::VcpuFd;

use crate::cvm::OpsError;
use crate::cvm::exits::{self, QuoteService};
use crate::cvm::tdx::TdVmCallInfo;
use crate::devices::PioBus;
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{COM1_BASE, COM1_LEN, SerialPort};
use crate::kvm::confidential::{ConfidentialVm, CvmFds, CvmVmError};
use crate::kvm::vm::InternalError;
use crate::vmm::{GuestFaults, GuestStop};
use vcpu_loop::{Shared, run_vcpus};

/// What a hardware run takes besides its plan or image.
#[derive(Clone, Debug)]
pub struct HwRunConfig {
    /// Guest RAM from GPA 0, bytes (the firmware gets its own slot ending at 4 GiB).
    pub low_ram_bytes: usize,
    /// Stop the guest after this long (`None`: let it run).
    pub timeout: Option<Duration>,
}

/// How a hardware run ended.
#[derive(Clone, Copy, Debug)]
pub struct HwOutcome {
    /// How the guest stopped.
    pub stop: GuestStop,
    /// The vCPU that saw it.
    pub vcpu: u64,
    /// That vCPU's VM exits.
    pub exits: u64,
    /// What the guest did wrong on that vCPU.
    pub faults: GuestFaults,
}

/// Why a hardware run could not start or ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HwError {
    /// VM setup.
    #[error(transparent)]
    Vm(#[from] CvmVmError),
    /// A launch command.
    #[error("launch failed: {0}")]
    Launch(#[from] OpsError),
    /// The plan or image does not fit this VM (nothing was started).
    #[error("{0}")]
    Layout(String),
    /// A vCPU thread could not be started.
    #[error("cannot start the thread of vCPU {vcpu}: {source}")]
    Thread {
        /// vCPU id.
        vcpu: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// `KVM_RUN` failed.
    #[error("vCPU {vcpu}: KVM_RUN failed: {source}")]
    KvmRun {
        /// vCPU id.
        vcpu: u64,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// KVM could not enter the guest.
    #[error(
        "vCPU {vcpu}: KVM could not enter the guest: hardware entry failure reason {reason:#x}"
    )]
    FailEntry {
        /// vCPU id.
        vcpu: u64,
        /// Reason.
        reason: u64,
    },
    /// KVM reported an internal error.
    #[error(
        "vCPU {vcpu}: KVM internal error, suberror {} at guest RIP {:#x}, data {:x?}",
        detail.suberror, detail.rip, detail.data
    )]
    InternalError {
        /// vCPU id.
        vcpu: u64,
        /// What KVM reported.
        detail: InternalError,
    },
    /// The guest or the firmware ended the VM abnormally (`KVM_SYSTEM_EVENT_*`).
    #[error("vCPU {vcpu}: the VM was terminated: {what}")]
    Terminated {
        /// vCPU id.
        vcpu: u64,
        /// Which event.
        what: String,
    },
    /// A memory fault the VMM could not resolve.
    #[error("vCPU {vcpu}: cannot resolve a memory fault: {source}")]
    MemoryFault {
        /// vCPU id.
        vcpu: u64,
        /// Why.
        source: OpsError,
    },
    /// The guest did not stop in time.
    #[error("the guest did not stop within {0} s")]
    Timeout(u64),
    /// Every vCPU thread ended without reporting a stop.
    #[error("the vCPU threads ended without a result")]
    NoResult,
}

/// The SEV firmware device.
pub const SEV_DEVICE: &str = "/dev/sev";

/// Adding guest memory: a [`ConfidentialVm`] (the KVM model in tests).
trait GuestMemory {
    /// Adds a guest_memfd-backed slot of `len` bytes at `gpa`.
    fn add_slot(&mut self, gpa: u64, len: usize) -> Result<(), HwError>;
    /// Runs `f` on the VM's memory attributes.
    fn with_attributes<R>(&mut self, f: impl FnOnce(&mut dyn exits::MemoryOps) -> R) -> R;
}

impl GuestMemory for ConfidentialVm {
    fn add_slot(&mut self, gpa: u64, len: usize) -> Result<(), HwError> {
        Ok(self.add_ram(gpa, len, 0)?)
    }

    fn with_attributes<R>(&mut self, f: impl FnOnce(&mut dyn exits::MemoryOps) -> R) -> R {
        f(&mut CvmFds {
            vm: self,
            vcpus: &[],
        })
    }
}

/// Step "memory" of both backends: guest RAM from GPA 0 and, when `firmware_len > 0`, a slot for
/// the firmware ending at `firmware_gpa + firmware_len` (4 GiB); both guest_memfd-backed and
/// private from the start, as QEMU marks guest_memfd slots when it adds them (so the guest's
/// first private touch of a page costs no memory-fault exit).
fn add_memory(
    vm: &mut impl GuestMemory,
    low_ram_bytes: usize,
    firmware_gpa: u64,
    firmware_len: u64,
) -> Result<(), HwError> {
    if firmware_len > 0 && low_ram_bytes as u64 > firmware_gpa {
        return Err(HwError::Layout(format!(
            "--memory of {low_ram_bytes:#x} bytes would overlap the firmware at {firmware_gpa:#x}"
        )));
    }
    let mut slots = vec![(0, low_ram_bytes)];
    if firmware_len > 0 {
        slots.push((
            firmware_gpa,
            usize::try_from(firmware_len).unwrap_or(usize::MAX),
        ));
    }
    for (gpa, len) in slots {
        vm.add_slot(gpa, len)?;
        let pages = (len as u64).div_ceil(4096) * 4096;
        vm.with_attributes(|m| exits::convert(m, gpa, pages, true))?;
    }
    Ok(())
}

/// Whether `[gpa, gpa + len)` lies in the memory [`add_memory`] adds.
fn in_memory(
    gpa: u64,
    len: u64,
    low_ram_bytes: usize,
    firmware_gpa: u64,
    firmware_len: u64,
) -> bool {
    let Some(end) = gpa.checked_add(len) else {
        return false;
    };
    end <= low_ram_bytes as u64 || (gpa >= firmware_gpa && end <= firmware_gpa + firmware_len)
}

/// The last steps of both backends: devices (COM1 writing to `console`, polled: with a split
/// irqchip no legacy interrupt line is routed here; the i8042 reset line), then one thread per
/// vCPU until the guest stops, GetQuote going to `quote`.
fn start_guest<W: Write + Send + 'static>(
    vm: ConfidentialVm,
    vcpus: Vec<VcpuFd>,
    console: W,
    quote: Arc<dyn QuoteService + Send + Sync>,
    tdvmcall: TdVmCallInfo,
    timeout: Option<Duration>,
) -> Result<HwOutcome, HwError> {
    let mut bus = PioBus::default();
    bus.insert(COM1_BASE, COM1_LEN, Box::new(SerialPort::new(console)));
    let i8042 = I8042::new();
    let reset = i8042.reset_requested();
    bus.insert(I8042_BASE, I8042_LEN, Box::new(i8042));
    let shared = Shared {
        vm: Arc::new(vm),
        bus: Arc::new(Mutex::new(bus)),
        reset,
        quote,
        tdvmcall,
    };
    run_vcpus(vcpus, &shared, timeout)
}

impl HwError {
    /// Whether the error means this host or these inputs cannot run the guest and nothing was
    /// started (exit 2), rather than a VM that failed (exit 1).
    pub fn nothing_started(&self) -> bool {
        matches!(
            self,
            Self::Layout(_)
                | Self::Launch(OpsError::CpuidPage(_))
                | Self::Vm(
                    CvmVmError::OpenKvm(_)
                        | CvmVmError::CreateVm { .. }
                        | CvmVmError::OpenSev { .. }
                        | CvmVmError::GuestMemfd { .. }
                        | CvmVmError::EnableCap { .. }
                )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvm::kvm_model::{KvmModel, SnpFirmware};

    #[test]
    fn host_and_input_errors_are_told_apart_from_vm_failures() {
        assert!(HwError::Layout("x".into()).nothing_started());
        assert!(
            HwError::Vm(CvmVmError::OpenSev {
                path: "/dev/sev".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })
            .nothing_started()
        );
        assert!(!HwError::Launch(OpsError::NoProgress("x")).nothing_started());
        let too_many = crate::snp::cpuid_page::TooManyFunctions(65);
        assert!(HwError::Launch(OpsError::CpuidPage(too_many)).nothing_started());
        assert!(!HwError::Timeout(1).nothing_started());
    }

    impl GuestMemory for KvmModel {
        fn add_slot(&mut self, gpa: u64, len: usize) -> Result<(), HwError> {
            self.add_ram(gpa, len as u64);
            Ok(())
        }

        fn with_attributes<R>(&mut self, f: impl FnOnce(&mut dyn exits::MemoryOps) -> R) -> R {
            f(self)
        }
    }

    #[test]
    fn guest_ram_is_private_from_the_start() {
        let mut kvm = KvmModel::snp(SnpFirmware::default());
        let fw = (0xffc0_0000, 0x40_0000);
        add_memory(&mut kvm, 0x100_0000, fw.0, fw.1).unwrap();
        for gpa in [0, 0x7000, 0xff_f000, fw.0, 0xffff_f000] {
            assert!(kvm.is_private(gpa), "{gpa:#x}");
        }
        assert!(!kvm.is_private(0x100_0000), "no RAM there");
    }

    #[test]
    fn memory_ranges_are_low_ram_or_the_firmware_slot() {
        let fw = (0xffc0_0000, 0x40_0000);
        assert!(in_memory(0, 0x1000, 0x100_0000, fw.0, fw.1));
        assert!(in_memory(0xfff0_0000, 0x10_0000, 0x100_0000, fw.0, fw.1));
        assert!(!in_memory(0xff_f000, 0x2000, 0x100_0000, fw.0, fw.1));
        assert!(!in_memory(0x8000_0000, 0x1000, 0x100_0000, fw.0, fw.1));
        assert!(!in_memory(u64::MAX, 2, 0x100_0000, fw.0, fw.1));
    }
}
