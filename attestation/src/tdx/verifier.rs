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
//! content hash; with warm caches a verification costs the two P-256 verifications of steps 2 and 3.

use super::collateral::{Collateral, QeIdentity, TcbInfo};
use super::pck::{PckExtensions, SGX_EXTENSIONS_OID};
use super::quote::Quote;
use super::tcb::{self, TcbError};
use crate::pki::{self, PkiError};
use crate::policy::{Policy, TcbStatus};
use crate::reason::{Reason, Rejection};
use crate::verdict::{Tee, Verdict};
use ring::digest;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

/// The Intel SGX Root CA (DER), built in.
pub const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel-sgx-root-ca.der");

/// The subject organization of the roots the cvm simulator issues (`simulated: true`).
pub const SIMULATOR_ORGANIZATION: &str = "cvm simulator";

/// Most certificates accepted in one chain.
const MAX_CHAIN_CERTS: usize = 8;

/// Entries per cache before it is emptied (bounds memory under many distinct platforms).
const MAX_CACHE_ENTRIES: usize = 4096;

fn reject(reason: Reason, message: impl Into<String>) -> Rejection {
    Rejection::new(reason, message)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What later steps need of one certificate, owned.
#[derive(Clone, Debug)]
struct CertInfo {
    der: Vec<u8>,
    subject: Vec<u8>,
    serial: Vec<u8>,
    not_before: i64,
    not_after: i64,
    key_id: [u8; 32],
    name: String,
}

impl CertInfo {
    fn new(der: &[u8], cert: &X509Certificate<'_>) -> Self {
        let serial = cert.raw_serial();
        let first_nonzero = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
        CertInfo {
            der: der.to_vec(),
            subject: cert.subject().as_raw().to_vec(),
            serial: serial.get(first_nonzero..).unwrap_or_default().to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            key_id: sha256(&[cert.public_key().raw]),
            name: cert.subject().to_string(),
        }
    }

    fn check_validity(&self, at: i64) -> Result<(), PkiError> {
        if at < self.not_before {
            return Err(PkiError::NotYetValid {
                not_before: self.not_before,
            });
        }
        if at > self.not_after {
            return Err(PkiError::Expired {
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// A trusted root.
#[derive(Clone, Debug)]
struct TrustRoot {
    info: CertInfo,
    simulated: bool,
}

/// Why a certificate path does not verify.
enum PathError {
    Broken(String),
    Untrusted(String),
}

/// The PCK certificate path of a quote, parsed (cached by the hash of its PEM bytes).
struct PckEntry {
    /// The leaf's P-256 public key, uncompressed.
    leaf_key: Vec<u8>,
    ext: PckExtensions,
    /// The certificates as given, leaf first.
    certs: Vec<CertInfo>,
    /// Signatures and root, independent of time: the index of the trusted root.
    chain: Result<usize, PathError>,
}

/// A parsed CRL (cached with its collateral).
struct CrlEntry {
    der: Vec<u8>,
    issuer: Vec<u8>,
    this_update: i64,
    next_update: Option<i64>,
    revoked: HashSet<Vec<u8>>,
    /// Keys (hash of the SPKI) this CRL's signature verified under.
    verified_by: RwLock<HashSet<[u8; 32]>>,
}

/// TCB info and QE identity whose chain and signatures verified (time-independent part).
struct VerifiedTcb {
    tcb_info: TcbInfo,
    qe_identity: QeIdentity,
    /// Signing certificates and the root they end at, for validity checks at the verification time.
    signing_certs: Vec<CertInfo>,
    root: usize,
}

struct CollateralEntry {
    crls: Vec<CrlEntry>,
    tcb: Result<VerifiedTcb, Rejection>,
}

/// A TDX quote verifier holding trust roots and caches; share one per process (`Send + Sync`).
pub struct TdxVerifier {
    roots: Vec<TrustRoot>,
    pck_cache: RwLock<HashMap<[u8; 32], Arc<PckEntry>>>,
    collateral_cache: RwLock<HashMap<[u8; 32], Arc<CollateralEntry>>>,
    allow_simulated: bool,
}

impl std::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVerifier")
            .field(
                "roots",
                &self.roots.iter().map(|r| &r.info.name).collect::<Vec<_>>(),
            )
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

/// Claims as they fill in.
struct Claims {
    map: Map<String, Value>,
    simulated: bool,
}

impl Claims {
    fn new() -> Self {
        Claims {
            map: Map::new(),
            simulated: false,
        }
    }
    fn set(&mut self, key: &str, value: Value) {
        self.map.insert(key.to_owned(), value);
    }
    fn quote(&mut self, q: &Quote<'_>) {
        let td = &q.td_report;
        fn h(bytes: &[u8]) -> String {
            hex::encode(bytes)
        }
        self.set("version", json!(q.header.version));
        if let Some(t) = q.body_type {
            self.set("body_type", json!(t));
        }
        self.set("tee_tcb_svn", json!(h(td.tee_tcb_svn)));
        self.set("mrseam", json!(h(td.mrseam)));
        self.set("mrsignerseam", json!(h(td.mrsignerseam)));
        self.set("seam_attributes", json!(h(td.seam_attributes)));
        self.set("td_attributes", json!(h(td.td_attributes)));
        self.set("debug", json!(td.debug()));
        self.set("xfam", json!(h(td.xfam)));
        self.set("mrtd", json!(h(td.mrtd)));
        self.set("mrconfigid", json!(h(td.mrconfigid)));
        self.set("mrowner", json!(h(td.mrowner)));
        self.set("mrownerconfig", json!(h(td.mrownerconfig)));
        for (i, r) in td.rtmr.iter().enumerate() {
            self.set(&format!("rtmr{i}"), json!(h(&r[..])));
        }
        self.set("report_data", json!(h(td.report_data)));
        if let Some(s) = td.tee_tcb_svn2 {
            self.set("tee_tcb_svn2", json!(h(s)));
        }
        if let Some(m) = td.mrservicetd {
            self.set("mrservicetd", json!(h(m)));
        }
        self.set("fmspc", Value::Null);
        self.set("tcb_status", Value::Null);
        self.set("advisory_ids", json!([]));
        self.set("revocation_checked", json!(false));
    }
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
            roots,
            pck_cache: RwLock::new(HashMap::new()),
            collateral_cache: RwLock::new(HashMap::new()),
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
            roots: out,
            pck_cache: RwLock::new(HashMap::new()),
            collateral_cache: RwLock::new(HashMap::new()),
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
        self.pck_entry(q.signature_data.pck_chain_pem)
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
        let entry = collateral.map(|c| self.collateral_entry(c));
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
        let pck = self.pck_entry(quote.signature_data.pck_chain_pem)?;
        claims.set("fmspc", json!(hex::encode(pck.ext.fmspc)));
        Ok(Parsed { quote, pck })
    }

    /// The cached (or freshly parsed and verified) PCK path for these PEM bytes.
    fn pck_entry(&self, pem: &[u8]) -> Result<Arc<PckEntry>, Rejection> {
        let key = sha256(&[b"pck", pem]);
        if let Some(hit) = self
            .pck_cache
            .read()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(hit);
        }
        let entry = Arc::new(self.parse_pck(pem)?);
        if let Ok(mut cache) = self.pck_cache.write() {
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&entry));
        }
        Ok(entry)
    }

    fn parse_pck(&self, pem: &[u8]) -> Result<PckEntry, Rejection> {
        check_pem_layout(pem)?;
        let mut ders = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
            let block =
                block.map_err(|e| reject(Reason::Malformed, format!("PCK chain PEM: {e}")))?;
            if block.label != "CERTIFICATE" {
                return Err(reject(
                    Reason::Malformed,
                    format!("PCK chain holds a PEM {:?}", block.label),
                ));
            }
            if ders.len() == MAX_CHAIN_CERTS {
                return Err(reject(
                    Reason::Malformed,
                    "PCK chain holds too many certificates",
                ));
            }
            ders.push(block.contents);
        }
        if ders.is_empty() {
            return Err(reject(Reason::Malformed, "PCK chain holds no certificate"));
        }
        let mut certs = Vec::with_capacity(ders.len());
        for (i, der) in ders.iter().enumerate() {
            certs.push(pki::parse_cert(der).map_err(|e| {
                reject(Reason::Malformed, format!("PCK chain certificate {i}: {e}"))
            })?);
        }
        let leaf = certs
            .first()
            .ok_or_else(|| reject(Reason::Malformed, "PCK chain is empty"))?;
        let spki = leaf.public_key();
        let is_p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
            && spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .is_some_and(|c| c == OID_EC_P256);
        if !is_p256 || spki.subject_public_key.data.len() != 65 {
            return Err(reject(
                Reason::UnsupportedSigAlgo,
                "the PCK key is not an ECDSA P-256 key",
            ));
        }
        let ext_der = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.as_bytes() == SGX_EXTENSIONS_OID)
            .map(|e| e.value)
            .ok_or_else(|| {
                reject(
                    Reason::Malformed,
                    "the PCK certificate has no SGX extensions",
                )
            })?;
        let ext = PckExtensions::parse(ext_der)?;
        let chain = self.verify_path(&certs);
        Ok(PckEntry {
            leaf_key: spki.subject_public_key.data.to_vec(),
            ext,
            certs: ders
                .iter()
                .zip(&certs)
                .map(|(d, c)| CertInfo::new(d, c))
                .collect(),
            chain,
        })
    }

    /// Signatures along `certs` (leaf first) and its end at a trusted root: the root's index.
    fn verify_path(&self, certs: &[X509Certificate<'_>]) -> Result<usize, PathError> {
        for pair in certs.windows(2) {
            let [child, parent] = pair else {
                continue;
            };
            if child.issuer().as_raw() != parent.subject().as_raw() {
                return Err(PathError::Broken(format!(
                    "{} is not issued by {}",
                    child.subject(),
                    parent.subject()
                )));
            }
            if !pki::is_ca(parent) {
                return Err(PathError::Broken(format!(
                    "{} is not a CA",
                    parent.subject()
                )));
            }
            pki::verify_cert_signature(child, parent.public_key()).map_err(|e| {
                PathError::Broken(format!(
                    "{} signed by {}: {e}",
                    child.subject(),
                    parent.subject()
                ))
            })?;
        }
        let last = certs
            .last()
            .ok_or_else(|| PathError::Broken("empty chain".into()))?;
        let last_der = last.as_raw();
        if let Some(i) = self.roots.iter().position(|r| r.info.der == last_der) {
            return Ok(i);
        }
        let mut bad_signature = None;
        for (i, root) in self.roots.iter().enumerate() {
            if root.info.subject != last.issuer().as_raw() {
                continue;
            }
            let Ok(root_cert) = pki::parse_cert(&root.info.der) else {
                continue;
            };
            match pki::verify_cert_signature(last, root_cert.public_key()) {
                Ok(()) => return Ok(i),
                Err(e) => bad_signature = Some(e),
            }
        }
        // A certificate that names a trusted root as its issuer but does not verify under its key is a
        // broken chain; a self-issued top that is not itself trusted is a root we do not trust.
        match bad_signature {
            Some(e) if last.subject().as_raw() != last.issuer().as_raw() => {
                Err(PathError::Broken(format!(
                    "{} names the trusted root {} as its issuer: {e}",
                    last.subject(),
                    last.issuer()
                )))
            }
            _ => Err(PathError::Untrusted(format!(
                "the chain ends at {}, which is not a trusted root",
                last.subject()
            ))),
        }
    }

    fn root(&self, index: usize) -> Result<&TrustRoot, Rejection> {
        self.roots
            .get(index)
            .ok_or_else(|| reject(Reason::UntrustedRoot, "trust root index out of range"))
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
        let trusted = self.root(root)?;
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

    /// The cached (or freshly verified) collateral.
    fn collateral_entry(&self, collateral: &Collateral) -> Arc<CollateralEntry> {
        let key = *collateral.id();
        if let Some(hit) = self
            .collateral_cache
            .read()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return hit;
        }
        let entry = Arc::new(CollateralEntry {
            crls: collateral
                .crls()
                .iter()
                .filter_map(|der| crl_entry(der))
                .collect(),
            tcb: self.verify_tcb_collateral(collateral),
        });
        if let Ok(mut cache) = self.collateral_cache.write() {
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&entry));
        }
        entry
    }

    /// Presence, signing chain and signatures of the TCB info and QE identity (independent of time).
    fn verify_tcb_collateral(&self, c: &Collateral) -> Result<VerifiedTcb, Rejection> {
        let missing = |what: &str| {
            reject(
                Reason::CollateralMissing,
                format!("no {what} in the collateral"),
            )
        };
        let tcb_info = c
            .tcb_info()
            .ok_or_else(|| missing("TCB info for this FMSPC"))?;
        let qe_identity = c.qe_identity().ok_or_else(|| missing("QE identity"))?;
        if c.tcb_info_chain().is_empty() || c.qe_identity_chain().is_empty() {
            return Err(missing("TCB signing chain"));
        }
        let mut signing_certs = Vec::new();
        let mut root_index = None;
        let mut keys = Vec::new();
        for (what, chain) in [
            ("TCB info", c.tcb_info_chain()),
            ("QE identity", c.qe_identity_chain()),
        ] {
            if chain.len() > MAX_CHAIN_CERTS {
                return Err(reject(
                    Reason::CollateralChainInvalid,
                    format!("{what} signing chain is too long"),
                ));
            }
            let certs = chain
                .iter()
                .map(|der| pki::parse_cert(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    reject(
                        Reason::CollateralChainInvalid,
                        format!("{what} signing chain: {e}"),
                    )
                })?;
            let root = self.verify_path(&certs).map_err(|e| {
                let (PathError::Broken(m) | PathError::Untrusted(m)) = e;
                reject(
                    Reason::CollateralChainInvalid,
                    format!("{what} signing chain: {m}"),
                )
            })?;
            if root_index.is_some_and(|r| r != root) {
                return Err(reject(
                    Reason::CollateralChainInvalid,
                    "TCB info and QE identity are signed under different roots",
                ));
            }
            root_index = Some(root);
            let leaf = certs
                .first()
                .ok_or_else(|| missing("TCB signing certificate"))?;
            keys.push(leaf.public_key().subject_public_key.data.to_vec());
            signing_certs.extend(
                chain
                    .iter()
                    .zip(&certs)
                    .map(|(d, cert)| CertInfo::new(d, cert)),
            );
        }
        let root = root_index.ok_or_else(|| missing("TCB signing chain"))?;
        for ((what, body), key) in [("TCB info", tcb_info), ("QE identity", qe_identity)]
            .into_iter()
            .zip(&keys)
        {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
                .verify(&body.body, &body.signature)
                .map_err(|_| {
                    reject(
                        Reason::CollateralSigInvalid,
                        format!("the {what} signature does not verify under the TCB signing key"),
                    )
                })?;
        }
        let tcb_info = TcbInfo::parse(&tcb_info.body).map_err(|e| reject(Reason::Malformed, e))?;
        let qe_identity =
            QeIdentity::parse(&qe_identity.body).map_err(|e| reject(Reason::Malformed, e))?;
        Ok(VerifiedTcb {
            tcb_info,
            qe_identity,
            signing_certs,
            root,
        })
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
        let trusted = self.root(chain.root)?;
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
        for cert in tcb.signing_certs.iter().chain([&self.root(tcb.root)?.info]) {
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

/// The certification data must be PEM `CERTIFICATE` blocks and whitespace, nothing else (the PEM reader
/// would skip other text, which would leave bytes of the quote that no check covers).
fn check_pem_layout(pem: &[u8]) -> Result<(), Rejection> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bad = |m: &str| reject(Reason::Malformed, format!("PCK certificate chain: {m}"));
    let mut text = std::str::from_utf8(pem).map_err(|_| bad("not text"))?;
    loop {
        text = text.trim_start_matches([' ', '\t', '\r', '\n']);
        if text.is_empty() {
            return Ok(());
        }
        let rest = text
            .strip_prefix(BEGIN)
            .ok_or_else(|| bad("text outside PEM CERTIFICATE blocks"))?;
        let end = rest
            .find(END)
            .ok_or_else(|| bad("unterminated PEM block"))?;
        let body = rest.get(..end).unwrap_or_default();
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n'))
        {
            return Err(bad("PEM block holds other than base64"));
        }
        text = rest.get(end + END.len()..).unwrap_or_default();
    }
}

fn crl_entry(der: &[u8]) -> Option<CrlEntry> {
    let crl = pki::parse_crl(der).ok()?;
    Some(CrlEntry {
        der: der.to_vec(),
        issuer: crl.issuer().as_raw().to_vec(),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| {
                let s = r.raw_serial();
                let first = s.iter().position(|&b| b != 0).unwrap_or(s.len());
                s.get(first..).unwrap_or_default().to_vec()
            })
            .collect(),
        verified_by: RwLock::new(HashSet::new()),
    })
}

fn verify_crl(crl: &CrlEntry, issuer: &CertInfo) -> Result<(), Rejection> {
    if crl
        .verified_by
        .read()
        .map(|s| s.contains(&issuer.key_id))
        .unwrap_or(false)
    {
        return Ok(());
    }
    let bad = || {
        reject(
            Reason::CollateralSigInvalid,
            format!("the CRL of {} does not verify under its key", issuer.name),
        )
    };
    let parsed = pki::parse_crl(&crl.der).map_err(|_| bad())?;
    let cert = pki::parse_cert(&issuer.der).map_err(|_| bad())?;
    pki::verify_crl_signature(&parsed, cert.public_key()).map_err(|_| bad())?;
    if let Ok(mut set) = crl.verified_by.write() {
        set.insert(issuer.key_id);
    }
    Ok(())
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
