//! TDX collateral: Intel's TCB info (v3, `id = "TDX"`), the TD QE identity (v2), their signing chain, and the
//! root CA and PCK CRLs. Loaded from a directory in DESIGN.md's layout or from one dcap-qvl style
//! `QuoteCollateralV3` JSON file; held as the exact bytes that were served, so signatures are checked over the
//! JSON body exactly as Intel signed it (the value of `tcbInfo` / `enclaveIdentity`, or the `tcb_info` /
//! `qe_identity` string of a `QuoteCollateralV3`).
//!
//! [`Collateral`] is plain data with a content hash ([`Collateral::id`]) computed once, which
//! [`TdxVerifier`](super::TdxVerifier) uses as its cache key.

use crate::pki;
use crate::policy::TcbStatus;
use ring::digest;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

/// Upper bound for one collateral file (real ones are under 64 KiB).
pub const MAX_COLLATERAL_FILE: u64 = 4 * 1024 * 1024;

/// Collateral that cannot be used as such (a file that is not what its name says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollateralError {
    /// A file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file's contents are not of the expected format.
    #[error("{what}: {message}")]
    Format {
        /// Which piece of collateral.
        what: String,
        /// What is wrong with it.
        message: String,
    },
}

fn format_err(what: impl Into<String>, message: impl Into<String>) -> CollateralError {
    CollateralError::Format {
        what: what.into(),
        message: message.into(),
    }
}

/// A signed JSON body: the exact bytes Intel signed, and the raw ECDSA P-256 `r ‖ s` signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedBody {
    /// The body bytes exactly as served.
    pub body: Vec<u8>,
    /// The 64-byte signature.
    pub signature: [u8; 64],
}

/// All collateral for one platform (one FMSPC), as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collateral {
    id: [u8; 32],
    tcb_info: Option<SignedBody>,
    qe_identity: Option<SignedBody>,
    tcb_info_chain: Vec<Vec<u8>>,
    qe_identity_chain: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
    crl_issuer_chain: Vec<Vec<u8>>,
}

/// The pieces of a [`Collateral`]; absent ones are `None` / empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollateralParts {
    /// The TCB info body and its signature.
    pub tcb_info: Option<SignedBody>,
    /// The QE identity body and its signature.
    pub qe_identity: Option<SignedBody>,
    /// DER certificates signing the TCB info (TCB Signing cert first; the root may follow).
    pub tcb_info_chain: Vec<Vec<u8>>,
    /// DER certificates signing the QE identity (usually the same as `tcb_info_chain`).
    pub qe_identity_chain: Vec<Vec<u8>>,
    /// DER CRLs: the root CA CRL and PCK (platform/processor) CRLs, in any order.
    pub crls: Vec<Vec<u8>>,
    /// DER certificates of the PCK CRL issuer chain (informational: CRL issuers are taken from the PCK chain).
    pub crl_issuer_chain: Vec<Vec<u8>>,
}

