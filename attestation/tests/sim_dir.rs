//! The sim directory: the same seed gives the same keys, loading bad files fails with an error (never a
//! panic), and the library refuses simulated evidence outside simulated mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_common;

use cvm_attest::sim::{self, InitOptions, SimAmd, SimError, SimIntel, Simulator, SnpRequest};
use cvm_attest::snp::{Product, SnpInputs, SnpVerifier};
use cvm_attest::{Policy, Reason, VerifyInputs};
use sim_common::*;
use std::path::Path;

fn public_key(cert_der: &[u8]) -> Vec<u8> {
    let cert = cvm_attest::pki::parse_cert(cert_der).unwrap();
    cert.public_key().raw.to_vec()
}

fn keys_of(dir: &Path) -> Vec<Vec<u8>> {
    let cert = |rel: &str| sim::dir::read_cert(&dir.join(rel)).unwrap();
    let chain =
        cvm_attest::pki::certs_from_bytes(&std::fs::read(dir.join("tdx/pck_chain.pem")).unwrap())
            .unwrap();
    let mut out = vec![
        public_key(&cert("snp/ark.pem")),
        public_key(&cert("snp/ask.pem")),
        public_key(&std::fs::read(dir.join("snp/vcek.der")).unwrap()),
        public_key(&cert("tdx/root.pem")),
    ];
    out.extend(chain.iter().map(|c| public_key(c)));
    out
}

