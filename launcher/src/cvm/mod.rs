//! The confidential-VM ioctl sequences (SNP and TDX launch) over a small trait, so that the
//! sequence a plan produces — command ids, flags and the exact argument bytes — can be recorded and
//! tested on hosts without SNP or TDX.
//!
//! - [`CvmOps`]: one method per `KVM_MEMORY_ENCRYPT_OP` flavour (SEV command on the VM fd, SNP
//!   LAUNCH_UPDATE with the source pages it reads, TDX command on the VM fd or a vCPU fd);
//!   payloads are the kernel structs as bytes.
//! - [`vcpu::VcpuOps`]: the vCPU ioctls a launch issues (CPUID, registers, FPU, XCR0, MSRs) and
//!   the register state that makes KVM build a given VMSA page.
//! - [`Recorder`]: an [`exits::MemoryOps`] that records every call, over a byte vector of
//!   shared guest memory.
//! - [`snp`]: KVM_SEV_INIT2 (before vCPUs exist) → vCPU CPUID and registers → SNP_LAUNCH_START →
//!   SNP_LAUNCH_UPDATE… → SNP_LAUNCH_FINISH.
//! - [`tdx`]: KVM_TDX_CAPABILITIES → INIT_VM (before vCPUs exist) → per vCPU GET_CPUID →
//!   KVM_SET_CPUID2 → INIT_VCPU → INIT_MEM_REGION… → FINALIZE_VM.
//! - [`exits`]: runtime exits (MAP_GPA_RANGE, memory faults, TDX GetQuote and GetTdVmCallInfo)
//!   over [`exits::MemoryOps`].
//! - [`quote`]: GetQuote answered by the simulated PSP socket.
//! - [`cpuid`]: `struct kvm_cpuid_entry2` as bytes, for CPUID lists, TDX INIT_VM and the SNP CPUID page.
//!
//! The implementation of the traits on real KVM file descriptors is [`crate::kvm::confidential`];
//! [`crate::hardware`] drives it for `cvm-launch run --tee snp|tdx`. On this project's machines (no
//! SNP or TDX) the sequences are tested against a model of KVM written from the kernel's source
//! (`kvm_model`, test builds only), and the real-fd binding only on its failure paths on a default
//! VM; the launch itself has not been run on SNP or TDX hardware.

pub mod cpuid;
pub mod exits;
#[cfg(test)]
pub(crate) mod kvm_model;
pub mod quote;
pub mod snp;
pub mod tdx;
pub mod vcpu;

use crate::snp::cpuid_page::{CpuidMismatch, TooManyFunctions};