impl Collateral {
    /// Collateral from its pieces. Certificates and CRLs must parse; the content hash is computed here.
    pub fn from_parts(parts: CollateralParts) -> Result<Self, CollateralError> {
        for (i, der) in parts
            .tcb_info_chain
            .iter()
            .chain(&parts.qe_identity_chain)
            .chain(&parts.crl_issuer_chain)
            .enumerate()
        {
            pki::parse_cert(der)
                .map_err(|e| format_err(format!("collateral certificate {i}"), e.to_string()))?;
        }
        for (i, der) in parts.crls.iter().enumerate() {
            pki::parse_crl(der).map_err(|e| format_err(format!("CRL {i}"), e.to_string()))?;
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut field = |tag: &[u8], bytes: &[u8]| {
            ctx.update(tag);
            ctx.update(&(bytes.len() as u64).to_le_bytes());
            ctx.update(bytes);
        };
        for (tag, body) in [
            (b"tcbinfo", &parts.tcb_info),
            (b"qe-iden", &parts.qe_identity),
        ] {
            if let Some(b) = body {
                field(tag, &b.body);
                field(b"sig", &b.signature);
            } else {
                field(tag, b"absent");
            }
        }
        for (tag, list) in [
            (&b"tcbchain"[..], &parts.tcb_info_chain),
            (b"qechain", &parts.qe_identity_chain),
            (b"crls", &parts.crls),
            (b"crlchain", &parts.crl_issuer_chain),
        ] {
            field(tag, &(list.len() as u64).to_le_bytes());
            for item in list {
                field(b"item", item);
            }
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        Ok(Collateral {
            id,
            tcb_info: parts.tcb_info,
            qe_identity: parts.qe_identity,
            tcb_info_chain: parts.tcb_info_chain,
            qe_identity_chain: parts.qe_identity_chain,
            crls: parts.crls,
            crl_issuer_chain: parts.crl_issuer_chain,
        })
    }

    /// The same collateral plus more CRLs (e.g. from `--crl`).
    pub fn with_extra_crls(self, crls: &[Vec<u8>]) -> Result<Self, CollateralError> {
        if crls.is_empty() {
            return Ok(self);
        }
        let mut parts = self.into_parts();
        parts.crls.extend(crls.iter().cloned());
        Collateral::from_parts(parts)
    }

    /// Only CRLs (e.g. from `--crl` without `--collateral`).
    pub fn crls_only(crls: &[Vec<u8>]) -> Result<Self, CollateralError> {
        Collateral::from_parts(CollateralParts {
            crls: crls.to_vec(),
            ..CollateralParts::default()
        })
    }

    /// Back to the pieces.
    pub fn into_parts(self) -> CollateralParts {
        CollateralParts {
            tcb_info: self.tcb_info,
            qe_identity: self.qe_identity,
            tcb_info_chain: self.tcb_info_chain,
            qe_identity_chain: self.qe_identity_chain,
            crls: self.crls,
            crl_issuer_chain: self.crl_issuer_chain,
        }
    }

    /// SHA-256 over every piece (the cache key).
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }
    /// The signed TCB info, if present.
    pub fn tcb_info(&self) -> Option<&SignedBody> {
        self.tcb_info.as_ref()
    }
    /// The signed QE identity, if present.
    pub fn qe_identity(&self) -> Option<&SignedBody> {
        self.qe_identity.as_ref()
    }
    /// The TCB info signing chain (DER).
    pub fn tcb_info_chain(&self) -> &[Vec<u8>] {
        &self.tcb_info_chain
    }
    /// The QE identity signing chain (DER).
    pub fn qe_identity_chain(&self) -> &[Vec<u8>] {
        &self.qe_identity_chain
    }
    /// All CRLs (DER).
    pub fn crls(&self) -> &[Vec<u8>] {
        &self.crls
    }

    /// Load a collateral path: a directory in DESIGN.md's layout (the TCB info for `fmspc`, when known) or a
    /// `QuoteCollateralV3` JSON file. Files that are absent leave their piece absent (`COLLATERAL_MISSING`
    /// later); files that exist but cannot be read or parsed are errors.
    pub fn from_path(path: &Path, fmspc: Option<&[u8; 6]>) -> Result<Self, CollateralError> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            Collateral::from_dir(path, fmspc)
        } else {
            Collateral::from_v3_json(&read_file(path)?)
        }
    }

    /// Load a directory: `tcbinfo-<fmspc>.json` (lowercase hex), `qe-identity.json`, `tcb-signing-chain.pem`,
    /// `root-ca-crl.der`, `pck-platform-crl.der`, `pck-processor-crl.der`, `pck-crl-issuer-chain.pem` (PEM or
    /// DER each).
    pub fn from_dir(dir: &Path, fmspc: Option<&[u8; 6]>) -> Result<Self, CollateralError> {
        let mut parts = CollateralParts::default();
        if let Some(fmspc) = fmspc {
            let name = format!("tcbinfo-{}.json", hex::encode(fmspc));
            if let Some(bytes) = read_optional(&dir.join(&name))? {
                parts.tcb_info = Some(parse_pcs_json(&bytes, "tcbInfo", &name)?);
            }
        }
        if let Some(bytes) = read_optional(&dir.join("qe-identity.json"))? {
            parts.qe_identity = Some(parse_pcs_json(
                &bytes,
                "enclaveIdentity",
                "qe-identity.json",
            )?);
        }
        if let Some(bytes) = read_optional(&dir.join("tcb-signing-chain.pem"))? {
            let chain = pki::certs_from_bytes(&bytes)
                .map_err(|e| format_err("tcb-signing-chain.pem", e.to_string()))?;
            parts.tcb_info_chain = chain.clone();
            parts.qe_identity_chain = chain;
        }
        for name in [
            "root-ca-crl.der",
            "pck-platform-crl.der",
            "pck-processor-crl.der",
        ] {
            if let Some(bytes) = read_optional(&dir.join(name))? {
                parts.crls.push(
                    pki::crl_der_from_bytes(&bytes).map_err(|e| format_err(name, e.to_string()))?,
                );
            }
        }
        if let Some(bytes) = read_optional(&dir.join("pck-crl-issuer-chain.pem"))? {
            parts.crl_issuer_chain = pki::certs_from_bytes(&bytes)
                .map_err(|e| format_err("pck-crl-issuer-chain.pem", e.to_string()))?;
        }
        Collateral::from_parts(parts)
    }

    /// Parse a dcap-qvl `QuoteCollateralV3` JSON document: issuer chains as PEM strings, CRLs and signatures
    /// as hex strings, `tcb_info` / `qe_identity` as the exact signed body strings.
    pub fn from_v3_json(bytes: &[u8]) -> Result<Self, CollateralError> {
        #[derive(Deserialize)]
        struct V3 {
            pck_crl_issuer_chain: Option<String>,
            root_ca_crl: Option<String>,
            pck_crl: Option<String>,
            tcb_info_issuer_chain: Option<String>,
            tcb_info: Option<String>,
            tcb_info_signature: Option<String>,
            qe_identity_issuer_chain: Option<String>,
            qe_identity: Option<String>,
            qe_identity_signature: Option<String>,
        }
        let v3: V3 = serde_json::from_slice(bytes)
            .map_err(|e| format_err("QuoteCollateralV3", e.to_string()))?;
        let chain = |pem: &Option<String>, what: &str| -> Result<Vec<Vec<u8>>, CollateralError> {
            match pem.as_deref().map(str::trim) {
                None | Some("") => Ok(Vec::new()),
                Some(pem) => pki::certs_from_bytes(pem.as_bytes())
                    .map_err(|e| format_err(what, e.to_string())),
            }
        };
        let hex_field =
            |value: &Option<String>, what: &str| -> Result<Option<Vec<u8>>, CollateralError> {
                match value.as_deref().map(str::trim) {
                    None | Some("") => Ok(None),
                    Some(h) => hex::decode(h)
                        .map(Some)
                        .map_err(|e| format_err(what, format!("not hex: {e}"))),
                }
            };
        let signed = |body: &Option<String>,
                      sig: &Option<String>,
                      what: &str|
         -> Result<Option<SignedBody>, CollateralError> {
            match (body, hex_field(sig, what)?) {
                (Some(body), Some(sig)) => Ok(Some(SignedBody {
                    body: body.as_bytes().to_vec(),
                    signature: signature64(&sig, what)?,
                })),
                (None, None) => Ok(None),
                _ => Err(format_err(
                    what,
                    "body and signature must be given together",
                )),
            }
        };
        let mut crls = Vec::new();
        for (value, what) in [(&v3.root_ca_crl, "root_ca_crl"), (&v3.pck_crl, "pck_crl")] {
            if let Some(der) = hex_field(value, what)? {
                crls.push(der);
            }
        }
        Collateral::from_parts(CollateralParts {
            tcb_info: signed(&v3.tcb_info, &v3.tcb_info_signature, "tcb_info")?,
            qe_identity: signed(&v3.qe_identity, &v3.qe_identity_signature, "qe_identity")?,
            tcb_info_chain: chain(&v3.tcb_info_issuer_chain, "tcb_info_issuer_chain")?,
            qe_identity_chain: chain(&v3.qe_identity_issuer_chain, "qe_identity_issuer_chain")?,
            crls,
            crl_issuer_chain: chain(&v3.pck_crl_issuer_chain, "pck_crl_issuer_chain")?,
        })
    }
}

