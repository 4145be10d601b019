//! Parse and verify arbitrary bytes as a TDX quote against fixed, real collateral (dcap-qvl's b0c06f000000
//! set) at a time when that collateral is current, so inputs that keep the signatures reach the TCB steps.
#![no_main]

use cvm_attest::Policy;
use cvm_attest::tdx::{Collateral, Quote, TdxVerifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    verifier: TdxVerifier,
    collateral: Collateral,
    policy: Policy,
    at: i64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::var_os("CVM_VECTORS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let fuzz_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                let main = fuzz_dir.join("../../shared/vectors");
                if main.exists() {
                    main
                } else {
                    fuzz_dir.join("../../../shared/vectors")
                }
            });
        let bytes = std::fs::read(dir.join("tdx/v4-dcapqvl-collateral-b0c06f000000.json"))
            .expect("vectors: set CVM_VECTORS");
        Fixture {
            verifier: TdxVerifier::new(),
            collateral: Collateral::from_v3_json(&bytes).expect("collateral parses"),
            policy: Policy::default(),
            at: cvm_attest::pki::parse_rfc3339("2025-06-19T11:32:27Z").expect("time"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let _ = Quote::parse(data);
    let _ = f.verifier.fmspc_of(data);
    let verdict = f
        .verifier
        .verify(data, Some(&f.collateral), &f.policy, f.at);
    let _ = verdict.claims.to_string();
});
