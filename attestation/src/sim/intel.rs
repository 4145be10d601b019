//! The simulated Intel PKI and collateral: a root CA, a PCK platform CA, a PCK leaf (P-256) carrying the SGX
//! extensions (OID 1.2.840.113741.1.13.1) as Intel encodes them, a TCB signing certificate, the root CA CRL
//! and the PCK platform CRL (rcgen, ECDSA P-256), and a TCB info v3 (`id: "TDX"`) and QE identity v2
//! (`id: "TD_QE"`) signed over the exact JSON body bytes as PCS serves them. Every name says organization
//! "cvm simulator", never Intel. The levels make the simulated platform `UpToDate`.

use super::der;
use super::drbg::Drbg;
use super::ecdsa;
use super::error::SimError;
use super::pem;
use crate::snp::chain::SIMULATOR_ORGANIZATION;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// The SGX extension's OID, 1.2.840.113741.1.13.1.
pub const SGX_EXTENSION_OID: &[u64] = &[1, 2, 840, 113741, 1, 13, 1];

/// The simulated platform's FMSPC.
pub const FMSPC: [u8; 6] = [0x90, 0xc0, 0x6f, 0x00, 0x00, 0x00];
/// The simulated platform's SGX TCB components (CPUSVN).
pub const SGX_TCB_COMPONENTS: [u8; 16] = [3, 3, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0];
/// The simulated platform's PCE SVN.
pub const PCESVN: u16 = 13;
/// The PCE ID.
pub const PCE_ID: [u8; 2] = [0, 0];
/// TEE_TCB_SVN of the simulated TDX module: minor SVN 4, major version 1 (`TDX_01`), then the TDX TCB
/// components.
pub const TEE_TCB_SVN: [u8; 16] = [4, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// MRSIGNER of the simulated quoting enclave.
pub const QE_MRSIGNER: [u8; 32] = [0xdc; 32];
/// MRENCLAVE of the simulated quoting enclave.
pub const QE_MRENCLAVE: [u8; 32] = [0xee; 32];
/// ISVPRODID of the TD quoting enclave.
pub const QE_ISVPRODID: u16 = 2;
/// ISVSVN of the simulated quoting enclave.
pub const QE_ISVSVN: u16 = 4;
/// ATTRIBUTES of the simulated quoting enclave (INIT, MODE64BIT, PROVISIONKEY; XFRM x87/SSE/AVX/AVX-512).
pub const QE_ATTRIBUTES: [u8; 16] = [0x15, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0];

/// Validity of the simulated root, CA and TCB signing certificates: 25 years.
pub const CA_VALIDITY_SECS: i64 = 25 * 365 * 86_400;
/// Validity of the simulated PCK certificate: 7 years.
pub const PCK_VALIDITY_SECS: i64 = 7 * 365 * 86_400;
/// How long collateral (TCB info, QE identity, CRLs) stays current: one year from `sim init`.
pub const COLLATERAL_VALIDITY_SECS: i64 = 365 * 86_400;

/// The public results of generating the Intel side.
#[derive(Debug)]
pub struct IntelHierarchy {
    /// Root CA certificate (DER).
    pub root_der: Vec<u8>,
    /// PCK platform CA certificate (DER).
    pub pck_ca_der: Vec<u8>,
    /// PCK leaf certificate (DER).
    pub pck_der: Vec<u8>,
    /// TCB signing certificate (DER).
    pub tcb_signing_der: Vec<u8>,
    /// Root CA CRL (DER).
    pub root_crl_der: Vec<u8>,
    /// PCK platform CA CRL (DER).
    pub pck_crl_der: Vec<u8>,
    /// `{"tcbInfo":{...},"signature":"..."}`.
    pub tcb_info_json: String,
    /// `{"enclaveIdentity":{...},"signature":"..."}`.
    pub qe_identity_json: String,
    /// Private keys (PKCS#8): root, PCK CA, PCK, TCB signing, attestation key.
    pub keys: IntelKeys,
}

/// The Intel side's PKCS#8 private keys.
#[derive(Debug)]
pub struct IntelKeys {
    /// Root CA.
    pub root: Vec<u8>,
    /// PCK platform CA.
    pub pck_ca: Vec<u8>,
    /// PCK leaf (signs QE reports).
    pub pck: Vec<u8>,
    /// TCB signing (signs TCB info and QE identity).
    pub tcb_signing: Vec<u8>,
    /// The quoting enclave's attestation key (signs quotes).
    pub attestation: Vec<u8>,
}

fn time(unix: i64) -> Result<time::OffsetDateTime, SimError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| SimError::Crypto(format!("time {unix}: {e}")))
}

