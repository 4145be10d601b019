//! A plain KVM VM with anonymous guest RAM: the `sim` backend's hardware (KVM API documentation:
//! `KVM_CREATE_VM`, `KVM_SET_USER_MEMORY_REGION`, `KVM_CREATE_VCPU`, `KVM_SET_REGS`/`SREGS`).

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, kvm_fpu, kvm_pit_config, kvm_regs, kvm_segment,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::snp::vmsa::{LONG_MODE_CR0, LONG_MODE_CR4, LONG_MODE_EFER, LongModeEntry};

/// Where KVM may put the three pages of the real-mode TSS on Intel (below the 4 GiB BIOS area,
/// as QEMU and Firecracker place it).
const TSS_GPA: usize = 0xfffb_d000;

/// Errors of VM setup; each names the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM available to this user?)")]
    OpenKvm(vmm_sys_util::errno::Error),
    /// `KVM_CREATE_VM` failed.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(vmm_sys_util::errno::Error),
    /// Anonymous memory could not be mapped.
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Mmap {
        /// Requested size.
        size: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("KVM_SET_USER_MEMORY_REGION for slot {slot} at {gpa:#x} failed: {source}")]
    SetMemory {
        /// Slot number.
        slot: u32,
        /// Guest-physical start.
        gpa: u64,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// `KVM_CREATE_VCPU` failed.
    #[error("KVM_CREATE_VCPU {id} failed: {source}")]
    CreateVcpu {
        /// vCPU id.
        id: u64,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// Creating the in-kernel interrupt controllers and timer failed.
    #[error("cannot create the in-kernel {what}: {source}")]
    Platform {
        /// Which device or setting.
        what: &'static str,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// `KVM_GET_SUPPORTED_CPUID` or `KVM_SET_CPUID2` failed.
    #[error("cannot give the vCPU the CPUID features KVM supports: {0}")]
    Cpuid(vmm_sys_util::errno::Error),
    /// Reading or writing vCPU registers failed.
    #[error("cannot {what} vCPU registers: {source}")]
    Registers {
        /// "get" or "set" and which set.
        what: &'static str,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
}

/// Anonymous, private, page-aligned host memory that backs one guest RAM region; unmapped on drop.
#[derive(Debug)]
pub struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `GuestRam` owns its mapping exclusively; the raw pointer is only dereferenced through
// `&self`/`&mut self` methods, so moving it to another thread is as safe as moving a `Vec<u8>`.
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Maps `len` bytes (rounded up to 4 KiB) of zeroed memory.
    pub fn new(len: usize) -> Result<Self, VmError> {
        let len = len.div_ceil(4096) * 4096;
        // SAFETY: an anonymous private mapping at an address the kernel chooses aliases no Rust
        // object; the result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VmError::Mmap {
                size: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Size in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never, after [`GuestRam::new`]).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of the mapping (for KVM memory slots and raw copies inside `kvm`).
    pub(super) fn host_addr(&self) -> *mut u8 {
        self.ptr
    }

    /// The memory as a byte slice.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by `self`; the guest may
        // write it concurrently only while a vCPU runs, and the VMM reads it only between exits.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The memory as a mutable byte slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only Rust reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped only here. A VM
        // that still refers to it must be dropped first (`Vm` declares `vm` before `ram`).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A guest RAM region and where the guest sees it.
#[derive(Debug)]
pub struct RamRegion {
    /// Guest-physical start.
    pub gpa: u64,
    /// Backing memory.
    pub ram: GuestRam,
}

/// A default-type KVM VM and its memory.
///
/// INVARIANT: `vm` is declared before `regions`, so it is dropped (and KVM stops using the
/// memory) before the memory is unmapped.
#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    vm: VmFd,
    regions: Vec<RamRegion>,
}

impl Vm {
    /// Creates a default-type VM.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Self {
            kvm,
            vm,
            regions: Vec::new(),
        })
    }

    /// Adds `ram` at `gpa` as the next memory slot.
    pub fn add_ram(&mut self, gpa: u64, ram: GuestRam) -> Result<(), VmError> {
        let slot = u32::try_from(self.regions.len()).unwrap_or(u32::MAX);
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: ram.len() as u64,
            userspace_addr: ram.host_addr() as u64,
        };
        // SAFETY: the region describes memory owned by `ram`, which is moved into
        // `self.regions` right after and lives until `self` is dropped, after the VM fd
        // (see the INVARIANT on `Vm`).
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|source| VmError::SetMemory {
            slot,
            gpa,
            source,
        })?;
        self.regions.push(RamRegion { gpa, ram });
        Ok(())
    }

    /// The bytes of guest memory `[gpa, gpa + len)`, if one region holds them all.
    pub fn guest_slice_mut(&mut self, gpa: u64, len: usize) -> Option<&mut [u8]> {
        self.regions.iter_mut().find_map(|r| {
            let off = usize::try_from(gpa.checked_sub(r.gpa)?).ok()?;
            r.ram.as_mut_slice().get_mut(off..off.checked_add(len)?)
        })
    }

    /// Creates the PC platform a kernel expects from KVM: the in-kernel PIC, IOAPIC and local
    /// APICs (`KVM_CREATE_IRQCHIP`), the i8254 timer (`KVM_CREATE_PIT2`) and the TSS area
    /// (`KVM_SET_TSS_ADDR`). INVARIANT: before any vCPU is created.
    pub fn create_platform(&self) -> Result<(), VmError> {
        let err = |what| move |source| VmError::Platform { what, source };
        self.vm
            .set_tss_address(TSS_GPA)
            .map_err(err("TSS address"))?;
        self.vm.create_irq_chip().map_err(err("irqchip"))?;
        self.vm
            .create_pit2(kvm_pit_config::default())
            .map_err(err("PIT"))
    }

    /// Connects `fd` to interrupt line `gsi` of the in-kernel irqchip (`KVM_IRQFD`).
    pub fn register_irqfd(
        &self,
        fd: &vmm_sys_util::eventfd::EventFd,
        gsi: u32,
    ) -> Result<(), VmError> {
        self.vm
            .register_irqfd(fd, gsi)
            .map_err(|source| VmError::Platform {
                what: "irqfd",
                source,
            })
    }

    /// Gives `vcpu` every CPUID feature KVM supports on this host (`KVM_GET_SUPPORTED_CPUID`,
    /// `KVM_SET_CPUID2`); a vCPU without CPUID entries reports no features at all.
    pub fn set_supported_cpuid(&self, vcpu: &VcpuFd) -> Result<(), VmError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::Cpuid)?;
        vcpu.set_cpuid2(&cpuid).map_err(VmError::Cpuid)
    }

    /// Creates vCPU `id`.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, VmError> {
        self.vm
            .create_vcpu(id)
            .map_err(|source| VmError::CreateVcpu { id, source })
    }
}

