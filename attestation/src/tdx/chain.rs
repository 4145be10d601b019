//! The PCK certificate path and the collateral's signing chains, checked against the verifier's trust roots,
//! and the CRLs: each parsed and verified once and cached by content hash ([`Chains`]). What depends on the
//! verification time (validity windows, CRL currency, revocation) the check list (`super::verifier`)
//! checks on every call.

use super::collateral::{Collateral, QeIdentity, TcbInfo};
use super::pck::{PckExtensions, SGX_EXTENSIONS_OID};
use super::{reject, sha256};
use crate::pki::{self, PkiError};
use crate::reason::{Reason, Rejection};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

/// Most certificates accepted in one chain.
const MAX_CHAIN_CERTS: usize = 8;

/// Entries per cache before it is emptied (bounds memory under many distinct platforms).
const MAX_CACHE_ENTRIES: usize = 4096;

/// What later steps need of one certificate, owned.
#[derive(Clone, Debug)]
pub(super) struct CertInfo {
    pub(super) der: Vec<u8>,
    pub(super) subject: Vec<u8>,
    pub(super) serial: Vec<u8>,
    not_before: i64,
    not_after: i64,
    key_id: [u8; 32],
    pub(super) name: String,
}

impl CertInfo {
    pub(super) fn new(der: &[u8], cert: &X509Certificate<'_>) -> Self {
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

    pub(super) fn check_validity(&self, at: i64) -> Result<(), PkiError> {
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
pub(super) struct TrustRoot {
    pub(super) info: CertInfo,
    pub(super) simulated: bool,
}

/// Why a certificate path does not verify.
pub(super) enum PathError {
    Broken(String),
    Untrusted(String),
}

/// The PCK certificate path of a quote, parsed (cached by the hash of its PEM bytes).
pub(super) struct PckEntry {
    /// The leaf's P-256 public key, uncompressed.
    pub(super) leaf_key: Vec<u8>,
    pub(super) ext: PckExtensions,
    /// The certificates as given, leaf first.
    pub(super) certs: Vec<CertInfo>,
    /// Signatures and root, independent of time: the index of the trusted root.
    pub(super) chain: Result<usize, PathError>,
}

/// A parsed CRL (cached with its collateral).
pub(super) struct CrlEntry {
    der: Vec<u8>,
    pub(super) issuer: Vec<u8>,
    pub(super) this_update: i64,
    pub(super) next_update: Option<i64>,
    pub(super) revoked: HashSet<Vec<u8>>,
    /// Keys (hash of the SPKI) this CRL's signature verified under.
    verified_by: RwLock<HashSet<[u8; 32]>>,
}

/// TCB info and QE identity whose chain and signatures verified (time-independent part).
pub(super) struct VerifiedTcb {
    pub(super) tcb_info: TcbInfo,
    pub(super) qe_identity: QeIdentity,
    /// Signing certificates and the root they end at, for validity checks at the verification time.
    pub(super) signing_certs: Vec<CertInfo>,
    pub(super) root: usize,
}

pub(super) struct CollateralEntry {
    pub(super) crls: Vec<CrlEntry>,
    pub(super) tcb: Result<VerifiedTcb, Rejection>,
}

/// The trust roots and the caches of parsed and verified PCK paths and collateral; one per
/// [`super::TdxVerifier`].
pub(super) struct Chains {
    roots: Vec<TrustRoot>,
    pck_cache: RwLock<HashMap<[u8; 32], Arc<PckEntry>>>,
    collateral_cache: RwLock<HashMap<[u8; 32], Arc<CollateralEntry>>>,
}

impl Chains {
    /// Chains that end at `roots`, with empty caches.
    pub(super) fn new(roots: Vec<TrustRoot>) -> Self {
        Chains {
            roots,
            pck_cache: RwLock::new(HashMap::new()),
            collateral_cache: RwLock::new(HashMap::new()),
        }
    }

    /// The trust roots' subject names.
    pub(super) fn root_names(&self) -> Vec<&str> {
        self.roots.iter().map(|r| r.info.name.as_str()).collect()
    }

    /// The cached (or freshly parsed and verified) PCK path for these PEM bytes.
    pub(super) fn pck_entry(&self, pem: &[u8]) -> Result<Arc<PckEntry>, Rejection> {
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

    pub(super) fn root(&self, index: usize) -> Result<&TrustRoot, Rejection> {
        self.roots
            .get(index)
            .ok_or_else(|| reject(Reason::UntrustedRoot, "trust root index out of range"))
    }

    /// The cached (or freshly verified) collateral.
    pub(super) fn collateral_entry(&self, collateral: &Collateral) -> Arc<CollateralEntry> {
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

/// A CRL parsed for the revocation step; `None` when it does not parse (it then covers nothing).
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

/// Whether `crl` verifies under `issuer`'s key (remembered per key).
pub(super) fn verify_crl(crl: &CrlEntry, issuer: &CertInfo) -> Result<(), Rejection> {
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
