//! The simulated TDX quoting enclave: [`SimIntel`] builds byte-exact v4 quotes (header, TD report body,
//! ECDSA P-256 signature by the attestation key, QE report signed by the PCK key with report data
//! SHA-256(att_key‖qe_auth_data)‖0³², QE auth data, certification data type 6 wrapping type 5).

use super::ecdsa;
use super::error::SimError;
use super::intel::{
    IntelHierarchy, PCESVN, QE_ATTRIBUTES, QE_ISVPRODID, QE_ISVSVN, QE_MRENCLAVE, QE_MRSIGNER,
    SGX_TCB_COMPONENTS, TEE_TCB_SVN,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// Intel's QE vendor id.
pub const QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];
/// TD_ATTRIBUTES of a simulated TD: SEPT_VE_DISABLE (bit 28).
pub const TD_ATTRIBUTES: u64 = 1 << 28;
/// The TD_ATTRIBUTES DEBUG bit.
pub const TD_ATTRIBUTES_DEBUG: u64 = 1;
/// XFAM of a simulated TD (x87, SSE, AVX, AVX-512, PK, ...).
pub const XFAM: u64 = 0x0006_1be7;
/// MRSEAM of the simulated TDX module.
pub const MRSEAM: [u8; 48] = [0x5e; 48];
/// QE authentication data: 32 bytes 0, 1, ..., 31, as Intel's QE writes it.
pub const QE_AUTH_DATA: [u8; 32] = {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = i as u8;
        i += 1;
    }
    out
};

/// What the TD (REPORT_DATA) and its launch (MRTD, RTMRs, MRCONFIGID) put into a quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxRequest {
    /// REPORTDATA chosen by the TD.
    pub report_data: [u8; 64],
    /// MRTD: the build-time measurement.
    pub mrtd: [u8; 48],
    /// RTMR0.
    pub rtmr0: [u8; 48],
    /// RTMR1.
    pub rtmr1: [u8; 48],
    /// RTMR2.
    pub rtmr2: [u8; 48],
    /// RTMR3.
    pub rtmr3: [u8; 48],
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// Set TD_ATTRIBUTES.DEBUG.
    pub debug: bool,
}

impl Default for TdxRequest {
    fn default() -> Self {
        TdxRequest {
            report_data: [0; 64],
            mrtd: [0; 48],
            rtmr0: [0; 48],
            rtmr1: [0; 48],
            rtmr2: [0; 48],
            rtmr3: [0; 48],
            mrconfigid: [0; 48],
            debug: false,
        }
    }
}

/// A simulated TD quoting enclave. `Send + Sync`; the QE report and certification data are built once, so a
/// quote costs one P-256 signature.
pub struct SimIntel {
    att_key: EcdsaKeyPair,
    /// Attestation key ‖ certification data (type 6): everything after the quote signature.
    tail: Vec<u8>,
    root_der: Vec<u8>,
    pck_chain_pem: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SimIntel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimIntel").finish_non_exhaustive()
    }
}

/// Quote header (48 bytes) for a v4 ECDSA P-256 TDX quote.
fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(48);
    h.extend(4u16.to_le_bytes()); // version
    h.extend(2u16.to_le_bytes()); // attestation key type: ECDSA P-256
    h.extend(0x81u32.to_le_bytes()); // TEE type: TDX
    h.extend(QE_ISVSVN.to_le_bytes());
    h.extend(PCESVN.to_le_bytes());
    h.extend(QE_VENDOR_ID);
    h.extend([0u8; 20]); // user data
    h
}

/// The QE's SGX report body (384 bytes) with `report_data`.
fn qe_report(report_data: &[u8; 64]) -> Vec<u8> {
    let mut q = Vec::with_capacity(384);
    q.extend(SGX_TCB_COMPONENTS); // CPUSVN
    q.extend(0u32.to_le_bytes()); // MISCSELECT
    q.extend([0u8; 28]);
    q.extend(QE_ATTRIBUTES);
    q.extend(QE_MRENCLAVE);
    q.extend([0u8; 32]);
    q.extend(QE_MRSIGNER);
    q.extend([0u8; 96]);
    q.extend(QE_ISVPRODID.to_le_bytes());
    q.extend(QE_ISVSVN.to_le_bytes());
    q.extend([0u8; 60]);
    q.extend(report_data);
    q
}

fn sign(key: &EcdsaKeyPair, rng: &SystemRandom, msg: &[u8]) -> Result<Vec<u8>, SimError> {
    key.sign(rng, msg)
        .map(|s| s.as_ref().to_vec())
        .map_err(|_| SimError::Crypto("ECDSA P-256 signing failed".into()))
}

fn len_u32(n: usize) -> Result<[u8; 4], SimError> {
    u32::try_from(n)
        .map(u32::to_le_bytes)
        .map_err(|_| SimError::Invalid("certification data too large".into()))
}

