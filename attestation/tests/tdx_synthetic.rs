//! Quotes and collateral made here, under a "cvm simulator" root, to reach the checks no real vector reaches:
//! revoked PCK and intermediate certificates, every TCB status path, TDX module and QE identity mismatches,
//! v5 quotes with a TDX 1.0 body, and the `simulated` flag.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use cvm_attest::policy::TcbStatus;
use cvm_attest::tdx::{Collateral, CollateralParts, SignedBody, TdxVerdict, TdxVerifier};
use cvm_attest::{Policy, Reason};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType,
    IsCa, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

const SGX_OID: &[u64] = &[1, 2, 840, 113741, 1, 13, 1];
const SGX_OID_DER: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];
const FMSPC: [u8; 6] = [0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00];
const QE_MRSIGNER: [u8; 32] = [0xdc; 32];

fn at() -> i64 {
    cvm_attest::pki::parse_rfc3339("2025-06-15T00:00:00Z").unwrap()
}

// --- a little DER writer for the SGX extension -------------------------------------------------------------
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}
fn oid(arcs: &[u8]) -> Vec<u8> {
    tlv(0x06, &[SGX_OID_DER, arcs].concat())
}
fn int(v: u16) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|&x| x == 0).collect();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}
fn member(arcs: &[u8], value: Vec<u8>) -> Vec<u8> {
    tlv(0x30, &[oid(arcs), value].concat())
}
fn sgx_extension(comps: [u8; 16], pcesvn: u16, fmspc: [u8; 6]) -> Vec<u8> {
    let mut tcb = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        tcb.extend(member(&[2, i as u8 + 1], int(u16::from(*c))));
    }
    tcb.extend(member(&[2, 17], int(pcesvn)));
    tcb.extend(member(&[2, 18], tlv(0x04, &comps)));
    let members = [
        member(&[1], tlv(0x04, &[0x5a; 16])),
        member(&[2], tlv(0x30, &tcb)),
        member(&[3], tlv(0x04, &[0, 0])),
        member(&[4], tlv(0x04, &fmspc)),
        member(&[5], tlv(0x0a, &[0])),
    ]
    .concat();
    tlv(0x30, &members)
}

// --- the simulated PKI --------------------------------------------------------------------------------------
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn params(cn: &str, serial: u64, ca: bool) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::OrganizationName, "cvm simulator");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p
}

fn ring_key(key: &KeyPair) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap()
}

fn sign(key: &EcdsaKeyPair, msg: &[u8]) -> [u8; 64] {
    key.sign(&SystemRandom::new(), msg)
        .unwrap()
        .as_ref()
        .try_into()
        .unwrap()
}

struct Sim {
    root: Ca,
    platform_ca: Ca,
    tcb_signer: Ca,
}

impl Sim {
    fn new() -> Sim {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let root_key = KeyPair::generate_for(alg).unwrap();
        let root_params = params("cvm simulated SGX Root CA", 1, true);
        let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let issue = |p: CertificateParams, issuer: &Ca| {
            let key = KeyPair::generate_for(alg).unwrap();
            let iss = Issuer::from_params(&issuer.params, &issuer.key);
            let der = p.signed_by(&key, &iss).unwrap().der().to_vec();
            Ca {
                params: p,
                key,
                der,
            }
        };
        let root = Ca {
            params: root_params,
            key: root_key,
            der: root_der,
        };
        let platform_ca = issue(params("cvm simulated PCK Platform CA", 2, true), &root);
        let tcb_signer = issue(params("cvm simulated TCB Signing", 3, false), &root);
        Sim {
            root,
            platform_ca,
            tcb_signer,
        }
    }

    fn verifier(&self) -> TdxVerifier {
        TdxVerifier::with_trust_roots(std::slice::from_ref(&self.root.der))
            .unwrap()
            .allow_simulated(true)
    }

