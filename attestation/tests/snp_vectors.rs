//! Real AMD evidence (shared/vectors, MANIFEST.json): every SNP vector verifies at its time with the built-in
//! roots and only its VCEK/VLEK, with the manifest's decoded fields as claims; and every way of breaking one
//! is refused with the reason DESIGN.md's check order gives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use cvm_attest::Reason;
use cvm_attest::snp::report::{REPORT_LEN, SIG_R_OFFSET, SIG_S_OFFSET};
use cvm_attest::snp::{SnpInputs, SnpVerifier};
use serde_json::{Value, json};

/// Manifest field name → claim name, where they differ.
fn claim_name(field: &str) -> &str {
    match field {
        "platform_tcb" => "current_tcb",
        other => other,
    }
}

#[test]
fn every_manifest_vector_is_accepted_at_its_time_with_the_manifest_fields_as_claims() {
    let verifier = builtin();
    let allow_debug = policy("allow_debug = true");
    for v in snp_vectors() {
        let fields = &v.entry["fields"];
        let debug = fields["policy_decoded"]["debug"].as_bool().unwrap();
        let verdict = run(
            &verifier,
            &v.report,
            std::slice::from_ref(&v.leaf),
            &allow_debug,
            v.at,
        );
        assert!(verdict.accepted(), "{}: {:?}", v.id, verdict.outcome);
        assert!(!verdict.simulated);
        let claims = &verdict.claims;
        for field in [
            "version",
            "guest_svn",
            "policy",
            "family_id",
            "image_id",
            "vmpl",
            "signature_algo",
            "platform_tcb",
            "platform_info",
            "report_data",
            "measurement",
            "host_data",
            "id_key_digest",
            "author_key_digest",
            "report_id",
            "report_id_ma",
            "reported_tcb",
            "cpuid_fam_id",
            "cpuid_mod_id",
            "cpuid_step",
            "chip_id",
            "committed_tcb",
            "current_version",
            "committed_version",
            "launch_tcb",
            "launch_mit_vector",
            "current_mit_vector",
            "flags",
        ] {
            let want = fields.get(field).unwrap_or(&Value::Null);
            let got = claims.get(claim_name(field)).unwrap_or(&Value::Null);
            assert_eq!(got, want, "{}: claim {field}", v.id);
        }
        for (k, want) in fields["policy_decoded"].as_object().unwrap() {
            assert_eq!(
                &claims["policy_decoded"][k], want,
                "{}: policy bit {k}",
                v.id
            );
        }
        assert_eq!(claims["product"], json!(v.product), "{}", v.id);
        let signer = if v.leaf_is_vlek { "vlek" } else { "vcek" };
        assert_eq!(claims["signer"], json!(signer), "{}", v.id);
        assert_eq!(claims["debug"], json!(debug));
        assert_eq!(claims["revocation_checked"], json!(false));
        assert_eq!(claims["evidence_format"], json!("snp-report"));
        let ext = &v.entry["vcek_extensions"];
        assert_eq!(claims["vcek_product_name"], ext["productName1"], "{}", v.id);
        if v.leaf_is_vlek {
            assert_eq!(claims["csp_id"], ext["cspID"]);
        }

        // The default policy refuses debug guests and accepts the others.
        let default = verify_default(&v.report, &v.leaf, v.at);
        if debug {
            assert_eq!(reason(&default), Some(Reason::PolicyDebug), "{}", v.id);
            assert_eq!(
                default.claims, verdict.claims,
                "claims are filled on rejection too"
            );
        } else {
            assert!(default.accepted(), "{}: {:?}", v.id, default.outcome);
        }
    }
    // One chain per distinct VCEK/VLEK was remembered.
    assert_eq!(verifier.cached_chains(), 10);
}

#[test]
fn the_go_sev_guest_debug_report_is_refused_by_default_and_accepted_with_allow_debug() {
    let v = vector("snp-milan-gosevguest");
    let verdict = verify_default(&v.report, &v.leaf, v.at);
    assert_eq!(reason(&verdict), Some(Reason::PolicyDebug));
    assert_eq!(verdict.claims["debug"], json!(true));
    let ok = run(
        &builtin(),
        &v.report,
        std::slice::from_ref(&v.leaf),
        &policy("allow_debug = true"),
        v.at,
    );
    assert!(ok.accepted(), "{:?}", ok.outcome);
}

