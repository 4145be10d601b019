//! The TDX check list and the reusable [`TdxVerifier`].
//!
//! [`TdxVerifier::verify`] runs these steps in this order; the first failure decides the reason
//! (DESIGN.md "Checks run in this order"):
//!
//! 1. Structure: the quote parses (version 4/5, TEE type 0x81, attestation key type 2, certification data
//!    type 6 wrapping type 5, zero padding only), and the PCK certificates parse with their SGX extensions.
//! 2. Quote signature: ECDSA P-256 by the attestation key over header ‖ body (v5: header ‖ body type ‖ body
//!    size ‖ body) — `SIGNATURE_INVALID`.
//! 3. QE report signature by the PCK key — `QE_REPORT_SIG_INVALID`.
//! 4. PCK chain to a trusted root (the Intel SGX Root CA unless replaced), every certificate valid at the
//!    verification time — `CHAIN_INVALID`, `UNTRUSTED_ROOT`, `CERT_EXPIRED`, `CERT_NOT_YET_VALID`; a simulated
//!    root only when the verifier allows simulated evidence — `SIMULATED_NOT_ALLOWED`.
//! 5. Binding: QE REPORTDATA = SHA-256(attestation key ‖ QE auth data) ‖ 0³² — `QE_REPORT_DATA_MISMATCH`.
//! 6. Revocation: every CRL issued by a certificate of the PCK path (root CA CRL, PCK platform/processor CRL)
//!    verifies, is current (`COLLATERAL_EXPIRED`) and does not list its child (`PCK_REVOKED`,
//!    `CERT_REVOKED`); `require_revocation` without a CRL for every link is `COLLATERAL_MISSING`.
//! 7. Collateral: TCB info and QE identity present (`COLLATERAL_MISSING`), their signing chain ends at the
//!    same root (`COLLATERAL_CHAIN_INVALID`), their signatures over the exact JSON bodies verify
//!    (`COLLATERAL_SIG_INVALID`), and they and the signing certificates are current (`COLLATERAL_EXPIRED`).
//! 8. TCB level: FMSPC and PCE-ID (`FMSPC_MISMATCH`), QE identity (`QE_IDENTITY_MISMATCH`), platform level,
//!    TDX module identity (`TCB_UNKNOWN`), for TDX 1.5 the current TCB (TEE_TCB_SVN2) as well, converged
//!    status (`TCB_REVOKED`, `TCB_OUT_OF_DATE` unless the policy's `accept_tcb_status` names it).
//! 9. Policy: debug TDs (`POLICY_DEBUG`), MRTD/RTMR/MRCONFIGID (`POLICY_MEASUREMENT`), REPORT_DATA
//!    (`POLICY_REPORT_DATA`). Only this step constructs [`Accepted`].
//!
//! Each step returns a token that the next steps take as an argument, so none can be skipped. Everything that
//! depends only on bytes (PCK chain signatures, collateral chain and signatures, parsed CRLs) is cached by
//! content hash (`super::chain`); with warm caches a verification costs the two P-256 verifications of steps 2 and 3.

use super::chain::{
    CertInfo, Chains, CollateralEntry, PathError, PckEntry, TrustRoot, VerifiedTcb, verify_crl,
};
use super::claims::Claims;
use super::collateral::{Collateral, TcbInfo};
use super::pck::PckExtensions;
use super::quote::Quote;
use super::tcb::{self, TcbError};
use super::{reject, sha256};
use crate::pki::{self, PkiError};
use crate::policy::{Policy, TcbStatus};
use crate::reason::{Reason, Rejection};
use crate::verdict::{Tee, Verdict};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

/// The Intel SGX Root CA (DER), built in.
pub const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel-sgx-root-ca.der");

/// The subject organization of the roots the cvm simulator issues (`simulated: true`).
pub const SIMULATOR_ORGANIZATION: &str = "cvm simulator";

