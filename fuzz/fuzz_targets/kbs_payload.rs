//! KBS protocol bodies (JSON) → the request types, the guest's JWK, the evidence of each TEE as
//! guest-components wraps it, the canonical runtime-data binding, a resource JWE and a token: nothing may
//! panic; the typed parts of a decoded `Attestation` survive encoding and decoding again.
#![no_main]

use cvm_attest::kbs::evidence::{self, KbsTee};
use cvm_attest::kbs::jwk::EcPublicJwk;
use cvm_attest::kbs::payload::{self, Attestation, Challenge, HashAlgorithm, Request};
use cvm_attest::kbs::{canonical, jwe, jwt};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A fixed P-256 point (RFC 7517 Appendix A.1) for the token check.
fn token_key() -> &'static [u8] {
    static K: OnceLock<Vec<u8>> = OnceLock::new();
    K.get_or_init(|| {
        let v = serde_json::json!({"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW",
            "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"});
        EcPublicJwk::from_value(&v).unwrap().uncompressed().to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = payload::decode::<Request>(data) {
        let _ = KbsTee::parse(&r.tee);
        let _ = HashAlgorithm::select(&r.extra_params);
    }
    if let Ok(c) = payload::decode::<Challenge>(data) {
        let _ = HashAlgorithm::selected(&c.extra_params);
    }
    if let Ok(a) = payload::decode::<Attestation>(data) {
        // The typed parts survive encoding (the untyped evidence need not: serde_json does not round-trip
        // every float spelling, and the evidence decoders refuse floats anyway).
        let again = serde_json::to_vec(&a).expect("a decoded attestation encodes");
        let decoded = payload::decode::<Attestation>(&again).expect("re-decodes");
        assert_eq!(decoded.runtime_data, a.runtime_data);
        assert_eq!(decoded.init_data, a.init_data);
        assert_eq!(
            decoded.tee_evidence.additional_evidence,
            a.tee_evidence.additional_evidence
        );
        let _ = a.runtime_data.tee_pubkey.check_on_curve();
        for h in [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ] {
            let _ = canonical::report_data(
                h,
                &a.runtime_data.nonce,
                &a.runtime_data.tee_pubkey,
                &a.tee_evidence.additional_evidence,
            );
        }
        for tee in [KbsTee::Snp, KbsTee::Tdx, KbsTee::Sample] {
            if let Ok(u) = evidence::unwrap(tee, &a.tee_evidence.primary_evidence) {
                if tee == KbsTee::Snp {
                    assert_eq!(u.evidence.len(), cvm_attest::kbs::snp_json::REPORT_LEN);
                }
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = EcPublicJwk::from_value(&v);
        for tee in [KbsTee::Snp, KbsTee::Tdx, KbsTee::Sample] {
            let _ = evidence::unwrap(tee, &v);
        }
    }
    if let Ok(j) = serde_json::from_slice::<jwe::Jwe>(data) {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
            .unwrap();
        let _ = jwe::open(key, &j);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jwt::verify(text, token_key());
    }
});