    /// A PCK leaf with these SGX extensions: (DER, key).
    fn pck(&self, spec: &Spec) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = params("cvm simulated PCK Certificate", 0x4242, false);
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            SGX_OID,
            sgx_extension(spec.sgx_comps, spec.pcesvn, spec.pck_fmspc),
        )];
        let iss = Issuer::from_params(&self.platform_ca.params, &self.platform_ca.key);
        (p.signed_by(&key, &iss).unwrap().der().to_vec(), key)
    }

    fn crl(&self, issuer: &Ca, revoked: &[u64]) -> Vec<u8> {
        let p = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 6, 1),
            next_update: rcgen::date_time_ymd(2025, 7, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2025, 5, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let iss = Issuer::from_params(&issuer.params, &issuer.key);
        p.signed_by(&iss).unwrap().der().to_vec()
    }

    fn quote(&self, spec: &Spec) -> Vec<u8> {
        let (pck_der, pck_key) = self.pck(spec);
        let att = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap()
                .as_ref(),
            &SystemRandom::new(),
        )
        .unwrap();
        let att_xy = &att.public_key().as_ref()[1..];
        let mut header = Vec::new();
        header.extend(spec.version.to_le_bytes());
        header.extend(2u16.to_le_bytes());
        header.extend(0x81u32.to_le_bytes());
        header.extend([0u8; 4]);
        header.extend(hex::decode("939a7233f79c4ca9940a0db3957f0607").unwrap());
        header.extend([0u8; 20]);
        let mut body = Vec::new();
        body.extend(spec.tee_tcb_svn);
        body.extend([0x5e; 48]); // mrseam
        body.extend(spec.mrsignerseam);
        body.extend([0u8; 8]); // seam attributes
        body.extend(spec.td_attributes);
        body.extend([0xe7, 0x02, 0x06, 0, 0, 0, 0, 0]); // xfam
        for fill in [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88] {
            body.extend([fill; 48]); // mrtd, mrconfigid, mrowner, mrownerconfig, rtmr0..3
        }
        body.extend([0x99; 64]); // report data
        if spec.body_type == 3 {
            body.extend(spec.tee_tcb_svn2.unwrap_or(spec.tee_tcb_svn));
            body.extend([0xaa; 48]);
        }
        let mut signed = header;
        if spec.version == 5 {
            signed.extend(spec.body_type.to_le_bytes());
            signed.extend((body.len() as u32).to_le_bytes());
        }
        signed.extend(&body);
        let auth = [7u8; 32];
        let mut qe = Vec::new();
        qe.extend([3u8; 16]); // cpusvn
        qe.extend(0u32.to_le_bytes()); // miscselect
        qe.extend([0u8; 28]);
        qe.extend(hex::decode("1500000000000000e700000000000000").unwrap());
        qe.extend([0xee; 32]); // mrenclave
        qe.extend([0u8; 32]);
        qe.extend(spec.qe_mrsigner);
        qe.extend([0u8; 96]);
        qe.extend(2u16.to_le_bytes()); // isvprodid
        qe.extend(spec.qe_isvsvn.to_le_bytes());
        qe.extend([0u8; 60]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &[att_xy, &auth[..]].concat());
        qe.extend(digest.as_ref());
        qe.extend([if spec.break_binding { 1u8 } else { 0 }; 32]);
        assert_eq!(qe.len(), 384);
        let platform_ca = spec
            .platform_ca_der
            .as_ref()
            .unwrap_or(&self.platform_ca.der);
        let mut chain = vec![pem(&pck_der), pem(platform_ca)];
        if !spec.omit_root {
            chain.push(pem(&self.root.der));
        }
        let pem = chain.concat() + "\0";
        let mut inner = Vec::new();
        inner.extend(5u16.to_le_bytes());
        inner.extend((pem.len() as u32).to_le_bytes());
        inner.extend(pem.as_bytes());
        let mut outer = qe.clone();
        outer.extend(sign(&ring_key(&pck_key), &qe));
        outer.extend((auth.len() as u16).to_le_bytes());
        outer.extend(auth);
        outer.extend(inner);
        let mut sig_data = Vec::new();
        sig_data.extend(sign(&att, &signed));
        sig_data.extend(att_xy);
        sig_data.extend(6u16.to_le_bytes());
        sig_data.extend((outer.len() as u32).to_le_bytes());
        sig_data.extend(outer);
        let mut quote = signed;
        quote.extend((sig_data.len() as u32).to_le_bytes());
        quote.extend(sig_data);
        quote.extend([0u8; 100]); // buffer padding
        quote
    }

    fn signed(&self, body: &str) -> SignedBody {
        SignedBody {
            body: body.as_bytes().to_vec(),
            signature: sign(&ring_key(&self.tcb_signer.key), body.as_bytes()),
        }
    }

    fn collateral(&self, spec: &Spec) -> Collateral {
        let chain = vec![self.tcb_signer.der.clone(), self.root.der.clone()];
        Collateral::from_parts(CollateralParts {
            tcb_info: Some(self.signed(&spec.tcb_info)),
            qe_identity: Some(self.signed(&qe_identity())),
            tcb_info_chain: chain.clone(),
            qe_identity_chain: chain,
            crls: vec![
                self.crl(&self.root, &spec.root_revokes),
                self.crl(&self.platform_ca, &spec.ca_revokes),
            ],
            crl_issuer_chain: vec![self.platform_ca.der.clone(), self.root.der.clone()],
        })
        .unwrap()
    }

    fn run(&self, spec: &Spec, policy: &Policy) -> TdxVerdict {
        self.verifier().verify(
            &self.quote(spec),
            Some(&self.collateral(spec)),
            policy,
            at(),
        )
    }
}