/// A TDX quote verifier holding trust roots and caches; share one per process (`Send + Sync`).
pub struct TdxVerifier {
    chains: Chains,
    allow_simulated: bool,
}

impl std::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVerifier")
            .field("roots", &self.chains.root_names())
            .finish_non_exhaustive()
    }
}

/// An accepted quote: what the policy and TCB steps concluded. Only step 9 constructs it.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The converged TCB status (one the policy accepts).
    pub tcb_status: TcbStatus,
    /// Advisory IDs of the platform, TDX module and QE levels.
    pub advisory_ids: Vec<String>,
    /// The PCK certificate's FMSPC.
    pub fmspc: [u8; 6],
    /// Whether every link of the PCK path was checked against a CRL.
    pub revocation_checked: bool,
    /// Proof that step 9 made it.
    _policy: PolicyChecked,
}

/// Made only by step 9.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PolicyChecked(());

/// The result of [`TdxVerifier::verify`]: the outcome and the claims (filled as far as the quote parsed).
#[derive(Clone, Debug)]
pub struct TdxVerdict {
    /// Accepted, or the first check that failed.
    pub result: Result<Accepted, Rejection>,
    /// The claims as JSON (DESIGN.md keys; `{}` when the quote did not parse).
    pub claims: Value,
    /// The PCK chain ends at a root whose organization is "cvm simulator".
    pub simulated: bool,
}

impl From<TdxVerdict> for Verdict {
    fn from(v: TdxVerdict) -> Verdict {
        Verdict {
            tee: Tee::Tdx,
            outcome: v.result.map(|_| ()),
            simulated: v.simulated,
            claims: v.claims,
        }
    }
}

/// Errors building a verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdxVerifierError {
    /// A trust root is not a certificate.
    #[error("trust root {index}: {source}")]
    BadRoot {
        /// Position in the list.
        index: usize,
        /// Why.
        source: PkiError,
    },
    /// No trust roots.
    #[error("no trust roots")]
    NoRoots,
}

// Proof-of-check tokens: each can only be made by its step.
struct Parsed<'q> {
    quote: Quote<'q>,
    pck: Arc<PckEntry>,
}
struct QuoteSignatureValid(());
struct QeReportSignatureValid(());
struct PckChainValid {
    root: usize,
}
struct QeReportBound(());
struct RevocationChecked {
    checked: bool,
}
struct CollateralValid<'c> {
    tcb: &'c VerifiedTcb,
}
struct TcbJudged {
    status: TcbStatus,
    advisory_ids: Vec<String>,
}

impl Default for TdxVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl TdxVerifier {
    /// A verifier trusting the built-in Intel SGX Root CA.
    pub fn new() -> Self {
        let roots = pki::parse_cert(INTEL_SGX_ROOT_CA)
            .map(|cert| {
                vec![TrustRoot {
                    simulated: false,
                    info: CertInfo::new(INTEL_SGX_ROOT_CA, &cert),
                }]
            })
            .unwrap_or_default();
        TdxVerifier {
            chains: Chains::new(roots),
            allow_simulated: false,
        }
    }

    /// A verifier trusting exactly these DER roots (replacing the Intel root).
    pub fn with_trust_roots(roots: &[Vec<u8>]) -> Result<Self, TdxVerifierError> {
        if roots.is_empty() {
            return Err(TdxVerifierError::NoRoots);
        }
        let mut out = Vec::new();
        for (index, der) in roots.iter().enumerate() {
            let cert = pki::parse_cert(der)
                .map_err(|source| TdxVerifierError::BadRoot { index, source })?;
            out.push(TrustRoot {
                simulated: pki::subject_organization(&cert).as_deref()
                    == Some(SIMULATOR_ORGANIZATION),
                info: CertInfo::new(der, &cert),
            });
        }
        Ok(TdxVerifier {
            chains: Chains::new(out),
            allow_simulated: false,
        })
    }

