//! Linux direct boot without firmware (Linux `Documentation/arch/x86/boot.rst`, boot protocol
//! ≥ 2.06, 64-bit entry): the kernel, initrd, command line, zero page, GDT and identity page
//! tables become the [`LaunchPlan`]'s data pages, and the BSP starts in long mode at the
//! kernel's 64-bit entry with RSI pointing to the zero page.
//!
//! - [`bzimage`]: the setup header.
//! - [`layout`]: guest addresses and the pages built for the boot.
//!
//! The plan is measured like any other ([`crate::measure::snp_digest`]: one PAGE_INFO per page,
//! then the BSP's VMSA in its long-mode state), so the simulated PSP of `run --tee sim --kernel`
//! signs the digest of exactly what was loaded.

pub mod bzimage;
pub mod layout;

use bzimage::{BzImage, BzImageError, ENTRY_64_OFFSET};
use layout::{
    BOOT_CS, BOOT_DS, BOOT_PARAMS_GPA, BOOT_STACK, BOOT_TSS, BootParamsInput, CMDLINE_GPA, GDT,
    GDT_GPA, KERNEL_GPA, PML4_GPA,
};

use crate::ovmf::OvmfInfo;
use crate::plan::{BootEntry, LaunchPlan, LaunchUpdate};
use crate::snp::cpu::CpuType;
use crate::snp::digest::{PAGE_SIZE, PageType};
use crate::snp::vmsa::{self, LongModeEntry, VmmType};

/// Smallest guest RAM for a direct boot.
pub const MIN_RAM_MIB: u32 = 64;
/// Largest guest RAM for a direct boot: RAM stays below the 32-bit PCI hole at 3 GiB.
pub const MAX_RAM_MIB: u32 = 3072;

/// Why a direct-boot plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinuxPlanError {
    /// The kernel image.
    #[error(transparent)]
    Kernel(#[from] BzImageError),
    /// RAM out of range.
    #[error("--memory {0} MiB is out of range for a direct kernel boot: use 64 to 3072")]
    Memory(u32),
    /// The command line is longer than the kernel takes.
    #[error("the kernel command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's `cmdline_size`.
        max: u32,
    },
    /// Kernel and initrd do not fit.
    #[error(
        "the kernel ({kernel} bytes in memory) and initrd ({initrd} bytes) do not fit in {ram_mib} MiB of RAM: raise --memory"
    )]
    TooBig {
        /// Kernel footprint (`init_size` or file size, whichever is larger).
        kernel: u64,
        /// Initrd size.
        initrd: u64,
        /// RAM.
        ram_mib: u32,
    },
}

/// Inputs of a direct-boot plan.
#[derive(Clone, Debug)]
pub struct LinuxPlanConfig {
    /// The bzImage.
    pub kernel: Vec<u8>,
    /// The initrd.
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB, from GPA 0.
    pub ram_mib: u32,
    /// Guest CPU type (recorded in the plan).
    pub cpu: CpuType,
    /// VMM type of the VMSA's remaining reset state.
    pub vmm: VmmType,
    /// SEV_FEATURES of the VMSA.
    pub guest_features: u64,
}

fn padded(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(PAGE_SIZE) * PAGE_SIZE, 0);
    data
}

fn normal(gpa: u64, data: Vec<u8>) -> LaunchUpdate {
    LaunchUpdate::Data {
        gpa,
        page_type: PageType::NORMAL,
        data: padded(data),
    }
}