fn pem(der: &[u8]) -> String {
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    let b64 = b64(der);
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s + "-----END CERTIFICATE-----\n"
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn level(sgx: u8, pcesvn: u16, tdx: u8, status: &str, advisories: &[&str]) -> String {
    let sgx: Vec<String> = (0..16)
        .map(|_| format!("{{\"svn\":{sgx},\"category\":\"BIOS\",\"type\":\"x\"}}"))
        .collect();
    let tdx: Vec<String> = (0..16)
        .map(|i| format!("{{\"svn\":{}}}", if i == 2 { tdx } else { 0 }))
        .collect();
    let adv: Vec<String> = advisories.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{{\"tcb\":{{\"sgxtcbcomponents\":[{}],\"pcesvn\":{pcesvn},\"tdxtcbcomponents\":[{}]}},\"tcbDate\":\"2025-01-01T00:00:00Z\",\"tcbStatus\":\"{status}\",\"advisoryIDs\":[{}]}}",
        sgx.join(","),
        tdx.join(","),
        adv.join(",")
    )
}

fn tcb_info(id: &str, fmspc: &str, issue: &str) -> String {
    let zero48 = "00".repeat(48);
    format!(
        "{{\"id\":\"{id}\",\"version\":3,\"issueDate\":\"{issue}\",\"nextUpdate\":\"2025-07-01T00:00:00Z\",\
         \"fmspc\":\"{fmspc}\",\"pceId\":\"0000\",\"tcbType\":0,\"tcbEvaluationDataNumber\":17,\
         \"tdxModule\":{{\"mrsigner\":\"{zero48}\",\"attributes\":\"0000000000000000\",\"attributesMask\":\"FFFFFFFFFFFFFFFF\"}},\
         \"tdxModuleIdentities\":[{{\"id\":\"TDX_01\",\"mrsigner\":\"{zero48}\",\"attributes\":\"0000000000000000\",\
         \"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"tcbLevels\":[\
         {{\"tcb\":{{\"isvsvn\":4}},\"tcbDate\":\"2025-01-01T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}},\
         {{\"tcb\":{{\"isvsvn\":2}},\"tcbDate\":\"2024-01-01T00:00:00Z\",\"tcbStatus\":\"OutOfDate\",\"advisoryIDs\":[\"INTEL-SA-00900\"]}}]}}],\
         \"tcbLevels\":[{},{},{}]}}",
        level(5, 13, 3, "UpToDate", &[]),
        level(
            3,
            11,
            2,
            "SWHardeningNeeded",
            &["INTEL-SA-00001", "INTEL-SA-00002"]
        ),
        level(1, 1, 1, "Revoked", &["INTEL-SA-00003"]),
    )
}

fn qe_identity() -> String {
    format!(
        "{{\"id\":\"TD_QE\",\"version\":2,\"issueDate\":\"2025-06-01T00:00:00Z\",\"nextUpdate\":\"2025-07-01T00:00:00Z\",\
         \"tcbEvaluationDataNumber\":17,\"miscselect\":\"00000000\",\"miscselectMask\":\"FFFFFFFF\",\
         \"attributes\":\"11000000000000000000000000000000\",\"attributesMask\":\"FBFFFFFFFFFFFFFF0000000000000000\",\
         \"mrsigner\":\"{}\",\"isvprodid\":2,\"tcbLevels\":[{{\"tcb\":{{\"isvsvn\":4}},\"tcbDate\":\"2025-01-01T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}}]}}",
        hex::encode_upper(QE_MRSIGNER)
    )
}

#[derive(Clone)]
struct Spec {
    version: u16,
    body_type: u16,
    tee_tcb_svn: [u8; 16],
    /// TDX 1.5 TEE_TCB_SVN2 (default: the same as TEE_TCB_SVN).
    tee_tcb_svn2: Option<[u8; 16]>,
    td_attributes: [u8; 8],
    mrsignerseam: [u8; 48],
    qe_mrsigner: [u8; 32],
    qe_isvsvn: u16,
    break_binding: bool,
    sgx_comps: [u8; 16],
    pcesvn: u16,
    pck_fmspc: [u8; 6],
    tcb_info: String,
    root_revokes: Vec<u64>,
    ca_revokes: Vec<u64>,
    /// The PCK platform CA certificate the quote carries (default: the simulator's).
    platform_ca_der: Option<Vec<u8>>,
    /// Leave the root out of the quote's PCK chain (the verifier finds it among its trust roots).
    omit_root: bool,
}

impl Default for Spec {
    fn default() -> Self {
        let mut tee_tcb_svn = [0u8; 16];
        tee_tcb_svn[..3].copy_from_slice(&[4, 1, 3]);
        Spec {
            version: 4,
            body_type: 2,
            tee_tcb_svn,
            tee_tcb_svn2: None,
            td_attributes: [0, 0, 0, 0x10, 0, 0, 0, 0],
            mrsignerseam: [0; 48],
            qe_mrsigner: QE_MRSIGNER,
            qe_isvsvn: 4,
            break_binding: false,
            sgx_comps: [5; 16],
            pcesvn: 13,
            pck_fmspc: FMSPC,
            tcb_info: tcb_info("TDX", &hex::encode(FMSPC), "2025-06-01T00:00:00Z"),
            root_revokes: vec![],
            ca_revokes: vec![0x99],
            platform_ca_der: None,
            omit_root: false,
        }
    }
}

fn reason(v: &TdxVerdict) -> Option<Reason> {
    v.result.as_ref().err().map(|r| r.reason)
}

fn accept_all() -> Policy {
    Policy::from_toml(
        "accept_tcb_status = [\"UpToDate\", \"SWHardeningNeeded\", \"ConfigurationNeeded\", \
         \"ConfigurationAndSWHardeningNeeded\", \"OutOfDate\", \"OutOfDateConfigurationNeeded\"]",
    )
    .unwrap()
}

#[test]
fn a_simulated_quote_verifies_under_its_root_and_says_so() {
    let sim = Sim::new();
    for (version, body_type) in [(4, 2), (5, 2), (5, 3)] {
        let spec = Spec {
            version,
            body_type,
            ..Spec::default()
        };
        let v = sim.run(&spec, &Policy::default());
        let accepted = v
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("v{version}/{body_type}: {e}"));
        assert_eq!(accepted.tcb_status, TcbStatus::UpToDate);
        assert!(accepted.revocation_checked);
        assert!(v.simulated);
        assert_eq!(v.claims["fmspc"], hex::encode(FMSPC));
        assert_eq!(v.claims["mrtd"], "11".repeat(48));
        assert_eq!(v.claims["rtmr3"], "88".repeat(48));
        assert_eq!(v.claims.get("mrservicetd").is_some(), body_type == 3);
        let verdict: cvm_attest::Verdict = v.into();
        assert_eq!(verdict.to_json()["simulated"], true);
    }
    // The same quote under the built-in Intel root.
    let spec = Spec::default();
    let v = TdxVerifier::new().verify(
        &sim.quote(&spec),
        Some(&sim.collateral(&spec)),
        &Policy::default(),
        at(),
    );
    assert_eq!(reason(&v), Some(Reason::UntrustedRoot));
    assert!(!v.simulated);
}

#[test]
fn revoked_pck_and_intermediate_certificates_are_refused() {
    let sim = Sim::new();
    let pck = Spec {
        ca_revokes: vec![1, 0x4242],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&pck, &Policy::default())),
        Some(Reason::PckRevoked)
    );
    let ca = Spec {
        root_revokes: vec![2],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&ca, &Policy::default())),
        Some(Reason::CertRevoked)
    );
}

