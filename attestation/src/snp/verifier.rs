//! The SNP check list (DESIGN.md "Evidence and verification"). [`SnpVerifier::verify`] runs these steps in
//! order; the first failure decides the reason:
//!
//! 1. **Structure**: unwrap an Azure HCL report; exactly 1184 bytes (`MALFORMED`); VERSION 2, 3 or 5
//!    (`UNSUPPORTED_VERSION`); SIGNATURE_ALGO 1 = ECDSA P-384/SHA-384, SIGNING_KEY VCEK or VLEK, chip key not
//!    masked (`UNSUPPORTED_SIG_ALGO`).
//! 2. **Report signature**: the VCEK/VLEK among the given certificates (`COLLATERAL_MISSING` when there is
//!    none) signs bytes `[0, 0x2A0)`; R and S are 72 little-endian bytes each and a non-zero byte above the
//!    48th makes the signature invalid (`SIGNATURE_INVALID`).
//! 3. **Chain and validity**: VCEK → ASK → ARK or VLEK → ASVK → ARK as the report's SIGNING_KEY says, each
//!    link RSASSA-PSS SHA-384 (`CHAIN_INVALID`), ending at a trusted ARK (`UNTRUSTED_ROOT`); the leaf's
//!    productName1 and the report's CPUID (v3+) name the chain's product (`CHAIN_INVALID`); every certificate
//!    valid at the verification time (`CERT_EXPIRED`, `CERT_NOT_YET_VALID`); a simulated root only when the
//!    verifier allows simulated evidence (`SIMULATED_NOT_ALLOWED`).
//! 4. **Bindings**: the VCEK's hwID equals CHIP_ID (Turin: 8 bytes, rest zero) (`CHIP_ID_MISMATCH`); the
//!    certificate's SPL extensions equal REPORTED_TCB (`TCB_MISMATCH`); an Azure HCL report's runtime data
//!    hashes to the start of REPORT_DATA (`MALFORMED`).
//! 5. **Revocation**: every given CRL issued by a CA of the chain is signed by it (`COLLATERAL_SIG_INVALID`),
//!    current (`COLLATERAL_EXPIRED`) and does not list the certificate below (`CERT_REVOKED`); with
//!    `require_revocation`, at least one such CRL (`COLLATERAL_MISSING`).
//! 6. **Policy**: DEBUG (`POLICY_DEBUG`), VMPL (`POLICY_VMPL`), MEASUREMENT (`POLICY_MEASUREMENT`),
//!    HOST_DATA (`POLICY_HOST_DATA`), REPORT_DATA (`POLICY_REPORT_DATA`), REPORTED_TCB ≥ `min_tcb`
//!    (`POLICY_TCB`).
//!
//! Each step returns a zero-size proof token that only it can construct and that the next step requires, so
//! no path reaches the accepted result ([`Accepted`], built only by step 6) without every check.

use super::chain::{self, ChainCache, SetupError, TrustStore, VerifiedChain};
use super::claims::{self, Context};
use super::hcl::{HCL_MAGIC, HclReport};
use super::report::{AttestationReport, SigningKey};
use crate::policy::Policy;
use crate::reason::{Reason, Rejection};
use crate::verdict::{Tee, Verdict};
use std::sync::Arc;

/// Default number of VCEK/VLEK chains an [`SnpVerifier`] remembers.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// A reusable SNP verifier: trust roots plus a bounded cache of verified VCEK/VLEK chains. `Send + Sync`;
/// a server holds one and calls [`SnpVerifier::verify`] per request.
#[derive(Debug)]
pub struct SnpVerifier {
    store: TrustStore,
    cache: ChainCache,
    allow_simulated: bool,
}

/// Everything a single SNP verification uses besides the evidence and the verifier's roots.
#[derive(Clone, Copy, Debug)]
pub struct SnpInputs<'a> {
    /// DER certificates: the VCEK/VLEK, and optionally ASK/ASVK/ARK.
    pub certs: &'a [Vec<u8>],
    /// DER CRLs.
    pub crls: &'a [Vec<u8>],
    /// The appraisal policy.
    pub policy: &'a Policy,
    /// Verification time, Unix seconds.
    pub at: i64,
}

