//! Arbitrary certificate bytes into the SNP chain path: the first two bytes give the length of a leaf
//! candidate, the rest is another certificate (an intermediate) that is also tried as a CRL. Must never
//! panic.
#![no_main]

use cvm_attest::Policy;
use cvm_attest::snp::chain::{TrustStore, build_chain};
use cvm_attest::snp::extensions::AmdExtensions;
use cvm_attest::snp::{SnpInputs, SnpVerifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const REPORT: &[u8] = include_bytes!("../fixtures/milan-virtee-report.bin");

fn store() -> &'static TrustStore {
    static S: OnceLock<TrustStore> = OnceLock::new();
    S.get_or_init(|| match TrustStore::builtin() {
        Ok(s) => s,
        Err(e) => panic!("built-in roots: {e}"),
    })
}

fn verifier() -> &'static SnpVerifier {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    V.get_or_init(|| match SnpVerifier::new() {
        Ok(v) => v.with_cache_capacity(0),
        Err(e) => panic!("built-in roots: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let (leaf, extra) = match data {
        [hi, lo, rest @ ..] => {
            let n = usize::from(*hi) << 8 | usize::from(*lo);
            rest.split_at(n.min(rest.len()))
        }
        _ => (data, &[][..]),
    };
    if let Ok(cert) = cvm_attest::pki::parse_cert(leaf) {
        let _ = AmdExtensions::from_cert(&cert);
    }
    let _ = build_chain(store(), leaf, &[extra]);
    let _ = cvm_attest::pki::certs_from_bytes(data);
    let _ = cvm_attest::pki::parse_crl(extra);
    let certs = vec![leaf.to_vec(), extra.to_vec()];
    let crls = vec![extra.to_vec()];
    let policy = Policy::default();
    let verdict = verifier().verify(
        REPORT,
        &SnpInputs {
            certs: &certs,
            crls: &crls,
            policy: &policy,
            at: 1_735_689_600,
        },
    );
    let _ = verdict.to_json();
});