#[test]
fn the_vlek_report_is_refused_as_expired_in_november_2026() {
    let v = vector("snp-milan-trustee-vlek");
    let verdict = verify_default(&v.report, &v.leaf, at("2026-11-22T00:00:00Z"));
    assert_eq!(
        reason(&verdict),
        Some(Reason::CertExpired),
        "{:?}",
        verdict.outcome
    );
    let message = &verdict.outcome.as_ref().unwrap_err().message;
    assert!(
        message.contains("VLEK") && message.contains("2025-12-10"),
        "{message}"
    );
    assert_eq!(verdict.claims["signer"], json!("vlek"));
    assert_eq!(verdict.claims["vmpl"], json!(1));
}

#[test]
fn certificates_are_checked_at_the_given_time_also_when_the_chain_is_cached() {
    let v = vector("snp-milan-virtee");
    let verifier = builtin();
    let certs = [v.leaf.clone()];
    let p = cvm_attest::Policy::default();
    assert!(run(&verifier, &v.report, &certs, &p, v.at).accepted());
    assert_eq!(verifier.cached_chains(), 1);
    let before = run(&verifier, &v.report, &certs, &p, at("2023-04-03T19:23:42Z"));
    assert_eq!(reason(&before), Some(Reason::CertNotYetValid));
    let after = run(&verifier, &v.report, &certs, &p, at("2030-04-03T19:23:44Z"));
    assert_eq!(reason(&after), Some(Reason::CertExpired));
    // Validity ends are inclusive.
    assert!(run(&verifier, &v.report, &certs, &p, at("2030-04-03T19:23:43Z")).accepted());
}

#[test]
fn azure_hcl_wrappers_are_unwrapped_verified_and_their_runtime_data_bound() {
    for (hcl_file, id) in [
        (
            "snp/milan-azure-hcl-report-v2.hcl.bin",
            "snp-milan-azure-v2",
        ),
        (
            "snp/milan-azure-hcl-report-v3.hcl.bin",
            "snp-milan-azure-v3",
        ),
        ("snp/genoa-azure-hcl-report.hcl.bin", "snp-genoa-azure"),
    ] {
        let v = vector(id);
        let hcl = read(hcl_file);
        let verdict = verify_default(&hcl, &v.leaf, v.at);
        assert!(verdict.accepted(), "{hcl_file}: {:?}", verdict.outcome);
        let plain = verify_default(&v.report, &v.leaf, v.at);
        assert_eq!(verdict.claims["evidence_format"], json!("azure-hcl"));
        assert_eq!(
            verdict.claims["azure_hcl"]["runtime_data_bound"],
            json!(true)
        );
        assert_eq!(verdict.claims["measurement"], plain.claims["measurement"]);
        assert_eq!(verdict.claims["report_data"], plain.claims["report_data"]);

        // The runtime data (the vTPM key) is bound: changing it is refused.
        let mut tampered = hcl.clone();
        tampered[0x4D4 + 20] ^= 1;
        let refused = verify_default(&tampered, &v.leaf, v.at);
        assert_eq!(
            reason(&refused),
            Some(Reason::Malformed),
            "{:?}",
            refused.outcome
        );
        assert!(
            refused
                .outcome
                .unwrap_err()
                .message
                .contains("runtime data")
        );

        // Cut short, or carrying another report type: refused as malformed, with claims empty.
        for len in [4, 0x20, 0x4C0, 0x4D4, 0x4D4 + 100] {
            let cut = verify_default(&hcl[..len], &v.leaf, v.at);
            assert_eq!(
                reason(&cut),
                Some(Reason::Malformed),
                "{hcl_file} cut at {len}"
            );
            assert!(cut.outcome.unwrap_err().message.contains("HCL"));
        }
        let mut tdx = hcl.clone();
        tdx[0x4C8] = 4;
        assert_eq!(
            reason(&verify_default(&tdx, &v.leaf, v.at)),
            Some(Reason::Malformed)
        );
    }
}

