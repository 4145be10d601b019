//! A confidential VM (SEV-SNP or TDX) over real KVM file descriptors: the VM fd of type
//! `KVM_X86_SNP_VM` / `KVM_X86_TDX_VM`, guest RAM backed by guest_memfd (private) plus a host
//! mapping (shared), the `/dev/sev` fd SEV commands carry, and [`CvmFds`], the implementation of
//! [`CvmOps`] and [`MemoryOps`] the launch sequences of [`crate::cvm`] run on.
//!
//! References: Linux `Documentation/virt/kvm/api.rst` (`KVM_CREATE_GUEST_MEMFD`,
//! `KVM_SET_USER_MEMORY_REGION2`, `KVM_SET_MEMORY_ATTRIBUTES`, `KVM_MEMORY_ENCRYPT_OP`,
//! `KVM_CAP_EXIT_HYPERCALL`, `KVM_CAP_SPLIT_IRQCHIP`, `KVM_EXIT_TDX`),
//! `Documentation/virt/kvm/x86/amd-memory-encryption.rst` (`struct kvm_sev_cmd`) and
//! `Documentation/virt/kvm/x86/intel-tdx.rst` (`struct kvm_tdx_cmd`, VM and vCPU commands).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use kvm_bindings::{
    CpuId, KVM_CAP_EXIT_HYPERCALL, KVM_CAP_SPLIT_IRQCHIP, KVM_MAX_CPUID_ENTRIES,
    KVM_MEM_GUEST_MEMFD, Msrs, kvm_cpuid_entry2, kvm_create_guest_memfd, kvm_enable_cap, kvm_fpu,
    kvm_memory_attributes, kvm_msr_entry, kvm_regs, kvm_sev_cmd, kvm_sregs,
    kvm_userspace_memory_region2, kvm_xcrs,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

use super::vm::{GuestRam, VmError};
use crate::cvm::cpuid::{self, CPUID_ENTRY_LEN};
use crate::cvm::exits::{KVM_HC_MAP_GPA_RANGE, MemoryOps};
use crate::cvm::tdx::KvmTdxCmd;
use crate::cvm::vcpu::VcpuOps;
use crate::cvm::{AlignedPages, CvmOps, OpsError, TdxData, get_u64, snp, tdx, within};

/// `KVM_X86_DEFAULT_VM`: a plain VM (no private memory; used by the tests on hosts without SNP/TDX).
pub const DEFAULT_VM: u32 = kvm_bindings::KVM_X86_DEFAULT_VM;
/// `KVM_X86_SNP_VM`.
pub const SNP_VM: u32 = kvm_bindings::KVM_X86_SNP_VM;
/// `KVM_X86_TDX_VM`.
pub const TDX_VM: u32 = kvm_bindings::KVM_X86_TDX_VM;
/// `KVM_EXIT_TDX` (include/uapi/linux/kvm.h, Linux ≥ 6.16; kvm-ioctls reports it as
/// `VcpuExit::Unsupported`).
pub const KVM_EXIT_TDX: u32 = 40;
/// guest_memfd flag `GUEST_MEMFD_FLAG_MMAP` (Linux ≥ 6.18): the fd can be mapped by the host.
pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
/// guest_memfd flag `GUEST_MEMFD_FLAG_INIT_SHARED` (Linux ≥ 6.18): pages start shared.
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;
/// IOAPIC pins KVM emulates for userspace with a split irqchip (a PC IOAPIC has 24).
const SPLIT_IRQCHIP_PINS: u64 = 24;

mod nr {
    //! ioctl numbers kvm-ioctls does not export.
    #![allow(missing_docs)]
    use vmm_sys_util::ioctl_iowr_nr;
    // KVM_MEMORY_ENCRYPT_OP = _IOWR(KVMIO, 0xba, unsigned long), issued here on a vCPU fd (TDX).
    ioctl_iowr_nr!(KVM_MEMORY_ENCRYPT_OP, 0xae, 0xba, std::os::raw::c_ulong);
}
use nr::KVM_MEMORY_ENCRYPT_OP;