#[test]
fn the_same_seed_gives_the_same_keys_and_another_seed_other_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("again");
    sim::init(
        &again,
        &InitOptions {
            seed: Some(SEED.to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(keys_of(sim_dir()), keys_of(&again));
    for name in std::fs::read_dir(sim_dir().join("private")).unwrap() {
        let name = name.unwrap().file_name();
        assert_eq!(
            std::fs::read(sim_dir().join("private").join(&name)).unwrap(),
            std::fs::read(again.join("private").join(&name)).unwrap(),
            "{name:?}"
        );
    }
    let other = tmp.path().join("other");
    sim::init(
        &other,
        &InitOptions {
            seed: Some(b"another seed of at least 16 bytes".to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b) = (keys_of(sim_dir()), keys_of(&other));
    for (x, y) in a.iter().zip(&b) {
        assert_ne!(x, y);
    }
    // Without a seed, a random one is made and kept.
    let random = tmp.path().join("random");
    sim::init(&random, &InitOptions::default()).unwrap();
    assert_eq!(
        std::fs::read(random.join("private/seed")).unwrap().len(),
        sim::SEED_LEN
    );
    assert!(matches!(
        sim::init(
            &tmp.path().join("short"),
            &InitOptions {
                seed: Some(vec![1; 8]),
                ..Default::default()
            }
        ),
        Err(SimError::Request(_))
    ));
}

#[test]
fn genoa_and_turin_simulators_verify_too() {
    let tmp = tempfile::tempdir().unwrap();
    for product in [Product::Genoa, Product::Turin] {
        let dir = tmp.path().join(product.name());
        sim::init(
            &dir,
            &InitOptions {
                seed: Some(SEED.to_vec()),
                product,
                ..Default::default()
            },
        )
        .unwrap();
        let amd = SimAmd::load(&dir).unwrap();
        assert_eq!(amd.product(), product);
        let report = amd.snp_report(&SnpRequest::default()).unwrap();
        let verifier = SnpVerifier::with_trust_roots(&[amd.ark_der().to_vec()])
            .unwrap()
            .allow_simulated(true);
        let v = verifier.verify(
            &report,
            &SnpInputs {
                certs: &[amd.vcek_der().to_vec(), amd.ask_der().to_vec()],
                crls: &[],
                policy: &Policy::default(),
                at: time::OffsetDateTime::now_utc().unix_timestamp(),
            },
        );
        assert!(v.accepted(), "{product}: {:?}", v.outcome);
        assert_eq!(v.claims["product"], product.name());
    }
}

#[test]
fn library_callers_not_in_simulated_mode_get_simulated_not_allowed() {
    let amd = SimAmd::load(sim_dir()).unwrap();
    let report = amd.snp_report(&SnpRequest::default()).unwrap();
    let inputs = VerifyInputs {
        certs: vec![amd.vcek_der().to_vec(), amd.ask_der().to_vec()],
        trust_roots: Some(vec![amd.ark_der().to_vec()]),
        at: time::OffsetDateTime::now_utc().unix_timestamp(),
        ..Default::default()
    };
    let v = cvm_attest::verify(&report, None, &inputs).unwrap();
    assert_eq!(v.outcome.unwrap_err().reason, Reason::SimulatedNotAllowed);
    assert!(v.simulated);
    let v = cvm_attest::verify(
        &report,
        None,
        &VerifyInputs {
            allow_simulated: true,
            ..inputs
        },
    )
    .unwrap();
    assert!(v.accepted(), "{:?}", v.outcome);
}

#[test]
fn tdx_verifiers_not_in_simulated_mode_get_simulated_not_allowed() {
    use cvm_attest::tdx::{Collateral, TdxVerifier};
    let intel = SimIntel::load(sim_dir()).unwrap();
    let quote = intel.tdx_quote(&Default::default()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let collateral_dir = sim_dir().join("tdx/collateral");
    let inputs = VerifyInputs {
        trust_roots: Some(vec![intel.root_der().to_vec()]),
        collateral: Some(collateral_dir.clone()),
        at: now,
        ..Default::default()
    };
    let v = cvm_attest::verify(&quote, None, &inputs).unwrap();
    assert_eq!(v.outcome.unwrap_err().reason, Reason::SimulatedNotAllowed);
    assert!(v.simulated);
    // The server's reusable verifier: refused by default, accepted in simulated mode.
    let verifier = TdxVerifier::with_trust_roots(&[intel.root_der().to_vec()]).unwrap();
    let collateral =
        Collateral::from_path(&collateral_dir, verifier.fmspc_of(&quote).as_ref()).unwrap();
    let verdict: cvm_attest::Verdict = verifier
        .verify(&quote, Some(&collateral), &Policy::default(), now)
        .into();
    assert_eq!(
        verdict.outcome.unwrap_err().reason,
        Reason::SimulatedNotAllowed
    );
    let verdict: cvm_attest::Verdict = verifier
        .allow_simulated(true)
        .verify(&quote, Some(&collateral), &Policy::default(), now)
        .into();
    assert!(verdict.accepted(), "{:?}", verdict.outcome);
}

#[test]
fn loading_a_damaged_sim_directory_fails_with_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing directory.
    assert!(matches!(
        Simulator::load(&tmp.path().join("none")),
        Err(SimError::Io { .. })
    ));
    let files = [
        "private/vcek.key.p8",
        "snp/vcek.der",
        "snp/ask.pem",
        "snp/ark.pem",
        "private/intel-attestation.key.p8",
        "private/intel-pck.key.p8",
        "tdx/pck_chain.pem",
    ];
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x30",
        b"not a key",
        &[0x30, 0x82, 0xff, 0xff],
        &[0xff; 300],
    ];
    for (i, rel) in files.iter().enumerate() {
        for (j, bad) in garbage.iter().enumerate() {
            let dir = tmp.path().join(format!("d{i}-{j}"));
            copy_dir(sim_dir(), &dir);
            std::fs::write(dir.join(rel), bad).unwrap();
            let result = Simulator::load(&dir);
            assert!(result.is_err(), "{rel} = {bad:?} loaded");
        }
        // Truncations of the real file.
        let real = std::fs::read(sim_dir().join(rel)).unwrap();
        for cut in [1, real.len() / 2, real.len() - 1] {
            let dir = tmp.path().join(format!("t{i}-{cut}"));
            copy_dir(sim_dir(), &dir);
            std::fs::write(dir.join(rel), &real[..cut]).unwrap();
            let _ = Simulator::load(&dir); // must not panic
        }
    }
    // Keys swapped between AMD and Intel do not load.
    let dir = tmp.path().join("swapped");
    copy_dir(sim_dir(), &dir);
    std::fs::copy(
        sim_dir().join("private/intel-pck.key.p8"),
        dir.join("private/intel-attestation.key.p8"),
    )
    .unwrap();
    std::fs::copy(
        sim_dir().join("private/intel-attestation.key.p8"),
        dir.join("private/intel-pck.key.p8"),
    )
    .unwrap();
    assert!(SimIntel::load(&dir).is_err());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
