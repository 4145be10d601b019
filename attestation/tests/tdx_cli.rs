//! The real `cvm-attest verify` binary on TDX quotes: exit codes 0/1/2 and the JSON contract.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod tdx_common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tdx_common::*;

fn run(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap(),
        json,
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn vector(id: &str) -> Vector {
    tdx_vectors().into_iter().find(|v| v.id == id).unwrap()
}

fn quote_file(v: &Vector, dir: &Path) -> String {
    let path = dir.join(format!("{}.bin", v.id));
    std::fs::write(&path, &v.quote).unwrap();
    path.to_str().unwrap().to_owned()
}

fn at(v: &Vector) -> String {
    v.expected()["verifies_at"].as_str().unwrap().to_owned()
}

fn check_shape(json: &Value) {
    let obj = json.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["claims", "message", "reason", "simulated", "tee", "verdict"]
    );
    assert_eq!(json["tee"], "tdx");
    assert_eq!(json["simulated"], false);
    for key in CLAIMS {
        assert!(json["claims"].get(key).is_some(), "claim {key} missing");
    }
}

#[test]
fn accepts_with_a_quote_collateral_v3_file() {
    let v = vector("tdx-v4-dcapqvl");
    let tmp = tempfile::tempdir().unwrap();
    let q = quote_file(&v, tmp.path());
    let c = v.v3_file.clone().unwrap();
    let (code, json, err) = run(&[
        "--evidence",
        &q,
        "--collateral",
        c.to_str().unwrap(),
        "--at",
        &at(&v),
        "--json",
    ]);
    assert_eq!(code, 0, "{json} {err}");
    check_shape(&json);
    assert_eq!(json["verdict"], "accept");
    assert_eq!(json["reason"], Value::Null);
    assert_eq!(json["claims"]["tcb_status"], "UpToDate");
    assert_eq!(json["claims"]["revocation_checked"], true);
    assert_eq!(json["claims"]["mrtd"], v.entry["td_report"]["mrtd"]);
    // The same with --tee tdx and the Intel root given explicitly, and as a human summary.
    let root = vectors().join("tdx/intel-sgx-root-ca.der");
    let (code, _, _) = run(&[
        "--evidence",
        &q,
        "--tee",
        "tdx",
        "--collateral",
        c.to_str().unwrap(),
        "--trust-root",
        root.to_str().unwrap(),
        "--at",
        &at(&v),
        "--json",
    ]);
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
        .args([
            "verify",
            "--evidence",
            &q,
            "--collateral",
            c.to_str().unwrap(),
            "--at",
            &at(&v),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("ACCEPTED")
    );
}

#[test]
fn uses_a_collateral_directory_and_policy_files() {
    let v = vector("tdx-v4-trustee-quote4");
    let tmp = tempfile::tempdir().unwrap();
    let q = quote_file(&v, tmp.path());
    let dir = v.collateral_path().unwrap();
    let dir = dir.to_str().unwrap();
    let (code, json, _) = run(&[
        "--evidence",
        &q,
        "--collateral",
        dir,
        "--at",
        &at(&v),
        "--json",
    ]);
    assert_eq!(code, 1);
    check_shape(&json);
    assert_eq!(json["verdict"], "reject");
    assert_eq!(json["reason"], "POLICY_DEBUG");
    assert_eq!(json["claims"]["debug"], true);
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "allow_debug = true\n").unwrap();
    let (code, json, _) = run(&[
        "--evidence",
        &q,
        "--collateral",
        dir,
        "--policy",
        policy.to_str().unwrap(),
        "--at",
        &at(&v),
        "--json",
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["claims"]["tcb_status"], "UpToDate");
    // Stale collateral.
    let (code, json, _) = run(&[
        "--evidence",
        &q,
        "--collateral",
        dir,
        "--at",
        LATE,
        "--json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(json["reason"], "COLLATERAL_EXPIRED");
}

#[test]
fn an_out_of_date_platform_with_the_2025_signing_chain_added() {
    let v = vector("tdx-v4-trustee-quote6");
    let tmp = tempfile::tempdir().unwrap();
    let q = quote_file(&v, tmp.path());
    let dir = v.collateral_path().unwrap();
    let (code, json, _) = run(&[
        "--evidence",
        &q,
        "--collateral",
        dir.to_str().unwrap(),
        "--at",
        &at(&v),
        "--json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(json["reason"], "TCB_OUT_OF_DATE");
    assert_eq!(json["claims"]["tcb_status"], "OutOfDate");
    assert_eq!(json["claims"]["revocation_checked"], false);
}

#[test]
fn no_collateral_is_a_rejection_and_unusable_inputs_exit_2() {
    let v = vector("tdx-v4-azure");
    let tmp = tempfile::tempdir().unwrap();
    let q = quote_file(&v, tmp.path());
    let (code, json, _) = run(&["--evidence", &q, "--json"]);
    assert_eq!(code, 1);
    check_shape(&json);
    assert_eq!(json["reason"], "COLLATERAL_MISSING");
    // An empty collateral directory: still a verdict.
    let empty = tempfile::tempdir().unwrap();
    let (code, json, _) = run(&[
        "--evidence",
        &q,
        "--collateral",
        empty.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(json["reason"], "COLLATERAL_MISSING");
    // A collateral path that does not exist, and a file that is not collateral: exit 2.
    let missing = tmp.path().join("nope");
    let (code, _, err) = run(&[
        "--evidence",
        &q,
        "--collateral",
        missing.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 2, "{err}");
    let garbage = tmp.path().join("garbage.json");
    std::fs::write(&garbage, "{\"tcb_info\": 7}").unwrap();
    let (code, _, _) = run(&[
        "--evidence",
        &q,
        "--collateral",
        garbage.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 2);
    // A truncated quote is a MALFORMED rejection (exit 1), a missing evidence file exit 2.
    let cut = tmp.path().join("cut.bin");
    std::fs::write(&cut, &v.quote[..1000]).unwrap();
    let (code, json, _) = run(&[
        "--evidence",
        cut.to_str().unwrap(),
        "--tee",
        "tdx",
        "--json",
    ]);
    assert_eq!(code, 1);
    assert_eq!(json["reason"], "MALFORMED");
    assert_eq!(json["claims"], serde_json::json!({}));
    let (code, _, _) = run(&["--evidence", missing.to_str().unwrap(), "--json"]);
    assert_eq!(code, 2);
}
