//! A simulated AMD chain (made here with rcgen; ECDSA P-384 instead of RSA-PSS, root organization
//! "cvm simulator") signing byte-exact reports, to reach the checks real evidence cannot: chip id and TCB
//! bindings, product consistency, CRLs, and the `simulated` flag. The production code path is the same; only
//! the trust root differs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{policy, reason};
use cvm_attest::snp::report::{REPORT_LEN, SIG_R_OFFSET, SIG_S_OFFSET, SIGNED_LEN};
use cvm_attest::snp::{SnpInputs, SnpVerifier};
use cvm_attest::{Policy, Reason, Verdict};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension, DnType,
    IsCa, Issuer, KeyIdMethod, KeyPair, PKCS_ECDSA_P384_SHA384, RevokedCertParams, SerialNumber,
    date_time_ymd,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

const AT: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn ca_params(cn: &str, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "cvm simulator");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2045, 1, 1);
    p.serial_number = Some(SerialNumber::from(serial));
    p
}

fn ark(product: &str) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let params = ca_params(&format!("ARK-{product}"), 0x10000);
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Ca { params, key, der }
}

fn ask(product: &str, ark: &Ca) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let params = ca_params(&format!("SEV-{product}"), 0x10001);
    let der = params
        .signed_by(&key, &ark.issuer())
        .unwrap()
        .der()
        .to_vec();
    Ca { params, key, der }
}

fn der_int(v: u8) -> Vec<u8> {
    if v < 0x80 {
        vec![2, 1, v]
    } else {
        vec![2, 2, 0, v]
    }
}

/// What the simulated VCEK certifies.
struct VcekSpec<'a> {
    product_name: &'a str,
    hw_id: Vec<u8>,
    /// (arc under 1.3.6.1.4.1.3704.1.3, value)
    spl: Vec<(u64, u8)>,
}

struct Vcek {
    der: Vec<u8>,
    signer: EcdsaKeyPair,
}

fn vcek(spec: &VcekSpec<'_>, ask: &Ca) -> Vcek {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "SEV-VCEK");
    p.distinguished_name
        .push(DnType::OrganizationName, "cvm simulator");
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2032, 1, 1);
    p.serial_number = Some(SerialNumber::from(vec![0u8]));
    let amd = |sub: &[u64]| [&[1, 3, 6, 1, 4, 1, 3704, 1][..], sub].concat();
    p.custom_extensions
        .push(CustomExtension::from_oid_content(&amd(&[1]), der_int(0)));
    let mut name = vec![0x16, spec.product_name.len() as u8];
    name.extend_from_slice(spec.product_name.as_bytes());
    p.custom_extensions
        .push(CustomExtension::from_oid_content(&amd(&[2]), name));
    for (arc, v) in &spec.spl {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &amd(&[3, *arc]),
            der_int(*v),
        ));
    }
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &amd(&[4]),
        spec.hw_id.clone(),
    ));
    let der = p.signed_by(&key, &ask.issuer()).unwrap().der().to_vec();
    let signer = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    Vcek { der, signer }
}

/// A version-3 report with the given CPUID, CHIP_ID and REPORTED_TCB, signed by `vcek`.
fn report(vcek: &Vcek, cpuid: (u8, u8), chip_id: &[u8; 64], reported_tcb: u64) -> Vec<u8> {
    let mut r = vec![0u8; REPORT_LEN];
    r[..4].copy_from_slice(&3u32.to_le_bytes());
    r[0x08..0x10].copy_from_slice(&0x30000u64.to_le_bytes());
    r[0x34] = 1;
    r[0x38..0x40].copy_from_slice(&reported_tcb.to_le_bytes());
    r[0x50..0x90].fill(0x5a);
    r[0x90..0xC0].fill(0x11);
    r[0x180..0x188].copy_from_slice(&reported_tcb.to_le_bytes());
    r[0x188] = cpuid.0;
    r[0x189] = cpuid.1;
    r[0x18A] = 1;
    r[0x1A0..0x1E0].copy_from_slice(chip_id);
    sign(vcek, &mut r);
    r
}

