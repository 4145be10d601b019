//! Golden KBS payloads (tests/data/kbs, made with the guest side's own crates: see its README): our decoders
//! read exactly what guest-components sends, our REPORT_DATA is the one it asks its TEE for, the real SNP
//! reports and TDX quote of shared/vectors come out of their wrapping byte for byte and verify at their
//! `verifies_at` time, and our agent wraps a report exactly as guest-components does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod tdx_common;

use cvm_attest::Policy;
use cvm_attest::kbs::evidence::{self, KbsTee};
use cvm_attest::kbs::payload::{self, Attestation, HashAlgorithm, Request};
use cvm_attest::kbs::{canonical, snp_json};
use cvm_attest::snp::{SnpInputs, SnpVerifier};
use serde_json::Value;
use std::path::PathBuf;

fn golden(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kbs")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn vector(rel: &str) -> Vec<u8> {
    std::fs::read(tdx_common::vectors().join(rel)).unwrap()
}

fn at(id: &str) -> i64 {
    let m: Value = serde_json::from_slice(&vector("MANIFEST.json")).unwrap();
    let all = m["snp"]
        .as_array()
        .unwrap()
        .iter()
        .chain(m["tdx"].as_array().unwrap());
    let e = all.into_iter().find(|e| e["id"] == id).unwrap();
    tdx_common::t(e["expected"]["verifies_at"].as_str().unwrap())
}

/// The built-in roots' verdict on unwrapped SNP evidence (debug allowed) at `at`.
fn verify_snp(u: &evidence::Unwrapped, at: i64) -> Result<(), cvm_attest::Rejection> {
    let allow_debug = Policy::from_toml("allow_debug = true").unwrap();
    let inputs = SnpInputs {
        certs: &u.certs,
        crls: &[],
        policy: &allow_debug,
        at,
    };
    SnpVerifier::new()
        .unwrap()
        .verify(&u.evidence, &inputs)
        .outcome
}

#[test]
fn auth_requests_of_the_guest_side_decode_and_select_sha384() {
    for (file, tee) in [
        ("auth-snp.json", KbsTee::Snp),
        ("auth-tdx.json", KbsTee::Tdx),
        ("auth-sample.json", KbsTee::Sample),
    ] {
        let r: Request = payload::decode(&golden(file)).unwrap();
        assert_eq!(r.version, cvm_attest::kbs::PROTOCOL_VERSION);
        assert_eq!(KbsTee::parse(&r.tee), Some(tee));
        assert_eq!(
            HashAlgorithm::select(&r.extra_params),
            Some(HashAlgorithm::Sha384)
        );
    }
}

#[test]
fn report_data_is_the_one_the_guest_side_computes_for_every_hash() {
    let a: Attestation = payload::decode(&golden("attest-sample.json")).unwrap();
    let rd = &a.runtime_data;
    let json = canonical::runtime_data_json(
        &rd.nonce,
        &rd.tee_pubkey,
        &a.tee_evidence.additional_evidence,
    );
    assert_eq!(
        json.as_bytes(),
        golden("runtime-data-canonical.json").as_slice()
    );
    let want: Value = serde_json::from_slice(&golden("runtime-data-report-data.json")).unwrap();
    for h in [
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
    ] {
        let got = canonical::report_data(h, &rd.nonce, &rd.tee_pubkey, "");
        assert_eq!(
            hex::encode(got),
            want[h.as_str()].as_str().unwrap(),
            "{}",
            h.as_str()
        );
    }
}

