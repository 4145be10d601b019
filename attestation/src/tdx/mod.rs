//! Intel TDX DCAP quotes: parsing and verification (issue #4).
//!
//! - [`quote`]: total parsers for quotes v4 and v5 (TDX 1.0 and 1.5 bodies), the ECDSA signature data,
//!   certification data types 6 and 5, the QE report and QE auth data.
//! - [`pck`]: the PCK certificate's SGX extensions.
//! - [`collateral`]: TCB info, QE identity, signing chain and CRLs from a directory or a `QuoteCollateralV3`.
//! - [`tcb`]: TCB level selection as Intel's QVL does it.
//! - [`TdxVerifier`] (`verifier`): the numbered check list; what the server shares between requests.
//! - `chain`: the PCK path and collateral signing chains to the trust roots, the CRLs, and their caches.
//! - `claims`: the claims as the steps fill them in.
//!
//! ```no_run
//! use cvm_attest::tdx::{Collateral, TdxVerifier};
//! # fn run(quote: &[u8], now: i64) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = TdxVerifier::new(); // Intel SGX Root CA built in
//! let fmspc = verifier.fmspc_of(quote);
//! let collateral = Collateral::from_path("collateral/".as_ref(), fmspc.as_ref())?;
//! let verdict = verifier.verify(quote, Some(&collateral), &cvm_attest::Policy::default(), now);
//! println!("{:?} {}", verdict.result.map(|a| a.tcb_status), verdict.claims);
//! # Ok(()) }
//! ```

mod chain;
mod claims;
pub mod collateral;
pub mod pck;
pub mod quote;
pub mod tcb;
mod verifier;

pub use collateral::{Collateral, CollateralError, CollateralParts, SignedBody};
pub use quote::Quote;
pub use verifier::{
    Accepted, INTEL_SGX_ROOT_CA, SIMULATOR_ORGANIZATION, TdxVerdict, TdxVerifier, TdxVerifierError,
};

use crate::reason::{Reason, Rejection};
use crate::verdict::Verdict;
use crate::verify::{InputError, VerifyInputs};

fn reject(reason: Reason, message: impl Into<String>) -> Rejection {
    Rejection::new(reason, message)
}

/// SHA-256 of the concatenation of `parts`.
fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Verify a TDX quote offline with `inputs` (trust roots, collateral path, extra CRLs, policy, time).
///
/// Unusable inputs (an unreadable collateral path, a collateral file that is not collateral, a trust root that
/// is not a certificate) are [`InputError`]s; collateral pieces that are simply absent lead to
/// `COLLATERAL_MISSING` in the verdict.
pub fn verify(evidence: &[u8], inputs: &VerifyInputs) -> Result<Verdict, InputError> {
    let verifier = match &inputs.trust_roots {
        None => TdxVerifier::new(),
        Some(roots) => {
            TdxVerifier::with_trust_roots(roots).map_err(|e| InputError::Usage(e.to_string()))?
        }
    }
    .allow_simulated(inputs.allow_simulated);
    let collateral_error = |e: CollateralError| match e {
        CollateralError::Io { path, message } => InputError::File { path, message },
        CollateralError::Format { what, message } => InputError::File {
            path: inputs.collateral.clone().unwrap_or_default(),
            message: format!("{what}: {message}"),
        },
    };
    let collateral = match &inputs.collateral {
        Some(path) => {
            let fmspc = verifier.fmspc_of(evidence);
            let c = Collateral::from_path(path, fmspc.as_ref()).map_err(collateral_error)?;
            Some(c.with_extra_crls(&inputs.crls).map_err(collateral_error)?)
        }
        None if !inputs.crls.is_empty() => {
            Some(Collateral::crls_only(&inputs.crls).map_err(collateral_error)?)
        }
        None => None,
    };
    Ok(verifier
        .verify(evidence, collateral.as_ref(), &inputs.policy, inputs.at)
        .into())
}