fn rcgen_error(e: rcgen::Error) -> SimError {
    SimError::Crypto(format!("certificate: {e}"))
}

fn key(drbg: &mut Drbg) -> Result<(Vec<u8>, KeyPair), SimError> {
    let pkcs8 = ecdsa::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, 32, drbg)?;
    let pair = KeyPair::try_from(pkcs8.as_slice()).map_err(rcgen_error)?;
    Ok((pkcs8, pair))
}

fn params(
    cn: &str,
    serial: u64,
    ca: bool,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, SimError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    p.distinguished_name
        .push(DnType::OrganizationName, SIMULATOR_ORGANIZATION);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = time(not_before)?;
    p.not_after = time(not_after)?;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
    }
    Ok(p)
}

/// One `SEQUENCE { OID 1.2.840.113741.1.13.1.<arcs>, value }` of the SGX extension.
fn sgx_member(arcs: &[u64], value: &[u8]) -> Vec<u8> {
    der::seq(&[&der::oid(&[SGX_EXTENSION_OID, arcs].concat()), value])
}

/// The SGX extension's value as Intel encodes it in Platform-CA-issued PCK certificates: PPID, TCB (16 SGX
/// TCB component SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type (Scalable), platform instance id and
/// configuration.
pub fn sgx_extension(ppid: &[u8; 16], platform_instance_id: &[u8; 16]) -> Vec<u8> {
    let mut tcb: Vec<Vec<u8>> = SGX_TCB_COMPONENTS
        .iter()
        .zip(1u64..)
        .map(|(svn, i)| sgx_member(&[2, i], &der::u64_int(u64::from(*svn))))
        .collect();
    tcb.push(sgx_member(&[2, 17], &der::u64_int(u64::from(PCESVN))));
    tcb.push(sgx_member(
        &[2, 18],
        &der::octet_string(&SGX_TCB_COMPONENTS),
    ));
    let tcb: Vec<&[u8]> = tcb.iter().map(Vec::as_slice).collect();
    let configuration = der::seq(&[
        &sgx_member(&[7, 1], &der::boolean(false)),
        &sgx_member(&[7, 2], &der::boolean(false)),
        &sgx_member(&[7, 3], &der::boolean(false)),
    ]);
    der::seq(&[
        &sgx_member(&[1], &der::octet_string(ppid)),
        &sgx_member(&[2], &der::seq(&tcb)),
        &sgx_member(&[3], &der::octet_string(&PCE_ID)),
        &sgx_member(&[4], &der::octet_string(&FMSPC)),
        &sgx_member(&[5], &der::tlv(0x0a, &[1])),
        &sgx_member(&[6], &der::octet_string(platform_instance_id)),
        &sgx_member(&[7], &configuration),
    ])
}

/// RFC 3339 UTC without fractions, as PCS writes dates.
fn date(unix: i64) -> String {
    crate::pki::rfc3339(unix)
}

fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// The TCB info v3 body (TDX) for the simulated platform.
pub fn tcb_info_body(issue: i64, next: i64) -> String {
    let svns = |comps: &[u8]| -> Vec<serde_json::Value> {
        comps
            .iter()
            .map(|s| serde_json::json!({ "svn": s }))
            .collect()
    };
    let zero_mrsigner = hex_upper(&[0u8; 48]);
    let body = serde_json::json!({
        "id": "TDX",
        "version": 3,
        "issueDate": date(issue),
        "nextUpdate": date(next),
        "fmspc": hex_upper(&FMSPC),
        "pceId": hex_upper(&PCE_ID),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {
            "mrsigner": zero_mrsigner,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tdxModuleIdentities": [{
            "id": format!("TDX_{:02X}", TEE_TCB_SVN[1]),
            "mrsigner": zero_mrsigner,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
            "tcbLevels": [{
                "tcb": { "isvsvn": TEE_TCB_SVN[0] },
                "tcbDate": date(issue),
                "tcbStatus": "UpToDate",
            }],
        }],
        "tcbLevels": [{
            "tcb": {
                "sgxtcbcomponents": svns(&SGX_TCB_COMPONENTS),
                "pcesvn": PCESVN,
                "tdxtcbcomponents": svns(&TEE_TCB_SVN),
            },
            "tcbDate": date(issue),
            "tcbStatus": "UpToDate",
        }],
    });
    body.to_string()
}

/// The QE identity v2 body (`TD_QE`) for the simulated quoting enclave.
pub fn qe_identity_body(issue: i64, next: i64) -> String {
    serde_json::json!({
        "id": "TD_QE",
        "version": 2,
        "issueDate": date(issue),
        "nextUpdate": date(next),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex_upper(&QE_MRSIGNER),
        "isvprodid": QE_ISVPRODID,
        "tcbLevels": [{
            "tcb": { "isvsvn": QE_ISVSVN },
            "tcbDate": date(issue),
            "tcbStatus": "UpToDate",
        }],
    })
    .to_string()
}

/// `{"<key>":<body>,"signature":"<hex r||s>"}` with an ECDSA P-256 SHA-256 signature over the body's bytes.
fn signed_json(key: &str, body: &str, signer: &EcdsaKeyPair) -> Result<String, SimError> {
    let sig = signer
        .sign(&SystemRandom::new(), body.as_bytes())
        .map_err(|_| SimError::Crypto("ECDSA P-256 signing failed".into()))?;
    Ok(format!(
        "{{\"{key}\":{body},\"signature\":\"{}\"}}",
        hex::encode(sig.as_ref())
    ))
}

fn crl(issuer: &Issuer<'_, &KeyPair>, issue: i64, next: i64) -> Result<Vec<u8>, SimError> {
    let params = CertificateRevocationListParams {
        this_update: time(issue)?,
        next_update: time(next)?,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params
        .signed_by(issuer)
        .map_err(rcgen_error)?
        .der()
        .to_vec())
}

