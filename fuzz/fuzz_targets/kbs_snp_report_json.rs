//! An SNP report (1184 bytes) → the JSON guest-components' SNP attester sends (as our agent writes it) →
//! the bytes the service rebuilds: nothing may panic, and the JSON is a fixed point (rebuilding and writing
//! again gives the same JSON), so the service reads back every field the agent wrote.
#![no_main]

use cvm_attest::kbs::snp_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut raw = data.to_vec();
    raw.resize(snp_json::REPORT_LEN, 0);
    let certs = [data.get(..data.len().min(64)).unwrap_or_default().to_vec()];
    let Ok(json) = snp_json::to_json(&raw, Some(&certs)) else {
        return;
    };
    let (rebuilt, got_certs) = snp_json::from_json(&json).expect("the agent's JSON is read back");
    assert_eq!(rebuilt.len(), snp_json::REPORT_LEN);
    assert_eq!(got_certs, certs);
    let again = snp_json::to_json(&rebuilt, Some(&certs)).expect("rebuilt bytes parse");
    assert_eq!(again, json, "the JSON is not a fixed point");
});