impl SnpVerifier {
    /// A verifier trusting AMD's built-in ARKs (Milan, Genoa, Turin).
    pub fn new() -> Result<Self, SetupError> {
        Ok(SnpVerifier {
            store: TrustStore::builtin()?,
            cache: ChainCache::new(DEFAULT_CACHE_CAPACITY),
            allow_simulated: false,
        })
    }

    /// A verifier trusting only `roots` (DER) instead of the built-in ARKs; the built-in ASK/ASVKs stay
    /// available as intermediates.
    pub fn with_trust_roots(roots: &[Vec<u8>]) -> Result<Self, SetupError> {
        Ok(SnpVerifier {
            store: TrustStore::with_roots(roots)?,
            cache: ChainCache::new(DEFAULT_CACHE_CAPACITY),
            allow_simulated: false,
        })
    }

    /// Change how many chains are remembered (0: none).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = ChainCache::new(capacity);
        self
    }

    /// Accept reports whose chain ends at a simulated ("cvm simulator") root. Off by default: a verifier
    /// that meets simulated evidence refuses it with `SIMULATED_NOT_ALLOWED` right after the chain step. A
    /// server turns it on only in `mode = "simulated"`; `cvm-attest verify` only for roots given with
    /// `--trust-root`.
    pub fn allow_simulated(mut self, allow: bool) -> Self {
        self.allow_simulated = allow;
        self
    }

    /// Number of chains remembered now.
    pub fn cached_chains(&self) -> usize {
        self.cache.len()
    }

    /// Verify one SNP report (or Azure HCL report) and appraise it against the policy. The verdict's claims
    /// are filled whenever the report parsed, also on rejection.
    pub fn verify(&self, evidence: &[u8], inputs: &SnpInputs<'_>) -> Verdict {
        let mut ctx = Context::default();
        let mut simulated = false;
        let mut parsed_report: Option<(AttestationReport<'_>, Option<HclReport<'_>>)> = None;
        let outcome = self.run(
            evidence,
            inputs,
            &mut ctx,
            &mut simulated,
            &mut parsed_report,
        );
        let claims = match &parsed_report {
            Some((report, hcl)) => claims::claims(report, hcl.as_ref(), &ctx),
            None => serde_json::json!({}),
        };
        Verdict {
            tee: Tee::Snp,
            outcome: outcome.map(|_accepted| ()),
            simulated,
            claims,
        }
    }

    fn run<'e>(
        &self,
        evidence: &'e [u8],
        inputs: &SnpInputs<'_>,
        ctx: &mut Context,
        simulated: &mut bool,
        parsed: &mut Option<(AttestationReport<'e>, Option<HclReport<'e>>)>,
    ) -> Result<Accepted, Rejection> {
        // Step 1: structure and version.
        let structure = step1::check_structure(evidence, parsed)?;
        ctx.product = structure.report.cpuid_product();
        // Step 2: report signature.
        let signature = step2::check_signature(&structure, inputs.certs, &self.cache)?;
        // Step 3: certificate chain and validity.
        let chain = step3::check_chain(&structure, &signature, inputs, &self.store, &self.cache)?;
        ctx.product = Some(chain.chain.product);
        ctx.product_name
            .clone_from(&chain.chain.extensions.product_name);
        ctx.csp_id.clone_from(&chain.chain.extensions.csp_id);
        *simulated = chain.chain.simulated;
        if chain.chain.simulated && !self.allow_simulated {
            return Err(Rejection::new(
                Reason::SimulatedNotAllowed,
                "the report chains to a simulated (\"cvm simulator\") root, and this verifier does not \
                 accept simulated evidence",
            ));
        }
        // Step 4: bindings.
        let bindings = step4::check_bindings(&structure, &chain)?;
        // Step 5: revocation.
        let revocation = step5::check_revocation(&chain, &bindings, inputs)?;
        ctx.revocation_checked = revocation.checked;
        // Step 6: policy.
        step6::check_policy(&structure, &chain, &bindings, &revocation, inputs.policy)
    }
}

pub use step6::Accepted;

mod step1 {
    //! Step 1: structure and version.
    use super::*;

