//! The TDX side of the appraiser: one [`TdxVerifier`] (with its PCK and collateral caches) and the collateral
//! the service holds, loaded once per FMSPC from the collateral directory.

use super::appraise::{AppraiseSetupError, sha256};
use crate::policy::Policy;
use crate::reason::{Reason, Rejection};
use crate::tdx::{Collateral, Quote, TdxVerifier};
use crate::verdict::{Tee, Verdict};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Most FMSPCs whose collateral is kept in memory.
const MAX_FMSPCS: usize = 256;

/// TDX verification as the service runs it.
#[derive(Debug)]
pub struct TdxBackend {
    verifier: TdxVerifier,
    collateral_dir: Option<PathBuf>,
    collateral: RwLock<HashMap<Option<[u8; 6]>, Arc<Collateral>>>,
    allow_simulated: bool,
}

impl TdxBackend {
    /// A backend trusting `roots` (the built-in Intel root when `None`) with collateral from `collateral_dir`;
    /// simulated quotes are refused unless `allow_simulated`.
    pub fn new(
        roots: Option<Vec<Vec<u8>>>,
        collateral_dir: Option<PathBuf>,
        allow_simulated: bool,
    ) -> Result<Self, AppraiseSetupError> {
        let verifier = match roots {
            None => TdxVerifier::new(),
            Some(roots) => TdxVerifier::with_trust_roots(&roots)
                .map_err(|e| AppraiseSetupError::Verifier(e.to_string()))?,
        };
        Ok(TdxBackend {
            verifier: verifier.allow_simulated(allow_simulated),
            collateral_dir,
            collateral: RwLock::new(HashMap::new()),
            allow_simulated,
        })
    }

    /// The collateral for the quote's FMSPC, loaded on first use. `Err` when the files exist but are unusable.
    fn collateral_for(&self, quote: &[u8]) -> Result<Option<Arc<Collateral>>, Rejection> {
        let Some(dir) = &self.collateral_dir else {
            return Ok(None);
        };
        let fmspc = self.verifier.fmspc_of(quote);
        if let Some(c) = self
            .collateral
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fmspc)
        {
            return Ok(Some(c.clone()));
        }
        let c = Arc::new(Collateral::from_path(dir, fmspc.as_ref()).map_err(|e| {
            Rejection::new(
                Reason::CollateralMissing,
                format!("the service's TDX collateral is unusable: {e}"),
            )
        })?);
        let mut map = self.collateral.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_FMSPCS {
            map.clear();
        }
        map.insert(fmspc, c.clone());
        Ok(Some(c))
    }

    /// Verify a quote; returns the verdict and the SHA-256 of the collateral used.
    pub fn verify(&self, quote: &[u8], policy: &Policy, at: i64) -> (Verdict, Vec<Vec<u8>>) {
        let collateral = match self.collateral_for(quote) {
            Ok(c) => c,
            Err(rejection) => {
                return (
                    Verdict {
                        tee: Tee::Tdx,
                        outcome: Err(rejection),
                        simulated: false,
                        claims: serde_json::json!({}),
                    },
                    Vec::new(),
                );
            }
        };
        let mut verdict: Verdict = self
            .verifier
            .verify(quote, collateral.as_deref(), policy, at)
            .into();
        if verdict.simulated && !self.allow_simulated && verdict.outcome.is_ok() {
            verdict.outcome = Err(Rejection::new(
                Reason::SimulatedNotAllowed,
                "the quote chains to a simulated (\"cvm simulator\") root",
            ));
        }
        // The PCK chain as the quote carries it (hashed as sent, not re-encoded), then the collateral.
        let mut used: Vec<Vec<u8>> = Quote::parse(quote)
            .map(|q| vec![sha256(q.signature_data.pck_chain_pem)])
            .unwrap_or_default();
        if let Some(c) = &collateral {
            used.push(c.id().to_vec());
        }
        (verdict, used)
    }
}

/// The certificates a quote carries (its PCK chain), for telling simulated evidence apart.
pub fn embedded_certs(quote: &[u8]) -> Vec<Vec<u8>> {
    Quote::parse(quote)
        .ok()
        .and_then(|q| crate::pki::certs_from_bytes(q.signature_data.pck_chain_pem).ok())
        .unwrap_or_default()
}
