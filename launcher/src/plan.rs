//! The launch plan: one ordered list of what goes into guest memory and how SNP measures it.
//!
//! Both the offline digest ([`crate::measure`]) and a launch consume the same
//! [`LaunchPlan::updates`], so the reference value and the launched guest cannot drift.
//!
//! Order (the order QEMU/KVM issue SNP_LAUNCH_UPDATE for an OVMF guest, SEV-SNP ABI spec §8.17):
//! 1. the firmware image as NORMAL pages, mapped so that it ends at 4 GiB;
//! 2. the OVMF SEV metadata sections in declaration order: SNP_SEC_MEM and SVSM_CAA as ZERO pages
//!    (UNMEASURED for GCE), SNP_SECRETS as a SECRETS page, CPUID as a CPUID page (EC2 issues all
//!    CPUID pages after the other sections), SNP_KERNEL_HASHES as a NORMAL page holding the kernel
//!    hashes table, or ZERO pages without a measured direct boot;
//! 3. one VMSA page per vCPU: the BSP starts at the reset vector, the APs at the firmware's SEV-ES
//!    reset block address.

use crate::ovmf::{MetadataSection, OvmfError, OvmfInfo, SectionType};
use crate::snp::cpu::CpuType;
use crate::snp::digest::{PAGE_SIZE, PageType};
use crate::snp::kernel_hashes::KernelHashes;
use crate::snp::vmsa::{self, BSP_RESET_EIP, LongModeEntry, VmmType, VmsaParams};

/// Top of the 32-bit address space: the firmware image ends here.
pub const FOUR_GIB: u64 = 1 << 32;
/// Largest firmware image accepted (OVMF builds are 2–4 MiB).
pub const MAX_FIRMWARE_LEN: usize = 64 << 20;
/// Largest vCPU count accepted (KVM's default KVM_MAX_VCPUS for x86 is 4096; SNP guests rarely exceed 512).
pub const MAX_VCPUS: u32 = 512;
/// SEV_FEATURES default: SNPActive (bit 0), as `sev-snp-measure` assumes.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// Why a launch plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// The firmware image could not be parsed.
    #[error(transparent)]
    Firmware(#[from] OvmfError),
    /// The firmware image is empty, too large, or not a whole number of pages.
    #[error(
        "firmware image is {0} bytes: it must be a non-zero multiple of 4096 of at most 64 MiB"
    )]
    FirmwareSize(usize),
    /// The vCPU count is out of range.
    #[error("--vcpus {0} is out of range: use 1 to 512")]
    VcpuCount(u32),
    /// More than one vCPU but no AP start address.
    #[error(
        "the firmware has no SEV-ES reset block (footer GUID 00f771de-…), so the APs of a guest with {0} vCPUs have no start address: use an SEV-capable OVMF or --vcpus 1"
    )]
    NoApResetAddress(u32),
    /// A kernel was given but the firmware cannot measure it.
    #[error(
        "a kernel was given but the firmware has no {0}: build OVMF with SNP kernel hashes (OvmfPkg/AmdSev/AmdSevX64.dsc) or drop --kernel/--initrd/--append"
    )]
    NoKernelHashes(&'static str),
    /// A metadata section that SNP cannot place.
    #[error(
        "firmware SEV metadata section {kind} at {gpa:#x} size {size:#x} is not page aligned or has the wrong size"
    )]
    BadSection {
        /// Section kind.
        kind: SectionType,
        /// Its GPA.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// A metadata section of a type this launcher does not know.
    #[error("firmware SEV metadata declares {0}: this launcher does not know how to measure it")]
    UnknownSection(SectionType),
}

/// Inputs of an SNP launch plan.
#[derive(Clone, Debug)]
pub struct SnpPlanConfig {
    /// The firmware image (OVMF or another flat image with a reset vector at its last 16 bytes).
    pub firmware: Vec<u8>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest CPU type (its CPUID signature goes into each VMSA for QEMU).
    pub cpu: CpuType,
    /// Whose reset state and page order to reproduce.
    pub vmm: VmmType,
    /// SEV_FEATURES of every VMSA.
    pub guest_features: u64,
    /// Hashes for a measured direct boot through OVMF.
    pub kernel_hashes: Option<KernelHashes>,
}

/// One step of the launch, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchUpdate {
    /// Pages with contents (measured by their SHA-384), copied to `gpa`.
    Data {
        /// First GPA.
        gpa: u64,
        /// Page type (NORMAL).
        page_type: PageType,
        /// The bytes, a whole number of pages.
        data: Vec<u8>,
    },
    /// Pages measured without contents (ZERO, UNMEASURED, SECRETS, CPUID).
    Empty {
        /// First GPA.
        gpa: u64,
        /// Page type.
        page_type: PageType,
        /// Number of pages.
        pages: u64,
    },
    /// The initial save area of one vCPU.
    Vmsa {
        /// vCPU index (0 is the BSP).
        vcpu: u32,
        /// Start address (`CS.base | RIP`).
        eip: u32,
        /// The VMSA page.
        page: Box<[u8; PAGE_SIZE]>,
    },
}