    /// Proof that the evidence is a well-formed, supported, signed report.
    pub struct Structure<'e> {
        pub report: AttestationReport<'e>,
        pub hcl: Option<HclReport<'e>>,
        _proof: (),
    }

    pub fn check_structure<'e>(
        evidence: &'e [u8],
        parsed: &mut Option<(AttestationReport<'e>, Option<HclReport<'e>>)>,
    ) -> Result<Structure<'e>, Rejection> {
        let (bytes, hcl) = if evidence.starts_with(HCL_MAGIC) {
            let hcl = HclReport::parse(evidence)
                .map_err(|e| Rejection::new(Reason::Malformed, e.to_string()))?;
            (hcl.snp_report, Some(hcl))
        } else {
            (evidence, None)
        };
        let report = AttestationReport::parse(bytes)?;
        *parsed = Some((report, hcl));
        if report.signature_algo != super::super::report::SignatureAlgorithm::ECDSA_P384_SHA384 {
            return Err(Rejection::new(
                Reason::UnsupportedSigAlgo,
                format!(
                    "SIGNATURE_ALGO is {}, only 1 (ECDSA P-384 with SHA-384) is supported",
                    report.signature_algo.0
                ),
            ));
        }
        let key = report.signing_key();
        if key != SigningKey::VCEK && key != SigningKey::VLEK {
            return Err(Rejection::new(
                Reason::UnsupportedSigAlgo,
                format!(
                    "SIGNING_KEY is {} ({}): only reports signed by a VCEK (0) or VLEK (1) can be verified",
                    key.0,
                    key.name().unwrap_or("reserved")
                ),
            ));
        }
        if report.flags.mask_chip_key() {
            return Err(Rejection::new(
                Reason::UnsupportedSigAlgo,
                "MASK_CHIP_KEY is set: the firmware did not sign this report",
            ));
        }
        Ok(Structure {
            report,
            hcl,
            _proof: (),
        })
    }
}

mod step2 {
    //! Step 2: the report signature, by the VCEK/VLEK given with the evidence.
    use super::*;
    use crate::snp::chain::{MAX_INPUT_CERTS, cert_digest, p384_key};
    use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};

    /// Which certificate signed the report.
    pub enum Signer {
        /// A leaf whose chain was verified before (cache hit).
        Cached(Arc<VerifiedChain>),
        /// A leaf seen for the first time: its index in the given certificates and its digest.
        Fresh { index: usize, digest: [u8; 32] },
    }

    /// Proof that the report's signature verifies under `signer`'s key.
    pub struct SignatureValid {
        pub signer: Signer,
        _proof: (),
    }

    pub fn check_signature(
        s: &step1::Structure<'_>,
        certs: &[Vec<u8>],
        cache: &ChainCache,
    ) -> Result<SignatureValid, Rejection> {
        let report = &s.report;
        let kind = if report.signing_key() == SigningKey::VLEK {
            "VLEK"
        } else {
            "VCEK"
        };
        let mut candidates: Vec<(Signer, Box<[u8]>)> = Vec::new();
        for (index, der) in certs.iter().enumerate().take(MAX_INPUT_CERTS) {
            let digest = cert_digest(der);
            if let Some(chain) = cache.get(&digest) {
                let key = chain.leaf_key.clone();
                candidates.push((Signer::Cached(chain), key));
            } else if let Ok(cert) = crate::pki::parse_cert(der)
                && let Some(key) = p384_key(&cert)
            {
                candidates.push((Signer::Fresh { index, digest }, key));
            }
        }
        if candidates.is_empty() {
            return Err(Rejection::new(
                Reason::CollateralMissing,
                format!(
                    "no {kind} certificate was given: pass the {kind} that signed this report with --cert {}.der \
                     (from AMD KDS{})",
                    kind.to_lowercase(),
                    if kind == "VCEK" {
                        " or the host's extended report"
                    } else {
                        " via the cloud provider"
                    }
                ),
            ));
        }
        let Some(sig) = report.signature.to_fixed_be() else {
            return Err(Rejection::new(
                Reason::SignatureInvalid,
                "signature R or S has a non-zero byte above the 48th: not a P-384 signature",
            ));
        };
        let message = report.signed_bytes();
        for (signer, key) in candidates {
            if UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &key)
                .verify(message, &sig)
                .is_ok()
            {
                return Ok(SignatureValid { signer, _proof: () });
            }
        }
        Err(Rejection::new(
            Reason::SignatureInvalid,
            format!("the report signature does not verify under the given {kind}'s key"),
        ))
    }
}