/// Why a confidential-VM command failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpsError {
    /// The ioctl failed.
    #[error("{what} failed: errno {errno}, firmware error {fw_error:#x}")]
    Ioctl {
        /// Command name.
        what: &'static str,
        /// errno.
        errno: i32,
        /// Firmware / TDX module status.
        fw_error: u64,
    },
    /// The kernel kept reporting partial progress.
    #[error("{0} made no progress")]
    NoProgress(&'static str),
    /// The plan lacks something the launch needs.
    #[error("the launch needs {0}")]
    Missing(&'static str),
    /// A guest asked for a range that is not whole pages inside guest memory.
    #[error("guest range {gpa:#x} + {size:#x} is not whole 4 KiB pages of guest memory")]
    BadRange {
        /// Start.
        gpa: u64,
        /// Size in bytes.
        size: u64,
    },
    /// The host's CPUID does not fit an SNP CPUID page.
    #[error(transparent)]
    CpuidPage(#[from] TooManyFunctions),
    /// The SNP firmware refused the CPUID page (SNP_LAUNCH_UPDATE, firmware error
    /// INVALID_PARAM) and wrote the values it accepts into it; each difference is listed.
    #[error(
        "the SNP firmware refused the CPUID page built from KVM's CPUID; it expects: {}. The launcher already leaves out the bits QEMU leaves out for SNP guests: report these differences with the host's CPU and firmware version",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    CpuidRejected(Vec<CpuidMismatch>),
}

/// What a launch sequence issues: the confidential-VM commands, the vCPU ioctls (CPUID before
/// TDX INIT_VCPU; the registers KVM builds the SNP VMSAs from) and, before SNP_LAUNCH_UPDATE /
/// TDX INIT_MEM_REGION, `KVM_SET_MEMORY_ATTRIBUTES` (KVM requires those ranges to be private).
pub trait LaunchOps: CvmOps + exits::MemoryOps + vcpu::VcpuOps {}

impl<T: CvmOps + exits::MemoryOps + vcpu::VcpuOps> LaunchOps for T {}

/// Bytes copied into whole 4 KiB pages aligned to 4 KiB (TDX INIT_MEM_REGION requires a
/// page-aligned `source_addr`; SNP_LAUNCH_UPDATE gets the same), zero-padded to a page boundary.
#[derive(Debug)]
pub struct AlignedPages(Vec<Page>);

#[repr(C, align(4096))]
#[derive(Clone, Debug)]
struct Page([u8; 4096]);

impl AlignedPages {
    /// `pages` pages of zeros.
    pub fn zeroed(pages: usize) -> Self {
        Self(vec![Page([0; 4096]); pages])
    }

    /// `bytes`, zero-padded to whole pages.
    pub fn new(bytes: &[u8]) -> Self {
        Self(
            bytes
                .chunks(4096)
                .map(|c| {
                    let mut p = Page([0; 4096]);
                    if let Some(dst) = p.0.get_mut(..c.len()) {
                        dst.copy_from_slice(c);
                    }
                    p
                })
                .collect(),
        )
    }

    /// The host address of the first page (4 KiB aligned; the pages are contiguous).
    pub fn addr(&self) -> u64 {
        self.0.as_ptr() as u64
    }

    /// Length in bytes (a multiple of 4096).
    pub fn len(&self) -> u64 {
        self.0.len() as u64 * 4096
    }

    /// Whether there are no pages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = &[u8; 4096]> {
        self.0.iter().map(|p| &p.0)
    }

    /// The pages, in order, for writing.
    pub fn pages_mut(&mut self) -> impl Iterator<Item = &mut [u8; 4096]> {
        self.0.iter_mut().map(|p| &mut p.0)
    }
}

/// The confidential-VM commands of KVM (`KVM_MEMORY_ENCRYPT_OP`).
pub trait CvmOps {
    /// An SEV command (`struct kvm_sev_cmd { id, data = payload }`) on the VM fd. The kernel may
    /// write back into `payload`.
    fn sev_op(&mut self, id: u32, payload: &mut [u8]) -> Result<(), OpsError>;
    /// KVM_SEV_SNP_LAUNCH_UPDATE with `payload` (`struct kvm_sev_snp_launch_update`, advanced by
    /// the kernel as it completes pages) whose `uaddr` points into `source` (`None`: no source, for
    /// ZERO pages). The kernel reads the source pages and, when the firmware refuses a CPUID page,
    /// writes the firmware's values back into them (arch/x86/kvm/svm/sev.c,
    /// `sev_gmem_post_populate`), so `source` is borrowed mutably for the call.
    fn snp_launch_update(
        &mut self,
        payload: &mut [u8; 64],
        source: Option<&mut AlignedPages>,
    ) -> Result<(), OpsError>;
    /// A TDX command (`struct kvm_tdx_cmd { id, flags, data = payload }`) on the VM fd.
    fn tdx_vm_op(&mut self, id: u32, flags: u32, payload: &mut [u8]) -> Result<(), OpsError>;
    /// A TDX command on the fd of vCPU `vcpu`; `data` is passed by value (INIT_VCPU) or as a
    /// payload pointer (GET_CPUID).
    fn tdx_vcpu_op(
        &mut self,
        vcpu: u32,
        id: u32,
        flags: u32,
        payload: TdxData<'_>,
    ) -> Result<(), OpsError>;
    /// KVM_TDX_INIT_MEM_REGION on vCPU `vcpu` with `region` (`struct kvm_tdx_init_mem_region`,
    /// advanced by the kernel page by page) whose `source_addr` points into `source`.
    fn tdx_init_mem_region(
        &mut self,
        vcpu: u32,
        flags: u32,
        region: &mut [u8; 24],
        source: &AlignedPages,
    ) -> Result<(), OpsError>;
}

/// The `data` field of a vCPU-level TDX command.
#[derive(Debug)]
pub enum TdxData<'a> {
    /// A value (KVM_TDX_INIT_VCPU: the TD HOB address).
    Value(u64),
    /// A pointer to these bytes (KVM_TDX_GET_CPUID: a `struct kvm_cpuid2`).
    Bytes(&'a mut [u8]),
}

/// Whether `[addr, addr + len)` lies inside `pages` (what the real binding checks before it hands
/// the kernel an address into them).
pub fn within(pages: &AlignedPages, addr: u64, len: u64) -> bool {
    addr >= pages.addr()
        && addr
            .checked_add(len)
            .is_some_and(|end| end <= pages.addr() + pages.len())
}

/// Where a recorded command went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The VM fd, SEV command.
    SevVm,
    /// The VM fd, TDX command.
    TdxVm,
    /// A vCPU fd, TDX command.
    TdxVcpu(u32),
    /// The VM fd, `KVM_SET_MEMORY_ATTRIBUTES`.
    MemoryAttributes,
    /// A vCPU fd, one of the [`vcpu::VcpuOps`] ioctls (`id` is its [`vcpu::VcpuIoctl`]).
    Vcpu(u32),
}