#[test]
fn policy_refusals_each_have_their_code() {
    let v = vector("snp-milan-virtee");
    let fields = &v.entry["fields"];
    let m = fields["measurement"].as_str().unwrap();
    let other = "00".repeat(48);
    let rd = fields["report_data"].as_str().unwrap();
    let hd = fields["host_data"].as_str().unwrap();
    let cases = [
        (
            format!("[snp]\nmeasurements = [\"{other}\"]"),
            Some(Reason::PolicyMeasurement),
        ),
        (
            format!("[snp]\nmeasurements = [\"{other}\", \"{m}\"]"),
            None,
        ),
        (
            "[snp]\nvmpl = [1, 2, 3]".to_owned(),
            Some(Reason::PolicyVmpl),
        ),
        ("[snp]\nvmpl = [0]".to_owned(), None),
        (
            format!("[snp]\nhost_data = \"{}\"", "11".repeat(32)),
            Some(Reason::PolicyHostData),
        ),
        (format!("[snp]\nhost_data = \"{hd}\""), None),
        (
            format!("[snp]\nreport_data = \"{}\"", "00".repeat(64)),
            Some(Reason::PolicyReportData),
        ),
        (format!("[snp]\nreport_data = \"{rd}\""), None),
        // REPORTED_TCB is bl 3, tee 0, snp 8, microcode 115.
        (
            "[snp]\nmin_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }".to_owned(),
            None,
        ),
        (
            "[snp]\nmin_tcb = { microcode = 116 }".to_owned(),
            Some(Reason::PolicyTcb),
        ),
        (
            "[snp]\nmin_tcb = { snp = 9 }".to_owned(),
            Some(Reason::PolicyTcb),
        ),
        (
            "[snp]\nmin_tcb = { bootloader = 4 }".to_owned(),
            Some(Reason::PolicyTcb),
        ),
        // Milan has no FMC: the component is not compared.
        ("[snp]\nmin_tcb = { fmc = 9 }".to_owned(), None),
        (
            "require_revocation = true".to_owned(),
            Some(Reason::CollateralMissing),
        ),
    ];
    let verifier = builtin();
    for (toml, want) in cases {
        let verdict = run(
            &verifier,
            &v.report,
            std::slice::from_ref(&v.leaf),
            &policy(&toml),
            v.at,
        );
        assert_eq!(reason(&verdict), want, "{toml}: {:?}", verdict.outcome);
    }
    // CURRENT_TCB (microcode 0xce on the trustee report) is not what min_tcb compares.
    let t = vector("snp-milan-trustee");
    let verdict = run(
        &verifier,
        &t.report,
        std::slice::from_ref(&t.leaf),
        &policy("[snp]\nmin_tcb = { microcode = 116 }"),
        t.at,
    );
    assert_eq!(reason(&verdict), Some(Reason::PolicyTcb));
    // Turin: fmc is compared, and the Turin byte layout is used.
    let turin = vector("snp-turin-oak");
    for (toml, want) in [
        (
            "[snp]\nmin_tcb = { fmc = 0, bootloader = 1, tee = 0, snp = 2, microcode = 71 }",
            None,
        ),
        ("[snp]\nmin_tcb = { fmc = 1 }", Some(Reason::PolicyTcb)),
        ("[snp]\nmin_tcb = { snp = 3 }", Some(Reason::PolicyTcb)),
    ] {
        let verdict = run(
            &verifier,
            &turin.report,
            std::slice::from_ref(&turin.leaf),
            &policy(toml),
            turin.at,
        );
        assert_eq!(reason(&verdict), want, "{toml}");
    }
}

