//! AMD's certificate chains: VCEK → ASK → ARK and VLEK → ASVK → ARK, each link RSASSA-PSS SHA-384 (salt 48),
//! checked with [`crate::pki`]. The built-in ARK/ASK/ASVK certificates for Milan, Genoa and Turin are AMD's
//! public ones (as served by AMD KDS `cert_chain`, copied from `shared/vectors/snp/`). `--trust-root`
//! replaces the ARKs; the built-in ASK/ASVKs stay available as intermediates.
//!
//! A verified chain is remembered in a bounded [`ChainCache`] keyed by the SHA-256 of the VCEK/VLEK DER, so
//! the next report from the same chip costs one P-384 verification. Only signature and product facts are
//! cached; validity windows and CRLs are checked against the verification time on every call.

use super::extensions::AmdExtensions;
use super::report::{Product, SigningKey};
use crate::pki::{self, PkiError};
use crate::reason::{Reason, Rejection};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384};

/// The KDS `cert_chain` bundles built into the verifier (intermediate first, then ARK).
const BUILTIN_BUNDLES: &[(&str, &[u8])] = &[
    (
        "milan-ark-ask.pem",
        include_bytes!("roots/milan-ark-ask.pem"),
    ),
    (
        "milan-vlek-ark-asvk.pem",
        include_bytes!("roots/milan-vlek-ark-asvk.pem"),
    ),
    (
        "genoa-ark-ask.pem",
        include_bytes!("roots/genoa-ark-ask.pem"),
    ),
    (
        "genoa-vlek-ark-asvk.pem",
        include_bytes!("roots/genoa-vlek-ark-asvk.pem"),
    ),
    (
        "turin-ark-ask.pem",
        include_bytes!("roots/turin-ark-ask.pem"),
    ),
    (
        "turin-vlek-ark-asvk.pem",
        include_bytes!("roots/turin-vlek-ark-asvk.pem"),
    ),
];

/// Subject organization of the simulator's roots: evidence chaining to one is `simulated: true`.
pub const SIMULATOR_ORGANIZATION: &str = "cvm simulator";

/// Most certificates considered from one request (bounds the work an attacker-supplied list can cause).
pub const MAX_INPUT_CERTS: usize = 16;

/// The trust roots or intermediates could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// A root or built-in certificate does not parse.
    #[error("trust root {index}: {error}")]
    BadRoot {
        /// Position in the list.
        index: usize,
        /// The parse error.
        error: PkiError,
    },
    /// A self-issued root whose self-signature does not verify.
    #[error(
        "trust root {index} ({subject}) is self-issued but its self-signature does not verify: {error}"
    )]
    BadSelfSignature {
        /// Position in the list.
        index: usize,
        /// Subject common name.
        subject: String,
        /// Why.
        error: PkiError,
    },
    /// No roots at all.
    #[error("no trust roots")]
    NoRoots,
}