/// Errors of confidential VM setup; each names the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CvmVmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(vmm_sys_util::errno::Error),
    /// `KVM_CREATE_VM` with the confidential type failed.
    #[error("KVM_CREATE_VM of type {vm_type} failed: {source}")]
    CreateVm {
        /// VM type.
        vm_type: u32,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// `/dev/sev` could not be opened.
    #[error("cannot open {path} (SEV commands need the AMD secure processor driver): {source}")]
    OpenSev {
        /// Device path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// `KVM_CREATE_GUEST_MEMFD` failed.
    #[error(
        "KVM_CREATE_GUEST_MEMFD of {size:#x} bytes failed: {source} (does this VM type support guest_memfd? see `cvm-launch probe`)"
    )]
    GuestMemfd {
        /// Requested size.
        size: u64,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// `KVM_SET_USER_MEMORY_REGION2` failed.
    #[error("KVM_SET_USER_MEMORY_REGION2 for slot {slot} at {gpa:#x} failed: {source}")]
    SetMemory {
        /// Slot.
        slot: u32,
        /// Guest-physical start.
        gpa: u64,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// `KVM_ENABLE_CAP` failed.
    #[error("KVM_ENABLE_CAP({what}) failed: {source}")]
    EnableCap {
        /// Which capability.
        what: &'static str,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// Host memory, vCPU creation, registers or CPUID.
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// Guest RAM of a confidential VM: private pages in a guest_memfd, shared pages in `shared`.
#[derive(Debug)]
struct PrivateRam {
    gpa: u64,
    shared: GuestRam,
    /// Kept open for the memory slot's lifetime.
    _gmem: OwnedFd,
}

// SAFETY: the shared mapping is reached only through `read_shared`/`write_shared`, which copy
// bytes with raw pointers and never hand out references into it; concurrent copies from several
// vCPU threads (and the guest itself) race only on plain bytes of guest-owned memory, which is
// what shared guest memory is. `OwnedFd` and the integers are thread-safe.
unsafe impl Sync for PrivateRam {}

/// A confidential VM: its fds and memory. vCPU fds are returned by [`ConfidentialVm::create_vcpu`]
/// and owned by the caller; they must be dropped before the VM.
///
/// INVARIANT: `vm` is declared before `regions`, so KVM stops using the memory before it is unmapped.
#[derive(Debug)]
pub struct ConfidentialVm {
    vm: VmFd,
    kvm: Kvm,
    sev: Option<File>,
    regions: Vec<PrivateRam>,
}

impl ConfidentialVm {
    /// Creates a VM of `vm_type` ([`SNP_VM`], [`TDX_VM`]; [`DEFAULT_VM`] in tests).
    pub fn create(vm_type: u32) -> Result<Self, CvmVmError> {
        let kvm = Kvm::new().map_err(CvmVmError::OpenKvm)?;
        let vm = kvm
            .create_vm_with_type(u64::from(vm_type))
            .map_err(|source| CvmVmError::CreateVm { vm_type, source })?;
        Ok(Self {
            vm,
            kvm,
            sev: None,
            regions: Vec::new(),
        })
    }

    /// Opens the SEV firmware device (normally `/dev/sev`) whose fd every SEV command carries in
    /// `kvm_sev_cmd.sev_fd`.
    pub fn open_sev_device(&mut self, path: &Path) -> Result<(), CvmVmError> {
        let f = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| CvmVmError::OpenSev {
                path: path.display().to_string(),
                source,
            })?;
        self.sev = Some(f);
        Ok(())
    }

    /// Adds `len` bytes (rounded up to 4 KiB) of guest RAM at `gpa` as the next memory slot:
    /// a guest_memfd of that size created with `gmem_flags` (0 for SNP and TDX) for private
    /// pages, and an anonymous host mapping for shared ones. Every page starts shared (memory
    /// attributes 0).
    pub fn add_ram(&mut self, gpa: u64, len: usize, gmem_flags: u64) -> Result<(), CvmVmError> {
        let shared = GuestRam::new(len)?;
        let size = shared.len() as u64;
        let fd = self
            .vm
            .create_guest_memfd(kvm_create_guest_memfd {
                size,
                flags: gmem_flags,
                reserved: [0; 6],
            })
            .map_err(|source| CvmVmError::GuestMemfd { size, source })?;
        // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new fd that nothing else owns.
        let gmem = unsafe { OwnedFd::from_raw_fd(fd) };
        let slot = u32::try_from(self.regions.len()).unwrap_or(u32::MAX);
        let region = kvm_userspace_memory_region2 {
            slot,
            flags: KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: shared.host_addr() as u64,
            guest_memfd_offset: 0,
            guest_memfd: u32::try_from(gmem.as_raw_fd()).unwrap_or(u32::MAX),
            pad1: 0,
            pad2: [0; 14],
        };
        // SAFETY: the slot's host range is the mapping owned by `shared` and its private range
        // the guest_memfd `gmem`; both move into `self.regions` below and live until `self` is
        // dropped, after the VM fd (see the INVARIANT on `ConfidentialVm`).
        unsafe { self.vm.set_user_memory_region2(region) }
            .map_err(|source| CvmVmError::SetMemory { slot, gpa, source })?;
        self.regions.push(PrivateRam {
            gpa,
            shared,
            _gmem: gmem,
        });
        Ok(())
    }

    /// Enables `KVM_CAP_EXIT_HYPERCALL` for `KVM_HC_MAP_GPA_RANGE`, so private↔shared conversions
    /// reach the VMM as `KVM_EXIT_HYPERCALL`.
    pub fn enable_map_gpa_range_exits(&self) -> Result<(), CvmVmError> {
        self.enable_cap(
            "KVM_CAP_EXIT_HYPERCALL",
            KVM_CAP_EXIT_HYPERCALL,
            1 << KVM_HC_MAP_GPA_RANGE,
        )
    }

    /// Enables `KVM_CAP_SPLIT_IRQCHIP` (local APICs in KVM, no in-kernel PIC/IOAPIC): what TDX
    /// requires and SNP accepts. INVARIANT: before any vCPU is created.
    pub fn enable_split_irqchip(&self) -> Result<(), CvmVmError> {
        self.enable_cap(
            "KVM_CAP_SPLIT_IRQCHIP",
            KVM_CAP_SPLIT_IRQCHIP,
            SPLIT_IRQCHIP_PINS,
        )
    }

    fn enable_cap(&self, what: &'static str, cap: u32, arg0: u64) -> Result<(), CvmVmError> {
        let mut c = kvm_enable_cap {
            cap,
            ..kvm_enable_cap::default()
        };
        c.args[0] = arg0;
        self.vm
            .enable_cap(&c)
            .map_err(|source| CvmVmError::EnableCap { what, source })
    }

    /// Creates vCPU `id`.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, CvmVmError> {
        self.vm
            .create_vcpu(id)
            .map_err(|source| CvmVmError::Vm(VmError::CreateVcpu { id, source }))
    }

    /// `KVM_GET_SUPPORTED_CPUID` as `kvm_cpuid_entry2` bytes.
    pub fn supported_cpuid(&self) -> Result<Vec<[u8; CPUID_ENTRY_LEN]>, CvmVmError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| CvmVmError::Vm(VmError::Cpuid(e)))?;
        Ok(cpuid.as_slice().iter().map(entry_bytes).collect())
    }

    /// The region holding all of `[gpa, gpa + len)` and the offset of `gpa` in it.
    fn shared_at(&self, gpa: u64, len: usize) -> Result<(&PrivateRam, usize), OpsError> {
        let bad = OpsError::BadRange {
            gpa,
            size: len as u64,
        };
        self.regions
            .iter()
            .find_map(|r| {
                let off = usize::try_from(gpa.checked_sub(r.gpa)?).ok()?;
                (off.checked_add(len)? <= r.shared.len()).then_some((r, off))
            })
            .ok_or(bad)
    }
}

