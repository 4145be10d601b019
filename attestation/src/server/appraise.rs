//! Evidence appraisal for the service: the SNP and TDX verifiers configured for the service's mode, the
//! certificates and collateral it holds, and the facts the service needs from a verdict (REPORT_DATA,
//! measurement, TCB status, hashes of the collateral used).
//!
//! Production mode trusts the built-in AMD ARKs and Intel root only and refuses simulated evidence
//! (`SIMULATED_NOT_ALLOWED`). Simulated mode trusts only the roots of the sim directory (`snp/ark.pem`,
//! `tdx/root.pem`) and its collateral (`snp/vcek.der`, `tdx/collateral`).

use super::config::{Config, Mode};
use crate::policy::Policy;
use crate::reason::{Reason, Rejection};
use crate::snp::SnpVerifier;
use crate::snp::chain::SIMULATOR_ORGANIZATION;
use crate::verdict::{Tee, Verdict};
use ring::digest;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Errors setting up the verifiers.
#[derive(Debug, thiserror::Error)]
pub enum AppraiseSetupError {
    /// A root, certificate or collateral file could not be used.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A verifier refused its configuration.
    #[error("verifier setup: {0}")]
    Verifier(String),
}

/// The verifiers and what they hold.
#[derive(Debug)]
pub struct Appraiser {
    mode: Mode,
    snp: SnpVerifier,
    snp_certs: Vec<Vec<u8>>,
    snp_leaves: Vec<Vec<u8>>,
    snp_intermediates: Vec<Vec<u8>>,
    snp_warm: AtomicBool,
    tdx: super::tdx_backend::TdxBackend,
}

/// A verdict and what the service takes from it.
#[derive(Debug)]
pub struct Appraisal {
    /// The verifier's verdict.
    pub verdict: Verdict,
    /// SHA-256 of each certificate / collateral file used.
    pub collateral: Vec<Vec<u8>>,
}

impl Appraisal {
    /// REPORT_DATA from the claims (64 bytes) when the evidence parsed.
    pub fn report_data(&self) -> Option<Vec<u8>> {
        self.hex_claim("report_data")
    }

    /// The launch measurement: SNP MEASUREMENT or TDX MRTD.
    pub fn measurement(&self) -> Option<Vec<u8>> {
        match self.verdict.tee {
            Tee::Snp => self.hex_claim("measurement"),
            Tee::Tdx => self.hex_claim("mrtd"),
        }
    }

    /// TDX TCB status, or the SNP REPORTED_TCB as compact JSON.
    pub fn tcb_status(&self) -> String {
        let c = &self.verdict.claims;
        match (c.get("tcb_status"), c.get("reported_tcb")) {
            (Some(serde_json::Value::String(s)), _) => s.clone(),
            (_, Some(v)) => v.to_string(),
            _ => String::new(),
        }
    }

    /// Whether CRLs were checked.
    pub fn revocation_checked(&self) -> bool {
        self.verdict.claims.get("revocation_checked") == Some(&serde_json::Value::Bool(true))
    }

    fn hex_claim(&self, key: &str) -> Option<Vec<u8>> {
        self.verdict
            .claims
            .get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| hex::decode(s).ok())
    }
}

pub(super) fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, AppraiseSetupError> {
    let bytes = std::fs::read(path).map_err(|e| AppraiseSetupError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    crate::pki::certs_from_bytes(&bytes).map_err(|e| AppraiseSetupError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Every `*.der` / `*.pem` certificate directly in `dir` (sorted by name), if it exists.
fn certs_in_dir(dir: &Path) -> Result<Vec<Vec<u8>>, AppraiseSetupError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("der" | "pem" | "crt")
                )
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        out.extend(read_certs(&p)?);
    }
    Ok(out)
}

impl Appraiser {
    /// Set up the verifiers for `config`'s mode.
    pub fn new(config: &Config) -> Result<Self, AppraiseSetupError> {
        let verifier_err = |e: String| AppraiseSetupError::Verifier(e);
        let (snp, mut snp_certs, tdx) = match (config.mode, &config.sim_dir) {
            (Mode::Simulated, Some(sim)) => {
                let ark = read_certs(&sim.join("snp/ark.pem"))?;
                let snp = SnpVerifier::with_trust_roots(&ark)
                    .map_err(|e| verifier_err(e.to_string()))?
                    .allow_simulated(true);
                let mut certs = read_certs(&sim.join("snp/vcek.der"))?;
                certs.extend(read_certs(&sim.join("snp/ask.pem"))?);
                let root = read_certs(&sim.join("tdx/root.pem"))?;
                let tdx = super::tdx_backend::TdxBackend::new(
                    Some(root),
                    Some(sim.join("tdx/collateral")),
                    true,
                )?;
                (snp, certs, tdx)
            }
            _ => {
                let snp = SnpVerifier::new().map_err(|e| verifier_err(e.to_string()))?;
                let collateral = config.collateral.dir.as_ref().map(|d| {
                    if d.join("tdx").is_dir() {
                        d.join("tdx")
                    } else {
                        d.clone()
                    }
                });
                let tdx = super::tdx_backend::TdxBackend::new(None, collateral, false)?;
                (snp, Vec::new(), tdx)
            }
        };
        if let Some(dir) = &config.collateral.dir {
            snp_certs.extend(certs_in_dir(&dir.join("snp"))?);
            snp_certs.extend(certs_in_dir(dir)?);
        }
        // The held VCEK/VLEKs (P-384 leaves) alone: once their chains are verified and cached, the
        // intermediates need not be parsed again per request.
        let (snp_leaves, snp_intermediates) = snp_certs.iter().cloned().partition(|der| {
            crate::pki::parse_cert(der)
                .ok()
                .is_some_and(|c| crate::snp::chain::p384_key(&c).is_some())
        });
        Ok(Appraiser {
            mode: config.mode,
            snp,
            snp_certs,
            snp_leaves,
            snp_intermediates,
            snp_warm: AtomicBool::new(false),
            tdx,
        })
    }