    /// Accept quotes whose PCK chain ends at a simulated ("cvm simulator") root. Off by default: a verifier
    /// that meets simulated evidence refuses it with `SIMULATED_NOT_ALLOWED` at step 4. A server turns it on
    /// only in `mode = "simulated"`; `cvm-attest verify` only for roots given with `--trust-root`.
    pub fn allow_simulated(mut self, allow: bool) -> Self {
        self.allow_simulated = allow;
        self
    }

    /// The FMSPC of the quote's PCK certificate, when the quote and its PCK certificate parse (to pick the
    /// collateral before verifying).
    pub fn fmspc_of(&self, quote: &[u8]) -> Option<[u8; 6]> {
        let q = Quote::parse(quote).ok()?;
        self.chains
            .pck_entry(q.signature_data.pck_chain_pem)
            .ok()
            .map(|e| e.ext.fmspc)
    }

    /// Verify a quote against collateral (absent: `COLLATERAL_MISSING` once signatures and chain verified),
    /// a policy, at Unix time `at`.
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: Option<&Collateral>,
        policy: &Policy,
        at: i64,
    ) -> TdxVerdict {
        let mut claims = Claims::new();
        let result = self.check_list(quote, collateral, policy, at, &mut claims);
        TdxVerdict {
            result,
            claims: if claims.map.is_empty() {
                json!({})
            } else {
                Value::Object(claims.map)
            },
            simulated: claims.simulated,
        }
    }

    /// The numbered check list (see the module documentation).
    fn check_list(
        &self,
        quote: &[u8],
        collateral: Option<&Collateral>,
        policy: &Policy,
        at: i64,
        claims: &mut Claims,
    ) -> Result<Accepted, Rejection> {
        // Step 1: structure.
        let parsed = self.step1_structure(quote, claims)?;
        // Step 2: quote signature by the attestation key.
        let sig = step2_quote_signature(&parsed)?;
        // Step 3: QE report signature by the PCK key.
        let qe_sig = step3_qe_report_signature(&parsed, &sig)?;
        // Step 4: PCK chain to a trusted root, valid at `at`.
        let chain = self.step4_pck_chain(&parsed, &qe_sig, at, claims)?;
        // Step 5: QE report data binds the attestation key.
        let bound = step5_qe_binding(&parsed, &chain)?;
        // Step 6: revocation (CRLs).
        let entry = collateral.map(|c| self.chains.collateral_entry(c));
        let revocation = self.step6_revocation(
            &parsed,
            &chain,
            &bound,
            entry.as_deref(),
            policy,
            at,
            claims,
        )?;
        // Step 7: collateral present, signed, current.
        let valid = self.step7_collateral(&chain, &revocation, entry.as_deref(), at)?;
        // Step 8: TCB level.
        let judged = step8_tcb_level(&parsed, &valid, policy, claims)?;
        // Step 9: policy; the only constructor of `Accepted`.
        step9_policy(&parsed, judged, revocation, policy)
    }

    fn step1_structure<'q>(
        &self,
        quote: &'q [u8],
        claims: &mut Claims,
    ) -> Result<Parsed<'q>, Rejection> {
        let quote = Quote::parse(quote)?;
        claims.quote(&quote);
        let pck = self.chains.pck_entry(quote.signature_data.pck_chain_pem)?;
        claims.set("fmspc", json!(hex::encode(pck.ext.fmspc)));
        Ok(Parsed { quote, pck })
    }

    fn step4_pck_chain(
        &self,
        parsed: &Parsed<'_>,
        _qe_sig: &QeReportSignatureValid,
        at: i64,
        claims: &mut Claims,
    ) -> Result<PckChainValid, Rejection> {
        let root = match &parsed.pck.chain {
            Ok(root) => *root,
            Err(PathError::Broken(m)) => {
                return Err(reject(Reason::ChainInvalid, format!("PCK chain: {m}")));
            }
            Err(PathError::Untrusted(m)) => {
                return Err(reject(Reason::UntrustedRoot, format!("PCK chain: {m}")));
            }
        };
        let trusted = self.chains.root(root)?;
        claims.simulated = trusted.simulated;
        if trusted.simulated && !self.allow_simulated {
            return Err(reject(
                Reason::SimulatedNotAllowed,
                "the PCK chain ends at a simulated (\"cvm simulator\") root, and this verifier does not \
                 accept simulated evidence",
            ));
        }
        for cert in parsed.pck.certs.iter().chain([&trusted.info]) {
            cert.check_validity(at).map_err(|e| match e {
                PkiError::NotYetValid { .. } => {
                    reject(Reason::CertNotYetValid, format!("{}: {e}", cert.name))
                }
                _ => reject(Reason::CertExpired, format!("{}: {e}", cert.name)),
            })?;
        }
        Ok(PckChainValid { root })
    }

    #[allow(clippy::too_many_arguments)]
    fn step6_revocation(
        &self,
        parsed: &Parsed<'_>,
        chain: &PckChainValid,
        _bound: &QeReportBound,
        collateral: Option<&CollateralEntry>,
        policy: &Policy,
        at: i64,
        claims: &mut Claims,
    ) -> Result<RevocationChecked, Rejection> {
        let trusted = self.chains.root(chain.root)?;
        // The path leaf → … → trusted root, without a repeated root.
        let mut path: Vec<&CertInfo> = parsed.pck.certs.iter().collect();
        if path
            .last()
            .map(|c| c.der != trusted.info.der)
            .unwrap_or(true)
        {
            path.push(&trusted.info);
        }
        let links = path.len().saturating_sub(1);
        let mut covered = vec![false; links];
        for crl in collateral.map(|c| c.crls.as_slice()).unwrap_or_default() {
            let Some(issuer_at) = path.iter().skip(1).position(|c| c.subject == crl.issuer) else {
                continue; // a CRL of another CA (e.g. the processor CA for a platform PCK)
            };
            let child_at = issuer_at;
            let (Some(issuer), Some(child)) = (path.get(issuer_at + 1), path.get(child_at)) else {
                continue;
            };
            verify_crl(crl, issuer)?;
            if at < crl.this_update {
                return Err(reject(
                    Reason::CollateralExpired,
                    format!(
                        "the CRL of {} is not issued until {}",
                        issuer.name,
                        pki::rfc3339(crl.this_update)
                    ),
                ));
            }
            match crl.next_update {
                Some(next) if at <= next => {}
                Some(next) => {
                    return Err(reject(
                        Reason::CollateralExpired,
                        format!(
                            "the CRL of {} expired at {}",
                            issuer.name,
                            pki::rfc3339(next)
                        ),
                    ));
                }
                None => {
                    return Err(reject(
                        Reason::CollateralExpired,
                        format!("the CRL of {} has no nextUpdate", issuer.name),
                    ));
                }
            }
            if crl.revoked.contains(&child.serial) {
                return Err(if child_at == 0 {
                    reject(
                        Reason::PckRevoked,
                        format!("the PCK certificate is revoked by {}", issuer.name),
                    )
                } else {
                    reject(
                        Reason::CertRevoked,
                        format!("{} is revoked by {}", child.name, issuer.name),
                    )
                });
            }
            if let Some(c) = covered.get_mut(child_at) {
                *c = true;
            }
        }
        let checked = links > 0 && covered.iter().all(|&c| c);
        claims.set("revocation_checked", json!(checked));
        if policy.require_revocation && !checked {
            return Err(reject(
                Reason::CollateralMissing,
                "the policy requires revocation checks and no CRL covers every certificate of the PCK chain",
            ));
        }
        Ok(RevocationChecked { checked })
    }

    fn step7_collateral<'c>(
        &self,
        chain: &PckChainValid,
        _revocation: &RevocationChecked,
        collateral: Option<&'c CollateralEntry>,
        at: i64,
    ) -> Result<CollateralValid<'c>, Rejection> {
        let entry = collateral.ok_or_else(|| {
            reject(
                Reason::CollateralMissing,
                "no collateral (TCB info, QE identity) was given",
            )
        })?;
        let tcb = entry.tcb.as_ref().map_err(Clone::clone)?;
        if tcb.root != chain.root {
            return Err(reject(
                Reason::CollateralChainInvalid,
                "the collateral is signed under another root than the PCK chain",
            ));
        }
        let expired = |m: String| reject(Reason::CollateralExpired, m);
        for cert in tcb
            .signing_certs
            .iter()
            .chain([&self.chains.root(tcb.root)?.info])
        {
            cert.check_validity(at).map_err(|e| {
                expired(format!("collateral signing certificate {}: {e}", cert.name))
            })?;
        }
        for (what, issue, next) in [
            (
                "TCB info",
                tcb.tcb_info.issue_date,
                tcb.tcb_info.next_update,
            ),
            (
                "QE identity",
                tcb.qe_identity.issue_date,
                tcb.qe_identity.next_update,
            ),
        ] {
            if at < issue {
                return Err(expired(format!(
                    "the {what} is not issued until {}",
                    pki::rfc3339(issue)
                )));
            }
            if at > next {
                return Err(expired(format!(
                    "the {what} expired at {} (nextUpdate)",
                    pki::rfc3339(next)
                )));
            }
        }
        Ok(CollateralValid { tcb })
    }
}

