//! The `sim` backend: runs a launch plan on plain KVM, in Firecracker's order (create VM → memory →
//! load the plan → devices → vCPU → run loop → handle exits). Nothing is encrypted; the simulated
//! PSP signs reports with the plan's SNP digest, computed in software by [`crate::measure`].
//!
//! A firmware plan starts its vCPU at the reset vector with no interrupt controller (the test
//! guest polls). A direct Linux boot ([`BootEntry::LongMode`]) also gets the PC platform a kernel
//! needs: in-kernel PIC/IOAPIC/LAPIC and PIT, the host's supported CPUID, COM1 on IRQ 4.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::PioBus;
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::psp::{PSP_BASE, PSP_LEN, PspDevice, ReportSigner};
use crate::devices::serial::{COM1_BASE, COM1_IRQ, COM1_LEN, EventFdIrq, SerialPort};
use crate::kvm::vm::{
    GuestRam, InternalError, Vm, VmError, internal_error, set_long_mode_state, set_reset_state,
};
use crate::kvm::watchdog::Watchdog;
use crate::plan::{BootEntry, LaunchPlan, LaunchUpdate};
use crate::snp::vmsa;

/// Settings of a simulated run.
#[derive(Clone, Copy, Debug)]
pub struct SimRunConfig {
    /// RAM mapped at GPA 0 (the firmware gets its own region below 4 GiB).
    pub low_ram_bytes: usize,
    /// Stop after this many VM exits (a guest that never halts).
    pub max_exits: u64,
    /// Stop when the guest has run this long (a watchdog signal interrupts a guest spinning
    /// without exits).
    pub timeout: Duration,
    /// Feed the host's stdin to COM1's receive side (a direct Linux boot from the command line).
    pub stdin_console: bool,
}

impl Default for SimRunConfig {
    fn default() -> Self {
        Self {
            low_ram_bytes: 16 << 20,
            max_exits: 10_000_000,
            timeout: Duration::from_secs(120),
            stdin_console: false,
        }
    }
}

/// Why a simulated run could not start or ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// VM setup failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The plan asks for something the sim backend does not do yet.
    #[error("not supported by the sim backend yet: {0}")]
    Unsupported(String),
    /// A plan update lies outside the guest RAM.
    #[error(
        "the plan places {len:#x} bytes at GPA {gpa:#x}, outside guest RAM (low RAM is {low:#x} bytes; raise --memory)"
    )]
    OutsideRam {
        /// GPA.
        gpa: u64,
        /// Length.
        len: u64,
        /// Low RAM size.
        low: usize,
    },
    /// `KVM_RUN` failed.
    #[error("KVM_RUN failed: {0}")]
    KvmRun(vmm_sys_util::errno::Error),
    /// The eventfd of COM1's interrupt.
    #[error("cannot create the serial port's interrupt eventfd: {0}")]
    EventFd(std::io::Error),
    /// KVM could not enter the guest.
    #[error("KVM could not enter the guest: hardware entry failure reason {0:#x}")]
    FailEntry(u64),
    /// KVM reported an internal error (for example an instruction it cannot emulate).
    #[error(
        "KVM could not run the guest: internal error, suberror {} (1: an instruction KVM cannot emulate, seen under nested or emulated KVM: try a host with hardware virtualization; 3: an exception during event delivery) at guest RIP {:#x} after {exits} exits, data {:x?}",
        detail.suberror, detail.rip, detail.data
    )]
    InternalError {
        /// Exits so far.
        exits: u64,
        /// What KVM reported.
        detail: InternalError,
    },
    /// The guest did not halt in time.
    #[error("the guest did not halt within {exits} exits / {secs} s")]
    NoHalt {
        /// Exits so far.
        exits: u64,
        /// Seconds run.
        secs: u64,
    },
}

/// Guest-caused faults, counted (never fatal by themselves).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuestFaults {
    /// `in` from a port with no device.
    pub unhandled_port_reads: u64,
    /// `out` to a port with no device.
    pub unhandled_port_writes: u64,
    /// Accesses to unmapped guest-physical memory.
    pub mmio_accesses: u64,
    /// Other exits this VMM does not handle.
    pub unexpected_exits: u64,
    /// Misuse of the PSP ports (overflow, overread, wrong width).
    pub psp_misuse: u64,
}

