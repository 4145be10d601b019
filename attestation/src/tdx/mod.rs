//! Intel TDX DCAP quotes: parsing and verification (issue #4).

use crate::reason::{Reason, Rejection};
use crate::verdict::{Tee, Verdict};
use crate::verify::{InputError, VerifyInputs};

/// Verify a TDX quote offline.
pub fn verify(_evidence: &[u8], _inputs: &VerifyInputs) -> Result<Verdict, InputError> {
    Ok(Verdict {
        tee: Tee::Tdx,
        outcome: Err(Rejection::new(
            Reason::UnsupportedVersion,
            "TDX verification is not implemented yet",
        )),
        simulated: false,
        claims: serde_json::json!({}),
    })
}