fn p256_key(xy: &[u8; 64]) -> [u8; 65] {
    let mut key = [0u8; 65];
    key[0] = 4;
    key[1..].copy_from_slice(xy);
    key
}

fn step2_quote_signature(parsed: &Parsed<'_>) -> Result<QuoteSignatureValid, Rejection> {
    let sd = &parsed.quote.signature_data;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, p256_key(sd.attestation_key))
        .verify(parsed.quote.signed, sd.signature)
        .map_err(|_| {
            reject(
                Reason::SignatureInvalid,
                "the quote signature does not verify under the attestation key",
            )
        })?;
    Ok(QuoteSignatureValid(()))
}

fn step3_qe_report_signature(
    parsed: &Parsed<'_>,
    _sig: &QuoteSignatureValid,
) -> Result<QeReportSignatureValid, Rejection> {
    let sd = &parsed.quote.signature_data;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &parsed.pck.leaf_key)
        .verify(sd.qe_report.raw, sd.qe_report_signature)
        .map_err(|_| {
            reject(
                Reason::QeReportSigInvalid,
                "the QE report signature does not verify under the PCK key",
            )
        })?;
    Ok(QeReportSignatureValid(()))
}

fn step5_qe_binding(
    parsed: &Parsed<'_>,
    _chain: &PckChainValid,
) -> Result<QeReportBound, Rejection> {
    let sd = &parsed.quote.signature_data;
    let hash = sha256(&[sd.attestation_key, sd.qe_auth_data]);
    let (head, tail) = sd.qe_report.report_data.split_at(32);
    if head != hash || tail.iter().any(|&b| b != 0) {
        return Err(reject(
            Reason::QeReportDataMismatch,
            "QE REPORTDATA is not SHA-256(attestation key ‖ QE auth data) ‖ 0³²",
        ));
    }
    Ok(QeReportBound(()))
}

