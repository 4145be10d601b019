//! The simulated PSP's wire messages for host processes (`cvm-launch run --tee sim --sim-socket PATH` serves
//! them, `cvm-agent --tee sim` asks). One definition for both ends.
//!
//! Each message is a 4-byte big-endian length followed by that much CBOR:
//!
//! ```text
//! request   {"tee": "snp", "report_data": bytes(64)}
//! response  {"evidence": bytes, "certs": [bytes]}          the report; VCEK DER first
//! error     {"code": text, "message": text}                 code: MALFORMED | UNSUPPORTED_TEE_TYPE | SIGNER_FAILED
//! ```

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// A byte string in CBOR (major type 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteString(#[serde(with = "cvm_keys::cbor::bytes")] pub Vec<u8>);

/// A request for evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// `"snp"` (the only TEE the simulated PSP serves).
    pub tee: String,
    /// REPORT_DATA, 64 bytes.
    pub report_data: ByteString,
}

/// A successful response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceResponse {
    /// The signed report.
    pub evidence: ByteString,
    /// Certificates, VCEK DER first.
    pub certs: Vec<ByteString>,
}

/// An error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Reason code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// Writes one length-prefixed frame.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Reads one length-prefixed frame of at most `max` bytes; a longer one is an `InvalidData` error and its
/// body is not read.
pub fn read_frame<R: Read>(r: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(std::io::Error::other)?;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}
