//! Every TDX quote of MANIFEST.json, verified as MANIFEST says a correct verifier concludes, at the time it
//! names; then the same quotes stale, tampered, truncated and against policies.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod tdx_common;

use cvm_attest::policy::{HexBytes, TcbStatus};
use cvm_attest::tdx::{Collateral, CollateralParts, TdxVerifier};
use cvm_attest::{Policy, Reason};
use tdx_common::*;

fn reason(v: &cvm_attest::tdx::TdxVerdict) -> Option<Reason> {
    v.result.as_ref().err().map(|r| r.reason)
}

#[test]
fn every_manifest_quote_gets_the_manifest_verdict_at_its_time() {
    let verifier = TdxVerifier::new();
    for v in tdx_vectors() {
        let collateral = v.collateral();
        let default = verifier.verify(&v.quote, collateral.as_ref(), &Policy::default(), v.at());
        let permissive = verifier.verify(
            &v.quote,
            collateral.as_ref(),
            &v.permissive_policy(),
            v.at(),
        );
        let claims = &default.claims;
        // Claims are filled whenever the quote parsed, accepted or not.
        for key in CLAIMS {
            assert!(claims.get(key).is_some(), "{}: claim {key} missing", v.id);
        }
        let td = &v.entry["td_report"];
        for key in [
            "mrtd",
            "rtmr0",
            "rtmr3",
            "report_data",
            "td_attributes",
            "tee_tcb_svn",
            "mrseam",
        ] {
            assert_eq!(claims[key], td[key], "{}: claim {key}", v.id);
        }
        assert_eq!(claims["version"], v.entry["header"]["version"], "{}", v.id);
        assert_eq!(
            claims["fmspc"], v.entry["pck_sgx_extensions"]["fmspc"],
            "{}",
            v.id
        );
        assert!(!default.simulated);
        match v.verdict() {
            "accept" | "accept-with-status" => {
                let status = v.expected_status().unwrap();
                let accepted = permissive
                    .result
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{}: {e}", v.id));
                assert_eq!(accepted.tcb_status.as_str(), status, "{}", v.id);
                let exp = &v.expected()["tcb_status"];
                assert_eq!(permissive.claims["tcb_status"], status, "{}", v.id);
                assert_eq!(
                    permissive.claims["platform_status"], exp["platform"],
                    "{}",
                    v.id
                );
                assert_eq!(permissive.claims["qe_status"], exp["qe"], "{}", v.id);
                assert_eq!(
                    permissive
                        .claims
                        .get("tdx_module_status")
                        .cloned()
                        .unwrap_or_default(),
                    exp["tdx_module"],
                    "{}",
                    v.id
                );
                assert_eq!(
                    permissive.claims["advisory_ids"], exp["advisory_ids"],
                    "{}",
                    v.id
                );
                let debug = v.entry["td_report"]["td_attributes"]
                    .as_str()
                    .unwrap()
                    .starts_with("01");
                let want_default = if status != "UpToDate" {
                    Some(Reason::TcbOutOfDate)
                } else if debug {
                    Some(Reason::PolicyDebug)
                } else {
                    None
                };
                assert_eq!(
                    reason(&default),
                    want_default,
                    "{}: {:?}",
                    v.id,
                    default.result
                );
                let crls = v.entry["collateral_check"].get("pck_crl").is_some()
                    && v.entry["collateral_check"].get("root_ca_crl").is_some();
                assert_eq!(permissive.claims["revocation_checked"], crls, "{}", v.id);
            }
            "reject" => {
                assert!(
                    v.expected()["reason"]
                        .as_str()
                        .unwrap()
                        .starts_with("no TCB level")
                );
                assert_eq!(
                    reason(&default),
                    Some(Reason::TcbUnknown),
                    "{}: {:?}",
                    v.id,
                    default.result
                );
                assert_eq!(reason(&permissive), Some(Reason::TcbUnknown), "{}", v.id);
            }
            other => {
                assert!(
                    other.starts_with("signature-and-chain-valid"),
                    "{}: {other}",
                    v.id
                );
                assert!(!v.has_collateral());
                assert_eq!(
                    reason(&default),
                    Some(Reason::CollateralMissing),
                    "{}: {:?}",
                    v.id,
                    default.result
                );
            }
        }
    }
}