#[test]
fn structure_checks_come_first_unsupported_version_and_signature_algorithm() {
    let v = vector("snp-genoa-oak");
    for version in [0u32, 1, 4, 6, 0xffff_ffff] {
        let mut r = v.report.clone();
        r[..4].copy_from_slice(&version.to_le_bytes());
        let verdict = verify_default(&r, &v.leaf, v.at);
        assert_eq!(
            reason(&verdict),
            Some(Reason::UnsupportedVersion),
            "version {version}"
        );
        assert_eq!(verdict.claims, json!({}));
    }
    for algo in [0u32, 2, 0x101] {
        let mut r = v.report.clone();
        r[0x34..0x38].copy_from_slice(&algo.to_le_bytes());
        let verdict = verify_default(&r, &v.leaf, v.at);
        assert_eq!(
            reason(&verdict),
            Some(Reason::UnsupportedSigAlgo),
            "algo {algo}"
        );
        assert_eq!(
            verdict.claims["signature_algo"],
            json!(algo),
            "claims are filled"
        );
    }
    // SIGNING_KEY none (7) or reserved, and MASK_CHIP_KEY: the report carries no usable signature.
    for flags in [7u32 << 2, 2 << 2, 1 << 1] {
        let mut r = v.report.clone();
        r[0x48..0x4C].copy_from_slice(&flags.to_le_bytes());
        let verdict = verify_default(&r, &v.leaf, v.at);
        assert_eq!(
            reason(&verdict),
            Some(Reason::UnsupportedSigAlgo),
            "flags {flags:#x}"
        );
    }
}

#[test]
fn every_truncation_and_extension_of_a_real_report_is_malformed() {
    let verifier = builtin();
    let p = cvm_attest::Policy::default();
    for v in snp_vectors() {
        let certs = [v.leaf.clone()];
        for len in 0..REPORT_LEN {
            let verdict = run(&verifier, &v.report[..len], &certs, &p, v.at);
            assert_eq!(
                reason(&verdict),
                Some(Reason::Malformed),
                "{} cut at {len}",
                v.id
            );
            assert_eq!(verdict.claims, json!({}));
        }
        let mut longer = v.report.clone();
        longer.push(0);
        assert_eq!(
            reason(&run(&verifier, &longer, &certs, &p, v.at)),
            Some(Reason::Malformed)
        );
    }
}

#[test]
fn a_nonzero_byte_above_the_48th_of_r_or_s_is_an_invalid_signature() {
    let v = vector("snp-milan-virtee");
    for offset in [
        SIG_R_OFFSET + 48,
        SIG_R_OFFSET + 71,
        SIG_S_OFFSET + 48,
        SIG_S_OFFSET + 71,
    ] {
        let mut r = v.report.clone();
        r[offset] = 1;
        let verdict = verify_default(&r, &v.leaf, v.at);
        assert_eq!(
            reason(&verdict),
            Some(Reason::SignatureInvalid),
            "byte {offset:#x}"
        );
    }
    // Zero R or S, or S + n (not reduced): invalid as well.
    let mut r = v.report.clone();
    r[SIG_S_OFFSET..SIG_S_OFFSET + 72].fill(0);
    assert_eq!(
        reason(&verify_default(&r, &v.leaf, v.at)),
        Some(Reason::SignatureInvalid)
    );
}

#[test]
fn a_vcek_from_another_chip_fails_the_signature_and_none_at_all_is_collateral_missing() {
    let v = vector("snp-milan-virtee");
    let other = vector("snp-milan-trustee");
    let verdict = verify_default(&v.report, &other.leaf, v.at);
    assert_eq!(reason(&verdict), Some(Reason::SignatureInvalid));

    let verdict = run(
        &builtin(),
        &v.report,
        &[],
        &cvm_attest::Policy::default(),
        v.at,
    );
    assert_eq!(reason(&verdict), Some(Reason::CollateralMissing));
    let message = verdict.outcome.unwrap_err().message;
    assert!(message.contains("--cert vcek.der"), "{message}");
    // ASK/ARK only, without the VCEK: still missing.
    let bundle = cvm_attest::pki::certs_from_bytes(&read("snp/milan-ark-ask.pem")).unwrap();
    let verdict = run(
        &builtin(),
        &v.report,
        &bundle,
        &cvm_attest::Policy::default(),
        v.at,
    );
    assert_eq!(reason(&verdict), Some(Reason::CollateralMissing));
    // Several certificates: the one that signed is found.
    let mut certs = vec![other.leaf.clone()];
    certs.extend(bundle);
    certs.push(v.leaf.clone());
    let verdict = run(
        &builtin(),
        &v.report,
        &certs,
        &cvm_attest::Policy::default(),
        v.at,
    );
    assert!(verdict.accepted(), "{:?}", verdict.outcome);
}

