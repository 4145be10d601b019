//! A plain KVM VM with anonymous guest RAM: the `sim` backend's hardware (KVM API documentation:
//! `KVM_CREATE_VM`, `KVM_SET_USER_MEMORY_REGION`, `KVM_CREATE_VCPU`, `KVM_SET_REGS`/`SREGS`).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

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
    vm: VmFd,
    regions: Vec<RamRegion>,
}

impl Vm {
    /// Creates a default-type VM.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
        Ok(Self {
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
            userspace_addr: ram.ptr as u64,
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