mod step3 {
    //! Step 3: the certificate chain, products, and validity at the verification time.
    use super::*;
    use crate::pki::rfc3339;

    /// Proof that the signer chains to a trusted root, for the report's product, valid now.
    pub struct ChainValid {
        pub chain: Arc<VerifiedChain>,
        _proof: (),
    }

    pub fn check_chain(
        s: &step1::Structure<'_>,
        sig: &step2::SignatureValid,
        inputs: &SnpInputs<'_>,
        store: &TrustStore,
        cache: &ChainCache,
    ) -> Result<ChainValid, Rejection> {
        let chain = match &sig.signer {
            step2::Signer::Cached(chain) => chain.clone(),
            step2::Signer::Fresh { index, digest } => {
                let leaf = inputs.certs.get(*index).ok_or_else(|| {
                    Rejection::new(
                        Reason::ChainInvalid,
                        "internal: signer certificate vanished",
                    )
                })?;
                let extra: Vec<&[u8]> = inputs
                    .certs
                    .iter()
                    .take(chain::MAX_INPUT_CERTS)
                    .map(Vec::as_slice)
                    .collect();
                let chain = Arc::new(chain::build_chain(store, leaf, &extra)?);
                cache.insert(*digest, chain.clone());
                chain
            }
        };
        let wanted = s.report.signing_key();
        if chain.signer != wanted {
            return Err(Rejection::new(
                Reason::ChainInvalid,
                format!(
                    "the report says it is signed by a {}, but the signing certificate is a {}",
                    wanted.name().unwrap_or("?").to_uppercase(),
                    chain.signer.name().unwrap_or("?").to_uppercase()
                ),
            ));
        }
        if let Some(cpuid) = s.report.cpuid {
            let product = s.report.cpuid_product();
            if product != Some(chain.product) {
                return Err(Rejection::new(
                    Reason::ChainInvalid,
                    format!(
                        "the report's CPUID (family {:#x}, model {:#x}) is {}, the certificate chain is for {}",
                        cpuid.family,
                        cpuid.model,
                        product
                            .map(|p| p.name())
                            .unwrap_or("no known SEV-SNP product"),
                        chain.product
                    ),
                ));
            }
        }
        for link in &chain.links {
            if inputs.at < link.not_before {
                return Err(Rejection::new(
                    Reason::CertNotYetValid,
                    format!(
                        "the {} certificate ({}) is not valid before {} (verification time {})",
                        link.role,
                        link.subject_cn,
                        rfc3339(link.not_before),
                        rfc3339(inputs.at)
                    ),
                ));
            }
            if inputs.at > link.not_after {
                return Err(Rejection::new(
                    Reason::CertExpired,
                    format!(
                        "the {} certificate ({}) expired at {} (verification time {})",
                        link.role,
                        link.subject_cn,
                        rfc3339(link.not_after),
                        rfc3339(inputs.at)
                    ),
                ));
            }
        }
        Ok(ChainValid { chain, _proof: () })
    }
}

mod step4 {
    //! Step 4: bindings between the certificate and the report.
    use super::*;

    /// Proof that the signer is bound to this chip and this TCB.
    pub struct BindingsValid {
        _proof: (),
    }