/// One recorded command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Where.
    pub target: Target,
    /// Command id.
    pub id: u32,
    /// Flags (TDX).
    pub flags: u32,
    /// The payload bytes as passed (empty for a by-value `data`).
    pub payload: Vec<u8>,
    /// The by-value `data` (TDX INIT_VCPU).
    pub value: Option<u64>,
}

/// An [`exits::MemoryOps`] that records its calls (the runtime exits' conversions) over shared
/// guest memory `memory`, from GPA 0. The launch sequences are tested against the KVM model of
/// the test builds instead, which enforces what KVM enforces.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Calls in order.
    pub calls: Vec<Call>,
    /// Guest memory the guest shares with the host, from GPA 0.
    pub memory: Vec<u8>,
}

impl Recorder {
    fn shared_range(&self, gpa: u64, len: usize) -> Result<std::ops::Range<usize>, OpsError> {
        let bad = OpsError::BadRange {
            gpa,
            size: len as u64,
        };
        let start = usize::try_from(gpa).map_err(|_| bad.clone())?;
        let end = start.checked_add(len).ok_or(bad.clone())?;
        if end > self.memory.len() {
            return Err(bad);
        }
        Ok(start..end)
    }
}

impl exits::MemoryOps for Recorder {
    fn set_memory_attributes(&mut self, payload: &[u8; 32]) -> Result<(), OpsError> {
        self.calls.push(Call {
            target: Target::MemoryAttributes,
            id: 0,
            flags: 0,
            payload: payload.to_vec(),
            value: None,
        });
        Ok(())
    }

    fn read_shared(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), OpsError> {
        let r = self.shared_range(gpa, buf.len())?;
        buf.copy_from_slice(self.memory.get(r).unwrap_or_default());
        Ok(())
    }

    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OpsError> {
        let r = self.shared_range(gpa, data.len())?;
        if let Some(dst) = self.memory.get_mut(r) {
            dst.copy_from_slice(data);
        }
        Ok(())
    }
}

/// Writes `bytes` at `at` in `buf` (offsets come from `offset_of!` on the kernel structs, so
/// they are always in range; out-of-range writes are ignored rather than panicking).
pub(crate) fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Reads a little-endian `u64` at `at` (0 when out of range).
pub(crate) fn get_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}