fn signature64(sig: &[u8], what: &str) -> Result<[u8; 64], CollateralError> {
    sig.try_into().map_err(|_| {
        format_err(
            what,
            format!("signature of {} bytes (expected 64, r ‖ s)", sig.len()),
        )
    })
}

/// Read a PCS response `{"<key>": {...}, "signature": "<hex>"}`, keeping the exact bytes of the body.
pub fn parse_pcs_json(bytes: &[u8], key: &str, what: &str) -> Result<SignedBody, CollateralError> {
    let text = std::str::from_utf8(bytes).map_err(|_| format_err(what, "not UTF-8"))?;
    let map: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format_err(what, e.to_string()))?;
    let body = map
        .get(key)
        .ok_or_else(|| format_err(what, format!("no \"{key}\" member")))?;
    let sig_hex: String = map
        .get("signature")
        .ok_or_else(|| format_err(what, "no \"signature\" member"))
        .and_then(|raw| {
            serde_json::from_str(raw.get()).map_err(|e| format_err(what, e.to_string()))
        })?;
    let sig = hex::decode(sig_hex.trim())
        .map_err(|e| format_err(what, format!("signature not hex: {e}")))?;
    Ok(SignedBody {
        body: body.get().as_bytes().to_vec(),
        signature: signature64(&sig, what)?,
    })
}