    pub fn check_bindings(
        s: &step1::Structure<'_>,
        c: &step3::ChainValid,
    ) -> Result<BindingsValid, Rejection> {
        let report = &s.report;
        let ext = &c.chain.extensions;
        let layout = c.chain.product.tcb_layout();
        if c.chain.signer == SigningKey::VCEK {
            let Some(hw_id) = ext.hw_id.as_deref() else {
                return Err(Rejection::new(
                    Reason::ChipIdMismatch,
                    "the VCEK has no hwID extension (1.3.6.1.4.1.3704.1.4)",
                ));
            };
            let chip_id: &[u8] = report.chip_id;
            let matches = match layout {
                super::super::report::TcbLayout::MilanGenoa => hw_id == chip_id,
                // Turin: the hwID is 8 bytes, CHIP_ID[0..8], and the rest of CHIP_ID is zero.
                super::super::report::TcbLayout::Turin => {
                    hw_id.len() == 8
                        && chip_id.get(..8) == Some(hw_id)
                        && chip_id.iter().skip(8).all(|&b| b == 0)
                }
            };
            if !matches {
                return Err(Rejection::new(
                    Reason::ChipIdMismatch,
                    format!(
                        "the VCEK is for chip {}, the report is from chip {}",
                        hex::encode(hw_id),
                        hex::encode(chip_id)
                    ),
                ));
            }
        }
        if let Some((name, cert, reported)) = ext.tcb_difference(report.reported_tcb, layout) {
            return Err(Rejection::new(
                Reason::TcbMismatch,
                match cert {
                    Some(cert) => format!(
                        "the certificate's {name} is {cert}, REPORTED_TCB has {reported} (REPORTED_TCB {:#018x})",
                        report.reported_tcb.0
                    ),
                    None => format!("the certificate has no {name} extension"),
                },
            ));
        }
        if let Some(hcl) = &s.hcl {
            let bound = hcl
                .var_data_digest()
                .is_some_and(|d| report.report_data.starts_with(&d));
            if !bound {
                return Err(Rejection::new(
                    Reason::Malformed,
                    format!(
                        "Azure HCL report: the runtime data (hash type {}) does not hash to the start of REPORT_DATA",
                        hcl.hash_type
                    ),
                ));
            }
        }
        Ok(BindingsValid { _proof: () })
    }
}

mod step5 {
    //! Step 5: revocation (CRLs are optional inputs).
    use super::*;
    use crate::pki::{self, rfc3339};

    /// Proof that no given CRL revokes the chain; `checked` says whether any applied.
    pub struct RevocationChecked {
        pub checked: bool,
        _proof: (),
    }

    pub fn check_revocation(
        c: &step3::ChainValid,
        _bindings: &step4::BindingsValid,
        inputs: &SnpInputs<'_>,
    ) -> Result<RevocationChecked, Rejection> {
        let mut checked = false;
        if !inputs.crls.is_empty() {
            let certs = c
                .chain
                .links
                .iter()
                .map(|l| pki::parse_cert(&l.der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Rejection::new(Reason::ChainInvalid, e.to_string()))?;
            for (i, der) in inputs.crls.iter().enumerate() {
                let crl = pki::parse_crl(der).map_err(|e| {
                    Rejection::new(Reason::Malformed, format!("CRL {}: {e}", i + 1))
                })?;
                // The CA (intermediate or root) that issued this CRL, and the certificate it vouches for.
                let issuer_pos = certs
                    .iter()
                    .skip(1)
                    .position(|ca| ca.subject().as_raw() == crl.issuer().as_raw());
                let Some(pos) = issuer_pos else {
                    continue;
                };
                let (Some(ca), Some(subject), Some(link)) =
                    (certs.get(pos + 1), certs.get(pos), c.chain.links.get(pos))
                else {
                    continue;
                };
                pki::verify_crl_signature(&crl, ca.public_key()).map_err(|e| {
                    Rejection::new(
                        Reason::CollateralSigInvalid,
                        format!(
                            "CRL {} claims to be from {} but its signature does not verify: {e}",
                            i + 1,
                            crl.issuer()
                        ),
                    )
                })?;
                let this_update = crl.last_update().timestamp();
                if inputs.at < this_update {
                    return Err(Rejection::new(
                        Reason::CollateralExpired,
                        format!("CRL {} is not issued until {}", i + 1, rfc3339(this_update)),
                    ));
                }
                match crl.next_update() {
                    Some(next) if inputs.at <= next.timestamp() => {}
                    Some(next) => {
                        return Err(Rejection::new(
                            Reason::CollateralExpired,
                            format!(
                                "CRL {} from {} is stale: nextUpdate {} is before the verification time {}",
                                i + 1,
                                crl.issuer(),
                                rfc3339(next.timestamp()),
                                rfc3339(inputs.at)
                            ),
                        ));
                    }
                    None => {
                        return Err(Rejection::new(
                            Reason::CollateralExpired,
                            format!("CRL {} has no nextUpdate, so it cannot be current", i + 1),
                        ));
                    }
                }
                if pki::crl_lists(&crl, subject.raw_serial()) {
                    return Err(Rejection::new(
                        Reason::CertRevoked,
                        format!(
                            "the {} certificate ({}) is revoked by CRL {}",
                            link.role,
                            link.subject_cn,
                            i + 1
                        ),
                    ));
                }
                checked = true;
            }
        }
        if inputs.policy.require_revocation && !checked {
            return Err(Rejection::new(
                Reason::CollateralMissing,
                "the policy requires revocation checking, but no current CRL from the chain's ARK or ASK/ASVK was given (--crl)",
            ));
        }
        Ok(RevocationChecked {
            checked,
            _proof: (),
        })
    }
}

mod step6 {
    //! Step 6: the appraisal policy.
    use super::*;

