//! AMD SEV-SNP attestation reports: parsing and verification (issue #3).
//!
//! - [`report`]: the zero-copy ATTESTATION_REPORT parser (versions 2, 3, 5).
//! - [`hcl`]: Azure's HCL wrapper around a report.
//! - [`extensions`]: AMD's X.509 extensions in VCEK/VLEK certificates.
//! - [`chain`]: built-in roots, chain building, the chain cache.
//! - [`verifier`]: the numbered check list and [`SnpVerifier`], the reusable verifier a server holds.

pub mod chain;
pub mod claims;
pub mod extensions;
pub mod hcl;
pub mod report;
pub mod verifier;

pub use chain::SetupError;
pub use report::{AttestationReport, Product, ReportError, TcbLayout, TcbVersion};
pub use verifier::{SnpInputs, SnpVerifier};

use crate::verdict::Verdict;
use crate::verify::{InputError, VerifyInputs};

/// Verify an SNP report offline (`cvm-attest verify`): a one-shot [`SnpVerifier`] with the built-in roots,
/// or with `inputs.trust_roots` instead of the built-in ARKs.
pub fn verify(evidence: &[u8], inputs: &VerifyInputs) -> Result<Verdict, InputError> {
    let verifier = match &inputs.trust_roots {
        None => SnpVerifier::new(),
        Some(roots) => SnpVerifier::with_trust_roots(roots),
    }
    .map_err(|e| InputError::Usage(format!("--trust-root: {e}")))?
    .allow_simulated(inputs.allow_simulated);
    Ok(verifier.verify(
        evidence,
        &SnpInputs {
            certs: &inputs.certs,
            crls: &inputs.crls,
            policy: &inputs.policy,
            at: inputs.at,
        },
    ))
}
