//! One entry point for offline verification: detect the TEE from the bytes (or take it from the caller) and
//! run that vendor's check list.

use crate::policy::Policy;
use crate::verdict::{Tee, Verdict};
use std::path::PathBuf;

/// Everything besides the evidence that a verification may use. Nothing is fetched from the network.
#[derive(Clone, Debug, Default)]
pub struct VerifyInputs {
    /// DER certificates given with the evidence (`--cert`): the VCEK/VLEK and any ASK/ARK for SNP.
    pub certs: Vec<Vec<u8>>,
    /// DER CRLs (`--crl`).
    pub crls: Vec<Vec<u8>>,
    /// DER trust roots replacing the built-in AMD ARKs and Intel root (`--trust-root`), when given.
    pub trust_roots: Option<Vec<Vec<u8>>>,
    /// TDX collateral: a directory in DESIGN.md's layout or a `QuoteCollateralV3` JSON file.
    pub collateral: Option<PathBuf>,
    /// The appraisal policy.
    pub policy: Policy,
    /// Verification time, Unix seconds.
    pub at: i64,
    /// Accept evidence that chains to a simulated ("cvm simulator") root. `cvm-attest verify` sets it when
    /// the roots were named explicitly with `--trust-root`; when false, simulated evidence is refused with
    /// `SIMULATED_NOT_ALLOWED` (DESIGN.md "Simulated TEE").
    pub allow_simulated: bool,
}

/// Inputs that could not be used at all (exit 2): unreadable files, unusable arguments.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The inputs do not make sense together.
    #[error("{0}")]
    Usage(String),
}

/// Size of an SEV-SNP attestation report.
const SNP_REPORT_LEN: usize = 1184;

/// Tell SNP reports from TDX quotes: an SNP report is exactly 1184 bytes (or an Azure HCL report starting with
/// `HCLA`); a TDX quote starts with a u16 version 4 or 5 and attestation key type 2.
pub fn detect_tee(evidence: &[u8]) -> Option<Tee> {
    if evidence.len() == SNP_REPORT_LEN || evidence.starts_with(b"HCLA") {
        return Some(Tee::Snp);
    }
    match evidence {
        [4 | 5, 0, 2, 0, ..] => Some(Tee::Tdx),
        _ => None,
    }
}

/// Verify `evidence` from `tee` (detected when `None`) with `inputs`.
pub fn verify(
    evidence: &[u8],
    tee: Option<Tee>,
    inputs: &VerifyInputs,
) -> Result<Verdict, InputError> {
    let tee = match tee.or_else(|| detect_tee(evidence)) {
        Some(tee) => tee,
        None => {
            return Err(InputError::Usage(
                "cannot tell whether the evidence is an SNP report or a TDX quote: pass --tee snp|tdx"
                    .into(),
            ));
        }
    };
    match tee {
        Tee::Snp => crate::snp::verify(evidence, inputs),
        Tee::Tdx => crate::tdx::verify(evidence, inputs),
    }
}