/// The ARKs trusted and the intermediates (ASK/ASVK) available to every chain.
#[derive(Debug)]
pub struct TrustStore {
    roots: Vec<Arc<[u8]>>,
    intermediates: Vec<Arc<[u8]>>,
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn is_self_issued(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

impl TrustStore {
    /// AMD's built-in ARKs as roots and ASK/ASVKs as intermediates.
    pub fn builtin() -> Result<Self, SetupError> {
        Self::build(None)
    }

    /// `roots` (DER) replace the built-in ARKs; the built-in ASK/ASVKs stay available as intermediates.
    pub fn with_roots(roots: &[Vec<u8>]) -> Result<Self, SetupError> {
        Self::build(Some(roots))
    }

    fn build(custom_roots: Option<&[Vec<u8>]>) -> Result<Self, SetupError> {
        let mut builtin_roots: Vec<Arc<[u8]>> = Vec::new();
        let mut intermediates: Vec<Arc<[u8]>> = Vec::new();
        for (index, (_, pem)) in BUILTIN_BUNDLES.iter().enumerate() {
            let ders =
                pki::certs_from_bytes(pem).map_err(|error| SetupError::BadRoot { index, error })?;
            for der in ders {
                let cert =
                    pki::parse_cert(&der).map_err(|error| SetupError::BadRoot { index, error })?;
                let list = if is_self_issued(&cert) {
                    &mut builtin_roots
                } else {
                    &mut intermediates
                };
                if !list.iter().any(|d| **d == *der) {
                    list.push(der.into());
                }
            }
        }
        let roots: Vec<Arc<[u8]>> = match custom_roots {
            None => builtin_roots,
            Some(list) => list.iter().map(|d| Arc::from(d.as_slice())).collect(),
        };
        if roots.is_empty() {
            return Err(SetupError::NoRoots);
        }
        for (index, der) in roots.iter().enumerate() {
            let cert =
                pki::parse_cert(der).map_err(|error| SetupError::BadRoot { index, error })?;
            if is_self_issued(&cert) {
                pki::verify_cert_signature(&cert, cert.public_key()).map_err(|error| {
                    SetupError::BadSelfSignature {
                        index,
                        subject: common_name(&cert),
                        error,
                    }
                })?;
            }
        }
        Ok(TrustStore {
            roots,
            intermediates,
        })
    }

    /// Number of trusted roots.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }
}

/// Validity window and name of one certificate of a verified chain.
#[derive(Clone, Debug)]
pub struct ChainLink {
    /// `VCEK`, `VLEK`, `ASK`, `ASVK` or `ARK`.
    pub role: &'static str,
    /// Subject common name.
    pub subject_cn: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The certificate (for CRL checks).
    pub der: Arc<[u8]>,
}

/// A chain whose signatures verified: what the cache remembers about one VCEK/VLEK.
#[derive(Debug)]
pub struct VerifiedChain {
    /// The leaf's P-384 public key (SEC1 uncompressed point).
    pub leaf_key: Box<[u8]>,
    /// VCEK or VLEK, from the leaf's and the intermediate's names.
    pub signer: SigningKey,
    /// The product the chain is for.
    pub product: Product,
    /// AMD's extensions of the leaf.
    pub extensions: AmdExtensions,
    /// Leaf, intermediate, root.
    pub links: [ChainLink; 3],
    /// The root's subject organization is [`SIMULATOR_ORGANIZATION`].
    pub simulated: bool,
}

/// The leaf's P-384 public key if the certificate has one.
pub fn p384_key(cert: &X509Certificate<'_>) -> Option<Box<[u8]>> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    (curve == OID_NIST_EC_P384).then(|| spki.subject_public_key.data.to_vec().into_boxed_slice())
}

fn link(role: &'static str, cert: &X509Certificate<'_>, der: Arc<[u8]>) -> ChainLink {
    ChainLink {
        role,
        subject_cn: common_name(cert),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        der,
    }
}

fn chain_invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::ChainInvalid, message)
}

/// What an intermediate's or root's common name says: (is a VLEK CA, product).
fn ca_name_product(cn: &str, prefix: &str) -> Option<Product> {
    Product::from_name(cn.strip_prefix(prefix)?)
}

/// Build and check the chain for `leaf_der` (already known to carry a P-384 key): find an intermediate among
/// `extra` and the built-in ones that signed it, and a trusted root that signed the intermediate; then check
/// names and products agree. Validity is not checked here (it depends on the time; see the verifier).
pub fn build_chain(
    store: &TrustStore,
    leaf_der: &[u8],
    extra: &[&[u8]],
) -> Result<VerifiedChain, Rejection> {
    let leaf = pki::parse_cert(leaf_der).map_err(|e| chain_invalid(format!("VCEK/VLEK: {e}")))?;
    let leaf_key =
        p384_key(&leaf).ok_or_else(|| chain_invalid("the VCEK/VLEK key is not ECDSA P-384"))?;
    let leaf_cn = common_name(&leaf);
    let signer = match leaf_cn.as_str() {
        "SEV-VCEK" => SigningKey::VCEK,
        "SEV-VLEK" => SigningKey::VLEK,
        other => {
            return Err(chain_invalid(format!(
                "the signing certificate's subject is CN={other:?}, expected SEV-VCEK or SEV-VLEK"
            )));
        }
    };
    let extensions = AmdExtensions::from_cert(&leaf).map_err(|e| chain_invalid(e.to_string()))?;

    let mut intermediates: Vec<Arc<[u8]>> = extra
        .iter()
        .filter(|d| **d != leaf_der)
        .map(|d| Arc::from(*d))
        .collect();
    intermediates.extend(store.intermediates.iter().cloned());

    let mut signed_leaf_but_untrusted: Option<String> = None;
    // An intermediate whose issuer is a trusted root by name, but whose signature that root's key does not
    // verify: the chain is broken (CHAIN_INVALID), not merely untrusted.
    let mut bad_signature_by_root: Option<(String, String)> = None;
    for inter_der in &intermediates {
        let Ok(inter) = pki::parse_cert(inter_der) else {
            continue;
        };
        if inter.subject().as_raw() != leaf.issuer().as_raw()
            || pki::verify_cert_signature(&leaf, inter.public_key()).is_err()
        {
            continue;
        }
        for root_der in &store.roots {
            let Ok(root) = pki::parse_cert(root_der) else {
                continue;
            };
            if root.subject().as_raw() != inter.issuer().as_raw() {
                continue;
            }
            if pki::verify_cert_signature(&inter, root.public_key()).is_err() {
                bad_signature_by_root = Some((common_name(&inter), common_name(&root)));
                continue;
            }
            return finish_chain(
                Leaf {
                    cert: &leaf,
                    der: leaf_der.into(),
                    key: leaf_key,
                    signer,
                    extensions,
                },
                (&inter, inter_der.clone()),
                (&root, root_der.clone()),
            );
        }
        signed_leaf_but_untrusted = Some(common_name(&inter));
    }
    match (bad_signature_by_root, signed_leaf_but_untrusted) {
        (Some((inter, root)), _) => Err(chain_invalid(format!(
            "the {inter} certificate names the trusted root {root} as its issuer, but its signature does not \
             verify under that root's key"
        ))),
        (None, Some(inter)) => Err(Rejection::new(
            Reason::UntrustedRoot,
            format!(
                "the {leaf_cn} certificate chains to {inter}, which no trusted root (ARK) signed"
            ),
        )),
        (None, None) => Err(chain_invalid(format!(
            "no ASK/ASVK among the built-in and given certificates signed the {leaf_cn} certificate (issuer {})",
            leaf.issuer()
        ))),
    }
}