#[test]
fn all_collateral_is_stale_on_2026_11_22() {
    let verifier = TdxVerifier::new();
    for v in tdx_vectors() {
        let late = verifier.verify(
            &v.quote,
            v.collateral().as_ref(),
            &v.permissive_policy(),
            t(LATE),
        );
        let r = reason(&late);
        if v.has_collateral() {
            assert!(
                matches!(r, Some(Reason::CollateralExpired | Reason::CertExpired)),
                "{}: {:?}",
                v.id,
                late.result
            );
        } else {
            // The PCK chains of these run to 2030 and beyond: only the collateral is missing.
            assert_eq!(r, Some(Reason::CollateralMissing), "{}", v.id);
        }
    }
}

#[test]
fn quotes_without_collateral_still_have_their_signatures_checked() {
    let verifier = TdxVerifier::new();
    for v in tdx_vectors().into_iter().filter(|v| !v.has_collateral()) {
        let ok = verifier.verify(&v.quote, None, &Policy::default(), v.at());
        assert_eq!(reason(&ok), Some(Reason::CollateralMissing), "{}", v.id);
        assert_eq!(ok.claims["revocation_checked"], false);
        // One bit of MRTD (body offset 16+48+48+8+8+8 = 136 after the 48-byte header).
        let mut bad = v.quote.clone();
        bad[48 + 136] ^= 0x01;
        let r = verifier.verify(&bad, None, &Policy::default(), v.at());
        assert_eq!(reason(&r), Some(Reason::SignatureInvalid), "{}", v.id);
        // Before its PCK certificate was issued.
        let early = verifier.verify(
            &v.quote,
            None,
            &Policy::default(),
            t("2018-06-01T00:00:00Z"),
        );
        assert_eq!(reason(&early), Some(Reason::CertNotYetValid), "{}", v.id);
    }
}

fn vector(id: &str) -> Vector {
    tdx_vectors().into_iter().find(|v| v.id == id).unwrap()
}

#[test]
fn a_debug_td_is_refused_by_default_and_accepted_when_allowed() {
    let v = vector("tdx-v4-trustee-quote4");
    let verifier = TdxVerifier::new();
    let c = v.collateral();
    let r = verifier.verify(&v.quote, c.as_ref(), &Policy::default(), v.at());
    assert_eq!(reason(&r), Some(Reason::PolicyDebug));
    assert_eq!(r.claims["debug"], true);
    assert_eq!(r.claims["tcb_status"], "UpToDate");
    let allow = Policy {
        allow_debug: true,
        ..Policy::default()
    };
    assert!(
        verifier
            .verify(&v.quote, c.as_ref(), &allow, v.at())
            .result
            .is_ok()
    );
}

#[test]
fn out_of_date_platform_is_accepted_only_when_the_policy_says_so() {
    let v = vector("tdx-v4-trustee-quote6");
    let verifier = TdxVerifier::new();
    let c = v.collateral();
    let r = verifier.verify(&v.quote, c.as_ref(), &Policy::default(), v.at());
    assert_eq!(reason(&r), Some(Reason::TcbOutOfDate));
    assert_eq!(r.claims["tcb_status"], "OutOfDate");
    let policy = Policy::from_toml("accept_tcb_status = [\"UpToDate\", \"OutOfDate\"]").unwrap();
    let ok = verifier.verify(&v.quote, c.as_ref(), &policy, v.at());
    assert_eq!(ok.result.unwrap().tcb_status, TcbStatus::OutOfDate);
    // This set has no CRLs: accepted, but revocation was not checked, and requiring it refuses.
    assert_eq!(ok.claims["revocation_checked"], false);
    let strict =
        Policy::from_toml("accept_tcb_status = [\"OutOfDate\"]\nrequire_revocation = true")
            .unwrap();
    let r = verifier.verify(&v.quote, c.as_ref(), &strict, v.at());
    assert_eq!(reason(&r), Some(Reason::CollateralMissing));
}