fn io_err(path: &Path, e: std::io::Error) -> CollateralError {
    CollateralError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CollateralError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.len() > MAX_COLLATERAL_FILE {
        return Err(CollateralError::Io {
            path: path.to_owned(),
            message: format!(
                "{} bytes is more than collateral can be ({MAX_COLLATERAL_FILE})",
                meta.len()
            ),
        });
    }
    std::fs::read(path).map_err(|e| io_err(path, e))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CollateralError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
        Ok(_) => read_file(path).map(Some),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The signed bodies, once their signatures verified.

/// A TCB level of the platform (TCB info v3 `tcbLevels`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcbLevel {
    /// sgxtcbcomponents[].svn.
    pub sgx_components: [u8; 16],
    /// PCESVN.
    pub pcesvn: u16,
    /// tdxtcbcomponents[].svn.
    pub tdx_components: [u8; 16],
    /// tcbDate.
    pub tcb_date: String,
    /// tcbStatus.
    pub status: TcbStatus,
    /// advisoryIDs.
    pub advisory_ids: Vec<String>,
}

/// A TCB level of a TDX module identity or the QE identity: an ISV SVN and its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsvSvnLevel {
    /// Minimum ISV SVN.
    pub isvsvn: u16,
    /// tcbDate.
    pub tcb_date: String,
    /// tcbStatus.
    pub status: TcbStatus,
    /// advisoryIDs.
    pub advisory_ids: Vec<String>,
}

/// A TDX module identity (`tdxModuleIdentities[]`, or `tdxModule` without levels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxModuleIdentity {
    /// `TDX_01`, `TDX_03`, ... (empty for `tdxModule`).
    pub id: String,
    /// MRSIGNERSEAM.
    pub mrsigner: [u8; 48],
    /// SEAM attributes.
    pub attributes: [u8; 8],
    /// Mask applied to SEAM attributes before comparing.
    pub attributes_mask: [u8; 8],
    /// Its TCB levels, best first.
    pub levels: Vec<IsvSvnLevel>,
}

/// TCB info v3 for TDX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcbInfo {
    /// `TDX`.
    pub id: String,
    /// 3.
    pub version: u32,
    /// issueDate, Unix seconds.
    pub issue_date: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// PCE ID.
    pub pce_id: [u8; 2],
    /// tcbEvaluationDataNumber.
    pub tcb_evaluation_data_number: u32,
    /// `tdxModule`, when present.
    pub tdx_module: Option<TdxModuleIdentity>,
    /// `tdxModuleIdentities`.
    pub tdx_module_identities: Vec<TdxModuleIdentity>,
    /// Platform TCB levels, best first.
    pub levels: Vec<TcbLevel>,
}

/// QE identity v2 for the TD quoting enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QeIdentity {
    /// `TD_QE`.
    pub id: String,
    /// 2.
    pub version: u32,
    /// issueDate, Unix seconds.
    pub issue_date: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// MISCSELECT.
    pub miscselect: u32,
    /// MISCSELECT mask.
    pub miscselect_mask: u32,
    /// ATTRIBUTES.
    pub attributes: [u8; 16],
    /// ATTRIBUTES mask.
    pub attributes_mask: [u8; 16],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isvprodid: u16,
    /// TCB levels, best first.
    pub levels: Vec<IsvSvnLevel>,
}