/// How the bootstrap processor starts (what its VMSA page says, and what a plain-KVM vCPU is
/// given so that it starts the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// At the firmware's reset vector in real mode.
    ResetVector,
    /// In long mode at a directly loaded kernel's 64-bit entry ([`crate::linux`]).
    LongMode(LongModeEntry),
}

/// A complete SNP launch plan.
#[derive(Clone, Debug)]
pub struct LaunchPlan {
    /// GPA where the firmware starts (4 GiB − its size).
    pub firmware_gpa: u64,
    /// Firmware size in bytes.
    pub firmware_len: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest CPU type.
    pub cpu: CpuType,
    /// VMM type.
    pub vmm: VmmType,
    /// SEV_FEATURES.
    pub guest_features: u64,
    /// What the firmware's tables say (empty for a direct kernel boot).
    pub ovmf: OvmfInfo,
    /// How the BSP starts.
    pub entry: BootEntry,
    /// The launch steps, in order.
    pub updates: Vec<LaunchUpdate>,
}

impl LaunchPlan {
    /// Builds the SNP plan for `cfg`.
    pub fn snp(cfg: SnpPlanConfig) -> Result<Self, PlanError> {
        let len = cfg.firmware.len();
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) || len > MAX_FIRMWARE_LEN {
            return Err(PlanError::FirmwareSize(len));
        }
        if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
            return Err(PlanError::VcpuCount(cfg.vcpus));
        }
        let ovmf = OvmfInfo::parse(&cfg.firmware)?;
        let ap_eip = ovmf.sev_es_reset_eip();
        if cfg.vcpus > 1 && ap_eip.is_none() {
            return Err(PlanError::NoApResetAddress(cfg.vcpus));
        }
        let hashes_page = match &cfg.kernel_hashes {
            None => None,
            Some(h) => {
                if !ovmf.has_section(SectionType::SNP_KERNEL_HASHES) {
                    return Err(PlanError::NoKernelHashes(
                        "SNP_KERNEL_HASHES metadata section",
                    ));
                }
                let gpa = ovmf
                    .sev_hash_table_gpa()
                    .ok_or(PlanError::NoKernelHashes("SEV hash table entry"))?;
                let page = h
                    .page(gpa as usize % PAGE_SIZE)
                    .ok_or(PlanError::NoKernelHashes(
                        "room for the hash table in its page",
                    ))?;
                Some(page)
            }
        };

        let firmware_gpa = FOUR_GIB - len as u64;
        let mut updates = vec![LaunchUpdate::Data {
            gpa: firmware_gpa,
            page_type: PageType::NORMAL,
            data: cfg.firmware,
        }];
        let mut cpuid_last = Vec::new();
        for s in &ovmf.sections {
            check_section(s)?;
            let (gpa, pages) = (u64::from(s.gpa), u64::from(s.size) / PAGE_SIZE as u64);
            let empty = |page_type| LaunchUpdate::Empty {
                gpa,
                page_type,
                pages,
            };
            match s.kind {
                SectionType::SNP_SEC_MEM if cfg.vmm == VmmType::Gce => {
                    updates.push(empty(PageType::UNMEASURED))
                }
                SectionType::SNP_SEC_MEM | SectionType::SVSM_CAA => {
                    updates.push(empty(PageType::ZERO))
                }
                SectionType::SNP_SECRETS => updates.push(LaunchUpdate::Empty {
                    gpa,
                    page_type: PageType::SECRETS,
                    pages: 1,
                }),
                SectionType::CPUID => {
                    let u = LaunchUpdate::Empty {
                        gpa,
                        page_type: PageType::CPUID,
                        pages: 1,
                    };
                    if cfg.vmm == VmmType::Ec2 {
                        cpuid_last.push(u);
                    } else {
                        updates.push(u);
                    }
                }
                SectionType::SNP_KERNEL_HASHES => match &hashes_page {
                    Some(page) if s.size as usize == PAGE_SIZE => {
                        updates.push(LaunchUpdate::Data {
                            gpa,
                            page_type: PageType::NORMAL,
                            data: page.to_vec(),
                        })
                    }
                    Some(_) => {
                        return Err(PlanError::BadSection {
                            kind: s.kind,
                            gpa: s.gpa,
                            size: s.size,
                        });
                    }
                    None => updates.push(empty(PageType::ZERO)),
                },
                other => return Err(PlanError::UnknownSection(other)),
            }
        }
        updates.extend(cpuid_last);
        for vcpu in 0..cfg.vcpus {
            let eip = match (vcpu, ap_eip) {
                (0, _) | (_, None) => BSP_RESET_EIP,
                (_, Some(ap)) => ap,
            };
            let page = vmsa::build(&VmsaParams {
                eip,
                sev_features: cfg.guest_features,
                cpu_signature: cfg.cpu.signature(),
                vmm: cfg.vmm,
            });
            updates.push(LaunchUpdate::Vmsa { vcpu, eip, page });
        }
        Ok(Self {
            firmware_gpa,
            firmware_len: len as u64,
            vcpus: cfg.vcpus,
            cpu: cfg.cpu,
            vmm: cfg.vmm,
            guest_features: cfg.guest_features,
            ovmf,
            entry: BootEntry::ResetVector,
            updates,
        })
    }

    /// Things a person should know about this plan that do not stop it (for stderr).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.ovmf.sections.is_empty() {
            w.push(
                "the firmware declares no SEV metadata (no secrets or CPUID page): it measures, but \
                 an SNP guest with it will not find its secrets page; OVMF builds with SEV metadata \
                 are OVMF.fd / OVMF_CODE.fd (2 MiB) in Debian's ovmf package"
                    .to_owned(),
            );
        }
        w
    }
}