fn sign(vcek: &Vcek, r: &mut [u8]) {
    let sig = vcek
        .signer
        .sign(&SystemRandom::new(), &r[..SIGNED_LEN])
        .unwrap();
    let (rr, ss) = sig.as_ref().split_at(48);
    r[SIG_R_OFFSET..SIG_R_OFFSET + 72].fill(0);
    r[SIG_S_OFFSET..SIG_S_OFFSET + 72].fill(0);
    for (i, b) in rr.iter().rev().enumerate() {
        r[SIG_R_OFFSET + i] = *b;
    }
    for (i, b) in ss.iter().rev().enumerate() {
        r[SIG_S_OFFSET + i] = *b;
    }
}

const MILAN_TCB: u64 = 0xdb18_0000_0000_0004; // bl 4, tee 0, snp 0x18, ucode 0xdb
fn milan_spl() -> Vec<(u64, u8)> {
    vec![
        (1, 4),
        (2, 0),
        (3, 0x18),
        (4, 0),
        (5, 0),
        (6, 0),
        (7, 0),
        (8, 0xdb),
    ]
}

struct World {
    ark: Ca,
    ask: Ca,
    vcek: Vcek,
    chip: [u8; 64],
}

fn milan() -> World {
    let ark = ark("Milan");
    let ask = ask("Milan", &ark);
    let chip = [0xc5; 64];
    let vcek = vcek(
        &VcekSpec {
            product_name: "Milan-B0",
            hw_id: chip.to_vec(),
            spl: milan_spl(),
        },
        &ask,
    );
    World {
        ark,
        ask,
        vcek,
        chip,
    }
}

fn verify(w: &World, report: &[u8], crls: &[Vec<u8>], p: &Policy) -> Verdict {
    let verifier = SnpVerifier::with_trust_roots(std::slice::from_ref(&w.ark.der)).unwrap();
    verifier.verify(
        report,
        &SnpInputs {
            certs: &[w.vcek.der.clone(), w.ask.der.clone()],
            crls,
            policy: p,
            at: AT,
        },
    )
}