#[test]
fn a_milan_vcek_with_a_genoa_chain_is_refused() {
    let v = vector("snp-milan-virtee");
    let genoa = cvm_attest::pki::certs_from_bytes(&read("snp/genoa-ark-ask.pem")).unwrap();
    let (genoa_ask, genoa_ark) = (genoa[0].clone(), genoa[1].clone());
    // Only the Genoa ARK trusted; the Genoa ASK given: the Milan VCEK's issuer is not it, and the Milan ASK
    // (built in) chains to an ARK that is no longer trusted.
    let verifier = SnpVerifier::with_trust_roots(std::slice::from_ref(&genoa_ark)).unwrap();
    let verdict = run(
        &verifier,
        &v.report,
        &[v.leaf.clone(), genoa_ask.clone()],
        &cvm_attest::Policy::default(),
        v.at,
    );
    assert_eq!(
        reason(&verdict),
        Some(Reason::UntrustedRoot),
        "{:?}",
        verdict.outcome
    );
    assert_eq!(verifier.cached_chains(), 0);
    // The Milan ARK trusted explicitly: accepted (built-in ASK used as intermediate).
    let milan = cvm_attest::pki::certs_from_bytes(&read("snp/milan-ark-ask.pem")).unwrap();
    let verifier = SnpVerifier::with_trust_roots(&[milan[1].clone()]).unwrap();
    assert!(
        run(
            &verifier,
            &v.report,
            std::slice::from_ref(&v.leaf),
            &cvm_attest::Policy::default(),
            v.at
        )
        .accepted()
    );
    // The Genoa report with its VCEK, only the Milan ARK trusted: untrusted.
    let g = vector("snp-genoa-oak");
    let verdict = run(
        &verifier,
        &g.report,
        std::slice::from_ref(&g.leaf),
        &cvm_attest::Policy::default(),
        g.at,
    );
    assert_eq!(reason(&verdict), Some(Reason::UntrustedRoot));
    // A Milan VCEK given for a Genoa report: the signature check fails first.
    let verdict = verify_default(&g.report, &v.leaf, g.at);
    assert_eq!(reason(&verdict), Some(Reason::SignatureInvalid));
}

#[test]
fn the_vlek_chain_goes_through_the_asvk() {
    let v = vector("snp-milan-trustee-vlek");
    // Only the ASK chain's ARK is trusted; the ARK is the same for VCEK and VLEK chains.
    let asvk = cvm_attest::pki::certs_from_bytes(&read(&v.chain_file)).unwrap();
    let verifier = SnpVerifier::with_trust_roots(&[asvk[1].clone()]).unwrap();
    let verdict = run(
        &verifier,
        &v.report,
        std::slice::from_ref(&v.leaf),
        &cvm_attest::Policy::default(),
        v.at,
    );
    assert!(verdict.accepted(), "{:?}", verdict.outcome);
    assert_eq!(verdict.claims["chip_id"], json!("00".repeat(64)));
}

#[test]
fn the_verifier_is_send_and_sync_and_shares_its_cache_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SnpVerifier>();
    let verifier = builtin();
    let vectors = snp_vectors();
    std::thread::scope(|s| {
        for v in &vectors {
            let verifier = &verifier;
            s.spawn(move || {
                let verdict = verifier.verify(
                    &v.report,
                    &SnpInputs {
                        certs: std::slice::from_ref(&v.leaf),
                        crls: &[],
                        policy: &policy("allow_debug = true"),
                        at: v.at,
                    },
                );
                assert!(verdict.accepted(), "{}", v.id);
            });
        }
    });
    assert_eq!(verifier.cached_chains(), vectors.len());
}

#[test]
fn a_garbage_crl_is_malformed() {
    let v = vector("snp-milan-virtee");
    let verifier = builtin();
    let p = cvm_attest::Policy::default();
    let verdict = verifier.verify(
        &v.report,
        &SnpInputs {
            certs: std::slice::from_ref(&v.leaf),
            crls: &[b"not a crl".to_vec()],
            policy: &p,
            at: v.at,
        },
    );
    assert_eq!(reason(&verdict), Some(Reason::Malformed));
}