fn check_section(s: &MetadataSection) -> Result<(), PlanError> {
    let bad = !(s.gpa as usize).is_multiple_of(PAGE_SIZE)
        || s.size == 0
        || !(s.size as usize).is_multiple_of(PAGE_SIZE)
        || (matches!(s.kind, SectionType::SNP_SECRETS | SectionType::CPUID)
            && s.size as usize != PAGE_SIZE);
    if bad {
        return Err(PlanError::BadSection {
            kind: s.kind,
            gpa: s.gpa,
            size: s.size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{TestImage, TestSection};

    fn cfg(img: Vec<u8>, vcpus: u32) -> SnpPlanConfig {
        SnpPlanConfig {
            firmware: img,
            vcpus,
            cpu: CpuType::by_name("EPYC-v4").unwrap(),
            vmm: VmmType::Qemu,
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel_hashes: None,
        }
    }

    #[test]
    fn orders_firmware_sections_then_vmsas() {
        let plan = LaunchPlan::snp(cfg(TestImage::default().build(), 2)).unwrap();
        assert_eq!(plan.firmware_gpa, FOUR_GIB - 64 * 1024);
        assert!(matches!(plan.updates[0], LaunchUpdate::Data { .. }));
        assert_eq!(plan.updates.len(), 1 + 6 + 2);
        assert!(matches!(
            plan.updates[7],
            LaunchUpdate::Vmsa {
                vcpu: 0,
                eip: BSP_RESET_EIP,
                ..
            }
        ));
        assert!(matches!(
            plan.updates[8],
            LaunchUpdate::Vmsa {
                vcpu: 1,
                eip: 0xffff_e004,
                ..
            }
        ));
    }

    #[test]
    fn ec2_moves_cpuid_pages_after_the_other_sections() {
        let mut c = cfg(TestImage::default().build(), 1);
        c.vmm = VmmType::Ec2;
        let plan = LaunchPlan::snp(c).unwrap();
        assert!(matches!(
            plan.updates[6],
            LaunchUpdate::Empty {
                page_type: PageType::CPUID,
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_snp_cannot_launch() {
        assert_eq!(
            LaunchPlan::snp(cfg(vec![0; 100], 1)).unwrap_err(),
            PlanError::FirmwareSize(100)
        );
        assert_eq!(
            LaunchPlan::snp(cfg(vec![0; 4096], 0)).unwrap_err(),
            PlanError::VcpuCount(0)
        );
        assert_eq!(
            LaunchPlan::snp(cfg(vec![0; 4096], 2)).unwrap_err(),
            PlanError::NoApResetAddress(2)
        );
        let mut c = cfg(vec![0; 4096], 1);
        c.kernel_hashes = Some(KernelHashes::new(b"k", None, None));
        assert!(matches!(
            LaunchPlan::snp(c).unwrap_err(),
            PlanError::NoKernelHashes(_)
        ));
        let img = TestImage {
            sections: vec![TestSection::new(0x80_0000, 0x1000, 9)],
            ..TestImage::default()
        };
        assert_eq!(
            LaunchPlan::snp(cfg(img.build(), 1)).unwrap_err(),
            PlanError::UnknownSection(SectionType(9))
        );
        let img = TestImage {
            sections: vec![TestSection::new(0x80_0800, 0x1000, 1)],
            ..TestImage::default()
        };
        assert!(matches!(
            LaunchPlan::snp(cfg(img.build(), 1)).unwrap_err(),
            PlanError::BadSection { .. }
        ));
    }
}