impl IntelHierarchy {
    /// Generate the Intel side from `seed` (deterministic keys), valid from `now`; collateral current for
    /// [`COLLATERAL_VALIDITY_SECS`].
    pub fn generate(seed: &[u8], now: i64) -> Result<Self, SimError> {
        let ca_end = now + CA_VALIDITY_SECS;
        let (root_key8, root_key) = key(&mut Drbg::new(seed, "intel root"))?;
        let (pck_ca_key8, pck_ca_key) = key(&mut Drbg::new(seed, "intel pck ca"))?;
        let (pck_key8, pck_key) = key(&mut Drbg::new(seed, "intel pck"))?;
        let (tcb_key8, tcb_key) = key(&mut Drbg::new(seed, "intel tcb signing"))?;
        let (att_key8, _) = key(&mut Drbg::new(seed, "intel attestation key"))?;

        let root_params = params("cvm simulator SGX Root CA", 1, true, now, ca_end)?;
        let root_der = root_params
            .self_signed(&root_key)
            .map_err(rcgen_error)?
            .der()
            .to_vec();
        let root = Issuer::from_params(&root_params, &root_key);

        let pck_ca_params = params("cvm simulator SGX PCK Platform CA", 2, true, now, ca_end)?;
        let pck_ca_der = pck_ca_params
            .signed_by(&pck_ca_key, &root)
            .map_err(rcgen_error)?
            .der()
            .to_vec();
        let pck_ca = Issuer::from_params(&pck_ca_params, &pck_ca_key);

        let tcb_params = params("cvm simulator SGX TCB Signing", 3, false, now, ca_end)?;
        let tcb_signing_der = tcb_params
            .signed_by(&tcb_key, &root)
            .map_err(rcgen_error)?
            .der()
            .to_vec();

        let mut ids = Drbg::new(seed, "intel ppid");
        let mut ppid = [0u8; 16];
        ids.fill(&mut ppid);
        let mut instance = [0u8; 16];
        ids.fill(&mut instance);
        let mut pck_params = params(
            "cvm simulator SGX PCK Certificate",
            4,
            false,
            now,
            now + PCK_VALIDITY_SECS,
        )?;
        pck_params.custom_extensions = vec![CustomExtension::from_oid_content(
            SGX_EXTENSION_OID,
            sgx_extension(&ppid, &instance),
        )];
        let pck_der = pck_params
            .signed_by(&pck_key, &pck_ca)
            .map_err(rcgen_error)?
            .der()
            .to_vec();

        let next = now + COLLATERAL_VALIDITY_SECS;
        let root_crl_der = crl(&root, now, next)?;
        let pck_crl_der = crl(&pck_ca, now, next)?;
        let tcb_signer = ecdsa::load(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &tcb_key8,
            "TCB signing key",
        )?;
        let tcb_info_json = signed_json("tcbInfo", &tcb_info_body(now, next), &tcb_signer)?;
        let qe_identity_json =
            signed_json("enclaveIdentity", &qe_identity_body(now, next), &tcb_signer)?;
        Ok(IntelHierarchy {
            root_der,
            pck_ca_der,
            pck_der,
            tcb_signing_der,
            root_crl_der,
            pck_crl_der,
            tcb_info_json,
            qe_identity_json,
            keys: IntelKeys {
                root: root_key8,
                pck_ca: pck_ca_key8,
                pck: pck_key8,
                tcb_signing: tcb_key8,
                attestation: att_key8,
            },
        })
    }

    /// The PCK chain as a quote's certification data type 5 carries it: PEM leaf, CA, root.
    pub fn pck_chain_pem(&self) -> String {
        [&self.pck_der, &self.pck_ca_der, &self.root_der]
            .iter()
            .map(|d| pem::encode("CERTIFICATE", d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::pck::PckExtensions;

    #[test]
    fn the_sgx_extension_reads_back_with_the_verifiers_parser() {
        let ext = PckExtensions::parse(&sgx_extension(&[7; 16], &[8; 16])).unwrap();
        assert_eq!(ext.ppid, vec![7; 16]);
        assert_eq!(ext.sgx_tcb_components, SGX_TCB_COMPONENTS);
        assert_eq!(ext.cpusvn, SGX_TCB_COMPONENTS);
        assert_eq!(ext.pcesvn, PCESVN);
        assert_eq!(ext.pceid, PCE_ID);
        assert_eq!(ext.fmspc, FMSPC);
        assert_eq!(ext.sgx_type, 1);
    }

    #[test]
    fn collateral_bodies_are_tdx_tcb_info_v3_and_td_qe_identity_v2() {
        let tcb: serde_json::Value = serde_json::from_str(&tcb_info_body(0, 86_400)).unwrap();
        assert_eq!(tcb["id"], "TDX");
        assert_eq!(tcb["version"], 3);
        assert_eq!(tcb["fmspc"], "90C06F000000");
        assert_eq!(tcb["nextUpdate"], "1970-01-02T00:00:00Z");
        assert_eq!(
            tcb["tcbLevels"][0]["tcb"]["sgxtcbcomponents"]
                .as_array()
                .unwrap()
                .len(),
            16
        );
        assert_eq!(tcb["tdxModuleIdentities"][0]["id"], "TDX_01");
        let qe: serde_json::Value = serde_json::from_str(&qe_identity_body(0, 86_400)).unwrap();
        assert_eq!(qe["id"], "TD_QE");
        assert_eq!(qe["version"], 2);
    }
}
