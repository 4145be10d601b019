//! SNP verification throughput (DESIGN.md "Targets"): a warm-cache `SnpVerifier` against raw ring P-384
//! verification of the same reports in the same run (goal ≥ 0.9×), and against the `sev` crate verifying
//! chain + report signature each time. Prints a table; nothing here passes or fails.
//!
//! `cargo bench -p cvm-attest --bench snp_verify`; `SNP_BENCH_SWEEP=1` also runs the full bit-flip sweep
//! (every single-bit flip of `[0, 0x2A0)` of every real report) in release mode and times it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cvm_attest::Policy;
use cvm_attest::snp::chain::p384_key;
use cvm_attest::snp::report::SIGNED_LEN;
use cvm_attest::snp::{AttestationReport, SnpInputs, SnpVerifier};
use ring::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use sev::certs::snp::{Chain, Verifiable};
use sev::parser::ByteParser;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A leaf key, the fixed-size signature and the signed bytes of one report.
type RawItem<'a> = (Box<[u8]>, [u8; 96], &'a [u8]);

struct Vector {
    id: String,
    report: Vec<u8>,
    leaf: Vec<u8>,
    chain_pem: Vec<u8>,
    at: i64,
}

fn vectors_dir() -> PathBuf {
    std::env::var_os("CVM_VECTORS")
        .map(Into::into)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
}

fn load() -> Vec<Vector> {
    let dir = vectors_dir();
    let read = |rel: &str| std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let manifest: serde_json::Value = serde_json::from_slice(&read("MANIFEST.json")).unwrap();
    manifest["snp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f = &v["files"];
            let leaf = f.get("vcek").or(f.get("vlek")).unwrap().as_str().unwrap();
            Vector {
                id: v["id"].as_str().unwrap().to_owned(),
                report: read(f["report"].as_str().unwrap()),
                leaf: read(leaf),
                chain_pem: read(f["ask_ark_chain"].as_str().unwrap()),
                at: cvm_attest::pki::parse_rfc3339(v["expected"]["verifies_at"].as_str().unwrap())
                    .unwrap(),
            }
        })
        .collect()
}

/// Run `f` round-robin over `n` items for about `budget`; best of two rounds, in operations per second.
fn rate(n: usize, budget: Duration, mut f: impl FnMut(usize)) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..2 {
        let start = Instant::now();
        let mut ops = 0usize;
        while start.elapsed() < budget {
            for i in 0..n {
                f(i);
            }
            ops += n;
        }
        best = best.max(ops as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let vectors = load();
    let n = vectors.len();
    let budget = Duration::from_millis(
        std::env::var("SNP_BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3000),
    );
    let policy = Policy::from_toml("allow_debug = true").unwrap();

    // Raw ring P-384 verification of each report's signature with its VCEK/VLEK key.
    let raw: Vec<RawItem<'_>> = vectors
        .iter()
        .map(|v| {
            let cert = cvm_attest::pki::parse_cert(&v.leaf).unwrap();
            let key = p384_key(&cert).unwrap();
            let r = AttestationReport::parse(&v.report).unwrap();
            (
                key,
                r.signature.to_fixed_be().unwrap(),
                &v.report[..SIGNED_LEN],
            )
        })
        .collect();
    let raw_rate = rate(n, budget, |i| {
        let (key, sig, msg) = &raw[i];
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
            .verify(msg, sig)
            .unwrap();
    });

    // Our verifier, warm chain cache: full check list (parse, signature, cached chain, validity at `at`,
    // bindings, policy, claims).
    let verifier = SnpVerifier::new().unwrap();
    let certs: Vec<Vec<Vec<u8>>> = vectors.iter().map(|v| vec![v.leaf.clone()]).collect();
    for (i, v) in vectors.iter().enumerate() {
        let verdict = verifier.verify(
            &v.report,
            &SnpInputs {
                certs: &certs[i],
                crls: &[],
                policy: &policy,
                at: v.at,
            },
        );
        assert!(verdict.accepted(), "{}: {:?}", v.id, verdict.outcome);
    }
    let warm_rate = rate(n, budget, |i| {
        let v = &vectors[i];
        let verdict = verifier.verify(
            &v.report,
            &SnpInputs {
                certs: &certs[i],
                crls: &[],
                policy: &policy,
                at: v.at,
            },
        );
        assert!(verdict.accepted());
    });

    // Cold: a fresh verifier per report (chain re-verified every time, RSA-4096 PSS ×2).
    let cold_rate = rate(n, budget / 2, |i| {
        let v = &vectors[i];
        let cold = SnpVerifier::new().unwrap();
        assert!(
            cold.verify(
                &v.report,
                &SnpInputs {
                    certs: &certs[i],
                    crls: &[],
                    policy: &policy,
                    at: v.at
                }
            )
            .accepted()
        );
    });

    // The sev crate: chain (ARK self-signature, ASK, VCEK) and report signature each time.
    let sev_items: Vec<(Chain, sev::firmware::guest::AttestationReport)> = vectors
        .iter()
        .map(|v| {
            let ders = cvm_attest::pki::certs_from_bytes(&v.chain_pem).unwrap();
            let chain = Chain::from_der(&ders[1], &ders[0], &v.leaf).unwrap();
            let report = sev::firmware::guest::AttestationReport::from_bytes(&v.report).unwrap();
            (chain, report)
        })
        .collect();
    for (i, (chain, report)) in sev_items.iter().enumerate() {
        (chain, report)
            .verify()
            .unwrap_or_else(|e| panic!("sev: {}: {e}", vectors[i].id));
    }
    let sev_rate = rate(n, budget, |i| {
        let (chain, report) = &sev_items[i];
        (chain, report).verify().unwrap();
    });

    println!("SNP verification, {n} real reports round-robin, one thread:");
    println!("| what                                   | verifications/s | vs raw P-384 |");
    println!("|----------------------------------------|----------------:|-------------:|");
    for (what, r) in [
        ("raw ring P-384 verify (same reports)", raw_rate),
        ("cvm SnpVerifier, warm chain cache", warm_rate),
        ("cvm SnpVerifier, cold (new verifier)", cold_rate),
        ("sev crate (chain + report each time)", sev_rate),
    ] {
        println!("| {what:<38} | {r:>15.0} | {:>11.2}× |", r / raw_rate);
    }
    println!("warm cache vs sev crate: {:.2}×", warm_rate / sev_rate);

    if std::env::var_os("SNP_BENCH_SWEEP").is_some() {
        let start = Instant::now();
        let mut flips = 0usize;
        for (i, v) in vectors.iter().enumerate() {
            let mut bytes = v.report.clone();
            for offset in 0..SIGNED_LEN {
                for bit in 0..8 {
                    bytes[offset] ^= 1 << bit;
                    let verdict = verifier.verify(
                        &bytes,
                        &SnpInputs {
                            certs: &certs[i],
                            crls: &[],
                            policy: &policy,
                            at: v.at,
                        },
                    );
                    assert!(
                        !verdict.accepted(),
                        "{}: bit {bit} of byte {offset:#x} accepted",
                        v.id
                    );
                    bytes[offset] ^= 1 << bit;
                    flips += 1;
                }
            }
        }
        println!(
            "bit-flip sweep (release, one thread): {flips} flips refused in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}