/// A `kvm_cpuid_entry2` as its 40 bytes.
fn entry_bytes(e: &kvm_cpuid_entry2) -> [u8; CPUID_ENTRY_LEN] {
    cpuid::entry([e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx])
}

/// The inverse of [`entry_bytes`].
fn entry_from_bytes(b: &[u8; CPUID_ENTRY_LEN]) -> kvm_cpuid_entry2 {
    let w = |i| cpuid::word(b, i);
    kvm_cpuid_entry2 {
        function: w(0),
        index: w(1),
        flags: w(2),
        eax: w(3),
        ebx: w(4),
        ecx: w(5),
        edx: w(6),
        padding: [0; 3],
    }
}

/// The launch and runtime commands on a [`ConfidentialVm`] and its vCPU fds (index = vCPU id).
/// At runtime, with no vCPUs, it serves the [`MemoryOps`] of the exit handlers.
#[derive(Debug)]
pub struct CvmFds<'a> {
    /// The VM.
    pub vm: &'a ConfidentialVm,
    /// Its vCPUs, by id.
    pub vcpus: &'a [VcpuFd],
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl CvmFds<'_> {
    fn vcpu(&self, vcpu: u32) -> Result<&VcpuFd, OpsError> {
        self.vcpus
            .get(vcpu as usize)
            .ok_or(OpsError::Missing("a vCPU for a vCPU-level command"))
    }
}