/// What is known about the leaf when its chain is complete.
struct Leaf<'c, 'd> {
    cert: &'c X509Certificate<'d>,
    der: Arc<[u8]>,
    key: Box<[u8]>,
    signer: SigningKey,
    extensions: AmdExtensions,
}

fn finish_chain(
    Leaf {
        cert: leaf,
        der: leaf_der,
        key: leaf_key,
        signer,
        extensions,
    }: Leaf<'_, '_>,
    (inter, inter_der): (&X509Certificate<'_>, Arc<[u8]>),
    (root, root_der): (&X509Certificate<'_>, Arc<[u8]>),
) -> Result<VerifiedChain, Rejection> {
    let inter_cn = common_name(inter);
    let root_cn = common_name(root);
    let (inter_role, inter_product) = match signer {
        SigningKey::VLEK => ("ASVK", ca_name_product(&inter_cn, "SEV-VLEK-")),
        _ => ("ASK", ca_name_product(&inter_cn, "SEV-")),
    };
    let Some(inter_product) = inter_product else {
        return Err(chain_invalid(format!(
            "the {} is signed by {inter_cn:?}, which is not an AMD {inter_role} (SEV-{}<product>)",
            common_name(leaf),
            if signer == SigningKey::VLEK {
                "VLEK-"
            } else {
                ""
            }
        )));
    };
    let root_product = ca_name_product(&root_cn, "ARK-");
    if root_product != Some(inter_product) {
        return Err(chain_invalid(format!(
            "the {inter_role} is for {inter_product} but the root is {root_cn:?}"
        )));
    }
    // productName1 is e.g. "Milan-B0"; a Milan VCEK under a Genoa chain is refused.
    match extensions.product() {
        Some(p) if p == inter_product => {}
        other => {
            return Err(chain_invalid(format!(
                "the {} certificate is for product {:?} (productName1), the chain is for {inter_product}",
                common_name(leaf),
                other
                    .map(Product::name)
                    .or(extensions.product_name.as_deref())
                    .unwrap_or("none"),
            )));
        }
    }
    let simulated = pki::subject_organization(root).as_deref() == Some(SIMULATOR_ORGANIZATION);
    let leaf_role = if signer == SigningKey::VLEK {
        "VLEK"
    } else {
        "VCEK"
    };
    Ok(VerifiedChain {
        leaf_key,
        signer,
        product: inter_product,
        extensions,
        links: [
            link(leaf_role, leaf, leaf_der),
            link(inter_role, inter, inter_der),
            link("ARK", root, root_der),
        ],
        simulated,
    })
}

/// A bounded map from SHA-256(VCEK/VLEK DER) to its verified chain; the oldest entry goes first when full.
#[derive(Debug)]
pub struct ChainCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<[u8; 32], Arc<VerifiedChain>>,
    order: VecDeque<[u8; 32]>,
}

/// SHA-256 of a certificate, the cache key.
pub fn cert_digest(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

impl ChainCache {
    /// A cache holding at most `capacity` chains (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        ChainCache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The chain remembered for this leaf digest.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<VerifiedChain>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.map.get(key).cloned()
    }

    /// Remember a verified chain.
    pub fn insert(&self, key: [u8; 32], chain: Arc<VerifiedChain>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.map.insert(key, chain).is_none() {
            inner.order.push_back(key);
        }
        while inner.map.len() > self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Number of chains remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
