//! TDX quote verification throughput (one thread), in one run: raw ring ECDSA P-256 verifications, warm
//! `TdxVerifier` verifications (collateral, PCK chain and CRLs cached), cold ones (fresh verifier), and
//! dcap-qvl on the same quotes and collateral. Goal (DESIGN.md): warm ≥ 0.8 × half the raw P-256 rate.
//!
//! `cargo bench -p cvm-attest --bench tdx_verify`
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/tdx_common/mod.rs"]
mod tdx_common;

use cvm_attest::Policy;
use cvm_attest::tdx::{Collateral, Quote, TdxVerifier};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tdx_common::*;

/// Run `f` repeatedly for about `secs` seconds; operations per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..50 {
            f();
        }
        n += 50;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("TDX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // The accepted vectors with CRLs dcap-qvl can take: v4 (b0c06f), v4 near (20a06f), v5 TDX 1.5 (90c06f).
    let vectors: Vec<Vector> = tdx_vectors()
        .into_iter()
        .filter(|v| {
            ["tdx-v4-dcapqvl", "tdx-v4-dcapqvl-near", "tdx-v5-gotdx"].contains(&v.id.as_str())
        })
        .collect();
    let sets: Vec<(Vec<u8>, Collateral, i64)> = vectors
        .iter()
        .map(|v| (v.quote.clone(), v.collateral().unwrap(), v.at()))
        .collect();
    let policy = Policy::default();

    // Raw: ring's P-256 verify of the quote signature, nothing else.
    let raw_inputs: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = sets
        .iter()
        .map(|(q, _, _)| {
            let p = Quote::parse(q).unwrap();
            let mut key = vec![4u8];
            key.extend_from_slice(p.signature_data.attestation_key);
            (key, p.signed.to_vec(), p.signature_data.signature.to_vec())
        })
        .collect();
    let mut i = 0;
    let raw = rate(secs, || {
        let (key, msg, sig) = &raw_inputs[i % raw_inputs.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(black_box(msg), sig)
            .unwrap();
        i += 1;
    });

    // Warm: one verifier, caches filled by the first round.
    let verifier = TdxVerifier::new();
    for (q, c, at) in &sets {
        assert!(verifier.verify(q, Some(c), &policy, *at).result.is_ok());
    }
    let mut i = 0;
    let warm = rate(secs, || {
        let (q, c, at) = &sets[i % sets.len()];
        let v = verifier.verify(black_box(q), Some(c), &policy, *at);
        assert!(v.result.is_ok());
        i += 1;
    });

    // Cold: a fresh verifier each time (chain, CRL and collateral signatures checked again).
    let mut i = 0;
    let cold = rate(secs.min(2.0), || {
        let (q, c, at) = &sets[i % sets.len()];
        let v = TdxVerifier::new().verify(black_box(q), Some(c), &policy, *at);
        assert!(v.result.is_ok());
        i += 1;
    });

    // dcap-qvl on the same quotes and collateral.
    let root = std::fs::read(vectors_dir().join("tdx/intel-sgx-root-ca.der")).unwrap();
    let oracle = dcap_qvl::verify::QuoteVerifier::new(root);
    let theirs: Vec<(Vec<u8>, dcap_qvl::QuoteCollateralV3, u64)> = vectors
        .iter()
        .map(|v| {
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(v.v3_file.as_ref().unwrap()).unwrap())
                    .unwrap();
            let s = |k: &str| json[k].as_str().unwrap().to_owned();
            let h = |k: &str| hex::decode(json[k].as_str().unwrap()).unwrap();
            let c = dcap_qvl::QuoteCollateralV3 {
                pck_crl_issuer_chain: s("pck_crl_issuer_chain"),
                root_ca_crl: h("root_ca_crl"),
                pck_crl: h("pck_crl"),
                tcb_info_issuer_chain: s("tcb_info_issuer_chain"),
                tcb_info: s("tcb_info"),
                tcb_info_signature: h("tcb_info_signature"),
                qe_identity_issuer_chain: s("qe_identity_issuer_chain"),
                qe_identity: s("qe_identity"),
                qe_identity_signature: h("qe_identity_signature"),
                pck_certificate_chain: None,
            };
            (v.quote.clone(), c, v.at() as u64)
        })
        .collect();
    let mut i = 0;
    let dcap = rate(secs, || {
        let (q, c, at) = &theirs[i % theirs.len()];
        oracle.verify(black_box(q), c, *at).unwrap();
        i += 1;
    });

    let goal = 0.8 * raw / 2.0;
    println!(
        "TDX quote verification, one thread, {} quotes round-robin (v4, v4, v5/TDX 1.5)",
        sets.len()
    );
    println!("{:<44} {:>12} {:>22}", "", "per second", "ratio");
    println!(
        "{:<44} {:>12.0} {:>22}",
        "ring P-256 verify (raw)", raw, "1.00 x raw"
    );
    println!(
        "{:<44} {:>12.0} {:>22}",
        "goal: 0.8 x raw / 2", goal, "0.40 x raw"
    );
    println!(
        "{:<44} {:>12.0} {:>22}",
        "cvm TdxVerifier, warm collateral",
        warm,
        format!(
            "{:.2} x raw/2 ({})",
            warm / (raw / 2.0),
            if warm >= goal {
                "meets goal"
            } else {
                "BELOW goal"
            }
        )
    );
    println!(
        "{:<44} {:>12.0} {:>22}",
        "cvm TdxVerifier, cold (new verifier)",
        cold,
        format!("{:.2} x raw", cold / raw)
    );
    println!(
        "{:<44} {:>12.0} {:>22}",
        "dcap-qvl 0.7 QuoteVerifier::verify",
        dcap,
        format!("{:.2} x raw", dcap / raw)
    );
    println!(
        "{:<44} {:>12} {:>22}",
        "warm cvm / dcap-qvl",
        "",
        format!("{:.1} x", warm / dcap)
    );
}

fn vectors_dir() -> std::path::PathBuf {
    vectors()
}
