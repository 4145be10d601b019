//! Shared helpers for the SNP integration tests: where the vectors are, the manifest, small builders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cvm_attest::snp::{SnpInputs, SnpVerifier};
use cvm_attest::{Policy, Reason, Verdict};
use serde_json::Value;
use std::path::PathBuf;

/// `$CVM_VECTORS`, else `shared/vectors` next to the repository.
pub fn vectors() -> PathBuf {
    std::env::var_os("CVM_VECTORS")
        .map(Into::into)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
}

pub fn read(rel: &str) -> Vec<u8> {
    let path = vectors().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn manifest() -> Value {
    serde_json::from_slice(&read("MANIFEST.json")).unwrap()
}

/// One SNP vector of the manifest.
pub struct Vector {
    pub id: String,
    pub product: String,
    pub report: Vec<u8>,
    /// The VCEK or VLEK (DER).
    pub leaf: Vec<u8>,
    pub leaf_is_vlek: bool,
    pub chain_file: String,
    pub at: i64,
    pub entry: Value,
}

pub fn snp_vectors() -> Vec<Vector> {
    let m = manifest();
    let list = m["snp"].as_array().unwrap();
    assert!(list.len() >= 10, "expected at least 10 SNP vectors");
    list.iter()
        .map(|v| {
            let files = &v["files"];
            let (leaf_file, leaf_is_vlek) = match files.get("vlek") {
                Some(f) => (f.as_str().unwrap(), true),
                None => (files["vcek"].as_str().unwrap(), false),
            };
            Vector {
                id: v["id"].as_str().unwrap().to_owned(),
                product: v["product"].as_str().unwrap().to_owned(),
                report: read(files["report"].as_str().unwrap()),
                leaf: read(leaf_file),
                leaf_is_vlek,
                chain_file: files["ask_ark_chain"].as_str().unwrap().to_owned(),
                at: cvm_attest::pki::parse_rfc3339(v["expected"]["verifies_at"].as_str().unwrap())
                    .unwrap(),
                entry: v.clone(),
            }
        })
        .collect()
}

pub fn vector(id: &str) -> Vector {
    snp_vectors().into_iter().find(|v| v.id == id).unwrap()
}

pub fn builtin() -> SnpVerifier {
    SnpVerifier::new().unwrap()
}

pub fn run(
    verifier: &SnpVerifier,
    evidence: &[u8],
    certs: &[Vec<u8>],
    policy: &Policy,
    at: i64,
) -> Verdict {
    verifier.verify(
        evidence,
        &SnpInputs {
            certs,
            crls: &[],
            policy,
            at,
        },
    )
}

/// Verify with the built-in roots, the default policy and only the leaf certificate.
pub fn verify_default(evidence: &[u8], leaf: &[u8], at: i64) -> Verdict {
    run(
        &builtin(),
        evidence,
        &[leaf.to_vec()],
        &Policy::default(),
        at,
    )
}

pub fn reason(v: &Verdict) -> Option<Reason> {
    v.outcome.as_ref().err().map(|r| r.reason)
}

pub fn policy(toml: &str) -> Policy {
    Policy::from_toml(toml).unwrap()
}

pub fn at(text: &str) -> i64 {
    cvm_attest::pki::parse_rfc3339(text).unwrap()
}
