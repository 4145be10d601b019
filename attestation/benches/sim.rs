//! Simulator throughput (issue #5): simulated SNP reports/s and TDX quotes/s, next to raw ring ECDSA P-384
//! and P-256 signing in the same run (the floor each costs: one signature). Also SNP init (RSA-4096 key
//! generation) once. Prints a table; nothing here passes or fails. Aim: thousands per second, so the
//! simulator is never the bottleneck of a load test.
//!
//! `cargo bench -p cvm-attest --bench sim`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cvm_attest::sim::{self, InitOptions, SimAmd, SimIntel, SnpRequest, TdxRequest};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
};
use std::time::{Duration, Instant};

/// Operations per second of `f` over about `budget` (best of two rounds).
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best = 0f64;
    for _ in 0..2 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget {
            for _ in 0..16 {
                f();
            }
            n += 16;
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn raw_signer(alg: &'static ring::signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap()
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("SIM_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sim");
    let start = Instant::now();
    sim::init(
        &dir,
        &InitOptions {
            seed: Some(b"bench seed, bench seed, bench!!".to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    let init = start.elapsed();
    let amd = SimAmd::load(&dir).unwrap();
    let intel = SimIntel::load(&dir).unwrap();

    let rng = SystemRandom::new();
    let p384 = raw_signer(&ECDSA_P384_SHA384_FIXED_SIGNING);
    let p256 = raw_signer(&ECDSA_P256_SHA256_FIXED_SIGNING);
    let msg384 = [0x5au8; 0x2a0];
    let msg256 = [0x5au8; 632];

    let raw384 = rate(budget, || {
        std::hint::black_box(p384.sign(&rng, &msg384).unwrap());
    });
    let mut req = SnpRequest::default();
    let mut i = 0u8;
    let snp = rate(budget, || {
        i = i.wrapping_add(1);
        req.report_data[0] = i;
        std::hint::black_box(amd.snp_report(&req).unwrap());
    });
    let raw256 = rate(budget, || {
        std::hint::black_box(p256.sign(&rng, &msg256).unwrap());
    });
    let mut treq = TdxRequest::default();
    let tdx = rate(budget, || {
        i = i.wrapping_add(1);
        treq.report_data[0] = i;
        std::hint::black_box(intel.tdx_quote(&treq).unwrap());
    });
    let load = rate(budget, || {
        std::hint::black_box(sim::Simulator::load(&dir).unwrap());
    });

    println!("simulator throughput (one core, ring; same run)");
    println!("  {:<36} {:>10}  {:>8}", "what", "per second", "ratio");
    println!(
        "  {:<36} {:>10.0}  {:>8}",
        "raw ring ECDSA P-384 sign", raw384, "1.00"
    );
    println!(
        "  {:<36} {:>10.0}  {:>8.2}",
        "simulated SNP reports (v5)",
        snp,
        snp / raw384
    );
    println!(
        "  {:<36} {:>10.0}  {:>8}",
        "raw ring ECDSA P-256 sign", raw256, "1.00"
    );
    println!(
        "  {:<36} {:>10.0}  {:>8.2}",
        "simulated TDX quotes (v4)",
        tdx,
        tdx / raw256
    );
    println!("  {:<36} {:>10.0}", "Simulator::load (both TEEs)", load);
    println!("  sim init (2 × RSA-4096 keygen, all certificates, collateral): {init:.2?}");
}
