//! The simulated AMD secure processor: the key hierarchy ([`AmdHierarchy`]) and [`SimAmd`], which signs
//! byte-exact ATTESTATION_REPORTs (versions 2, 3, 5) with the VCEK the way firmware fills them.

use super::amd::{AmdCa, ProductProfile, VcekSpec};
use super::drbg::Drbg;
use super::ecdsa;
use super::error::SimError;
use crate::snp::Product;
use crate::snp::extensions::AmdExtensions;
use crate::snp::report::{REPORT_LEN, SIG_COMPONENT_LEN, SIG_R_OFFSET, SIG_S_OFFSET, SIGNED_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// Default guest policy: SMT allowed, the must-be-one bit 17, ABI 1.0 minimum; no debugging.
pub const DEFAULT_POLICY: u64 = 0x3_0100;
/// The DEBUG bit of the guest policy.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// PLATFORM_INFO of the simulated platform: SMT_EN, ECC_EN, ALIAS_CHECK_COMPLETE.
pub const PLATFORM_INFO: u64 = 0x25;

/// Validity of the simulated ARK and ASK: 25 years.
pub const CA_VALIDITY_SECS: i64 = 25 * 365 * 86_400;
/// Validity of the simulated VCEK: 7 years, as AMD's.
pub const VCEK_VALIDITY_SECS: i64 = 7 * 365 * 86_400;

/// What the guest (REPORT_DATA, VMPL) and the launch (MEASUREMENT, HOST_DATA, POLICY) put into a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpRequest {
    /// REPORT_DATA chosen by the guest.
    pub report_data: [u8; 64],
    /// MEASUREMENT: the launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA given by the host at launch.
    pub host_data: [u8; 32],
    /// The guest policy ([`DEFAULT_POLICY`] unless the launch set another).
    pub policy: u64,
    /// VMPL of the request (0..=3).
    pub vmpl: u32,
    /// Set the policy's DEBUG bit.
    pub debug: bool,
    /// Report VERSION: 5 (default), 3 or 2.
    pub version: u32,
}

impl Default for SnpRequest {
    fn default() -> Self {
        SnpRequest {
            report_data: [0; 64],
            measurement: [0; 48],
            host_data: [0; 32],
            policy: DEFAULT_POLICY,
            vmpl: 0,
            debug: false,
            version: 5,
        }
    }
}

/// A freshly generated simulated AMD hierarchy.
#[derive(Debug)]
pub struct AmdHierarchy {
    /// The ARK.
    pub ark: AmdCa,
    /// The ASK.
    pub ask: AmdCa,
    /// The VCEK's private key (PKCS#8).
    pub vcek_pkcs8: Vec<u8>,
    /// The VCEK certificate (DER).
    pub vcek_der: Vec<u8>,
}

impl AmdHierarchy {
    /// Generate ARK, ASK and VCEK for `product` from `seed` (deterministic keys), valid from `now`.
    pub fn generate(seed: &[u8], product: Product, now: i64) -> Result<Self, SimError> {
        let profile = ProductProfile::of(product);
        let ark = AmdCa::ark(
            product,
            &mut Drbg::new(seed, "amd ark"),
            now,
            now + CA_VALIDITY_SECS,
        )?;
        let ask = AmdCa::ask(
            product,
            &ark,
            &mut Drbg::new(seed, "amd ask"),
            now,
            now + CA_VALIDITY_SECS,
        )?;
        let vcek_pkcs8 = ecdsa::generate_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            48,
            &mut Drbg::new(seed, "amd vcek"),
        )?;
        let hw_id = Drbg::new(seed, "amd chip id").bytes(profile.hw_id_len);
        let spec = VcekSpec {
            product_name: profile.product_name.to_owned(),
            struct_version: profile.struct_version,
            hw_id,
            spl: profile.spl_extensions(profile.tcb),
            not_before: now,
            not_after: now + VCEK_VALIDITY_SECS,
        };
        let vcek = ecdsa::load(&ECDSA_P384_SHA384_FIXED_SIGNING, &vcek_pkcs8, "VCEK")?;
        let vcek_der = ask.issue_vcek(
            &spec,
            vcek.public_key().as_ref(),
            &mut Drbg::new(seed, "amd vcek certificate"),
        )?;
        Ok(AmdHierarchy {
            ark,
            ask,
            vcek_pkcs8,
            vcek_der,
        })
    }
}

