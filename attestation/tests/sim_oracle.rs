//! Independent oracles check the simulator's evidence: the `sev` crate parses a simulated report and verifies
//! its chain (ARK self-signed, ASK by ARK, VCEK by ASK) and the report signature; `dcap-qvl` verifies a
//! simulated quote against the simulated collateral and root as UpToDate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_common;

use cvm_attest::sim::{SimAmd, SimIntel, SnpRequest, TdxRequest};
use sim_common::*;

#[test]
fn the_sev_crate_verifies_the_simulated_chain_and_report() {
    use sev::certs::snp::{Certificate, Chain, Verifiable, ca};
    use sev::firmware::guest::AttestationReport;
    use sev::parser::ByteParser;

    let sim = SimAmd::load(sim_dir()).unwrap();
    let request = SnpRequest {
        report_data: [0x42; 64],
        measurement: [0x17; 48],
        host_data: [0x99; 32],
        vmpl: 2,
        ..Default::default()
    };
    let bytes = sim.snp_report(&request).unwrap();
    let report = AttestationReport::from_bytes(&bytes).unwrap();
    assert_eq!(report.version, 5);
    assert_eq!(report.report_data, [0x42; 64]);
    assert_eq!(report.measurement, [0x17; 48]);
    assert_eq!(report.host_data, [0x99; 32]);
    assert_eq!(report.vmpl, 2);
    assert_eq!(report.sig_algo, 1);
    assert_eq!(&report.chip_id, sim.chip_id());
    assert_eq!(report.cpuid_fam_id, Some(0x19));
    assert!(!report.policy.debug_allowed());
    assert_eq!(report.reported_tcb.snp, 24);

    let chain = Chain {
        ca: ca::Chain {
            ark: Certificate::from_der(sim.ark_der()).unwrap(),
            ask: Certificate::from_der(sim.ask_der()).unwrap(),
        },
        vek: Certificate::from_der(sim.vcek_der()).unwrap(),
    };
    (&chain.ca)
        .verify()
        .expect("ARK self-signed, ASK signed by ARK");
    (&chain).verify().expect("VCEK signed by ASK");
    (&chain, &report)
        .verify()
        .expect("report signed by the VCEK");

    // A flipped report bit fails under the oracle too.
    let mut tampered = bytes.clone();
    tampered[0x90] ^= 1;
    let tampered = AttestationReport::from_bytes(&tampered).unwrap();
    assert!((&chain, &tampered).verify().is_err());
}

/// The body and the signature (hex) of a PCS-style `{"<key>":<body>,"signature":"<hex>"}` file.
fn split_pcs(path: &str, key: &str) -> (String, Vec<u8>) {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("{{\"{key}\":");
    let at = text.rfind(",\"signature\":\"").unwrap();
    let body = text[prefix.len()..at].to_owned();
    assert!(text.starts_with(&prefix));
    let sig = text[at + 14..].trim_end_matches("\"}");
    (body, hex::decode(sig).unwrap())
}

#[test]
fn dcap_qvl_verifies_the_simulated_quote_as_up_to_date() {
    let sim = SimIntel::load(sim_dir()).unwrap();
    let request = TdxRequest {
        report_data: [0x5a; 64],
        mrtd: [0x11; 48],
        rtmr0: [0x20; 48],
        rtmr1: [0x21; 48],
        rtmr2: [0x22; 48],
        rtmr3: [0x23; 48],
        mrconfigid: [0x33; 48],
        debug: false,
    };
    let quote = sim.tdx_quote(&request).unwrap();
    let (tcb_info, tcb_info_signature) =
        split_pcs(&p("tdx/collateral/tcbinfo-90c06f000000.json"), "tcbInfo");
    let (qe_identity, qe_identity_signature) =
        split_pcs(&p("tdx/collateral/qe-identity.json"), "enclaveIdentity");
    let read_text = |rel: &str| std::fs::read_to_string(p(rel)).unwrap();
    let collateral = dcap_qvl::QuoteCollateralV3 {
        pck_crl_issuer_chain: read_text("tdx/collateral/pck-crl-issuer-chain.pem"),
        root_ca_crl: std::fs::read(p("tdx/collateral/root-ca-crl.der")).unwrap(),
        pck_crl: std::fs::read(p("tdx/collateral/pck-platform-crl.der")).unwrap(),
        tcb_info_issuer_chain: read_text("tdx/collateral/tcb-signing-chain.pem"),
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain: read_text("tdx/collateral/tcb-signing-chain.pem"),
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: None,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let verifier = dcap_qvl::verify::QuoteVerifier::new(sim.root_der().to_vec());
    let verified = verifier
        .verify(&quote, &collateral, now)
        .expect("dcap-qvl accepts the simulated quote");
    assert_eq!(verified.status, "UpToDate");
    assert!(verified.advisory_ids.is_empty());
    let td = verified.report.as_td10().expect("a TD 1.0 report");
    assert_eq!(td.mr_td, [0x11; 48]);
    assert_eq!(td.rt_mr0, [0x20; 48]);
    assert_eq!(td.rt_mr3, [0x23; 48]);
    assert_eq!(td.mr_config_id, [0x33; 48]);
    assert_eq!(td.report_data, [0x5a; 64]);

    // The real Intel root does not accept it.
    let prod = dcap_qvl::verify::QuoteVerifier::new_prod();
    assert!(prod.verify(&quote, &collateral, now).is_err());
}