/// The error of vCPU ioctl `what`.
fn vcpu_error(what: &'static str) -> impl Fn(vmm_sys_util::errno::Error) -> OpsError {
    move |e| OpsError::Ioctl {
        what,
        errno: e.errno(),
        fw_error: 0,
    }
}

impl CvmOps for CvmFds<'_> {
    fn sev_op(&mut self, id: u32, payload: &mut [u8]) -> Result<(), OpsError> {
        let mut cmd = kvm_sev_cmd {
            id,
            pad0: 0,
            data: payload.as_mut_ptr() as u64,
            error: 0,
            // No /dev/sev: -1, which the commands that need the firmware refuse (EBADF).
            sev_fd: self.vm.sev.as_ref().map_or(u32::MAX, |f| {
                u32::try_from(f.as_raw_fd()).unwrap_or(u32::MAX)
            }),
        };
        // kvm-ioctls' safe wrapper: KVM reads `cmd` and the command's struct at `data`, which
        // points to `payload`, built by `crate::cvm::snp` to the exact size of that struct.
        self.vm
            .vm
            .encrypt_op_sev(&mut cmd)
            .map_err(|e| OpsError::Ioctl {
                what: snp::command_name(id),
                errno: e.errno(),
                fw_error: u64::from(cmd.error),
            })
    }

    fn snp_launch_update(
        &mut self,
        payload: &mut [u8; 64],
        source: Option<&mut AlignedPages>,
    ) -> Result<(), OpsError> {
        // The kernel reads (and may write) `len` bytes at `uaddr`: they must be `source`'s.
        let (uaddr, len) = (get_u64(payload, 8), get_u64(payload, 16));
        if let Some(pages) = &source
            && !within(pages, uaddr, len)
        {
            return Err(OpsError::BadRange {
                gpa: uaddr,
                size: len,
            });
        }
        self.sev_op(snp::SNP_LAUNCH_UPDATE, payload)
    }

    fn tdx_vm_op(&mut self, id: u32, flags: u32, payload: &mut [u8]) -> Result<(), OpsError> {
        let mut cmd = KvmTdxCmd {
            id,
            flags,
            // Commands without data (FINALIZE_VM) must pass 0 (intel-tdx.rst).
            data: if payload.is_empty() {
                0
            } else {
                payload.as_mut_ptr() as u64
            },
            hw_error: 0,
        };
        // SAFETY: `cmd` is a `#[repr(C)]` `struct kvm_tdx_cmd` (size asserted in cvm::tdx) that
        // lives across the call; `data` is 0 or points to `payload`, exclusively borrowed, which
        // cvm::tdx sizes to the command's struct including any trailing CPUID entries it declares
        // (nent), so KVM reads and writes within it.
        let r = unsafe { self.vm.vm.encrypt_op(&mut cmd) };
        r.map_err(|e| OpsError::Ioctl {
            what: tdx::command_name(id),
            errno: e.errno(),
            fw_error: cmd.hw_error,
        })
    }

    fn tdx_vcpu_op(
        &mut self,
        vcpu: u32,
        id: u32,
        flags: u32,
        data: TdxData<'_>,
    ) -> Result<(), OpsError> {
        let what = tdx::command_name(id);
        let fd = self.vcpu(vcpu)?;
        let mut cmd = KvmTdxCmd {
            id,
            flags,
            data: match data {
                TdxData::Value(v) => v,
                TdxData::Bytes(b) => b.as_mut_ptr() as u64,
            },
            hw_error: 0,
        };
        // SAFETY: `fd` is an open vCPU fd; KVM_MEMORY_ENCRYPT_OP reads and writes one
        // `struct kvm_tdx_cmd` (our `#[repr(C)]` copy, exclusively borrowed); `data` is a value
        // (INIT_VCPU) or points to bytes exclusively borrowed for the call and sized by cvm::tdx
        // to the command's struct (INIT_MEM_REGION: 24 bytes whose source range
        // `tdx_init_mem_region` checked; GET_CPUID: header plus nent entries).
        let ret = unsafe { ioctl_with_mut_ref(fd, KVM_MEMORY_ENCRYPT_OP(), &mut cmd) };
        if ret == 0 {
            Ok(())
        } else {
            Err(OpsError::Ioctl {
                what,
                errno: last_errno(),
                fw_error: cmd.hw_error,
            })
        }
    }

    fn tdx_init_mem_region(
        &mut self,
        vcpu: u32,
        flags: u32,
        region: &mut [u8; 24],
        source: &AlignedPages,
    ) -> Result<(), OpsError> {
        // The kernel reads `nr_pages` pages at `source_addr`: they must be `source`'s.
        let (src, pages) = (get_u64(region, 0), get_u64(region, 16));
        if !pages
            .checked_mul(4096)
            .is_some_and(|len| within(source, src, len))
        {
            return Err(OpsError::BadRange {
                gpa: src,
                size: pages,
            });
        }
        self.tdx_vcpu_op(
            vcpu,
            tdx::KVM_TDX_INIT_MEM_REGION,
            flags,
            TdxData::Bytes(region),
        )
    }
}