fn step8_tcb_level(
    parsed: &Parsed<'_>,
    valid: &CollateralValid<'_>,
    policy: &Policy,
    claims: &mut Claims,
) -> Result<TcbJudged, Rejection> {
    let info = &valid.tcb.tcb_info;
    let qe_identity = &valid.tcb.qe_identity;
    let pck = &parsed.pck.ext;
    let td = &parsed.quote.td_report;
    let qe = &parsed.quote.signature_data.qe_report;
    if info.id != "TDX" || info.version < 3 {
        return Err(reject(
            Reason::TcbUnknown,
            format!(
                "TCB info id {:?} version {} is not TDX TCB info v3",
                info.id, info.version
            ),
        ));
    }
    if info.fmspc != pck.fmspc {
        return Err(reject(
            Reason::FmspcMismatch,
            format!(
                "TCB info is for FMSPC {}, the PCK certificate has {}",
                hex::encode(info.fmspc),
                hex::encode(pck.fmspc)
            ),
        ));
    }
    if info.pce_id != pck.pceid {
        return Err(reject(
            Reason::FmspcMismatch,
            format!(
                "TCB info is for PCE-ID {}, the PCK certificate has {}",
                hex::encode(info.pce_id),
                hex::encode(pck.pceid)
            ),
        ));
    }
    if qe_identity.id != "TD_QE" {
        return Err(reject(
            Reason::QeIdentityMismatch,
            format!("QE identity {:?} is not the TD QE identity", qe_identity.id),
        ));
    }
    if let Some(m) = tcb::qe_identity_mismatch(qe_identity, qe) {
        return Err(reject(Reason::QeIdentityMismatch, m));
    }
    let qe_level = tcb::qe_level(qe_identity, qe).ok_or_else(|| {
        reject(
            Reason::QeIdentityMismatch,
            format!(
                "QE ISVSVN {} is below every QE identity TCB level",
                qe.isvsvn
            ),
        )
    })?;
    claims.set("qe_status", json!(qe_level.status.as_str()));
    // The launch TCB (TEE_TCB_SVN): platform level and TDX module level.
    let launch = evaluate_tdx(info, pck, td, td.tee_tcb_svn, "TEE_TCB_SVN")?;
    claims.set("platform_status", json!(launch.platform.status.as_str()));
    claims.set("tcb_date", json!(launch.platform.tcb_date));
    if let Some(level) = &launch.module {
        claims.set("tdx_module_status", json!(level.status.as_str()));
    }
    let mut status = tcb::converge(launch.status, qe_level.status);
    let mut advisory_ids = launch.advisory_ids;
    advisory_ids.extend(qe_level.advisory_ids.iter().cloned());
    // TDX 1.5: the current TCB (TEE_TCB_SVN2) must be appraisable too. When the TD launched out of date but
    // runs on a current TCB now, QVL says "TDRelaunchAdvised"; we keep the launch status (a policy must
    // accept OutOfDate for it) and say `td_relaunch_advised: true`.
    if let Some(svn2) = td.tee_tcb_svn2 {
        let current = evaluate_tdx(info, pck, td, svn2, "TEE_TCB_SVN2")?;
        let current_status = tcb::converge(current.status, qe_level.status);
        claims.set("current_tcb_status", json!(current_status.as_str()));
        if current_status == TcbStatus::Revoked {
            status = TcbStatus::Revoked;
        }
        let launch_out_of_date = matches!(
            status,
            TcbStatus::OutOfDate | TcbStatus::OutOfDateConfigurationNeeded
        );
        let current_ok = matches!(
            current_status,
            TcbStatus::UpToDate
                | TcbStatus::SWHardeningNeeded
                | TcbStatus::ConfigurationNeeded
                | TcbStatus::ConfigurationAndSWHardeningNeeded
        );
        claims.set(
            "td_relaunch_advised",
            json!(launch_out_of_date && current_ok),
        );
    }
    let mut seen = HashSet::new();
    advisory_ids.retain(|a| seen.insert(a.clone()));
    claims.set("tcb_status", json!(status.as_str()));
    claims.set("advisory_ids", json!(advisory_ids));
    if status == TcbStatus::Revoked {
        return Err(reject(
            Reason::TcbRevoked,
            "the platform's TCB level is revoked",
        ));
    }
    if !policy.accepts_tcb_status(status) {
        return Err(reject(
            Reason::TcbOutOfDate,
            format!("TCB status {status} is not in the policy's accept_tcb_status"),
        ));
    }
    Ok(TcbJudged {
        status,
        advisory_ids,
    })
}

