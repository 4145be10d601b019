//! The outcome of verifying one piece of evidence, and its JSON form (a contract of `cvm-attest verify
//! --json`): `{"verdict","tee","reason","message","simulated","claims"}`.

use crate::reason::Rejection;
use serde_json::{Value, json};
use std::fmt;

/// Which TEE produced the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

impl Tee {
    /// `"snp"` or `"tdx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
        }
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "snp" => Ok(Tee::Snp),
            "tdx" => Ok(Tee::Tdx),
            other => Err(format!(
                "unknown TEE {other:?}: expected \"snp\" or \"tdx\""
            )),
        }
    }
}

/// The verifier's conclusion about one piece of evidence.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The TEE the evidence is from.
    pub tee: Tee,
    /// `Ok` when accepted; otherwise the first check that failed.
    pub outcome: Result<(), Rejection>,
    /// True when the evidence chains to a simulated root (`cvm-attest sim`).
    pub simulated: bool,
    /// What the evidence says (lowercase hex for byte fields), as far as it could be parsed; `{}` when not.
    pub claims: Value,
}

impl Verdict {
    /// Whether the evidence was accepted.
    pub fn accepted(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The JSON object of DESIGN.md.
    pub fn to_json(&self) -> Value {
        let (verdict, reason, message) = match &self.outcome {
            Ok(()) => ("accept", Value::Null, Value::Null),
            Err(r) => ("reject", json!(r.reason.code()), json!(r.message)),
        };
        json!({
            "verdict": verdict,
            "tee": self.tee.as_str(),
            "reason": reason,
            "message": message,
            "simulated": self.simulated,
            "claims": self.claims,
        })
    }
}

/// Claims worth a line of their own in the human-readable summary, in this order.
const KEY_CLAIMS: &[&str] = &[
    "version",
    "product",
    "signer",
    "evidence_format",
    "csp_id",
    "debug",
    "vmpl",
    "measurement",
    "mrtd",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "host_data",
    "report_data",
    "chip_id",
    "reported_tcb",
    "fmspc",
    "tcb_status",
    "advisory_ids",
    "revocation_checked",
];

impl Verdict {
    /// A summary for people: the verdict, the reason in words, the key claims.
    pub fn human(&self) -> String {
        let mut out = String::new();
        match &self.outcome {
            Ok(()) => out.push_str(&format!("ACCEPTED: {} evidence verified\n", self.tee)),
            Err(r) => out.push_str(&format!(
                "REJECTED ({}): {} evidence: {}\n",
                r.reason.code(),
                self.tee,
                r.message
            )),
        }
        if self.simulated {
            out.push_str("  note: SIMULATED evidence (chains to a cvm simulator root, not to AMD or Intel)\n");
        }
        for key in KEY_CLAIMS {
            if let Some(value) = self.claims.get(key) {
                let shown = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!("  {key}: {shown}\n"));
            }
        }
        out
    }
}