#[test]
fn every_tcb_status_path() {
    let sim = Sim::new();
    // Platform below the best level: SWHardeningNeeded with its advisories.
    let sw = Spec {
        sgx_comps: [4; 16],
        ..Spec::default()
    };
    let v = sim.run(&sw, &Policy::default());
    assert_eq!(reason(&v), Some(Reason::TcbOutOfDate));
    assert_eq!(v.claims["tcb_status"], "SWHardeningNeeded");
    let v = sim.run(&sw, &accept_all());
    let a = v.result.unwrap();
    assert_eq!(a.tcb_status, TcbStatus::SWHardeningNeeded);
    assert_eq!(a.advisory_ids, ["INTEL-SA-00001", "INTEL-SA-00002"]);
    // PCESVN below the UpToDate level.
    let pce = Spec {
        pcesvn: 12,
        ..Spec::default()
    };
    assert_eq!(
        sim.run(&pce, &accept_all()).result.unwrap().tcb_status,
        TcbStatus::SWHardeningNeeded
    );
    // A TEE_TCB_SVN component below: with module major 1 the comparison starts at index 2.
    let mut tee = Spec::default();
    tee.tee_tcb_svn[2] = 2;
    assert_eq!(
        sim.run(&tee, &accept_all()).result.unwrap().tcb_status,
        TcbStatus::SWHardeningNeeded
    );
    // The revoked level.
    let revoked = Spec {
        sgx_comps: [1; 16],
        pcesvn: 1,
        ..Spec::default()
    };
    let mut tee_low = revoked.clone();
    tee_low.tee_tcb_svn[2] = 1;
    let v = sim.run(&tee_low, &accept_all());
    assert_eq!(reason(&v), Some(Reason::TcbRevoked));
    assert_eq!(v.claims["tcb_status"], "Revoked");
    // Below every level.
    let none = Spec {
        sgx_comps: [0; 16],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&none, &accept_all())),
        Some(Reason::TcbUnknown)
    );
    // An out-of-date TDX module makes an UpToDate platform OutOfDate, advisory included.
    let mut module = Spec::default();
    module.tee_tcb_svn[0] = 3;
    let v = sim.run(&module, &accept_all());
    let a = v.result.unwrap();
    assert_eq!(a.tcb_status, TcbStatus::OutOfDate);
    assert_eq!(a.advisory_ids, ["INTEL-SA-00900"]);
    assert_eq!(v.claims["tdx_module_status"], "OutOfDate");
    assert_eq!(v.claims["platform_status"], "UpToDate");
    // Module SVN below every level of its identity, an unknown major version, a foreign MRSIGNERSEAM.
    let mut low = Spec::default();
    low.tee_tcb_svn[0] = 1;
    assert_eq!(
        reason(&sim.run(&low, &accept_all())),
        Some(Reason::TcbUnknown)
    );
    let mut major = Spec::default();
    major.tee_tcb_svn[1] = 2;
    assert_eq!(
        reason(&sim.run(&major, &accept_all())),
        Some(Reason::TcbUnknown)
    );
    let signer = Spec {
        mrsignerseam: [1; 48],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&signer, &accept_all())),
        Some(Reason::TcbUnknown)
    );
    // TDX 1.0 style (major version 0): all 16 TDX components compared, tdxModule matched, no module status.
    let mut v10 = Spec::default();
    v10.tee_tcb_svn[..3].copy_from_slice(&[3, 0, 3]);
    let v = sim.run(&v10, &Policy::default());
    assert_eq!(v.result.unwrap().tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.claims.get("tdx_module_status"), None);
    v10.tee_tcb_svn[2] = 2;
    assert_eq!(
        sim.run(&v10, &accept_all()).result.unwrap().tcb_status,
        TcbStatus::SWHardeningNeeded
    );
}