#[test]
fn policy_refusals_carry_their_codes() {
    let v = vector("tdx-v4-dcapqvl");
    let verifier = TdxVerifier::new();
    let c = v.collateral();
    let td = &v.entry["td_report"];
    let run = |toml: &str| {
        let policy = Policy::from_toml(toml).unwrap();
        reason(&verifier.verify(&v.quote, c.as_ref(), &policy, v.at()))
    };
    let other48 = "ab".repeat(48);
    let mrtd = td["mrtd"].as_str().unwrap();
    assert_eq!(
        run(&format!("[tdx]\nmrtd = [\"{other48}\", \"{mrtd}\"]")),
        None
    );
    assert_eq!(
        run(&format!("[tdx]\nmrtd = [\"{other48}\"]")),
        Some(Reason::PolicyMeasurement)
    );
    for i in 0..4 {
        let key = format!("rtmr{i}");
        let good = td[&key].as_str().unwrap();
        assert_eq!(run(&format!("[tdx]\n{key} = [\"{good}\"]")), None);
        assert_eq!(
            run(&format!("[tdx]\n{key} = [\"{other48}\"]")),
            Some(Reason::PolicyMeasurement)
        );
    }
    let cfg = td["mrconfigid"].as_str().unwrap();
    assert_eq!(run(&format!("[tdx]\nmrconfigid = \"{cfg}\"")), None);
    assert_eq!(
        run(&format!("[tdx]\nmrconfigid = \"{other48}\"")),
        Some(Reason::PolicyMeasurement)
    );
    let rd = td["report_data"].as_str().unwrap();
    assert_eq!(run(&format!("[tdx]\nreport_data = \"{rd}\"")), None);
    assert_eq!(
        run(&format!("[tdx]\nreport_data = \"{}\"", "00".repeat(64))),
        Some(Reason::PolicyReportData)
    );
    // HexBytes is what the server fills from the nonce binding.
    let mut p = Policy::default();
    p.tdx.report_data = Some(HexBytes([0u8; 64]));
    assert_eq!(
        reason(&verifier.verify(&v.quote, c.as_ref(), &p, v.at())),
        Some(Reason::PolicyReportData)
    );
}

#[test]
fn every_truncation_of_every_quote_is_malformed() {
    let verifier = TdxVerifier::new();
    for v in tdx_vectors() {
        let c = v.collateral();
        let declared = v.entry["sig_data_len"].as_u64().unwrap() as usize
            + if v.entry["header"]["version"] == 5 {
                48 + 6 + 648 + 4
            } else {
                48 + 584 + 4
            };
        assert_eq!(
            declared + v.entry["trailing_bytes_after_sig_data"].as_u64().unwrap() as usize,
            v.quote.len()
        );
        for len in 0..declared {
            let r = verifier.verify(&v.quote[..len], c.as_ref(), &Policy::default(), v.at());
            assert_eq!(reason(&r), Some(Reason::Malformed), "{} cut to {len}", v.id);
        }
        // Cutting only zero padding changes nothing.
        let r = verifier.verify(
            &v.quote[..declared],
            c.as_ref(),
            &v.permissive_policy(),
            v.at(),
        );
        let full = verifier.verify(&v.quote, c.as_ref(), &v.permissive_policy(), v.at());
        assert_eq!(reason(&r), reason(&full), "{}", v.id);
    }
}