/// A simulated SNP secure processor: signs reports with its VCEK. `Send + Sync`; keys are loaded once.
pub struct SimAmd {
    vcek: EcdsaKeyPair,
    vcek_der: Vec<u8>,
    ask_der: Vec<u8>,
    ark_der: Vec<u8>,
    profile: ProductProfile,
    chip_id: [u8; 64],
    tcb: u64,
    rng: SystemRandom,
}

impl std::fmt::Debug for SimAmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAmd")
            .field("product", &self.profile.product)
            .field("chip_id", &hex::encode(self.chip_id))
            .field("tcb", &format_args!("{:#018x}", self.tcb))
            .finish_non_exhaustive()
    }
}

/// The TCB_VERSION a VCEK's SPL extensions certify, under its product's layout.
fn tcb_from_extensions(ext: &AmdExtensions, product: Product) -> Result<u64, SimError> {
    let s = &ext.spl;
    let need = |v: Option<u8>, name: &str| {
        v.ok_or_else(|| SimError::Invalid(format!("the VCEK has no {name} extension")))
    };
    let [spl4, spl5, spl6, spl7] = s.spl_4_7.map(|v| v.unwrap_or(0));
    let bytes = match product {
        Product::Milan | Product::Genoa => [
            need(s.bootloader, "blSPL")?,
            need(s.tee, "teeSPL")?,
            spl4,
            spl5,
            spl6,
            spl7,
            need(s.snp, "snpSPL")?,
            need(s.microcode, "ucodeSPL")?,
        ],
        Product::Turin => [
            need(s.fmc, "fmcSPL")?,
            need(s.bootloader, "blSPL")?,
            need(s.tee, "teeSPL")?,
            need(s.snp, "snpSPL")?,
            spl5,
            spl6,
            spl7,
            need(s.microcode, "ucodeSPL")?,
        ],
    };
    Ok(u64::from_le_bytes(bytes))
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Sign `report` (1184 bytes) in place with `vcek`: ECDSA P-384 SHA-384 over `[0, 0x2A0)`, R and S written
/// little-endian into their 72-byte fields (the upper 24 bytes zero).
pub fn sign_report(
    vcek: &EcdsaKeyPair,
    report: &mut [u8],
    rng: &dyn SecureRandom,
) -> Result<(), SimError> {
    if report.len() != REPORT_LEN {
        return Err(SimError::Request(format!(
            "an SNP report is {REPORT_LEN} bytes, got {}",
            report.len()
        )));
    }
    let signed = report.get(..SIGNED_LEN).unwrap_or(&[]);
    let sig = vcek
        .sign(rng, signed)
        .map_err(|_| SimError::Crypto("ECDSA P-384 signing failed".into()))?;
    let (r, s) = sig.as_ref().split_at(sig.as_ref().len() / 2);
    for (offset, be) in [(SIG_R_OFFSET, r), (SIG_S_OFFSET, s)] {
        let mut le = [0u8; SIG_COMPONENT_LEN];
        for (dst, src) in le.iter_mut().zip(be.iter().rev()) {
            *dst = *src;
        }
        put(report, offset, &le);
    }
    Ok(())
}

impl SimAmd {
    /// A simulator from the VCEK's PKCS#8 key, the VCEK certificate and the ASK and ARK certificates (DER).
    /// Product, CHIP_ID and TCB come from the VCEK's extensions.
    pub fn from_parts(
        vcek_pkcs8: &[u8],
        vcek_der: &[u8],
        ask_der: &[u8],
        ark_der: &[u8],
    ) -> Result<Self, SimError> {
        let vcek = ecdsa::load(&ECDSA_P384_SHA384_FIXED_SIGNING, vcek_pkcs8, "VCEK key")?;
        let cert = crate::pki::parse_cert(vcek_der)
            .map_err(|e| SimError::Invalid(format!("VCEK certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != vcek.public_key().as_ref() {
            return Err(SimError::Invalid(
                "the VCEK key does not belong to the VCEK certificate".into(),
            ));
        }
        let ext = AmdExtensions::from_cert(&cert).map_err(|e| SimError::Invalid(e.to_string()))?;
        let product = ext.product().ok_or_else(|| {
            SimError::Invalid("the VCEK's productName1 names no known product".into())
        })?;
        let hw_id = ext
            .hw_id
            .as_deref()
            .ok_or_else(|| SimError::Invalid("the VCEK has no hwID".into()))?;
        let mut chip_id = [0u8; 64];
        chip_id
            .get_mut(..hw_id.len())
            .ok_or_else(|| SimError::Invalid("the VCEK's hwID is longer than 64 bytes".into()))?
            .copy_from_slice(hw_id);
        let tcb = tcb_from_extensions(&ext, product)?;
        for (what, der) in [("ASK", ask_der), ("ARK", ark_der)] {
            crate::pki::parse_cert(der)
                .map_err(|e| SimError::Invalid(format!("{what} certificate: {e}")))?;
        }
        Ok(SimAmd {
            vcek,
            vcek_der: vcek_der.to_vec(),
            ask_der: ask_der.to_vec(),
            ark_der: ark_der.to_vec(),
            profile: ProductProfile::of(product),
            chip_id,
            tcb,
            rng: SystemRandom::new(),
        })
    }

    /// A simulator for a freshly generated hierarchy.
    pub fn from_hierarchy(h: &AmdHierarchy) -> Result<Self, SimError> {
        Self::from_parts(&h.vcek_pkcs8, &h.vcek_der, h.ask.der(), h.ark.der())
    }

    /// The VCEK certificate (DER).
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// The ASK certificate (DER).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// The ARK certificate (DER): the trust root to pass to a verifier.
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// The certificate chain as AMD KDS serves it: ASK then ARK (DER).
    pub fn cert_chain(&self) -> Vec<Vec<u8>> {
        vec![self.ask_der.clone(), self.ark_der.clone()]
    }

    /// The simulated product.
    pub fn product(&self) -> Product {
        self.profile.product
    }

    /// CHIP_ID (= the VCEK's hwID, zero-extended on Turin).
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }

    /// The platform's TCB_VERSION (current, reported, committed and launch TCB).
    pub fn tcb(&self) -> u64 {
        self.tcb
    }

    /// A signed attestation report for `req`.
    pub fn snp_report(&self, req: &SnpRequest) -> Result<Vec<u8>, SimError> {
        if !matches!(req.version, 2 | 3 | 5) {
            return Err(SimError::Request(format!(
                "report version {} is not simulated (2, 3 or 5)",
                req.version
            )));
        }
        if req.vmpl > 3 {
            return Err(SimError::Request(format!(
                "VMPL {} does not exist (0..=3)",
                req.vmpl
            )));
        }
        let mut policy = req.policy;
        if req.debug {
            policy |= POLICY_DEBUG;
        }
        let tcb = self.tcb.to_le_bytes();
        let (major, minor, build) = self.profile.firmware;
        let mut report_id = [0u8; 32];
        self.rng
            .fill(&mut report_id)
            .map_err(|_| SimError::Crypto("no randomness for REPORT_ID".into()))?;
        let mut r = vec![0u8; REPORT_LEN];
        put(&mut r, 0x000, &req.version.to_le_bytes());
        put(&mut r, 0x004, &0u32.to_le_bytes()); // GUEST_SVN
        put(&mut r, 0x008, &policy.to_le_bytes());
        // FAMILY_ID, IMAGE_ID: zero (no ID block).
        put(&mut r, 0x030, &req.vmpl.to_le_bytes());
        put(&mut r, 0x034, &1u32.to_le_bytes()); // SIGNATURE_ALGO: ECDSA P-384 SHA-384
        put(&mut r, 0x038, &tcb); // CURRENT_TCB
        put(&mut r, 0x040, &PLATFORM_INFO.to_le_bytes());
        put(&mut r, 0x048, &0u32.to_le_bytes()); // flags: SIGNING_KEY = VCEK, no author key
        put(&mut r, 0x050, &req.report_data);
        put(&mut r, 0x090, &req.measurement);
        put(&mut r, 0x0C0, &req.host_data);
        // ID_KEY_DIGEST, AUTHOR_KEY_DIGEST: zero (no ID block).
        put(&mut r, 0x140, &report_id);
        put(&mut r, 0x160, &[0xff; 32]); // REPORT_ID_MA: no migration agent
        put(&mut r, 0x180, &tcb); // REPORTED_TCB
        if req.version >= 3 {
            let (family, model, stepping) = self.profile.cpuid;
            put(&mut r, 0x188, &[family, model, stepping]);
        }
        put(&mut r, 0x1A0, &self.chip_id);
        put(&mut r, 0x1E0, &tcb); // COMMITTED_TCB
        put(&mut r, 0x1E8, &[build, minor, major, 0]); // CURRENT_BUILD/MINOR/MAJOR
        put(&mut r, 0x1EC, &[build, minor, major, 0]); // COMMITTED_BUILD/MINOR/MAJOR
        put(&mut r, 0x1F0, &tcb); // LAUNCH_TCB
        // LAUNCH_MIT_VECTOR, CURRENT_MIT_VECTOR (v5): zero, no mitigations required.
        sign_report(&self.vcek, &mut r, &self.rng)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_amd_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SimAmd>();
    }
}
