//! Shared helpers for the TDX tests: the vectors directory, MANIFEST.json's TDX entries and their collateral.
#![allow(dead_code, clippy::unwrap_used)]

use cvm_attest::Policy;
use cvm_attest::policy::TcbStatus;
use cvm_attest::tdx::Collateral;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `$CVM_VECTORS`, or `../../shared/vectors` from the crate (`../../../shared/vectors` in a worktree).
pub fn vectors() -> PathBuf {
    if let Some(dir) = std::env::var_os("CVM_VECTORS") {
        return PathBuf::from(dir);
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let main = crate_dir.join("../../shared/vectors");
    if main.exists() {
        return main;
    }
    crate_dir.join("../../../shared/vectors")
}

/// Unix seconds of an RFC 3339 time.
pub fn t(text: &str) -> i64 {
    cvm_attest::pki::parse_rfc3339(text).unwrap()
}

/// The day after which every collateral set has expired.
pub const LATE: &str = "2026-11-22T00:00:00Z";

/// One TDX entry of MANIFEST.json.
pub struct Vector {
    pub id: String,
    pub entry: Value,
    pub quote: Vec<u8>,
    /// A directory holding the collateral in DESIGN.md's layout (a temp dir), when the vector has collateral.
    pub collateral_dir: Option<tempfile::TempDir>,
    /// The dcap-qvl `QuoteCollateralV3` file, when that is how the vector's collateral is published.
    pub v3_file: Option<PathBuf>,
}

impl Vector {
    pub fn expected(&self) -> &Value {
        &self.entry["expected"]
    }
    pub fn verdict(&self) -> &str {
        self.expected()["verdict"].as_str().unwrap()
    }
    pub fn has_collateral(&self) -> bool {
        self.collateral_dir.is_some() || self.v3_file.is_some()
    }
    /// The time MANIFEST says the vector verifies at (or, without collateral, inside the PCK chain window).
    pub fn at(&self) -> i64 {
        match self.expected()["verifies_at"].as_str() {
            Some(s) => t(s),
            None => {
                t(self.expected()["pck_chain_validity_window"]["from"]
                    .as_str()
                    .unwrap())
                    + 86_400
            }
        }
    }
    pub fn collateral_path(&self) -> Option<PathBuf> {
        self.v3_file
            .clone()
            .or_else(|| self.collateral_dir.as_ref().map(|d| d.path().to_owned()))
    }
    /// The collateral as the library loads it (the directory for the vector's FMSPC, or the V3 file).
    pub fn collateral(&self) -> Option<Collateral> {
        let fmspc = self.fmspc();
        self.collateral_path()
            .map(|p| Collateral::from_path(&p, Some(&fmspc)).unwrap())
    }
    pub fn fmspc(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        hex::decode_to_slice(
            self.entry["pck_sgx_extensions"]["fmspc"].as_str().unwrap(),
            &mut out,
        )
        .unwrap();
        out
    }
    /// The converged status MANIFEST implies (platform, then module and QE folded in as QVL does).
    pub fn expected_status(&self) -> Option<&str> {
        let s = &self.expected()["tcb_status"];
        let platform = s["platform"].as_str()?;
        let bad = |v: &Value| v.as_str().is_some_and(|x| x != "UpToDate");
        assert!(
            !bad(&s["tdx_module"]) && !bad(&s["qe"]),
            "update expected_status for {}",
            self.id
        );
        Some(platform)
    }
    /// A policy under which the vector is accepted when MANIFEST says it can be.
    pub fn permissive_policy(&self) -> Policy {
        Policy {
            allow_debug: true,
            accept_tcb_status: vec![
                TcbStatus::UpToDate,
                TcbStatus::SWHardeningNeeded,
                TcbStatus::ConfigurationNeeded,
                TcbStatus::ConfigurationAndSWHardeningNeeded,
                TcbStatus::OutOfDate,
                TcbStatus::OutOfDateConfigurationNeeded,
            ],
            ..Policy::default()
        }
    }
}

/// Every TDX vector of MANIFEST.json, with its collateral laid out.
pub fn tdx_vectors() -> Vec<Vector> {
    let root = vectors();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("MANIFEST.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for entry in manifest["tdx"].as_array().unwrap() {
        let files = &entry["files"];
        let file = |key: &str| files[key].as_str().map(|f| root.join(f));
        let quote = std::fs::read(file("quote").unwrap()).unwrap();
        let mut v3_file = None;
        let mut collateral_dir = None;
        if let Some(c) = file("collateral") {
            v3_file = Some(c);
        } else if let Some(tcbinfo) = file("tcbinfo") {
            let dir = tempfile::tempdir().unwrap();
            let copy = |from: PathBuf, name: &str| {
                std::fs::copy(&from, dir.path().join(name)).unwrap();
            };
            copy(
                tcbinfo.clone(),
                tcbinfo.file_name().unwrap().to_str().unwrap(),
            );
            copy(file("qeidentity").unwrap(), "qe-identity.json");
            copy(file("tcb_chain").unwrap(), "tcb-signing-chain.pem");
            if let Some(crl) = file("root_crl") {
                copy(crl, "root-ca-crl.der");
            }
            if let Some(crl) = file("pck_crl") {
                copy(crl, "pck-platform-crl.der");
            }
            collateral_dir = Some(dir);
        }
        out.push(Vector {
            id: entry["id"].as_str().unwrap().to_owned(),
            entry: entry.clone(),
            quote,
            collateral_dir,
            v3_file,
        });
    }
    assert!(
        out.len() >= 12,
        "MANIFEST.json lists {} TDX vectors",
        out.len()
    );
    out
}

/// The byte range of the type-5 certification data (the PCK chain PEM and its NUL terminator) inside a
/// quote. Bit-flip sweeps skip it: no signature covers these bytes as such (each certificate carries its
/// own), and a flip that turns the NUL terminator or a line break into other whitespace leaves the same DER.
pub fn pem_range(quote: &[u8]) -> std::ops::Range<usize> {
    let q = cvm_attest::tdx::Quote::parse(quote).unwrap();
    let pem = q.signature_data.pck_chain_pem;
    let start = pem.as_ptr() as usize - quote.as_ptr() as usize;
    let sig_len_at = q.signed.len();
    let sig_len =
        u32::from_le_bytes(quote[sig_len_at..sig_len_at + 4].try_into().unwrap()) as usize;
    start..sig_len_at + 4 + sig_len
}

/// The TDX claim keys of DESIGN.md's `--json` contract.
pub const CLAIMS: &[&str] = &[
    "version",
    "tee_tcb_svn",
    "mrseam",
    "td_attributes",
    "debug",
    "xfam",
    "mrtd",
    "mrconfigid",
    "mrowner",
    "mrownerconfig",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "report_data",
    "fmspc",
    "tcb_status",
    "advisory_ids",
    "revocation_checked",
];