impl VcpuOps for CvmFds<'_> {
    fn set_cpuid(&mut self, vcpu: u32, entries: &[[u8; CPUID_ENTRY_LEN]]) -> Result<(), OpsError> {
        let list: Vec<kvm_cpuid_entry2> = entries.iter().map(entry_from_bytes).collect();
        let cpuid = CpuId::from_entries(&list).map_err(|_| OpsError::Ioctl {
            what: "KVM_SET_CPUID2",
            errno: libc::E2BIG,
            fw_error: 0,
        })?;
        self.vcpu(vcpu)?
            .set_cpuid2(&cpuid)
            .map_err(vcpu_error("KVM_SET_CPUID2"))
    }

    fn get_sregs(&mut self, vcpu: u32) -> Result<kvm_sregs, OpsError> {
        self.vcpu(vcpu)?
            .get_sregs()
            .map_err(vcpu_error("KVM_GET_SREGS"))
    }

    fn set_sregs(&mut self, vcpu: u32, sregs: &kvm_sregs) -> Result<(), OpsError> {
        self.vcpu(vcpu)?
            .set_sregs(sregs)
            .map_err(vcpu_error("KVM_SET_SREGS"))
    }

    fn set_regs(&mut self, vcpu: u32, regs: &kvm_regs) -> Result<(), OpsError> {
        self.vcpu(vcpu)?
            .set_regs(regs)
            .map_err(vcpu_error("KVM_SET_REGS"))
    }

    fn set_fpu(&mut self, vcpu: u32, fpu: &kvm_fpu) -> Result<(), OpsError> {
        self.vcpu(vcpu)?
            .set_fpu(fpu)
            .map_err(vcpu_error("KVM_SET_FPU"))
    }

    fn set_xcr0(&mut self, vcpu: u32, xcr0: u64) -> Result<(), OpsError> {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..kvm_xcrs::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = xcr0;
        self.vcpu(vcpu)?
            .set_xcrs(&xcrs)
            .map_err(vcpu_error("KVM_SET_XCRS"))
    }

    fn set_msr(&mut self, vcpu: u32, index: u32, value: u64) -> Result<(), OpsError> {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data: value,
            ..kvm_msr_entry::default()
        }])
        .map_err(|_| OpsError::Ioctl {
            what: "KVM_SET_MSRS",
            errno: libc::E2BIG,
            fw_error: 0,
        })?;
        // KVM_SET_MSRS returns how many MSRs it set; it stops at the first it refuses.
        match self.vcpu(vcpu)?.set_msrs(&msrs) {
            Ok(1) => Ok(()),
            Ok(_) => Err(OpsError::Ioctl {
                what: "KVM_SET_MSRS",
                errno: libc::EINVAL,
                fw_error: 0,
            }),
            Err(e) => Err(vcpu_error("KVM_SET_MSRS")(e)),
        }
    }
}