/// How the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum GuestStop {
    /// A `HLT` with no interrupt controller to wake it (the test guest's end).
    Halted,
    /// The guest asked for a reset through the i8042 controller (a reboot).
    Reset,
    /// The guest shut down: a triple fault (the last resort of a reboot, or a crash).
    TripleFault,
    /// The guest powered off (`KVM_SYSTEM_EVENT_SHUTDOWN`; confidential VMs).
    Shutdown,
}

impl std::fmt::Display for GuestStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Halted => "guest halted",
            Self::Reset => "guest reset itself (i8042 reset: a reboot)",
            Self::TripleFault => "guest shut down (triple fault: a reboot or a crash)",
            Self::Shutdown => "guest powered off",
        })
    }
}

/// How a simulated run ended.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct RunOutcome {
    /// How the guest stopped.
    pub stop: GuestStop,
    /// VM exits handled.
    pub exits: u64,
    /// Reports the PSP signed for the guest.
    pub psp_requests: u64,
    /// What the guest did wrong.
    pub faults: GuestFaults,
    /// Time from the start of `run_sim` to the first `KVM_RUN`.
    pub setup_micros: u64,
    /// Time in the run loop.
    pub run_micros: u64,
}

/// Runs `plan` on plain KVM until its vCPU halts, resets or shuts down, with COM1 writing to
/// `console` and the simulated PSP answering through `signer`.
pub fn run_sim<W: Write + Send + 'static>(
    plan: &LaunchPlan,
    signer: Arc<dyn ReportSigner>,
    console: W,
    cfg: &SimRunConfig,
) -> Result<RunOutcome, RunError> {
    let start = Instant::now();
    if plan.vcpus != 1 {
        return Err(RunError::Unsupported(format!(
            "{} vCPUs (the sim backend starts one vCPU; measure other counts with `cvm-launch measure`)",
            plan.vcpus
        )));
    }
    // Step 1: the VM.
    let mut vm = Vm::new()?;
    // Step 2: memory. INVARIANT: regions are added before anything is loaded into them.
    vm.add_ram(0, GuestRam::new(cfg.low_ram_bytes)?)?;
    if plan.firmware_len > 0 {
        let fw_len = usize::try_from(plan.firmware_len).unwrap_or(usize::MAX);
        vm.add_ram(plan.firmware_gpa, GuestRam::new(fw_len)?)?;
    }
    let long_mode = match plan.entry {
        BootEntry::ResetVector => None,
        BootEntry::LongMode(e) => Some(e),
    };
    if long_mode.is_some() {
        vm.create_platform()?;
    }
    // Step 3: load the plan, in plan order (the order the digest is computed in).
    let mut bsp = None;
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data { gpa, data, .. } => {
                let dst = vm
                    .guest_slice_mut(*gpa, data.len())
                    .ok_or(RunError::OutsideRam {
                        gpa: *gpa,
                        len: data.len() as u64,
                        low: cfg.low_ram_bytes,
                    })?;
                dst.copy_from_slice(data);
            }
            // ZERO/UNMEASURED pages are already zero; a real PSP fills SECRETS and CPUID pages,
            // the simulation leaves them zero but checks they exist.
            LaunchUpdate::Empty { gpa, pages, .. } => {
                let len = pages.saturating_mul(4096);
                let fits = usize::try_from(len)
                    .ok()
                    .and_then(|l| vm.guest_slice_mut(*gpa, l))
                    .is_some();
                if !fits {
                    return Err(RunError::OutsideRam {
                        gpa: *gpa,
                        len,
                        low: cfg.low_ram_bytes,
                    });
                }
            }
            LaunchUpdate::Vmsa { vcpu: 0, eip, page } => bsp = Some((*eip, vmsa::rdx(page))),
            LaunchUpdate::Vmsa { .. } => {}
        }
    }
    let Some((eip, rdx)) = bsp else {
        return Err(RunError::Unsupported("a plan without a BSP".into()));
    };
    // Step 4: devices.
    let mut bus = PioBus::default();
    if long_mode.is_some() {
        let irq =
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).map_err(RunError::EventFd)?;
        vm.register_irqfd(&irq, COM1_IRQ)?;
        let serial = SerialPort::with_irq(console, EventFdIrq(irq));
        if cfg.stdin_console {
            serial.input().pump(std::io::stdin());
        }
        bus.insert(COM1_BASE, COM1_LEN, Box::new(serial));
    } else {
        bus.insert(COM1_BASE, COM1_LEN, Box::new(SerialPort::new(console)));
    }
    let i8042 = I8042::new();
    let reset = i8042.reset_requested();
    bus.insert(I8042_BASE, I8042_LEN, Box::new(i8042));
    let psp = Arc::new(std::sync::Mutex::new(PspDevice::new(signer)));
    bus.insert(PSP_BASE, PSP_LEN, Box::new(SharedPsp(Arc::clone(&psp))));
    // Step 5: the vCPU, in the state its VMSA page describes.
    let mut vcpu = vm.create_vcpu(0)?;
    match long_mode {
        None => set_reset_state(&vcpu, eip, rdx)?,
        Some(e) => {
            vm.set_supported_cpuid(&vcpu)?;
            set_long_mode_state(&vcpu, &e)?;
        }
    }
    let setup = start.elapsed();
    // Step 6: run until the guest stops.
    let (stop, exits, mut faults) = run_loop(&mut vcpu, &mut bus, &reset, cfg)?;
    let (requests, psp_faults) = match psp.lock() {
        Ok(p) => (p.requests(), p.faults()),
        Err(p) => (p.get_ref().requests(), p.get_ref().faults()),
    };
    faults.psp_misuse =
        psp_faults.overflow_bytes + psp_faults.overread_bytes + psp_faults.bad_accesses;
    Ok(RunOutcome {
        stop,
        exits,
        psp_requests: requests,
        faults,
        setup_micros: u64::try_from(setup.as_micros()).unwrap_or(u64::MAX),
        run_micros: u64::try_from((start.elapsed() - setup).as_micros()).unwrap_or(u64::MAX),
    })
}