    /// The service's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Verify `evidence` from `tee` with the request's certificates (SNP: the service's own when none are
    /// given) against `policy` at `at`.
    pub fn appraise(
        &self,
        tee: Tee,
        evidence: &[u8],
        certs: &[Vec<u8>],
        policy: &Policy,
        at: i64,
    ) -> Appraisal {
        let (mut verdict, collateral) = match tee {
            Tee::Snp if certs.is_empty() => self.snp_with_held_certs(evidence, policy, at),
            Tee::Snp => self.snp_with_guest_certs(certs, evidence, policy, at),
            Tee::Tdx => self.tdx.verify(evidence, policy, at),
        };
        if self.mode == Mode::Production && verdict.simulated && verdict.outcome.is_ok() {
            // Production trusts no simulator root, so this cannot happen; refuse all the same.
            verdict.outcome = Err(Rejection::new(
                Reason::SimulatedNotAllowed,
                "simulated evidence in production mode",
            ));
        }
        if self.mode == Mode::Production
            && let Err(r) = &verdict.outcome
            && r.reason != Reason::SimulatedNotAllowed
            && (verdict.simulated || names_simulator(tee, evidence, certs))
        {
            // Refused either way; say why precisely.
            verdict.outcome = Err(Rejection::new(
                Reason::SimulatedNotAllowed,
                format!(
                    "the evidence comes from the cvm simulator ({}), and this service runs in production mode",
                    r.reason
                ),
            ));
        }
        Appraisal {
            verdict,
            collateral,
        }
    }
}

impl Appraiser {
    fn snp_with(
        &self,
        certs: &[Vec<u8>],
        evidence: &[u8],
        policy: &Policy,
        at: i64,
    ) -> (Verdict, Vec<Vec<u8>>) {
        let inputs = crate::snp::SnpInputs {
            certs,
            crls: &[],
            policy,
            at,
        };
        let v = self.snp.verify(evidence, &inputs);
        (v, certs.iter().map(|c| sha256(c)).collect())
    }

    /// SNP with the guest's certificates (its VCEK, maybe its chain) followed by the intermediates the service
    /// holds (e.g. the simulator's ASK, which no built-in chain has), so a guest that sends only its VCEK
    /// verifies on a cold cache too.
    fn snp_with_guest_certs(
        &self,
        certs: &[Vec<u8>],
        evidence: &[u8],
        policy: &Policy,
        at: i64,
    ) -> (Verdict, Vec<Vec<u8>>) {
        if self.snp_intermediates.is_empty() {
            return self.snp_with(certs, evidence, policy, at);
        }
        let all: Vec<Vec<u8>> = certs
            .iter()
            .chain(&self.snp_intermediates)
            .cloned()
            .collect();
        self.snp_with(&all, evidence, policy, at)
    }

    /// SNP with the certificates the service holds: the leaves alone while their chains are cached (warm),
    /// all of them (leaves and intermediates) otherwise. A chain failure with the leaves alone means the
    /// cache forgot the chain: verify again with everything.
    fn snp_with_held_certs(
        &self,
        evidence: &[u8],
        policy: &Policy,
        at: i64,
    ) -> (Verdict, Vec<Vec<u8>>) {
        if self.snp_warm.load(Ordering::Relaxed) {
            let (v, used) = self.snp_with(&self.snp_leaves, evidence, policy, at);
            let chain_missing = matches!(
                &v.outcome,
                Err(r) if matches!(r.reason, Reason::ChainInvalid | Reason::UntrustedRoot)
            );
            if !chain_missing {
                return (v, used);
            }
            self.snp_warm.store(false, Ordering::Relaxed);
        }
        let (v, used) = self.snp_with(&self.snp_certs, evidence, policy, at);
        if v.accepted() {
            self.snp_warm.store(true, Ordering::Relaxed);
        }
        (v, used)
    }
}

/// Whether the certificates that come with the evidence are issued to the simulator's organization.
fn names_simulator(tee: Tee, evidence: &[u8], certs: &[Vec<u8>]) -> bool {
    let simulated = |der: &[u8]| {
        crate::pki::parse_cert(der)
            .ok()
            .and_then(|c| crate::pki::subject_organization(&c))
            .as_deref()
            == Some(SIMULATOR_ORGANIZATION)
    };
    match tee {
        Tee::Snp => certs.iter().any(|c| simulated(c)),
        Tee::Tdx => super::tdx_backend::embedded_certs(evidence)
            .iter()
            .any(|c| simulated(c)),
    }
}