/// Puts `vcpu` in the real-mode reset state with `CS.base = eip & 0xffff0000`, `RIP = eip & 0xffff`
/// and `RDX = rdx`: the register state that the plan's VMSA page for this vCPU describes
/// (SEV-SNP guests get it from the VMSA; plain KVM from these registers).
pub fn set_reset_state(vcpu: &VcpuFd, eip: u32, rdx: u64) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(|source| VmError::Registers {
        what: "get special",
        source,
    })?;
    sregs.cs.selector = 0xf000;
    sregs.cs.base = u64::from(eip & 0xffff_0000);
    vcpu.set_sregs(&sregs)
        .map_err(|source| VmError::Registers {
            what: "set special",
            source,
        })?;
    let mut regs = vcpu.get_regs().map_err(|source| VmError::Registers {
        what: "get general",
        source,
    })?;
    regs.rip = u64::from(eip & 0xffff);
    regs.rdx = rdx;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(|source| VmError::Registers {
        what: "set general",
        source,
    })
}

/// Puts `vcpu` of the `sim` backend in the long-mode state `e` (what
/// [`crate::snp::vmsa::build_long_mode`] measures): paging with CR3 = `e.cr3`, flat segments,
/// RIP, RSI, RSP, the other GPRs zero; x87 and SSE in their reset state. (The `snp` backend
/// sets its vCPUs from the VMSA pages themselves: [`crate::cvm::vcpu`].)
pub fn set_long_mode_state(vcpu: &VcpuFd, e: &LongModeEntry) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(|source| VmError::Registers {
        what: "get special",
        source,
    })?;
    let flat = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(e.cs, 0xb, 1, 0);
    let data = flat(e.ds, 0x3, 0, 1);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        s: 0,
        limit: 0xfffff,
        g: 0,
        db: 0,
        ..flat(e.tr, 0xb, 0, 0)
    };
    sregs.gdt.base = e.gdt_base;
    sregs.gdt.limit = e.gdt_limit;
    sregs.cr0 = LONG_MODE_CR0;
    sregs.cr3 = e.cr3;
    sregs.cr4 = LONG_MODE_CR4;
    sregs.efer = LONG_MODE_EFER;
    vcpu.set_sregs(&sregs)
        .map_err(|source| VmError::Registers {
            what: "set special",
            source,
        })?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..kvm_fpu::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| VmError::Registers {
        what: "set FPU",
        source,
    })?;
    // Every other GPR zero, as in the long-mode VMSA (not KVM's reset RDX).
    let regs = kvm_regs {
        rip: e.rip,
        rsi: e.rsi,
        rsp: e.rsp,
        rflags: 0x2,
        ..kvm_regs::default()
    };
    vcpu.set_regs(&regs).map_err(|source| VmError::Registers {
        what: "set general",
        source,
    })
}

/// What KVM said about a `KVM_EXIT_INTERNAL_ERROR` (API documentation, `kvm_run.internal`):
/// the sub-error (1 emulation failure, 2 simultaneous exceptions, 3 exception during event
/// delivery), up to 16 words of data, and the guest's RIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalError {
    /// `suberror`.
    pub suberror: u32,
    /// `data[..ndata]`.
    pub data: Vec<u64>,
    /// RIP at the exit (0 when the registers could not be read).
    pub rip: u64,
}

/// Reads `kvm_run.internal` of `vcpu`; call only right after `KVM_RUN` returned
/// `KVM_EXIT_INTERNAL_ERROR`.
pub fn internal_error(vcpu: &mut VcpuFd) -> InternalError {
    let rip = vcpu.get_regs().map_or(0, |r| r.rip);
    let run = vcpu.get_kvm_run();
    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal` member of the exit
    // union (KVM API documentation, "KVM_EXIT_INTERNAL_ERROR"); every bit pattern is a valid
    // value of its plain integer fields.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = usize::try_from(internal.ndata)
        .unwrap_or(0)
        .min(internal.data.len());
    InternalError {
        suberror: internal.suberror,
        data: internal.data.iter().take(n).copied().collect(),
        rip,
    }
}
