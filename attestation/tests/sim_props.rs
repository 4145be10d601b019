//! Property tests: for random inputs, simulate → verify returns the same values (library path, the same
//! verifiers the server uses, in simulated mode).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_common;

use cvm_attest::sim::{SimAmd, SimIntel, SnpRequest, TdxRequest};
use cvm_attest::snp::{SnpInputs, SnpVerifier};
use cvm_attest::{Policy, VerifyInputs};
use proptest::prelude::*;
use serde_json::json;
use sim_common::*;
use std::sync::OnceLock;

fn amd() -> &'static (SimAmd, SnpVerifier) {
    static AMD: OnceLock<(SimAmd, SnpVerifier)> = OnceLock::new();
    AMD.get_or_init(|| {
        let sim = SimAmd::load(sim_dir()).unwrap();
        let verifier = SnpVerifier::with_trust_roots(&[sim.ark_der().to_vec()])
            .unwrap()
            .allow_simulated(true);
        (sim, verifier)
    })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn snp_reports_verify_with_exactly_the_requested_values(
        report_data in proptest::array::uniform32(any::<u8>()),
        report_data2 in proptest::array::uniform32(any::<u8>()),
        measurement in proptest::collection::vec(any::<u8>(), 48),
        host_data in proptest::array::uniform32(any::<u8>()),
        vmpl in 0u32..4,
        version in prop_oneof![Just(2u32), Just(3u32), Just(5u32)],
    ) {
        let (sim, verifier) = amd();
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&report_data);
        rd[32..].copy_from_slice(&report_data2);
        let req = SnpRequest {
            report_data: rd,
            measurement: measurement.clone().try_into().unwrap(),
            host_data,
            vmpl,
            version,
            ..Default::default()
        };
        let report = sim.snp_report(&req).unwrap();
        let certs = [sim.vcek_der().to_vec(), sim.ask_der().to_vec()];
        let v = verifier.verify(&report, &SnpInputs { certs: &certs, crls: &[], policy: &Policy::default(), at: now() });
        prop_assert!(v.accepted(), "{:?}", v.outcome);
        prop_assert!(v.simulated);
        prop_assert_eq!(&v.claims["report_data"], &json!(hex::encode(rd)));
        prop_assert_eq!(&v.claims["measurement"], &json!(hex::encode(&measurement)));
        prop_assert_eq!(&v.claims["host_data"], &json!(hex::encode(host_data)));
        prop_assert_eq!(&v.claims["vmpl"], &json!(vmpl));
        prop_assert_eq!(&v.claims["version"], &json!(version));
    }

    #[test]
    fn tdx_quotes_verify_with_exactly_the_requested_values(
        report_data in proptest::collection::vec(any::<u8>(), 64),
        fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 48), 6),
    ) {
        let sim = SimIntel::load(sim_dir()).unwrap();
        let f = |i: usize| -> [u8; 48] { fields[i].clone().try_into().unwrap() };
        let req = TdxRequest {
            report_data: report_data.clone().try_into().unwrap(),
            mrtd: f(0),
            rtmr0: f(1),
            rtmr1: f(2),
            rtmr2: f(3),
            rtmr3: f(4),
            mrconfigid: f(5),
            debug: false,
        };
        let quote = sim.tdx_quote(&req).unwrap();
        let inputs = VerifyInputs {
            trust_roots: Some(vec![sim.root_der().to_vec()]),
            collateral: Some(sim_dir().join("tdx/collateral")),
            at: now(),
            allow_simulated: true,
            ..Default::default()
        };
        let v = cvm_attest::verify(&quote, None, &inputs).unwrap();
        prop_assert!(v.accepted(), "{:?}", v.outcome);
        prop_assert!(v.simulated);
        let c = &v.claims;
        prop_assert_eq!(&c["report_data"], &json!(hex::encode(&report_data)));
        for (i, name) in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid"].iter().enumerate() {
            prop_assert_eq!(&c[*name], &json!(hex::encode(&fields[i])));
        }
        prop_assert_eq!(&c["tcb_status"], &json!("UpToDate"));
    }
}