/// A platform level and TDX module level for one TEE_TCB_SVN, converged.
struct TdxTcb<'i> {
    platform: &'i super::collateral::TcbLevel,
    module: Option<super::collateral::IsvSvnLevel>,
    status: TcbStatus,
    advisory_ids: Vec<String>,
}

fn evaluate_tdx<'i>(
    info: &'i TcbInfo,
    pck: &PckExtensions,
    td: &super::quote::TdReport<'_>,
    tee_tcb_svn: &[u8; 16],
    which: &str,
) -> Result<TdxTcb<'i>, Rejection> {
    let platform = tcb::platform_level(info, pck, tee_tcb_svn).ok_or_else(|| {
        reject(
            Reason::TcbUnknown,
            format!(
                "no TCB level matches the PCK certificate's SGX TCB and PCESVN and the {which}"
            ),
        )
    })?;
    let module = tcb::module_level(info, td, tee_tcb_svn).map_err(|e| {
        reject(
            Reason::TcbUnknown,
            match e {
                TcbError::NoPlatformLevel => "no platform TCB level matches".to_owned(),
                TcbError::NoModuleIdentity(v) => {
                    format!("TCB info has no identity TDX_{v:02X} for the TDX module ({which})")
                }
                TcbError::ModuleMismatch(what) => {
                    format!("the TDX module's {what} differ from its identity")
                }
                TcbError::NoModuleLevel(svn) => {
                    format!("TDX module SVN {svn} ({which}) is below every level of its identity")
                }
            },
        )
    })?;
    let mut status = platform.status;
    let mut advisory_ids = platform.advisory_ids.clone();
    let module = module.and_then(|m| m.level);
    if let Some(level) = &module {
        status = tcb::converge(status, level.status);
        advisory_ids.extend(level.advisory_ids.iter().cloned());
    }
    Ok(TdxTcb {
        platform,
        module,
        status,
        advisory_ids,
    })
}