impl LaunchPlan {
    /// Builds the direct-boot plan of `cfg` (one vCPU). Pages are listed in address order:
    /// GDT, zero page, page tables, command line, kernel, initrd; then the BSP's VMSA.
    pub fn linux(cfg: LinuxPlanConfig) -> Result<Self, LinuxPlanError> {
        if !(MIN_RAM_MIB..=MAX_RAM_MIB).contains(&cfg.ram_mib) {
            return Err(LinuxPlanError::Memory(cfg.ram_mib));
        }
        let ram_end = u64::from(cfg.ram_mib) << 20;
        let bz = BzImage::parse(&cfg.kernel)?;
        if cfg.cmdline.len() > bz.cmdline_size as usize {
            return Err(LinuxPlanError::CmdlineTooLong {
                len: cfg.cmdline.len(),
                max: bz.cmdline_size,
            });
        }
        let kernel_len = bz.kernel.len() as u64;
        let kernel_end = KERNEL_GPA + kernel_len.max(u64::from(bz.init_size));
        let initrd_len = cfg.initrd.as_ref().map_or(0, |i| i.len() as u64);
        let too_big = LinuxPlanError::TooBig {
            kernel: kernel_end - KERNEL_GPA,
            initrd: initrd_len,
            ram_mib: cfg.ram_mib,
        };
        if kernel_end > ram_end {
            return Err(too_big);
        }
        let initrd_gpa = match &cfg.initrd {
            None => None,
            Some(i) => Some(
                layout::initrd_gpa(ram_end, bz.initrd_addr_max, kernel_end, i.len() as u64)
                    .ok_or(too_big)?,
            ),
        };
        let zero_page = layout::boot_params(&BootParamsInput {
            header: bz.header,
            ram_end,
            cmdline_len: cfg.cmdline.len() as u32,
            initrd: initrd_gpa.map(|g| (g, initrd_len)),
        });
        let mut cmdline = cfg.cmdline.into_bytes();
        cmdline.push(0);
        let kernel = bz.kernel.to_vec();
        let mut updates = vec![
            normal(GDT_GPA, layout::gdt_page()),
            normal(BOOT_PARAMS_GPA, zero_page),
            normal(PML4_GPA, layout::page_tables()),
            normal(CMDLINE_GPA, cmdline),
            normal(KERNEL_GPA, kernel),
        ];
        if let (Some(gpa), Some(initrd)) = (initrd_gpa, cfg.initrd) {
            updates.push(normal(gpa, initrd));
        }
        let entry = LongModeEntry {
            rip: KERNEL_GPA + ENTRY_64_OFFSET,
            rsi: BOOT_PARAMS_GPA,
            rsp: BOOT_STACK,
            cr3: PML4_GPA,
            gdt_base: GDT_GPA,
            gdt_limit: (GDT.len() * 8 - 1) as u16,
            cs: BOOT_CS,
            ds: BOOT_DS,
            tr: BOOT_TSS,
        };
        updates.push(LaunchUpdate::Vmsa {
            vcpu: 0,
            eip: (KERNEL_GPA + ENTRY_64_OFFSET) as u32,
            page: vmsa::build_long_mode(&entry, cfg.guest_features, cfg.vmm),
        });
        Ok(Self {
            firmware_gpa: 0,
            firmware_len: 0,
            vcpus: 1,
            cpu: cfg.cpu,
            vmm: cfg.vmm,
            guest_features: cfg.guest_features,
            ovmf: OvmfInfo::default(),
            entry: BootEntry::LongMode(entry),
            updates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::snp_digest;
    use crate::plan::DEFAULT_GUEST_FEATURES;

    fn cfg(kernel: Vec<u8>) -> LinuxPlanConfig {
        LinuxPlanConfig {
            kernel,
            initrd: Some(vec![7; 5000]),
            cmdline: "console=ttyS0".into(),
            ram_mib: 64,
            cpu: CpuType::by_name("EPYC-v4").unwrap(),
            vmm: VmmType::Qemu,
            guest_features: DEFAULT_GUEST_FEATURES,
        }
    }

    #[test]
    fn plan_loads_every_part_at_its_address_and_starts_in_long_mode() {
        let plan = LaunchPlan::linux(cfg(bzimage::synthetic(0x020f, 1, &[0xcc; 6000]))).unwrap();
        let gpas: Vec<u64> = plan
            .updates
            .iter()
            .filter_map(|u| match u {
                LaunchUpdate::Data { gpa, data, .. } => {
                    assert_eq!(data.len() % PAGE_SIZE, 0);
                    Some(*gpa)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            gpas,
            [
                0x1000,
                0x7000,
                0x9000,
                0x2_0000,
                0x10_0000,
                (64 << 20) - 0x2000
            ]
        );
        let BootEntry::LongMode(e) = plan.entry else {
            panic!("not long mode")
        };
        assert_eq!((e.rip, e.rsi, e.cr3), (0x10_0200, 0x7000, 0x9000));
        assert!(matches!(
            plan.updates.last(),
            Some(LaunchUpdate::Vmsa { vcpu: 0, .. })
        ));
        let mut other = cfg(bzimage::synthetic(0x020f, 1, &[0xcc; 6000]));
        other.cmdline.push_str(" quiet");
        let other = LaunchPlan::linux(other).unwrap();
        assert_ne!(
            snp_digest(&plan),
            snp_digest(&other),
            "the command line is measured"
        );
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut c = cfg(bzimage::synthetic(0x020f, 1, &[0xcc; 6000]));
        c.ram_mib = 32;
        assert_eq!(
            LaunchPlan::linux(c).unwrap_err(),
            LinuxPlanError::Memory(32)
        );
        let mut c = cfg(bzimage::synthetic(0x020f, 1, &[0xcc; 6000]));
        c.cmdline = "x".repeat(2048);
        assert!(matches!(
            LaunchPlan::linux(c).unwrap_err(),
            LinuxPlanError::CmdlineTooLong {
                len: 2048,
                max: 2047
            }
        ));
        let mut c = cfg(bzimage::synthetic(0x020f, 1, &[0xcc; 6000]));
        c.initrd = Some(vec![0; 63 << 20]);
        assert!(matches!(
            LaunchPlan::linux(c).unwrap_err(),
            LinuxPlanError::TooBig { .. }
        ));
    }
}