#[test]
fn tampered_or_mismatched_collateral_is_refused() {
    let v = vector("tdx-v4-dcapqvl");
    let verifier = TdxVerifier::new();
    let parts = v.collateral().unwrap().into_parts();

    // One changed byte of the signed TCB info body.
    let mut p = parts.clone();
    let body = &mut p.tcb_info.as_mut().unwrap().body;
    let pos = body.windows(10).position(|w| w == b"\"UpToDate\"").unwrap();
    body[pos + 1] = b'u';
    let c = Collateral::from_parts(p).unwrap();
    let r = verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at());
    assert_eq!(reason(&r), Some(Reason::CollateralSigInvalid));

    // QE identity signature swapped for the TCB info's.
    let mut p = parts.clone();
    p.qe_identity.as_mut().unwrap().signature = p.tcb_info.as_ref().unwrap().signature;
    let c = Collateral::from_parts(p).unwrap();
    assert_eq!(
        reason(&verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at())),
        Some(Reason::CollateralSigInvalid)
    );

    // Signing chain replaced by the PCK CRL issuer chain (PCK Platform CA, not the TCB signer).
    let mut p = parts.clone();
    p.tcb_info_chain = p.crl_issuer_chain.clone();
    let c = Collateral::from_parts(p).unwrap();
    assert_eq!(
        reason(&verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at())),
        Some(Reason::CollateralSigInvalid)
    );

    // Signing chain without a trusted root: only the TCB signing cert, but the root replaced.
    let mut p = parts.clone();
    p.tcb_info_chain.truncate(1);
    p.tcb_info_chain
        .push(std::fs::read(vectors().join("snp/milan-virtee-vcek.der")).unwrap());
    let c = Collateral::from_parts(p).unwrap();
    assert_eq!(
        reason(&verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at())),
        Some(Reason::CollateralChainInvalid)
    );

    // Pieces missing, one at a time: after signatures and chain, COLLATERAL_MISSING.
    for strip in 0..3 {
        let mut p = parts.clone();
        match strip {
            0 => p.tcb_info = None,
            1 => p.qe_identity = None,
            _ => p.tcb_info_chain.clear(),
        }
        let c = Collateral::from_parts(p).unwrap();
        let r = verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at());
        assert_eq!(reason(&r), Some(Reason::CollateralMissing), "strip {strip}");
    }

    // Another platform's TCB info (near, FMSPC 20a06f000000) at a time both sets are current for.
    let near = vector("tdx-v4-dcapqvl-near")
        .collateral()
        .unwrap()
        .into_parts();
    let mut p = parts.clone();
    p.tcb_info = near.tcb_info.clone();
    p.crls.clear();
    let c = Collateral::from_parts(p).unwrap();
    let at = t("2025-07-01T00:00:00Z");
    let r = verifier.verify(&v.quote, Some(&c), &Policy::default(), at);
    // The near TCB info is issued 2025-09-02: not yet current on 2025-07-01.
    assert_eq!(reason(&r), Some(Reason::CollateralExpired));
    let mut p = near.clone();
    p.crls.clear();
    let c = Collateral::from_parts(p).unwrap();
    let r = verifier.verify(
        &v.quote,
        Some(&c),
        &Policy::default(),
        vector("tdx-v4-dcapqvl-near").at(),
    );
    assert_eq!(reason(&r), Some(Reason::FmspcMismatch), "{:?}", r.result);
}

#[test]
fn collateral_directory_without_the_fmspc_file_is_collateral_missing() {
    let v = vector("tdx-v4-trustee-quote4");
    let dir = v.collateral_dir.as_ref().unwrap();
    let empty = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !name.starts_with("tcbinfo-") {
            std::fs::copy(entry.path(), empty.path().join(name)).unwrap();
        }
    }
    let c = Collateral::from_path(empty.path(), Some(&v.fmspc())).unwrap();
    let r = TdxVerifier::new().verify(&v.quote, Some(&c), &v.permissive_policy(), v.at());
    assert_eq!(reason(&r), Some(Reason::CollateralMissing));
    // Its CRLs were still checked.
    assert_eq!(r.claims["revocation_checked"], true);
}

