//! Arbitrary bytes as SNP evidence (a report or an Azure HCL report), parsed and verified against fixed
//! certificates. Must never panic.
#![no_main]

use cvm_attest::Policy;
use cvm_attest::snp::hcl::HclReport;
use cvm_attest::snp::{AttestationReport, SnpInputs, SnpVerifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const VCEK_MILAN: &[u8] = include_bytes!("../fixtures/milan-virtee-vcek.der");
const VCEK_TURIN: &[u8] = include_bytes!("../fixtures/turin-oak-vcek.der");
const VLEK_MILAN: &[u8] = include_bytes!("../fixtures/milan-trustee-vlek.der");

fn verifier() -> &'static SnpVerifier {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    V.get_or_init(|| match SnpVerifier::new() {
        Ok(v) => v,
        Err(e) => panic!("built-in roots: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = AttestationReport::parse(data) {
        let _ = r.signature.to_fixed_be();
        let _ = r.cpuid_product();
    }
    if let Ok(h) = HclReport::parse(data) {
        let _ = h.var_data_digest();
    }
    let certs = vec![
        VCEK_MILAN.to_vec(),
        VCEK_TURIN.to_vec(),
        VLEK_MILAN.to_vec(),
    ];
    let mut policy = Policy::default();
    policy.allow_debug = data.first() == Some(&0);
    let verdict = verifier().verify(
        data,
        &SnpInputs {
            certs: &certs,
            crls: &[],
            policy: &policy,
            // 2025-01-01T00:00:00Z
            at: 1_735_689_600,
        },
    );
    let _ = verdict.to_json().to_string();
    let _ = verdict.human();
});