#[test]
fn a_simulated_chain_verifies_through_the_same_path_and_is_marked_simulated() {
    let w = milan();
    let r = report(&w.vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    let v = verify(&w, &r, &[], &Policy::default());
    assert!(v.accepted(), "{:?}", v.outcome);
    assert!(v.simulated);
    assert_eq!(v.to_json()["simulated"], json!(true));
    assert_eq!(v.claims["product"], json!("Milan"));
    // AMD's built-in roots do not trust it.
    let builtin = SnpVerifier::new().unwrap();
    let v = builtin.verify(
        &r,
        &SnpInputs {
            certs: &[w.vcek.der.clone(), w.ask.der.clone()],
            crls: &[],
            policy: &Policy::default(),
            at: AT,
        },
    );
    assert_eq!(reason(&v), Some(Reason::UntrustedRoot));
    assert!(!v.simulated);
}

#[test]
fn a_vcek_for_another_chip_is_chip_id_mismatch() {
    let w = milan();
    let mut other = w.chip;
    other[63] ^= 1;
    let r = report(&w.vcek, (0x19, 0x01), &other, MILAN_TCB);
    assert_eq!(
        reason(&verify(&w, &r, &[], &Policy::default())),
        Some(Reason::ChipIdMismatch)
    );
}

#[test]
fn spl_extensions_must_equal_reported_tcb() {
    let w = milan();
    for tcb in [
        MILAN_TCB + 1,         // bootloader
        MILAN_TCB ^ (1 << 8),  // tee
        MILAN_TCB ^ (1 << 48), // snp
        MILAN_TCB ^ (1 << 56), // microcode
        MILAN_TCB | (1 << 16), // reserved byte 2 vs spl_4
    ] {
        let r = report(&w.vcek, (0x19, 0x01), &w.chip, tcb);
        let v = verify(&w, &r, &[], &Policy::default());
        assert_eq!(
            reason(&v),
            Some(Reason::TcbMismatch),
            "{tcb:#x}: {:?}",
            v.outcome
        );
    }
}

#[test]
fn products_must_agree_cpuid_product_name_and_chain() {
    let w = milan();
    // CPUID says Genoa (family 0x19, model 0x11); the chain is Milan.
    let r = report(&w.vcek, (0x19, 0x11), &w.chip, MILAN_TCB);
    let v = verify(&w, &r, &[], &Policy::default());
    assert_eq!(reason(&v), Some(Reason::ChainInvalid));
    assert!(v.outcome.unwrap_err().message.contains("CPUID"));
    // An unknown CPUID.
    let r = report(&w.vcek, (0x17, 0x31), &w.chip, MILAN_TCB);
    assert_eq!(
        reason(&verify(&w, &r, &[], &Policy::default())),
        Some(Reason::ChainInvalid)
    );
    // A VCEK whose productName1 says Genoa under the Milan ASK.
    let genoa_vcek = vcek(
        &VcekSpec {
            product_name: "Genoa",
            hw_id: w.chip.to_vec(),
            spl: milan_spl(),
        },
        &w.ask,
    );
    let r = report(&genoa_vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    let w2 = World {
        vcek: genoa_vcek,
        ..w
    };
    let v = verify(&w2, &r, &[], &Policy::default());
    assert_eq!(reason(&v), Some(Reason::ChainInvalid));
    assert!(v.outcome.unwrap_err().message.contains("productName1"));
}

#[test]
fn an_impostor_ask_with_the_right_name_is_chain_invalid() {
    let w = milan();
    let impostor = ask("Milan", &w.ark);
    let r = report(&w.vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    let verifier = SnpVerifier::with_trust_roots(std::slice::from_ref(&w.ark.der)).unwrap();
    let v = verifier.verify(
        &r,
        &SnpInputs {
            certs: &[w.vcek.der.clone(), impostor.der.clone()],
            crls: &[],
            policy: &Policy::default(),
            at: AT,
        },
    );
    assert_eq!(reason(&v), Some(Reason::ChainInvalid));
}

#[test]
fn turin_binds_an_8_byte_hwid_and_uses_its_tcb_layout() {
    let ark = ark("Turin");
    let ask = ask("Turin", &ark);
    let mut chip = [0u8; 64];
    chip[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    // fmc 1, bl 2, tee 3, snp 4, ucode 0x47
    let tcb: u64 = 0x4700_0000_0403_0201;
    let spl = vec![
        (9, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (5, 0),
        (6, 0),
        (7, 0),
        (8, 0x47),
    ];
    let v = vcek(
        &VcekSpec {
            product_name: "Turin",
            hw_id: chip[..8].to_vec(),
            spl,
        },
        &ask,
    );
    let w = World {
        ark,
        ask,
        vcek: v,
        chip,
    };
    let r = report(&w.vcek, (0x1a, 0x02), &chip, tcb);
    let verdict = verify(&w, &r, &[], &Policy::default());
    assert!(verdict.accepted(), "{:?}", verdict.outcome);
    assert_eq!(
        verdict.claims["reported_tcb"],
        json!({"raw": "0x4700000004030201", "fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 0x47})
    );
    assert_eq!(
        reason(&verify(
            &w,
            &r,
            &[],
            &policy("[snp]\nmin_tcb = { fmc = 2 }")
        )),
        Some(Reason::PolicyTcb)
    );
    // CHIP_ID bytes after the 8th must be zero on Turin.
    let mut long = chip;
    long[8] = 1;
    let r = report(&w.vcek, (0x1a, 0x02), &long, tcb);
    assert_eq!(
        reason(&verify(&w, &r, &[], &Policy::default())),
        Some(Reason::ChipIdMismatch)
    );
}

fn crl(issuer: &Ca, revoked: &[Vec<u8>], next_update: (i32, u8, u8)) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 6, 1),
        next_update: date_time_ymd(next_update.0, next_update.1, next_update.2),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(s.clone()),
                revocation_time: date_time_ymd(2025, 6, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer.issuer())
    .unwrap()
    .der()
    .to_vec()
}

#[test]
fn crls_revoke_expire_and_are_reported() {
    let w = milan();
    let r = report(&w.vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    let p = Policy::default();
    let require = policy("require_revocation = true");

    // A current ARK CRL that lists nothing we use: checked, accepted, also under require_revocation.
    let ark_crl = crl(&w.ark, &[vec![0x05]], (2027, 1, 1));
    let v = verify(&w, &r, std::slice::from_ref(&ark_crl), &require);
    assert!(v.accepted(), "{:?}", v.outcome);
    assert_eq!(v.claims["revocation_checked"], json!(true));

    // The ASK revoked by the ARK.
    let ask_serial = vec![0x01, 0x00, 0x01];
    let revoked = crl(&w.ark, &[ask_serial], (2027, 1, 1));
    let v = verify(&w, &r, &[revoked], &p);
    assert_eq!(reason(&v), Some(Reason::CertRevoked));
    assert!(v.outcome.unwrap_err().message.contains("ASK"));

    // The VCEK (serial 0) revoked by the ASK.
    let v = verify(&w, &r, &[crl(&w.ask, &[vec![0]], (2027, 1, 1))], &p);
    assert_eq!(reason(&v), Some(Reason::CertRevoked));

    // A CRL past its nextUpdate.
    let v = verify(&w, &r, &[crl(&w.ark, &[], (2025, 12, 1))], &p);
    assert_eq!(reason(&v), Some(Reason::CollateralExpired));

    // A CRL in the ARK's name signed by another key.
    let forger = ark("Milan");
    let v = verify(&w, &r, &[crl(&forger, &[], (2027, 1, 1))], &p);
    assert_eq!(reason(&v), Some(Reason::CollateralSigInvalid));

    // A CRL from an unrelated CA is not applied: not checked, and required → missing.
    let other = ark("Genoa");
    let unrelated = crl(&other, &[vec![0]], (2027, 1, 1));
    let v = verify(&w, &r, std::slice::from_ref(&unrelated), &p);
    assert!(v.accepted());
    assert_eq!(v.claims["revocation_checked"], json!(false));
    assert_eq!(
        reason(&verify(&w, &r, &[unrelated], &require)),
        Some(Reason::CollateralMissing)
    );
}

#[test]
fn revocation_comes_after_bindings_and_before_policy() {
    let w = milan();
    let revoked = crl(&w.ask, &[vec![0]], (2027, 1, 1));
    // Bindings fail first.
    let mut other = w.chip;
    other[0] ^= 1;
    let r = report(&w.vcek, (0x19, 0x01), &other, MILAN_TCB);
    assert_eq!(
        reason(&verify(
            &w,
            &r,
            std::slice::from_ref(&revoked),
            &Policy::default()
        )),
        Some(Reason::ChipIdMismatch)
    );
    // Revocation before policy.
    let mut r = report(&w.vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    r[0x08..0x10].copy_from_slice(&0xb0000u64.to_le_bytes());
    sign(&w.vcek, &mut r);
    assert_eq!(
        reason(&verify(
            &w,
            &r,
            std::slice::from_ref(&revoked),
            &Policy::default()
        )),
        Some(Reason::CertRevoked)
    );
    assert_eq!(
        reason(&verify(&w, &r, &[], &Policy::default())),
        Some(Reason::PolicyDebug)
    );
}