#[test]
fn qe_identity_binding_fmspc_and_collateral_mismatches() {
    let sim = Sim::new();
    let qe = Spec {
        qe_mrsigner: [1; 32],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&qe, &Policy::default())),
        Some(Reason::QeIdentityMismatch)
    );
    let svn = Spec {
        qe_isvsvn: 3,
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&svn, &Policy::default())),
        Some(Reason::QeIdentityMismatch)
    );
    let binding = Spec {
        break_binding: true,
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&binding, &Policy::default())),
        Some(Reason::QeReportDataMismatch)
    );
    let fmspc = Spec {
        pck_fmspc: [0, 0x90, 0x6e, 0xd5, 0, 1],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&fmspc, &Policy::default())),
        Some(Reason::FmspcMismatch)
    );
    let sgx = Spec {
        tcb_info: tcb_info("SGX", &hex::encode(FMSPC), "2025-06-01T00:00:00Z"),
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&sgx, &Policy::default())),
        Some(Reason::TcbUnknown)
    );
    let future = Spec {
        tcb_info: tcb_info("TDX", &hex::encode(FMSPC), "2025-06-20T00:00:00Z"),
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&future, &Policy::default())),
        Some(Reason::CollateralExpired)
    );
    let debug = Spec {
        td_attributes: [1, 0, 0, 0x10, 0, 0, 0, 0],
        ..Spec::default()
    };
    assert_eq!(
        reason(&sim.run(&debug, &Policy::default())),
        Some(Reason::PolicyDebug)
    );
}