fn step9_policy(
    parsed: &Parsed<'_>,
    judged: TcbJudged,
    revocation: RevocationChecked,
    policy: &Policy,
) -> Result<Accepted, Rejection> {
    let td = &parsed.quote.td_report;
    if td.debug() && !policy.allow_debug {
        return Err(reject(
            Reason::PolicyDebug,
            "the TD runs in debug mode (TD_ATTRIBUTES.DEBUG) and the policy does not allow_debug",
        ));
    }
    let p = &policy.tdx;
    let lists = [
        ("MRTD", &p.mrtd, td.mrtd),
        ("RTMR0", &p.rtmr0, td.rtmr[0]),
        ("RTMR1", &p.rtmr1, td.rtmr[1]),
        ("RTMR2", &p.rtmr2, td.rtmr[2]),
        ("RTMR3", &p.rtmr3, td.rtmr[3]),
    ];
    for (what, allowed, value) in lists {
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a.0 == *value)
        {
            return Err(reject(
                Reason::PolicyMeasurement,
                format!("{what} {} is not in the policy", hex::encode(value)),
            ));
        }
    }
    if let Some(want) = &p.mrconfigid
        && want.0 != *td.mrconfigid
    {
        return Err(reject(
            Reason::PolicyMeasurement,
            format!(
                "MRCONFIGID {} differs from the policy's",
                hex::encode(td.mrconfigid)
            ),
        ));
    }
    if let Some(want) = &p.report_data
        && want.0 != *td.report_data
    {
        return Err(reject(
            Reason::PolicyReportData,
            "REPORT_DATA differs from the policy's",
        ));
    }
    Ok(Accepted {
        tcb_status: judged.status,
        advisory_ids: judged.advisory_ids,
        fmspc: parsed.pck.ext.fmspc,
        revocation_checked: revocation.checked,
        _policy: PolicyChecked(()),
    })
}