impl MemoryOps for CvmFds<'_> {
    fn set_memory_attributes(&mut self, payload: &[u8; 32]) -> Result<(), OpsError> {
        let f = |at| crate::cvm::get_u64(payload, at);
        let attr = kvm_memory_attributes {
            address: f(0),
            size: f(8),
            attributes: f(16),
            flags: f(24),
        };
        self.vm
            .vm
            .set_memory_attributes(attr)
            .map_err(|e| OpsError::Ioctl {
                what: "KVM_SET_MEMORY_ATTRIBUTES",
                errno: e.errno(),
                fw_error: 0,
            })
    }

    fn read_shared(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), OpsError> {
        let (r, off) = self.vm.shared_at(gpa, buf.len())?;
        // SAFETY: `shared_at` checked that `[off, off + buf.len())` lies inside the region's live
        // mapping; `buf` is a distinct Rust buffer. Bytes are copied without forming a reference
        // to guest memory, which the guest may change at any time.
        unsafe {
            std::ptr::copy_nonoverlapping(
                r.shared.host_addr().add(off),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OpsError> {
        let (r, off) = self.vm.shared_at(gpa, data.len())?;
        // SAFETY: as in `read_shared`, with the copy going into the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), r.shared.host_addr().add(off), data.len());
        }
        Ok(())
    }
}

/// A `KVM_EXIT_TDX` exit (`kvm_run.tdx`): the TDVMCALL number (R11) and its first arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdxExit {
    /// `nr`: the TDVMCALL sub-function.
    pub nr: u64,
    /// `get_quote.gpa`, `get_tdvmcall_info.leaf` (the first argument of every sub-function).
    pub gpa: u64,
    /// `get_quote.size`.
    pub size: u64,
}

/// Offsets in the `kvm_run` exit union of `struct { u64 flags, nr; union { struct { u64 ret,
/// gpa, size; } get_quote; struct { u64 ret, leaf, r11, r12, r13, r14; } get_tdvmcall_info;
/// ... } } tdx` (include/uapi/linux/kvm.h).
const TDX_NR: usize = 8;
const TDX_RET: usize = 16;
const TDX_GPA: usize = 24;
const TDX_SIZE: usize = 32;
const TDX_INFO_R11: usize = 32;

