//! Turning command-line inputs (file paths, names, hex) into a [`SnpPlanConfig`].

use std::path::{Path, PathBuf};

use crate::linux::{LinuxPlanConfig, LinuxPlanError};
use crate::plan::{DEFAULT_GUEST_FEATURES, LaunchPlan, PlanError, SnpPlanConfig};
use crate::snp::cpu::{CPU_TYPES, CpuType};
use crate::snp::kernel_hashes::KernelHashes;
use crate::snp::vmsa::VmmType;

/// Why the inputs of a plan are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which input.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Unknown CPU type name.
    #[error("unknown --cpu-type {0:?}; known types: {1}")]
    CpuType(String, String),
    /// Unknown VMM type name.
    #[error("unknown --vmm-type {0:?}; use qemu, ec2 or gce")]
    VmmType(String),
    /// Guest features not hex.
    #[error("--guest-features {0:?} is not a hexadecimal number (e.g. 0x1)")]
    GuestFeatures(String),
    /// initrd/append without a kernel.
    #[error("--initrd and --append need --kernel (they are measured with it)")]
    NeedsKernel,
    /// The plan itself failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The direct-boot plan failed.
    #[error(transparent)]
    Linux(#[from] LinuxPlanError),
}

/// What `cvm-launch measure --tee snp` and `run` take, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct SnpInputs {
    /// Firmware image path.
    pub firmware: PathBuf,
    /// vCPU count.
    pub vcpus: u32,
    /// CPU type name.
    pub cpu_type: String,
    /// VMM type name (default qemu).
    pub vmm_type: Option<String>,
    /// SEV_FEATURES in hex (default 0x1).
    pub guest_features: Option<String>,
    /// Kernel path for a measured direct boot.
    pub kernel: Option<PathBuf>,
    /// Initrd path.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub append: Option<String>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|source| InputError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Parses a hexadecimal number with or without `0x`.
pub fn parse_hex_u64(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).ok()
}

/// The CPU type, VMM type and SEV_FEATURES named on the command line.
fn guest_cpu(
    cpu_type: &str,
    vmm_type: Option<&str>,
    guest_features: Option<&str>,
) -> Result<(CpuType, VmmType, u64), InputError> {
    let cpu = CpuType::by_name(cpu_type).ok_or_else(|| {
        let names: Vec<&str> = CPU_TYPES.iter().map(|c| c.name).collect();
        InputError::CpuType(cpu_type.to_owned(), names.join(", "))
    })?;
    let vmm = match vmm_type {
        None => VmmType::Qemu,
        Some(v) => VmmType::parse(v).ok_or_else(|| InputError::VmmType(v.to_owned()))?,
    };
    let guest_features = match guest_features {
        None => DEFAULT_GUEST_FEATURES,
        Some(g) => parse_hex_u64(g).ok_or_else(|| InputError::GuestFeatures(g.to_owned()))?,
    };
    Ok((cpu, vmm, guest_features))
}

/// What `cvm-launch run --kernel` takes for a direct Linux boot without firmware.
#[derive(Clone, Debug, Default)]
pub struct LinuxInputs {
    /// bzImage path.
    pub kernel: PathBuf,
    /// Initrd path.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub append: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// CPU type name.
    pub cpu_type: String,
    /// VMM type name (default qemu).
    pub vmm_type: Option<String>,
    /// SEV_FEATURES in hex (default 0x1).
    pub guest_features: Option<String>,
}

impl LinuxInputs {
    /// Reads the files and builds the direct-boot plan.
    pub fn plan(&self) -> Result<LaunchPlan, InputError> {
        let initrd = self
            .initrd
            .as_deref()
            .map(|p| read("initrd", p))
            .transpose()?;
        self.plan_with(read("kernel", &self.kernel)?, initrd)
    }

    /// Builds the direct-boot plan of these kernel and initrd bytes (read once by the caller, who hands
    /// the same bytes to the VMM).
    pub fn plan_with(
        &self,
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
    ) -> Result<LaunchPlan, InputError> {
        let (cpu, vmm, guest_features) = guest_cpu(
            &self.cpu_type,
            self.vmm_type.as_deref(),
            self.guest_features.as_deref(),
        )?;
        Ok(LaunchPlan::linux(LinuxPlanConfig {
            kernel,
            initrd,
            cmdline: self.append.clone(),
            ram_mib: self.memory_mib,
            cpu,
            vmm,
            guest_features,
        })?)
    }
}

impl SnpInputs {
    /// Reads the files and builds the plan configuration.
    pub fn config(&self) -> Result<SnpPlanConfig, InputError> {
        // Names are checked before any file is read, so a typo is reported as such.
        guest_cpu(
            &self.cpu_type,
            self.vmm_type.as_deref(),
            self.guest_features.as_deref(),
        )?;
        let (kernel, initrd) = match &self.kernel {
            None if self.initrd.is_some() || self.append.is_some() => {
                return Err(InputError::NeedsKernel);
            }
            None => (None, None),
            Some(k) => (
                Some(read("kernel", k)?),
                self.initrd
                    .as_deref()
                    .map(|p| read("initrd", p))
                    .transpose()?,
            ),
        };
        self.config_with(read("firmware", &self.firmware)?, kernel, initrd)
    }

    /// The plan configuration of these firmware, kernel and initrd bytes (read once by the caller, who
    /// hands the same bytes to the VMM); the paths of `self` are not read.
    pub fn config_with(
        &self,
        firmware: Vec<u8>,
        kernel: Option<Vec<u8>>,
        initrd: Option<Vec<u8>>,
    ) -> Result<SnpPlanConfig, InputError> {
        let (cpu, vmm, guest_features) = guest_cpu(
            &self.cpu_type,
            self.vmm_type.as_deref(),
            self.guest_features.as_deref(),
        )?;
        let kernel_hashes = match &kernel {
            None if self.initrd.is_some() || self.append.is_some() || initrd.is_some() => {
                return Err(InputError::NeedsKernel);
            }
            None => None,
            Some(kernel) => Some(KernelHashes::new(
                kernel,
                initrd.as_deref(),
                self.append.as_deref(),
            )),
        };
        Ok(SnpPlanConfig {
            firmware,
            vcpus: self.vcpus,
            cpu,
            vmm,
            guest_features,
            kernel_hashes,
        })
    }

    /// Reads the files and builds the plan.
    pub fn plan(&self) -> Result<LaunchPlan, InputError> {
        Ok(LaunchPlan::snp(self.config()?)?)
    }

    /// The plan of these bytes ([`SnpInputs::config_with`]).
    pub fn plan_with(
        &self,
        firmware: Vec<u8>,
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
    ) -> Result<LaunchPlan, InputError> {
        Ok(LaunchPlan::snp(self.config_with(
            firmware,
            Some(kernel),
            initrd,
        )?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_with_and_without_prefix() {
        assert_eq!(parse_hex_u64("0x1"), Some(1));
        assert_eq!(parse_hex_u64("21"), Some(0x21));
        assert_eq!(parse_hex_u64("0xzz"), None);
    }

    #[test]
    fn append_without_kernel_is_refused() {
        let i = SnpInputs {
            cpu_type: "EPYC-v4".into(),
            append: Some("x".into()),
            ..SnpInputs::default()
        };
        assert!(matches!(i.config(), Err(InputError::NeedsKernel)));
        let i = SnpInputs {
            cpu_type: "Zen".into(),
            ..SnpInputs::default()
        };
        assert!(matches!(i.config(), Err(InputError::CpuType(..))));
    }
}