#[test]
fn another_trust_root_makes_intel_chains_untrusted() {
    let v = vector("tdx-v4-dcapqvl");
    let ark = cvm_attest::pki::certs_from_bytes(
        &std::fs::read(vectors().join("snp/milan-ark-ask.pem")).unwrap(),
    )
    .unwrap();
    let verifier = TdxVerifier::with_trust_roots(&ark[1..]).unwrap();
    let r = verifier.verify(
        &v.quote,
        v.collateral().as_ref(),
        &Policy::default(),
        v.at(),
    );
    assert_eq!(reason(&r), Some(Reason::UntrustedRoot));
}

#[test]
fn crls_are_checked_against_their_issuers() {
    let v = vector("tdx-v4-dcapqvl");
    let verifier = TdxVerifier::new();
    let parts = v.collateral().unwrap().into_parts();
    // The 2023 PCK platform CRL is issued by the same CA, but expired long before.
    let old =
        std::fs::read(vectors().join("tdx/pcs-2023-go-tdx-guest/pck-platform-crl.der")).unwrap();
    let mut p = parts.clone();
    p.crls.push(old);
    let c = Collateral::from_parts(p).unwrap();
    let r = verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at());
    assert_eq!(reason(&r), Some(Reason::CollateralExpired));
    // A CRL with a corrupted signature.
    let mut p = parts.clone();
    let crl = p.crls.iter_mut().max_by_key(|c| c.len()).unwrap();
    let n = crl.len();
    crl[n - 3] ^= 1;
    if let Ok(c) = Collateral::from_parts(p) {
        let r = verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at());
        assert_eq!(reason(&r), Some(Reason::CollateralSigInvalid));
    }
    // Without CRLs: accepted, revocation not checked; required: COLLATERAL_MISSING.
    let mut p: CollateralParts = parts.clone();
    p.crls.clear();
    let c = Collateral::from_parts(p).unwrap();
    let r = verifier.verify(&v.quote, Some(&c), &Policy::default(), v.at());
    assert!(r.result.is_ok());
    assert_eq!(r.claims["revocation_checked"], false);
    let strict = Policy::from_toml("require_revocation = true").unwrap();
    assert_eq!(
        reason(&verifier.verify(&v.quote, Some(&c), &strict, v.at())),
        Some(Reason::CollateralMissing)
    );
    let all = Collateral::from_parts(parts).unwrap();
    assert!(
        verifier
            .verify(&v.quote, Some(&all), &strict, v.at())
            .result
            .is_ok()
    );
}

/// The reasons a flipped bit may produce: all of them before any collateral is consulted.
const EARLY: &[Reason] = &[
    Reason::Malformed,
    Reason::UnsupportedVersion,
    Reason::UnsupportedTeeType,
    Reason::UnsupportedAttKeyType,
    Reason::SignatureInvalid,
    Reason::QeReportSigInvalid,
    Reason::QeReportDataMismatch,
];

/// Flip bits `step` apart (1 = every bit) everywhere in every quote except inside the PCK chain PEM; every
/// flip must be refused by a structure or signature check.
fn sweep(step: usize) -> usize {
    let verifier = TdxVerifier::new();
    let mut flips = 0;
    for v in tdx_vectors() {
        let c = v.collateral();
        let policy = v.permissive_policy();
        let pem = pem_range(&v.quote);
        let mut q = v.quote.clone();
        let mut bit = 0;
        while bit < q.len() * 8 {
            let byte = bit / 8;
            if pem.contains(&byte) {
                bit = pem.end * 8;
                continue;
            }
            q[byte] ^= 1 << (bit % 8);
            let r = verifier.verify(&q, c.as_ref(), &policy, v.at());
            match &r.result {
                Ok(_) => panic!("{}: flipping bit {bit} was accepted", v.id),
                Err(e) => assert!(EARLY.contains(&e.reason), "{}: bit {bit}: {e}", v.id),
            }
            q[byte] ^= 1 << (bit % 8);
            flips += 1;
            bit += step;
        }
    }
    flips
}

/// All 174,288 single-bit flips of the 12 quotes (about 16 s of CPU in a debug build, collateral cached).
#[test]
fn every_bit_flip_is_refused() {
    assert!(sweep(1) > 170_000);
}