/// Reads `kvm_run.tdx` of `vcpu`; call only right after `KVM_RUN` returned `KVM_EXIT_TDX`.
pub fn tdx_exit(vcpu: &mut VcpuFd) -> TdxExit {
    let run = vcpu.get_kvm_run();
    // SAFETY: the exit union is 256 bytes of plain data; reading it as its `padding` byte array
    // is valid for every bit pattern. After KVM_EXIT_TDX the kernel filled its `tdx` member.
    let raw = unsafe { run.__bindgen_anon_1.padding };
    let u = |at: usize| {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(raw.iter().skip(at)) {
            *d = s.to_ne_bytes()[0];
        }
        u64::from_le_bytes(b)
    };
    TdxExit {
        nr: u(TDX_NR),
        gpa: u(TDX_GPA),
        size: u(TDX_SIZE),
    }
}

/// Writes `words` at byte `at` of the `kvm_run` exit union of `vcpu`.
fn write_tdx(vcpu: &mut VcpuFd, at: usize, words: &[u64]) {
    let run = vcpu.get_kvm_run();
    let bytes = words.iter().flat_map(|w| w.to_le_bytes());
    // SAFETY: as in `tdx_exit`: the union is read and written as its plain byte array, and only
    // words of the `tdx` member KVM filled are changed (`at` and `words` stay inside the
    // 256-byte union: `zip` stops at its end).
    unsafe {
        for (d, s) in run.__bindgen_anon_1.padding.iter_mut().skip(at).zip(bytes) {
            *d = s as std::os::raw::c_char;
        }
    }
}

/// Sets `kvm_run.tdx.<sub-function>.ret` of `vcpu`, copied to the guest's R10 on the next `KVM_RUN`.
pub fn set_tdx_ret(vcpu: &mut VcpuFd, ret: u64) {
    write_tdx(vcpu, TDX_RET, &[ret]);
}