/// The PSP on the bus, shared so its counters can be read after the run.
struct SharedPsp(Arc<std::sync::Mutex<PspDevice>>);

impl crate::devices::PioDevice for SharedPsp {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if let Ok(mut p) = self.0.lock() {
            p.read(offset, data);
        }
    }
    fn write(&mut self, offset: u16, data: &[u8]) {
        if let Ok(mut p) = self.0.lock() {
            p.write(offset, data);
        }
    }
}

/// The exits every backend answers the same way: port I/O through `bus` (counting accesses to
/// ports without a device) and MMIO to nothing mapped (reads see a floating bus, all ones, like
/// real hardware). Returns whether `exit` was one of them.
pub fn io_exit(exit: &mut VcpuExit<'_>, bus: &mut PioBus, faults: &mut GuestFaults) -> bool {
    match exit {
        VcpuExit::IoOut(port, data) => {
            if !bus.write(*port, data) {
                faults.unhandled_port_writes += 1;
            }
        }
        VcpuExit::IoIn(port, data) => {
            if !bus.read(*port, data) {
                faults.unhandled_port_reads += 1;
            }
        }
        VcpuExit::MmioRead(_, data) => {
            data.fill(0xff);
            faults.mmio_accesses += 1;
        }
        VcpuExit::MmioWrite(..) => faults.mmio_accesses += 1,
        _ => return false,
    }
    true
}

fn run_loop(
    vcpu: &mut VcpuFd,
    bus: &mut PioBus,
    reset: &AtomicBool,
    cfg: &SimRunConfig,
) -> Result<(GuestStop, u64, GuestFaults), RunError> {
    let start = Instant::now();
    let mut faults = GuestFaults::default();
    let mut exits = 0u64;
    let _watchdog = Watchdog::start(cfg.timeout);
    loop {
        let mut exit = match vcpu.run() {
            Ok(e) => e,
            // The watchdog's kick: fall through to the time check below.
            Err(e) if e.errno() == libc::EINTR => VcpuExit::Intr,
            Err(e) => return Err(RunError::KvmRun(e)),
        };
        exits += 1;
        if io_exit(&mut exit, bus, &mut faults) {
            if reset.load(Ordering::Acquire) {
                return Ok((GuestStop::Reset, exits, faults));
            }
        } else {
            match exit {
                VcpuExit::Hlt => return Ok((GuestStop::Halted, exits, faults)),
                VcpuExit::Shutdown => return Ok((GuestStop::TripleFault, exits, faults)),
                VcpuExit::FailEntry(reason, _) => return Err(RunError::FailEntry(reason)),
                VcpuExit::InternalError => {
                    let detail = internal_error(vcpu);
                    return Err(RunError::InternalError { exits, detail });
                }
                VcpuExit::Intr => {}
                _ => faults.unexpected_exits += 1,
            }
        }
        if exits >= cfg.max_exits || start.elapsed() > cfg.timeout {
            return Err(RunError::NoHalt {
                exits,
                secs: start.elapsed().as_secs(),
            });
        }
    }
}