    /// The accepted result: constructed only here, by step 6, which needs every other step's token.
    #[derive(Debug)]
    pub struct Accepted {
        _proof: (),
    }

    pub fn check_policy(
        s: &step1::Structure<'_>,
        c: &step3::ChainValid,
        _bindings: &step4::BindingsValid,
        _revocation: &step5::RevocationChecked,
        policy: &Policy,
    ) -> Result<Accepted, Rejection> {
        let report = &s.report;
        let snp = &policy.snp;
        if report.policy.debug() && !policy.allow_debug {
            return Err(Rejection::new(
                Reason::PolicyDebug,
                "the guest policy allows debugging (DEBUG bit 19): the host can read its memory; \
                 the appraisal policy has allow_debug = false",
            ));
        }
        if let Some(vmpls) = &snp.vmpl
            && !vmpls.contains(&report.vmpl)
        {
            return Err(Rejection::new(
                Reason::PolicyVmpl,
                format!("VMPL {} is not in the policy's {vmpls:?}", report.vmpl),
            ));
        }
        if let Some(allowed) = &snp.measurements
            && !allowed.iter().any(|m| &m.0 == report.measurement)
        {
            return Err(Rejection::new(
                Reason::PolicyMeasurement,
                format!(
                    "MEASUREMENT {} is not one of the policy's {} measurements",
                    hex::encode(report.measurement),
                    allowed.len()
                ),
            ));
        }
        if let Some(host_data) = &snp.host_data
            && &host_data.0 != report.host_data
        {
            return Err(Rejection::new(
                Reason::PolicyHostData,
                format!(
                    "HOST_DATA {} differs from the policy's {}",
                    hex::encode(report.host_data),
                    hex::encode(host_data.0)
                ),
            ));
        }
        if let Some(report_data) = &snp.report_data
            && &report_data.0 != report.report_data
        {
            return Err(Rejection::new(
                Reason::PolicyReportData,
                format!(
                    "REPORT_DATA {} differs from the policy's {}",
                    hex::encode(report.report_data),
                    hex::encode(report_data.0)
                ),
            ));
        }
        if let Some(min) = &snp.min_tcb {
            let tcb = report.reported_tcb.parts(c.chain.product.tcb_layout());
            let checks = [
                ("fmc", tcb.fmc, min.fmc),
                ("bootloader", Some(tcb.bootloader), min.bootloader),
                ("tee", Some(tcb.tee), min.tee),
                ("snp", Some(tcb.snp), min.snp),
                ("microcode", Some(tcb.microcode), min.microcode),
            ];
            for (name, have, want) in checks {
                // `fmc` exists only on Turin; elsewhere the component is absent and not compared.
                if let Some(have) = have
                    && have < want
                {
                    return Err(Rejection::new(
                        Reason::PolicyTcb,
                        format!(
                            "REPORTED_TCB {name} is {have}, the policy's min_tcb wants at least {want}"
                        ),
                    ));
                }
            }
        }
        Ok(Accepted { _proof: () })
    }
}