#[test]
fn collateral_signed_under_another_root_is_refused() {
    let sim = Sim::new();
    let other = Sim::new();
    let spec = Spec::default();
    // Both roots trusted: the PCK chain ends at one, the collateral at the other.
    let verifier = TdxVerifier::with_trust_roots(&[sim.root.der.clone(), other.root.der.clone()])
        .unwrap()
        .allow_simulated(true);
    let mut parts = other.collateral(&spec).into_parts();
    parts.crls.clear(); // (the other root's CRL carries the same issuer name: its signature fails first)
    let c = Collateral::from_parts(parts).unwrap();
    let v = verifier.verify(&sim.quote(&spec), Some(&c), &Policy::default(), at());
    assert_eq!(
        reason(&v),
        Some(Reason::CollateralChainInvalid),
        "{:?}",
        v.result
    );
}

#[test]
fn tdx15_current_tcb_is_appraised_too() {
    let sim = Sim::new();
    let td15 = Spec {
        version: 5,
        body_type: 3,
        ..Spec::default()
    };
    // Launched with an out-of-date module (SVN 3), running the current one (SVN 4) after a TD-preserving
    // update: the launch status stands (OutOfDate) and a relaunch is advised.
    let mut relaunch = td15.clone();
    relaunch.tee_tcb_svn[0] = 3;
    relaunch.tee_tcb_svn2 = Some(td15.tee_tcb_svn);
    let v = sim.run(&relaunch, &Policy::default());
    assert_eq!(reason(&v), Some(Reason::TcbOutOfDate));
    assert_eq!(v.claims["tcb_status"], "OutOfDate");
    assert_eq!(v.claims["current_tcb_status"], "UpToDate");
    assert_eq!(v.claims["td_relaunch_advised"], true);
    let ok = sim.run(&td15, &Policy::default());
    assert_eq!(ok.claims["td_relaunch_advised"], false);
    assert!(ok.result.is_ok());
    // A current TCB no level knows: TCB_UNKNOWN, as for the launch TCB.
    let mut unknown = td15.clone();
    unknown.tee_tcb_svn2 = Some([0; 16]);
    assert_eq!(
        reason(&sim.run(&unknown, &accept_all())),
        Some(Reason::TcbUnknown)
    );
}

#[test]
fn a_certificate_whose_signature_by_a_trusted_root_fails_is_chain_invalid() {
    let sim = Sim::new();
    // The last byte of the platform CA's DER is the last byte of its signature.
    let mut bad_ca = sim.platform_ca.der.clone();
    *bad_ca.last_mut().unwrap() ^= 1;
    for omit_root in [true, false] {
        let spec = Spec {
            platform_ca_der: Some(bad_ca.clone()),
            omit_root,
            ..Spec::default()
        };
        let v = sim.run(&spec, &Policy::default());
        assert_eq!(reason(&v), Some(Reason::ChainInvalid), "{:?}", v.result);
    }
    // The intact CA without the root in the quote: the trusted root signed it.
    let intact = Spec {
        omit_root: true,
        ..Spec::default()
    };
    assert!(sim.run(&intact, &Policy::default()).result.is_ok());
    // Another root of the same name: the quote's chain ends at a self-issued root that is not trusted.
    let other = Sim::new();
    let v = other.verifier().verify(
        &sim.quote(&Spec::default()),
        Some(&other.collateral(&Spec::default())),
        &Policy::default(),
        at(),
    );
    assert_eq!(reason(&v), Some(Reason::UntrustedRoot), "{:?}", v.result);
}
