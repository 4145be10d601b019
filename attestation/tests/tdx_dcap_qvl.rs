//! Differential test against dcap-qvl (a test oracle only): for every vector both can judge, the same
//! verdict and TCB status, fed the same collateral.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod tdx_common;

use cvm_attest::Policy;
use cvm_attest::tdx::{Collateral, TdxVerifier};
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::verify::QuoteVerifier;
use tdx_common::*;

fn pem_chain(ders: &[Vec<u8>]) -> String {
    // dcap-qvl wants PEM; re-encode the DER we loaded.
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64_encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn base64_encode(bytes: &[u8]) -> String {
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
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The same collateral in dcap-qvl's form (its JSON carries hex strings: decoded here into bytes). `None`
/// when dcap-qvl cannot take it (it requires both a root CA CRL and a PCK CRL).
fn for_dcap_qvl(c: &Collateral) -> Option<QuoteCollateralV3> {
    let parts = c.clone().into_parts();
    let issuer = |der: &Vec<u8>| {
        cvm_attest::pki::parse_crl(der)
            .unwrap()
            .issuer()
            .to_string()
    };
    let root_ca_crl = parts
        .crls
        .iter()
        .find(|d| issuer(d).contains("Root CA"))?
        .clone();
    let pck_crl = parts
        .crls
        .iter()
        .find(|d| issuer(d).contains("PCK"))?
        .clone();
    let tcb = parts.tcb_info?;
    let qe = parts.qe_identity?;
    Some(QuoteCollateralV3 {
        pck_crl_issuer_chain: pem_chain(&parts.crl_issuer_chain),
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain: pem_chain(&parts.tcb_info_chain),
        tcb_info: String::from_utf8(tcb.body).unwrap(),
        tcb_info_signature: tcb.signature.to_vec(),
        qe_identity_issuer_chain: pem_chain(&parts.qe_identity_chain),
        qe_identity: String::from_utf8(qe.body).unwrap(),
        qe_identity_signature: qe.signature.to_vec(),
        pck_certificate_chain: None,
    })
}

#[test]
fn verdicts_and_tcb_status_agree_with_dcap_qvl() {
    let ours = TdxVerifier::new();
    let root = std::fs::read(vectors().join("tdx/intel-sgx-root-ca.der")).unwrap();
    // Debug TDs are a policy question; both verifiers are told to allow them here.
    let oracle = QuoteVerifier::new(root).allow_debug(true);
    let mut judged = 0;
    for v in tdx_vectors() {
        let Some(collateral) = v.collateral() else {
            // No collateral: dcap-qvl cannot run at all; we answer COLLATERAL_MISSING (tdx_vectors.rs).
            continue;
        };
        let Some(theirs_collateral) = for_dcap_qvl(&collateral) else {
            // pcs-2025-trustee has no CRLs, which dcap-qvl requires; we accept without them and say
            // revocation_checked: false (DESIGN.md: CRLs are optional inputs).
            eprintln!("{}: dcap-qvl cannot judge it (no CRLs)", v.id);
            continue;
        };
        for at in [v.at(), t(LATE)] {
            let mine = ours.verify(&v.quote, Some(&collateral), &v.permissive_policy(), at);
            let theirs = oracle.verify(&v.quote, &theirs_collateral, at as u64);
            match (&mine.result, &theirs) {
                (Ok(a), Ok(r)) => assert_eq!(a.tcb_status.as_str(), r.status, "{}", v.id),
                (Err(_), Err(_)) => {}
                (m, t) => panic!("{} at {at}: we say {m:?}, dcap-qvl says {t:?}", v.id),
            }
            judged += 1;
        }
        // A flipped bit of MRTD: both refuse.
        let mut bad = v.quote.clone();
        bad[48 + 136] ^= 0x80;
        assert!(
            ours.verify(&bad, Some(&collateral), &v.permissive_policy(), v.at())
                .result
                .is_err()
        );
        assert!(
            oracle
                .verify(&bad, &theirs_collateral, v.at() as u64)
                .is_err()
        );
    }
    assert!(judged >= 16, "only {judged} judgements");
}

#[test]
fn dcap_qvl_and_we_agree_the_debug_td_is_refused_by_default() {
    let v = tdx_vectors()
        .into_iter()
        .find(|v| v.id == "tdx-v4-trustee-quote4")
        .unwrap();
    let c = v.collateral().unwrap();
    let root = std::fs::read(vectors().join("tdx/intel-sgx-root-ca.der")).unwrap();
    let theirs =
        QuoteVerifier::new(root).verify(&v.quote, &for_dcap_qvl(&c).unwrap(), v.at() as u64);
    assert!(theirs.is_err());
    let mine = TdxVerifier::new().verify(&v.quote, Some(&c), &Policy::default(), v.at());
    assert!(mine.result.is_err());
}
