//! `cvm-attest sim` end to end: the real binary makes a sim directory, reports and quotes, and
//! `cvm-attest verify` accepts them with the simulated roots (saying `simulated: true`, with exactly the
//! requested claims) and refuses them with the built-in roots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim_common;

use serde_json::{Value, json};
use sim_common::*;

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap()
}

fn snp_report(args: &[&str], name: &str) -> String {
    let out = temp_file(name);
    let out = out.to_str().unwrap();
    let sim = p("");
    let mut all = vec!["sim", "snp-report", "--sim-dir", &sim, "--out", out];
    all.extend_from_slice(args);
    let (code, _, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    out.to_owned()
}

fn tdx_quote(args: &[&str], name: &str) -> String {
    let out = temp_file(name);
    let out = out.to_str().unwrap();
    let sim = p("");
    let mut all = vec!["sim", "tdx-quote", "--sim-dir", &sim, "--out", out];
    all.extend_from_slice(args);
    let (code, _, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    out.to_owned()
}

#[test]
fn a_simulated_snp_report_verifies_with_the_simulated_ark_and_says_simulated() {
    let measurement = "ab".repeat(48);
    let host_data = "cd".repeat(32);
    let report = snp_report(
        &[
            "--report-data",
            "0102",
            "--measurement",
            &measurement,
            "--host-data",
            &host_data,
            "--vmpl",
            "1",
        ],
        "snp-1.bin",
    );
    let (code, out, err) = run(&[
        "verify",
        "--evidence",
        &report,
        "--trust-root",
        &p("snp/ark.pem"),
        "--cert",
        &p("snp/vcek.der"),
        "--cert",
        &p("snp/cert_chain.pem"),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json_of(&out);
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["simulated"], json!(true));
    let c = &v["claims"];
    assert_eq!(c["measurement"], json!(measurement));
    assert_eq!(c["host_data"], json!(host_data));
    assert_eq!(c["report_data"], json!(format!("0102{}", "00".repeat(62))));
    assert_eq!(c["vmpl"], json!(1));
    assert_eq!(c["version"], json!(5));
    assert_eq!(c["product"], json!("Milan"));
    assert_eq!(c["debug"], json!(false));
    let vcek = std::fs::read(p("snp/vcek.der")).unwrap();
    let sim = cvm_attest::sim::SimAmd::load(sim_dir()).unwrap();
    assert_eq!(sim.vcek_der(), vcek.as_slice());
    assert_eq!(c["chip_id"], json!(hex::encode(sim.chip_id())));
}

#[test]
fn a_simulated_snp_report_is_refused_with_the_built_in_roots() {
    let report = snp_report(
        &["--report-data", "00", "--measurement", &"11".repeat(48)],
        "snp-2.bin",
    );
    let (code, out, _) = run(&[
        "verify",
        "--evidence",
        &report,
        "--cert",
        &p("snp/vcek.der"),
        "--cert",
        &p("snp/cert_chain.pem"),
        "--json",
    ]);
    assert_eq!(code, 1);
    let v = json_of(&out);
    assert_eq!(v["verdict"], "reject");
    assert_eq!(v["reason"], "UNTRUSTED_ROOT");
}

#[test]
fn debug_and_version_3_reports_carry_what_was_asked() {
    let report = snp_report(
        &[
            "--report-data",
            &"ff".repeat(64),
            "--measurement",
            &"22".repeat(48),
            "--debug",
            "--version",
            "3",
        ],
        "snp-3.bin",
    );
    let base = [
        "verify",
        "--evidence",
        &report,
        "--trust-root",
        &p("snp/ark.pem"),
        "--cert",
        &p("snp/vcek.der"),
        "--cert",
        &p("snp/cert_chain.pem"),
        "--json",
    ];
    let (code, out, _) = run(&base);
    assert_eq!(code, 1);
    let v = json_of(&out);
    assert_eq!(v["reason"], "POLICY_DEBUG");
    assert_eq!(v["claims"]["version"], json!(3));
    assert_eq!(v["claims"]["debug"], json!(true));
    let policy = temp_file("allow-debug.toml");
    std::fs::write(&policy, "allow_debug = true\n").unwrap();
    let mut args = base.to_vec();
    args.extend(["--policy", policy.to_str().unwrap()]);
    let (code, out, _) = run(&args);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_simulated_tdx_quote_verifies_with_the_simulated_root_and_collateral() {
    let mrtd = "a1".repeat(48);
    let rtmrs: Vec<String> = ["b0", "b1", "b2", "b3"]
        .iter()
        .map(|b| b.repeat(48))
        .collect();
    let mrconfigid = "c4".repeat(48);
    let report_data = "d5".repeat(64);
    let quote = tdx_quote(
        &[
            "--report-data",
            &report_data,
            "--mrtd",
            &mrtd,
            "--rtmr0",
            &rtmrs[0],
            "--rtmr1",
            &rtmrs[1],
            "--rtmr2",
            &rtmrs[2],
            "--rtmr3",
            &rtmrs[3],
            "--mrconfigid",
            &mrconfigid,
        ],
        "tdx-1.bin",
    );
    let (code, out, err) = run(&[
        "verify",
        "--evidence",
        &quote,
        "--trust-root",
        &p("tdx/root.pem"),
        "--collateral",
        &p("tdx/collateral"),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json_of(&out);
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["tee"], "tdx");
    assert_eq!(v["simulated"], json!(true));
    let c = &v["claims"];
    assert_eq!(c["mrtd"], json!(mrtd));
    for (i, r) in rtmrs.iter().enumerate() {
        assert_eq!(c[format!("rtmr{i}")], json!(r));
    }
    assert_eq!(c["mrconfigid"], json!(mrconfigid));
    assert_eq!(c["report_data"], json!(report_data));
    assert_eq!(c["tcb_status"], json!("UpToDate"));
    assert_eq!(c["fmspc"], json!("90c06f000000"));
    assert_eq!(c["debug"], json!(false));
    assert_eq!(c["revocation_checked"], json!(true));
}

#[test]
fn a_simulated_tdx_quote_is_refused_with_the_built_in_root() {
    let quote = tdx_quote(
        &["--report-data", "01", "--mrtd", &"00".repeat(48)],
        "tdx-2.bin",
    );
    let (code, out, _) = run(&[
        "verify",
        "--evidence",
        &quote,
        "--collateral",
        &p("tdx/collateral"),
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v = json_of(&out);
    assert_eq!(v["verdict"], "reject");
    assert_ne!(v["simulated"], json!(true));
}

#[test]
fn usage_errors_exit_2_with_a_sentence() {
    let sim = p("");
    let out = temp_file("never.bin");
    let out = out.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "sim",
                "snp-report",
                "--sim-dir",
                &sim,
                "--out",
                out,
                "--report-data",
                "00",
                "--measurement",
                "abcd",
            ],
            "--measurement is 2 bytes",
        ),
        (
            vec![
                "sim",
                "snp-report",
                "--sim-dir",
                &sim,
                "--out",
                out,
                "--report-data",
                &"00".repeat(65),
                "--measurement",
                &"00".repeat(48),
            ],
            "at most 64 bytes",
        ),
        (
            vec![
                "sim",
                "tdx-quote",
                "--sim-dir",
                &sim,
                "--out",
                out,
                "--report-data",
                "zz",
                "--mrtd",
                &"00".repeat(48),
            ],
            "not hex",
        ),
        (
            vec![
                "sim",
                "snp-report",
                "--sim-dir",
                "/nonexistent/sim",
                "--out",
                out,
                "--report-data",
                "00",
                "--measurement",
                &"00".repeat(48),
            ],
            "cannot read",
        ),
        (vec!["sim", "init", "--out", &sim], "not empty"),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new(out).exists());
}

#[test]
fn help_explains_each_command() {
    for (cmd, says) in [
        ("init", "nextUpdate"),
        ("snp-report", "zero-padded"),
        ("tdx-quote", "zero-padded"),
    ] {
        let (code, out, _) = run(&["sim", cmd, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains(says), "{cmd}: {out}");
    }
}

#[test]
fn init_with_a_seed_file_is_reproducible_and_keeps_private_files_private() {
    let seed = temp_file("seed");
    std::fs::write(&seed, SEED).unwrap();
    let a = temp_file("sim-a");
    let (code, _, err) = run(&[
        "sim",
        "init",
        "--out",
        a.to_str().unwrap(),
        "--seed-file",
        seed.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for key in ["vcek.key.p8", "intel-attestation.key.p8", "ark.key.der"] {
        assert_eq!(
            std::fs::read(a.join("private").join(key)).unwrap(),
            std::fs::read(sim_dir().join("private").join(key)).unwrap(),
            "{key}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a.join("private")), 0o700);
        assert_eq!(mode(&a.join("private/seed")), 0o600);
        assert_eq!(mode(&a.join("private/vcek.key.p8")), 0o600);
    }
}