#[test]
fn real_snp_reports_come_out_of_their_wrapping_byte_for_byte_and_verify_at_their_time() {
    for id in ["milan-trustee", "milan-virtee", "genoa-oak", "turin-oak"] {
        let a: Attestation = payload::decode(&golden(&format!("attest-snp-{id}.json"))).unwrap();
        let u = evidence::unwrap(KbsTee::Snp, &a.tee_evidence.primary_evidence).unwrap();
        let report = vector(&format!("snp/{id}-report.bin"));
        let vcek = vector(&format!("snp/{id}-vcek.der"));
        // The signed part and the signature are the firmware's; the reserved tail of the signature area is
        // zero in the rebuilt report (it is not signed).
        assert_eq!(u.evidence[..0x2A0 + 144], report[..0x2A0 + 144], "{id}");
        assert_eq!(u.certs, vec![vcek.clone()], "{id}");
        let verdict = verify_snp(&u, at(&format!("snp-{id}")));
        assert!(verdict.is_ok(), "{id}: {verdict:?}");
        // Our agent wraps the report exactly as guest-components' SNP attester does.
        let ours = snp_json::to_json(&report, Some(std::slice::from_ref(&vcek))).unwrap();
        assert_eq!(ours, a.tee_evidence.primary_evidence, "{id}");
    }
    let a: Attestation = payload::decode(&golden("attest-snp-milan-trustee-nocerts.json")).unwrap();
    let u = evidence::unwrap(KbsTee::Snp, &a.tee_evidence.primary_evidence).unwrap();
    assert!(u.certs.is_empty());
    assert_eq!(
        snp_json::to_json(&u.evidence, None).unwrap(),
        a.tee_evidence.primary_evidence
    );
}

#[test]
fn a_tampered_snp_field_fails_the_signature_and_a_wrong_length_is_malformed() {
    let a: Attestation = payload::decode(&golden("attest-snp-milan-trustee.json")).unwrap();
    let mut ev = a.tee_evidence.primary_evidence.clone();
    ev["attestation_report"]["guest_svn"] = Value::from(5);
    let u = evidence::unwrap(KbsTee::Snp, &ev).unwrap();
    let verdict = verify_snp(&u, at("snp-milan-trustee"));
    assert_eq!(
        verdict.unwrap_err().reason,
        cvm_attest::Reason::SignatureInvalid
    );
    let mut short = a.tee_evidence.primary_evidence.clone();
    short["attestation_report"]["measurement"]
        .as_array_mut()
        .unwrap()
        .pop();
    let e = evidence::unwrap(KbsTee::Snp, &short).unwrap_err();
    assert!(e.contains("measurement has 47 bytes"), "{e}");
    let mut extra = a.tee_evidence.primary_evidence.clone();
    extra["attestation_report"]["extra"] = Value::from(1);
    assert!(evidence::unwrap(KbsTee::Snp, &extra).is_err());
}

#[test]
fn the_real_tdx_quote_comes_out_of_its_wrapping_and_verifies_at_its_time() {
    let a: Attestation = payload::decode(&golden("attest-tdx-dcapqvl.json")).unwrap();
    let u = evidence::unwrap(KbsTee::Tdx, &a.tee_evidence.primary_evidence).unwrap();
    let quote = vector("tdx/v4-dcapqvl-quote.bin");
    assert_eq!(u.evidence, quote);
    let (len, _) = u.event_log.unwrap();
    assert_eq!(len, b"not a real CCEL".len());
    let v = tdx_common::tdx_vectors()
        .into_iter()
        .find(|v| v.id == "tdx-v4-dcapqvl")
        .unwrap();
    let verdict = cvm_attest::tdx::TdxVerifier::default().verify(
        &u.evidence,
        v.collateral().as_ref(),
        &v.permissive_policy(),
        v.at(),
    );
    assert!(verdict.result.is_ok(), "{:?}", verdict.result.err());
}

#[test]
fn sample_evidence_unwraps_to_its_report_data() {
    let a: Attestation = payload::decode(&golden("attest-sample.json")).unwrap();
    let u = evidence::unwrap(KbsTee::Sample, &a.tee_evidence.primary_evidence).unwrap();
    assert_eq!(u.evidence, vec![7u8; 48]);
    assert!(a.init_data.is_none());
}
