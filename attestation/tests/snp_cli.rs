//! The `cvm-attest verify` contract for SNP, through the real binary: exit codes 0/1/2 and the JSON keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

const SNP_CLAIMS: &[&str] = &[
    "version",
    "product",
    "signer",
    "guest_svn",
    "policy",
    "debug",
    "vmpl",
    "measurement",
    "report_data",
    "host_data",
    "family_id",
    "image_id",
    "id_key_digest",
    "author_key_digest",
    "chip_id",
    "reported_tcb",
    "revocation_checked",
];

fn path(rel: &str) -> String {
    vectors().join(rel).to_str().unwrap().to_owned()
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn accepts_a_real_report_with_exit_0_and_the_design_json() {
    let (code, out, err) = cli(&[
        "--evidence",
        &path("snp/turin-oak-report.bin"),
        "--cert",
        &path("snp/turin-oak-vcek.der"),
        "--at",
        "2025-07-18T17:04:46Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let j = json(&out);
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    for k in ["verdict", "tee", "reason", "message", "simulated", "claims"] {
        assert!(keys.contains(&k), "{k} missing in {out}");
    }
    assert_eq!(j["verdict"], "accept");
    assert_eq!(j["tee"], "snp");
    assert!(j["reason"].is_null() && j["message"].is_null());
    assert_eq!(j["simulated"], false);
    for k in SNP_CLAIMS {
        assert!(j["claims"].get(k).is_some(), "claim {k} missing");
    }
    assert_eq!(j["claims"]["product"], "Turin");
    assert_eq!(j["claims"]["signer"], "vcek");
    let tcb = &j["claims"]["reported_tcb"];
    assert_eq!(
        (
            tcb["fmc"].as_u64(),
            tcb["bootloader"].as_u64(),
            tcb["snp"].as_u64(),
            tcb["microcode"].as_u64()
        ),
        (Some(0), Some(1), Some(2), Some(71))
    );
    let hex = j["claims"]["measurement"].as_str().unwrap();
    assert!(
        hex.len() == 96
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
}

#[test]
fn rejects_with_exit_1_and_a_reason_code() {
    // The debug report under the default policy.
    let (code, out, _) = cli(&[
        "--evidence",
        &path("snp/milan-gosevguest-report.bin"),
        "--cert",
        &path("snp/milan-gosevguest-vcek.der"),
        "--at",
        "2022-09-25T00:55:28Z",
        "--json",
    ]);
    assert_eq!(code, 1);
    let j = json(&out);
    assert_eq!(j["verdict"], "reject");
    assert_eq!(j["reason"], "POLICY_DEBUG");
    assert_eq!(j["claims"]["debug"], true);
    // The expired VLEK, with its chain given as a PEM bundle.
    let (code, out, _) = cli(&[
        "--evidence",
        &path("snp/milan-trustee-vlek-report.bin"),
        "--cert",
        &path("snp/milan-trustee-vlek.der"),
        "--cert",
        &path("snp/milan-vlek-ark-asvk.pem"),
        "--at",
        "2026-11-22T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(json(&out)["reason"], "CERT_EXPIRED");
    // No VCEK: a clear message.
    let (code, out, _) = cli(&["--evidence", &path("snp/milan-virtee-report.bin"), "--json"]);
    assert_eq!(code, 1);
    let j = json(&out);
    assert_eq!(j["reason"], "COLLATERAL_MISSING");
    assert!(j["message"].as_str().unwrap().contains("--cert vcek.der"));
    // A Milan VCEK with the Genoa chain as the only trust root.
    let (code, out, _) = cli(&[
        "--evidence",
        &path("snp/milan-virtee-report.bin"),
        "--cert",
        &path("snp/milan-virtee-vcek.der"),
        "--cert",
        &path("snp/genoa-ark-ask.pem"),
        "--trust-root",
        &path("snp/genoa-ark-ask.pem"),
        "--at",
        "2023-04-04T19:23:43Z",
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let reason = json(&out)["reason"].as_str().unwrap().to_owned();
    assert!(
        reason == "UNTRUSTED_ROOT" || reason == "CHAIN_INVALID",
        "{reason}"
    );
}

#[test]
fn azure_hcl_reports_are_detected_and_verified() {
    let (code, out, err) = cli(&[
        "--evidence",
        &path("snp/genoa-azure-hcl-report.hcl.bin"),
        "--cert",
        &path("snp/genoa-azure-vcek.der"),
        "--at",
        "2025-01-25T02:21:48Z",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let j = json(&out);
    assert_eq!(j["claims"]["evidence_format"], "azure-hcl");
    assert_eq!(j["claims"]["product"], "Genoa");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let (code, _, err) = cli(&["--evidence", "/nonexistent/report.bin", "--json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"));
    let (code, _, _) = cli(&[
        "--evidence",
        &path("snp/milan-virtee-report.bin"),
        "--at",
        "yesterday",
    ]);
    assert_eq!(code, 2);
    let (code, _, _) = cli(&[
        "--evidence",
        &path("snp/milan-virtee-report.bin"),
        "--trust-root",
        &path("snp/milan-virtee-report.bin"),
    ]);
    assert_eq!(code, 2);
}

#[test]
fn the_human_summary_names_the_verdict_reason_and_key_claims() {
    let (code, out, _) = cli(&[
        "--evidence",
        &path("snp/milan-trustee-vlek-report.bin"),
        "--cert",
        &path("snp/milan-trustee-vlek.der"),
        "--at",
        "2024-12-11T22:14:21Z",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ACCEPTED: snp evidence verified"), "{out}");
    for line in [
        "  product: Milan",
        "  signer: vlek",
        "  vmpl: 1",
        "  revocation_checked: false",
    ] {
        assert!(out.contains(line), "{line:?} missing in\n{out}");
    }
    let (code, out, _) = cli(&[
        "--evidence",
        &path("snp/milan-trustee-vlek-report.bin"),
        "--cert",
        &path("snp/milan-trustee-vlek.der"),
        "--at",
        "2026-11-22T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("REJECTED (CERT_EXPIRED): snp evidence: the VLEK certificate"),
        "{out}"
    );
}