/// Upper bound on levels and identities in one body (Intel's have a few dozen).
const MAX_LEVELS: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfoJson {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tcb_evaluation_data_number: u32,
    tdx_module: Option<ModuleJson>,
    #[serde(default)]
    tdx_module_identities: Vec<ModuleJson>,
    tcb_levels: Vec<TcbLevelJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleJson {
    #[serde(default)]
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    #[serde(default)]
    tcb_levels: Vec<IsvLevelJson>,
}

#[derive(Deserialize)]
struct SvnJson {
    svn: u8,
}

#[derive(Deserialize)]
struct TcbJson {
    sgxtcbcomponents: Vec<SvnJson>,
    pcesvn: u16,
    #[serde(default)]
    tdxtcbcomponents: Vec<SvnJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbLevelJson {
    tcb: TcbJson,
    tcb_date: String,
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct IsvTcbJson {
    isvsvn: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IsvLevelJson {
    tcb: IsvTcbJson,
    tcb_date: String,
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentityJson {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<IsvLevelJson>,
}

fn hex_n<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| format!("{what}: expected {} hex digits", N * 2))?;
    Ok(out)
}

fn time(text: &str, what: &str) -> Result<i64, String> {
    pki::parse_rfc3339(text).ok_or_else(|| format!("{what}: not an RFC 3339 time: {text:?}"))
}

fn status(text: &str) -> Result<TcbStatus, String> {
    TcbStatus::parse(text).ok_or_else(|| format!("unknown tcbStatus {text:?}"))
}

fn components(list: &[SvnJson], what: &str) -> Result<[u8; 16], String> {
    if list.len() != 16 {
        return Err(format!("{what}: {} components (expected 16)", list.len()));
    }
    let mut out = [0u8; 16];
    for (o, c) in out.iter_mut().zip(list) {
        *o = c.svn;
    }
    Ok(out)
}

fn isv_levels(levels: Vec<IsvLevelJson>) -> Result<Vec<IsvSvnLevel>, String> {
    if levels.len() > MAX_LEVELS {
        return Err("too many TCB levels".into());
    }
    levels
        .into_iter()
        .map(|l| {
            Ok(IsvSvnLevel {
                isvsvn: l.tcb.isvsvn,
                status: status(&l.tcb_status)?,
                tcb_date: l.tcb_date,
                advisory_ids: l.advisory_ids,
            })
        })
        .collect()
}

fn module(m: ModuleJson) -> Result<TdxModuleIdentity, String> {
    Ok(TdxModuleIdentity {
        mrsigner: hex_n(&m.mrsigner, "tdxModule.mrsigner")?,
        attributes: hex_n(&m.attributes, "tdxModule.attributes")?,
        attributes_mask: hex_n(&m.attributes_mask, "tdxModule.attributesMask")?,
        levels: isv_levels(m.tcb_levels)?,
        id: m.id,
    })
}

impl TcbInfo {
    /// Parse a TCB info body (the signed JSON object).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let j: TcbInfoJson = serde_json::from_slice(body).map_err(|e| format!("TCB info: {e}"))?;
        if j.tcb_levels.len() > MAX_LEVELS || j.tdx_module_identities.len() > MAX_LEVELS {
            return Err("TCB info: too many levels".into());
        }
        let levels = j
            .tcb_levels
            .into_iter()
            .map(|l| {
                Ok(TcbLevel {
                    sgx_components: components(&l.tcb.sgxtcbcomponents, "sgxtcbcomponents")?,
                    pcesvn: l.tcb.pcesvn,
                    tdx_components: components(&l.tcb.tdxtcbcomponents, "tdxtcbcomponents")?,
                    status: status(&l.tcb_status)?,
                    tcb_date: l.tcb_date,
                    advisory_ids: l.advisory_ids,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(TcbInfo {
            version: j.version,
            issue_date: time(&j.issue_date, "issueDate")?,
            next_update: time(&j.next_update, "nextUpdate")?,
            fmspc: hex_n(&j.fmspc, "fmspc")?,
            pce_id: hex_n(&j.pce_id, "pceId")?,
            tcb_evaluation_data_number: j.tcb_evaluation_data_number,
            tdx_module: j.tdx_module.map(module).transpose()?,
            tdx_module_identities: j
                .tdx_module_identities
                .into_iter()
                .map(module)
                .collect::<Result<_, _>>()?,
            levels,
            id: j.id,
        })
    }
}

impl QeIdentity {
    /// Parse a QE identity body (the signed JSON object).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let j: QeIdentityJson =
            serde_json::from_slice(body).map_err(|e| format!("QE identity: {e}"))?;
        Ok(QeIdentity {
            version: j.version,
            issue_date: time(&j.issue_date, "issueDate")?,
            next_update: time(&j.next_update, "nextUpdate")?,
            miscselect: u32::from_be_bytes(hex_n(&j.miscselect, "miscselect")?),
            miscselect_mask: u32::from_be_bytes(hex_n(&j.miscselect_mask, "miscselectMask")?),
            attributes: hex_n(&j.attributes, "attributes")?,
            attributes_mask: hex_n(&j.attributes_mask, "attributesMask")?,
            mrsigner: hex_n(&j.mrsigner, "mrsigner")?,
            isvprodid: j.isvprodid,
            levels: isv_levels(j.tcb_levels)?,
            id: j.id,
        })
    }
}
