//! `tee-evidence.primary_evidence` as guest-components' attesters wrap it, unwrapped to what our verifiers
//! check:
//!
//! - `snp`: `{"attestation_report": …, "cert_chain": […] | null}` ([`super::snp_json`]);
//! - `tdx`: `{"cc_eventlog": base64 | null, "quote": base64}`: the quote is verified; the event log is
//!   kept as a digest in the token (its length and SHA-384) and never trusted: no check of it is defined;
//! - `sample`: `{"svn": "1", "report_data": base64}`: unsigned test evidence, accepted only by a service in
//!   simulated mode with `[kbs] allow_sample = true`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The TEEs the service serves over the KBS protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KbsTee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// guest-components' unsigned test attester.
    Sample,
}

impl KbsTee {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KbsTee::Snp => "snp",
            KbsTee::Tdx => "tdx",
            KbsTee::Sample => "sample",
        }
    }

    /// The TEE for a `Request`'s `tee`, if served.
    pub fn parse(name: &str) -> Option<Self> {
        [KbsTee::Snp, KbsTee::Tdx, KbsTee::Sample]
            .into_iter()
            .find(|t| t.as_str() == name)
    }

    /// The verifier's TEE (`None` for `sample`).
    pub fn verifier(self) -> Option<crate::Tee> {
        match self {
            KbsTee::Snp => Some(crate::Tee::Snp),
            KbsTee::Tdx => Some(crate::Tee::Tdx),
            KbsTee::Sample => None,
        }
    }
}

/// guest-components' TDX evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxEvidence {
    /// The CC event log (base64), if the guest has one.
    pub cc_eventlog: Option<String>,
    /// The quote (base64).
    pub quote: String,
}

/// guest-components' sample evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleEvidence {
    /// A version number (text).
    pub svn: String,
    /// REPORT_DATA (base64).
    pub report_data: String,
}

/// What the verifiers need of the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwrapped {
    /// The TEE.
    pub tee: KbsTee,
    /// SNP: the report; TDX: the quote; sample: REPORT_DATA.
    pub evidence: Vec<u8>,
    /// SNP: the certificates of the table (VCEK/VLEK first).
    pub certs: Vec<Vec<u8>>,
    /// TDX: the event log's length and SHA-384 (kept, not trusted).
    pub event_log: Option<(usize, [u8; 48])>,
}

fn base64(field: &str, text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .map_err(|e| format!("{field} is not base64: {e}"))
}

/// Unwrap `primary_evidence` of `tee`; the error says what is malformed.
pub fn unwrap(tee: KbsTee, primary: &Value) -> Result<Unwrapped, String> {
    match tee {
        KbsTee::Snp => {
            let (evidence, certs) = super::snp_json::from_json(primary)?;
            Ok(Unwrapped {
                tee,
                evidence,
                certs,
                event_log: None,
            })
        }
        KbsTee::Tdx => {
            let ev: TdxEvidence = serde_json::from_value(primary.clone())
                .map_err(|e| crate::excerpt::truncate(format!("TDX evidence: {e}")))?;
            let evidence = base64("quote", &ev.quote)?;
            let event_log = match &ev.cc_eventlog {
                Some(text) => {
                    let log = base64("cc_eventlog", text)?;
                    let d = ring::digest::digest(&ring::digest::SHA384, &log);
                    let mut h = [0u8; 48];
                    h.copy_from_slice(d.as_ref());
                    Some((log.len(), h))
                }
                None => None,
            };
            Ok(Unwrapped {
                tee,
                evidence,
                certs: Vec::new(),
                event_log,
            })
        }
        KbsTee::Sample => {
            let ev: SampleEvidence = serde_json::from_value(primary.clone())
                .map_err(|e| crate::excerpt::truncate(format!("sample evidence: {e}")))?;
            let evidence = base64("report_data", &ev.report_data)?;
            if evidence.len() > super::canonical::REPORT_DATA_LEN {
                return Err("report_data is longer than 64 bytes".into());
            }
            Ok(Unwrapped {
                tee,
                evidence,
                certs: Vec::new(),
                event_log: None,
            })
        }
    }
}

/// guest-components' TDX evidence for a quote (no event log).
pub fn tdx_to_json(quote: &[u8]) -> Value {
    serde_json::json!({ "cc_eventlog": null, "quote": STANDARD.encode(quote) })
}
