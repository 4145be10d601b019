//! A simulated AMD chain (made with `cvm_attest::sim`: RSA-4096 ARK and ASK signing with RSASSA-PSS as AMD
//! does, root organization "cvm simulator") signing byte-exact reports, to reach the checks real evidence
//! cannot: chip id and TCB bindings, product consistency, CRLs, the `simulated` flag and its refusal. The
//! production code path is the same; only the trust root differs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{policy, reason};
use cvm_attest::sim::amd::{AmdCa, VcekSpec as SimVcekSpec};
use cvm_attest::sim::drbg::Drbg;
use cvm_attest::sim::{SimAmd, SnpRequest, ecdsa, snp::sign_report};
use cvm_attest::snp::{Product, SnpInputs, SnpVerifier};
use cvm_attest::{Policy, Reason, Verdict};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const AT: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const Y2020: i64 = 1_577_836_800;
const Y2025: i64 = 1_735_689_600;
const Y2032: i64 = 1_956_528_000;
const Y2045: i64 = 2_366_841_600;

/// A fresh DRBG for every key, so each call makes a new key.
fn drbg(what: &str) -> Drbg {
    static N: AtomicUsize = AtomicUsize::new(0);
    Drbg::new(
        b"snp_simulated",
        &format!("{what} {}", N.fetch_add(1, Ordering::Relaxed)),
    )
}

fn product(name: &str) -> Product {
    Product::from_name(name).unwrap()
}

struct Ca {
    ca: AmdCa,
    der: Vec<u8>,
}

fn ark(name: &str) -> Ca {
    let ca = AmdCa::ark(product(name), &mut drbg("ark"), Y2020, Y2045).unwrap();
    Ca {
        der: ca.der().to_vec(),
        ca,
    }
}

fn ask(name: &str, ark: &Ca) -> Ca {
    let ca = AmdCa::ask(product(name), &ark.ca, &mut drbg("ask"), Y2020, Y2045).unwrap();
    Ca {
        der: ca.der().to_vec(),
        ca,
    }
}

/// One ARK and ASK per product for the whole test binary (RSA-4096 key generation is the slow part); the
/// tests that need other keys call [`ark`] and [`ask`].
fn shared_cas(name: &str) -> (Ca, Ca) {
    /// (product, ARK key, ARK DER, ASK key, ASK DER)
    type Entry = (String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if !cache.iter().any(|c| c.0 == name) {
        let ark = ark(name);
        let ask = ask(name, &ark);
        cache.push((
            name.to_owned(),
            ark.ca.key_pkcs1().to_vec(),
            ark.der,
            ask.ca.key_pkcs1().to_vec(),
            ask.der,
        ));
    }
    let (_, ark_key, ark_der, ask_key, ask_der) = cache.iter().find(|c| c.0 == name).unwrap();
    let load = |key: &[u8], der: &[u8]| Ca {
        ca: AmdCa::load(key, der).unwrap(),
        der: der.to_vec(),
    };
    (load(ark_key, ark_der), load(ask_key, ask_der))
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
    pkcs8: Vec<u8>,
    signer: EcdsaKeyPair,
}

fn vcek(spec: &VcekSpec<'_>, ask: &Ca) -> Vcek {
    let pkcs8 =
        ecdsa::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, 48, &mut drbg("vcek")).unwrap();
    let signer = ecdsa::load(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, "VCEK").unwrap();
    let der = ask
        .ca
        .issue_vcek(
            &SimVcekSpec {
                product_name: spec.product_name.to_owned(),
                struct_version: 0,
                hw_id: spec.hw_id.clone(),
                spl: spec.spl.clone(),
                not_before: Y2025,
                not_after: Y2032,
            },
            signer.public_key().as_ref(),
            &mut drbg("vcek certificate"),
        )
        .unwrap();
    Vcek { der, pkcs8, signer }
}