impl SimIntel {
    /// A quoting enclave from its attestation key and PCK key (PKCS#8) and the PCK chain (PEM: leaf, CA,
    /// root).
    pub fn from_parts(
        att_pkcs8: &[u8],
        pck_pkcs8: &[u8],
        pck_chain_pem: &str,
    ) -> Result<Self, SimError> {
        let rng = SystemRandom::new();
        let att_key = ecdsa::load(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            att_pkcs8,
            "attestation key",
        )?;
        let pck_key = ecdsa::load(&ECDSA_P256_SHA256_FIXED_SIGNING, pck_pkcs8, "PCK key")?;
        let chain = crate::pki::certs_from_bytes(pck_chain_pem.as_bytes())
            .map_err(|e| SimError::Invalid(format!("PCK chain: {e}")))?;
        let [leaf, _, root] = chain.as_slice() else {
            return Err(SimError::Invalid(
                "the PCK chain must hold 3 certificates: PCK, PCK CA, root".into(),
            ));
        };
        let leaf_cert = crate::pki::parse_cert(leaf)
            .map_err(|e| SimError::Invalid(format!("PCK certificate: {e}")))?;
        if leaf_cert.public_key().subject_public_key.data.as_ref() != pck_key.public_key().as_ref()
        {
            return Err(SimError::Invalid(
                "the PCK key does not belong to the PCK certificate".into(),
            ));
        }
        // Raw X‖Y of the attestation key.
        let att_xy = att_key
            .public_key()
            .as_ref()
            .get(1..)
            .unwrap_or(&[])
            .to_vec();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[&att_xy[..], &QE_AUTH_DATA].concat(),
        );
        let mut report_data = [0u8; 64];
        if let Some(dst) = report_data.get_mut(..32) {
            dst.copy_from_slice(digest.as_ref());
        }
        let qe = qe_report(&report_data);
        let qe_sig = sign(&pck_key, &rng, &qe)?;
        let mut pem = pck_chain_pem.as_bytes().to_vec();
        pem.push(0);
        let mut cert6 = qe;
        cert6.extend(qe_sig);
        cert6.extend((QE_AUTH_DATA.len() as u16).to_le_bytes());
        cert6.extend(QE_AUTH_DATA);
        cert6.extend(5u16.to_le_bytes());
        cert6.extend(len_u32(pem.len())?);
        cert6.extend(pem);
        let mut tail = att_xy;
        tail.extend(6u16.to_le_bytes());
        tail.extend(len_u32(cert6.len())?);
        tail.extend(cert6);
        Ok(SimIntel {
            att_key,
            tail,
            root_der: root.clone(),
            pck_chain_pem: pck_chain_pem.to_owned(),
            rng,
        })
    }

    /// A quoting enclave for a freshly generated hierarchy.
    pub fn from_hierarchy(h: &IntelHierarchy) -> Result<Self, SimError> {
        Self::from_parts(&h.keys.attestation, &h.keys.pck, &h.pck_chain_pem())
    }

    /// The simulated root CA (DER): the trust root to pass to a verifier.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The PCK chain (PEM: PCK, PCK platform CA, root).
    pub fn pck_chain_pem(&self) -> &str {
        &self.pck_chain_pem
    }

    /// A signed v4 quote for `req`.
    pub fn tdx_quote(&self, req: &TdxRequest) -> Result<Vec<u8>, SimError> {
        let mut attributes = TD_ATTRIBUTES;
        if req.debug {
            attributes |= TD_ATTRIBUTES_DEBUG;
        }
        let mut q = header();
        q.reserve(584 + 4 + 64 + self.tail.len());
        q.extend(TEE_TCB_SVN);
        q.extend(MRSEAM);
        q.extend([0u8; 48]); // MRSIGNERSEAM: Intel's module
        q.extend([0u8; 8]); // SEAMATTRIBUTES
        q.extend(attributes.to_le_bytes());
        q.extend(XFAM.to_le_bytes());
        q.extend(req.mrtd);
        q.extend(req.mrconfigid);
        q.extend([0u8; 48]); // MROWNER
        q.extend([0u8; 48]); // MROWNERCONFIG
        q.extend(req.rtmr0);
        q.extend(req.rtmr1);
        q.extend(req.rtmr2);
        q.extend(req.rtmr3);
        q.extend(req.report_data);
        let sig = sign(&self.att_key, &self.rng, &q)?;
        q.extend(len_u32(sig.len() + self.tail.len())?);
        q.extend(sig);
        q.extend_from_slice(&self.tail);
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_intel_is_send_and_sync_and_the_qe_report_is_384_bytes() {
        fn check<T: Send + Sync>() {}
        check::<SimIntel>();
        assert_eq!(qe_report(&[0; 64]).len(), 384);
        assert_eq!(header().len(), 48);
        assert_eq!(QE_AUTH_DATA[31], 31);
    }
}
