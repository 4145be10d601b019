//! AMD SEV-SNP attestation reports: parsing and verification (issue #3).

use crate::reason::{Reason, Rejection};
use crate::verdict::{Tee, Verdict};
use crate::verify::{InputError, VerifyInputs};

/// Verify an SNP report offline.
pub fn verify(_evidence: &[u8], _inputs: &VerifyInputs) -> Result<Verdict, InputError> {
    Ok(Verdict {
        tee: Tee::Snp,
        outcome: Err(Rejection::new(
            Reason::UnsupportedVersion,
            "SNP verification is not implemented yet",
        )),
        simulated: false,
        claims: serde_json::json!({}),
    })
}