/// Sets `kvm_run.tdx.get_tdvmcall_info.r11..r14` of `vcpu`, copied to the guest's R11..R14 on the
/// next `KVM_RUN` (`tdx_complete_get_td_vm_call_info`).
pub fn set_tdvmcall_info(vcpu: &mut VcpuFd, r11_r14: &[u64; 4]) {
    write_tdx(vcpu, TDX_INFO_R11, r11_r14);
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::cvm::exits::{self, attributes_bytes};

    #[test]
    fn the_vcpu_encrypt_op_is_iowr_kvmio_0xba_of_a_ulong() {
        assert_eq!(KVM_MEMORY_ENCRYPT_OP(), 0xc008_aeba);
    }

    #[test]
    fn cpuid_entries_round_trip_through_bytes() {
        let e = kvm_cpuid_entry2 {
            function: 7,
            index: 1,
            flags: 1,
            eax: 2,
            ebx: 3,
            ecx: 4,
            edx: 5,
            padding: [0; 3],
        };
        let b = entry_bytes(&e);
        assert_eq!(&b[..8], &[7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(entry_from_bytes(&b), e);
    }

    fn default_vm() -> Option<ConfidentialVm> {
        if let Err(e) = crate::probe::kvm_usable() {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {e}; the real-fd CvmOps test needs KVM"
            );
            return None;
        }
        Some(ConfidentialVm::create(DEFAULT_VM).unwrap())
    }

    #[test]
    fn encrypt_ops_on_a_plain_vm_fail_with_the_errno_not_a_panic() {
        let Some(vm) = default_vm() else { return };
        let vcpu = vm.create_vcpu(0).unwrap();
        let vcpus = [vcpu];
        let mut fds = CvmFds {
            vm: &vm,
            vcpus: &vcpus,
        };
        let mut init = snp::init2_bytes(0);
        match fds.sev_op(snp::SEV_INIT2, &mut init) {
            Err(OpsError::Ioctl { what, errno, .. }) => {
                assert_eq!(what, "KVM_SEV_INIT2");
                assert_ne!(errno, 0);
            }
            other => panic!("KVM_SEV_INIT2 on a default VM: {other:?}"),
        }
        let mut caps = tdx::capabilities_bytes(4);
        match fds.tdx_vm_op(tdx::KVM_TDX_CAPABILITIES, 0, &mut caps) {
            Err(OpsError::Ioctl { what, errno, .. }) => {
                assert_eq!(what, "KVM_TDX_CAPABILITIES");
                assert_ne!(errno, 0);
            }
            other => panic!("KVM_TDX_CAPABILITIES on a default VM: {other:?}"),
        }
        let r = fds.tdx_vcpu_op(0, tdx::KVM_TDX_INIT_VCPU, 0, TdxData::Value(0));
        assert!(
            matches!(r, Err(OpsError::Ioctl { errno, .. }) if errno != 0),
            "{r:?}"
        );
        assert_eq!(
            fds.tdx_vcpu_op(5, tdx::KVM_TDX_INIT_VCPU, 0, TdxData::Value(0)),
            Err(OpsError::Missing("a vCPU for a vCPU-level command"))
        );
    }

    #[test]
    fn guest_memfd_ram_is_shared_memory_with_bounds_or_a_clear_error() {
        let Some(mut vm) = default_vm() else { return };
        // Private-only guest_memfd (what SNP and TDX use) needs a VM type with private memory; a
        // default VM refuses it with an error naming the ioctl (or, on some kernels, accepts it).
        if let Err(e) = vm.add_ram(0x10_0000, 0x4000, 0) {
            assert!(matches!(e, CvmVmError::GuestMemfd { .. }), "{e}");
            assert!(e.to_string().contains("KVM_CREATE_GUEST_MEMFD"), "{e}");
        }
        let flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
        match vm.add_ram(0, 0x4000, flags) {
            Ok(()) => {}
            Err(e @ CvmVmError::GuestMemfd { .. }) => {
                let _ = writeln!(std::io::stderr(), "skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        let mut fds = CvmFds {
            vm: &vm,
            vcpus: &[],
        };
        fds.write_shared(0x1ff8, b"0123456789abcdef").unwrap();
        let mut back = [0u8; 16];
        fds.read_shared(0x1ff8, &mut back).unwrap();
        assert_eq!(&back, b"0123456789abcdef");
        assert_eq!(
            fds.read_shared(0x3ff9, &mut back),
            Err(OpsError::BadRange {
                gpa: 0x3ff9,
                size: 16
            })
        );
        assert!(fds.write_shared(u64::MAX, b"x").is_err());
        // Private memory needs a VM type with private memory: a default VM says so with an errno
        // (ENOTTY on kernels without KVM_CAP_MEMORY_ATTRIBUTES for default VMs).
        match fds.set_memory_attributes(&attributes_bytes(0, 0x1000, true)) {
            Ok(()) => {}
            Err(OpsError::Ioctl { what, errno, .. }) => {
                assert_eq!(what, "KVM_SET_MEMORY_ATTRIBUTES");
                assert_ne!(errno, 0);
            }
            Err(e) => panic!("{e}"),
        }
        let r = exits::map_gpa_range(&mut fds, &[0x1000, 1, 0, 0, 0, 0]);
        assert!(r == 0 || r == 22u64.wrapping_neg(), "{r:#x}");
    }

    #[test]
    fn a_missing_sev_device_is_an_open_error() {
        let Some(mut vm) = default_vm() else { return };
        let e = vm
            .open_sev_device(Path::new("/nonexistent/sev"))
            .unwrap_err();
        assert!(matches!(e, CvmVmError::OpenSev { .. }), "{e}");
    }
}
