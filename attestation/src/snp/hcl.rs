//! Azure confidential VMs wrap the SNP report in an "HCL report" (written by the paravisor, read from the
//! vTPM NV index 0x01400001): a 32-byte header starting with `HCLA`, the 1184-byte SNP report at
//! `[0x20, 0x4C0)`, then the runtime-data block: data size, version, report type (2 = SNP), hash type
//! (1 = SHA-256, 2 = SHA-384, 3 = SHA-512), variable-data size, and the variable data (a JSON document with
//! the vTPM's attestation key). The SNP report's REPORT_DATA starts with the hash of that variable data; we
//! check it, so the runtime data is bound to the hardware-signed report.

use super::report::REPORT_LEN;
use crate::cursor::{Reader, Truncated};

/// The magic at the start of an HCL report.
pub const HCL_MAGIC: &[u8; 4] = b"HCLA";
/// Offset of the SNP report inside the HCL report.
pub const HCL_REPORT_OFFSET: usize = 0x20;
/// HCL report type for SEV-SNP.
pub const HCL_REPORT_TYPE_SNP: u32 = 2;
/// Largest variable-data block accepted (Azure's are about 1.2 KiB; the whole HCL report is 2600 bytes).
pub const MAX_VAR_DATA: usize = 64 * 1024;

/// The parts of an HCL report.
#[derive(Clone, Copy, Debug)]
pub struct HclReport<'a> {
    /// HCL report format version (header).
    pub version: u32,
    /// The embedded SNP attestation report (1184 bytes).
    pub snp_report: &'a [u8],
    /// Runtime-data report type (2 = SNP).
    pub report_type: u32,
    /// Hash algorithm of the runtime data (1 = SHA-256, 2 = SHA-384, 3 = SHA-512).
    pub hash_type: u32,
    /// The runtime (variable) data whose hash is in REPORT_DATA.
    pub var_data: &'a [u8],
}

/// Why an HCL report cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HclError {
    /// Too short or inconsistent sizes.
    #[error("Azure HCL report: {0}")]
    Truncated(#[from] Truncated),
    /// Not `HCLA`.
    #[error("Azure HCL report: does not start with \"HCLA\"")]
    BadMagic,
    /// Runtime data for another TEE (e.g. TDX = 4).
    #[error("Azure HCL report: runtime data is for report type {0}, not SNP (2)")]
    NotSnp(u32),
    /// A variable-data block larger than [`MAX_VAR_DATA`].
    #[error("Azure HCL report: runtime data of {0} bytes is larger than {MAX_VAR_DATA}")]
    TooLarge(usize),
}

impl<'a> HclReport<'a> {
    /// Parse an HCL report. Bytes after the variable data are zero padding in Azure's fixed-size buffer and
    /// are ignored (they are neither signed nor hashed).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, HclError> {
        let mut r = Reader::new(bytes);
        if r.take(4, "HCL magic")? != HCL_MAGIC {
            return Err(HclError::BadMagic);
        }
        let version = r.u32_le("HCL version")?;
        r.skip(HCL_REPORT_OFFSET - 8, "HCL header")?;
        let snp_report = r.take(REPORT_LEN, "SNP report in HCL report")?;
        let data_size = r.u32_le("HCL runtime data size")?;
        let _data_version = r.u32_le("HCL runtime data version")?;
        let report_type = r.u32_le("HCL report type")?;
        if report_type != HCL_REPORT_TYPE_SNP {
            return Err(HclError::NotSnp(report_type));
        }
        let hash_type = r.u32_le("HCL runtime data hash type")?;
        let var_size = usize::try_from(r.u32_le("HCL variable data size")?).unwrap_or(usize::MAX);
        if var_size > MAX_VAR_DATA {
            return Err(HclError::TooLarge(var_size));
        }
        // data_size counts the 20-byte runtime-data header and the variable data.
        if usize::try_from(data_size).ok() != var_size.checked_add(20) {
            return Err(HclError::Truncated(Truncated {
                what: "HCL runtime data (size fields disagree)",
                offset: r.offset(),
                needed: var_size.saturating_add(20),
                available: usize::try_from(data_size).unwrap_or(usize::MAX),
            }));
        }
        let var_data = r.take(var_size, "HCL variable data")?;
        Ok(HclReport {
            version,
            snp_report,
            report_type,
            hash_type,
            var_data,
        })
    }

    /// The hash of the variable data with the declared algorithm, or `None` for an unknown hash type.
    pub fn var_data_digest(&self) -> Option<Vec<u8>> {
        let alg = match self.hash_type {
            1 => &ring::digest::SHA256,
            2 => &ring::digest::SHA384,
            3 => &ring::digest::SHA512,
            _ => return None,
        };
        Some(ring::digest::digest(alg, self.var_data).as_ref().to_vec())
    }
}