/// A version-3 report from the simulator, then given this CPUID, CHIP_ID and REPORTED_TCB and signed again
/// by `vcek` (so the fields can disagree with the certificate).
fn report(vcek: &Vcek, cpuid: (u8, u8), chip_id: &[u8; 64], reported_tcb: u64) -> Vec<u8> {
    let sim = SimAmd::from_parts(&vcek.pkcs8, &vcek.der, &vcek.der, &vcek.der).unwrap();
    let mut r = sim
        .snp_report(&SnpRequest {
            report_data: [0x5a; 64],
            measurement: [0x11; 48],
            version: 3,
            ..Default::default()
        })
        .unwrap();
    r[0x38..0x40].copy_from_slice(&reported_tcb.to_le_bytes());
    r[0x180..0x188].copy_from_slice(&reported_tcb.to_le_bytes());
    r[0x188] = cpuid.0;
    r[0x189] = cpuid.1;
    r[0x1A0..0x1E0].copy_from_slice(chip_id);
    sign(vcek, &mut r);
    r
}

fn sign(vcek: &Vcek, r: &mut [u8]) {
    sign_report(&vcek.signer, r, &SystemRandom::new()).unwrap();
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
    let (ark, ask) = shared_cas("Milan");
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
    let verifier = SnpVerifier::with_trust_roots(std::slice::from_ref(&w.ark.der))
        .unwrap()
        .allow_simulated(true);
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

/// Verify under the world's ARK (simulated evidence allowed) with these certificates and the default policy.
fn verify_certs(w: &World, report: &[u8], certs: &[Vec<u8>]) -> Verdict {
    SnpVerifier::with_trust_roots(std::slice::from_ref(&w.ark.der))
        .unwrap()
        .allow_simulated(true)
        .verify(
            report,
            &SnpInputs {
                certs,
                crls: &[],
                policy: &Policy::default(),
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
fn a_verifier_not_in_simulated_mode_refuses_simulated_evidence_after_the_chain_step() {
    let w = milan();
    let r = report(&w.vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    let verifier = SnpVerifier::with_trust_roots(std::slice::from_ref(&w.ark.der)).unwrap();
    let inputs = SnpInputs {
        certs: &[w.vcek.der.clone(), w.ask.der.clone()],
        crls: &[],
        policy: &Policy::default(),
        at: AT,
    };
    let v = verifier.verify(&r, &inputs);
    assert_eq!(reason(&v), Some(Reason::SimulatedNotAllowed));
    assert!(v.simulated);
    // A broken signature is still reported as such: refusal comes after the signature and chain steps.
    let mut bad = r.clone();
    bad[0x90] ^= 1;
    assert_eq!(
        reason(&verifier.verify(&bad, &inputs)),
        Some(Reason::SignatureInvalid)
    );
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
    let v = verify_certs(&w, &r, &[w.vcek.der.clone(), impostor.der.clone()]);
    assert_eq!(reason(&v), Some(Reason::ChainInvalid));
}

#[test]
fn turin_binds_an_8_byte_hwid_and_uses_its_tcb_layout() {
    let (ark, ask) = shared_cas("Turin");
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
    let (y, m, d) = next_update;
    let next = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
        .unwrap()
        .midnight()
        .assume_utc()
        .unix_timestamp();
    let serials: Vec<&[u8]> = revoked.iter().map(Vec::as_slice).collect();
    issuer
        .ca
        .crl(&serials, 1_748_736_000, next, &mut drbg("crl")) // thisUpdate 2025-06-01
        .unwrap()
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

#[test]
fn an_ask_whose_signature_by_the_trusted_ark_fails_is_chain_invalid_not_untrusted_root() {
    let w = milan();
    let r = report(&w.vcek, (0x19, 0x01), &w.chip, MILAN_TCB);
    // The last byte of the ASK's DER is the last byte of its signature.
    let mut bad_ask = w.ask.der.clone();
    *bad_ask.last_mut().unwrap() ^= 1;
    let v = verify_certs(&w, &r, &[w.vcek.der.clone(), bad_ask]);
    // (The intact ASK under roots that do not name it is UNTRUSTED_ROOT: see the simulated-chain test above.)
    assert_eq!(reason(&v), Some(Reason::ChainInvalid), "{:?}", v.outcome);
}
