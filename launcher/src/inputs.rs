//! Turning command-line inputs (file paths, names, hex) into a [`SnpPlanConfig`].

use std::path::{Path, PathBuf};

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

impl SnpInputs {
    /// Reads the files and builds the plan configuration.
    pub fn config(&self) -> Result<SnpPlanConfig, InputError> {
        let cpu = CpuType::by_name(&self.cpu_type).ok_or_else(|| {
            let names: Vec<&str> = CPU_TYPES.iter().map(|c| c.name).collect();
            InputError::CpuType(self.cpu_type.clone(), names.join(", "))
        })?;
        let vmm = match &self.vmm_type {
            None => VmmType::Qemu,
            Some(v) => VmmType::parse(v).ok_or_else(|| InputError::VmmType(v.clone()))?,
        };
        let guest_features = match &self.guest_features {
            None => DEFAULT_GUEST_FEATURES,
            Some(g) => parse_hex_u64(g).ok_or_else(|| InputError::GuestFeatures(g.clone()))?,
        };
        let kernel_hashes = match &self.kernel {
            None if self.initrd.is_some() || self.append.is_some() => {
                return Err(InputError::NeedsKernel);
            }
            None => None,
            Some(k) => {
                let kernel = read("kernel", k)?;
                let initrd = self
                    .initrd
                    .as_deref()
                    .map(|p| read("initrd", p))
                    .transpose()?;
                Some(KernelHashes::new(
                    &kernel,
                    initrd.as_deref(),
                    self.append.as_deref(),
                ))
            }
        };
        Ok(SnpPlanConfig {
            firmware: read("firmware", &self.firmware)?,
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
