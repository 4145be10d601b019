//! `--tee sim`: the launcher's simulated PSP on a Unix socket (`cvm-launch run --tee sim --sim-socket`).
//!
//! Each message is a 4-byte big-endian length followed by that much CBOR; the launcher's
//! `sim_socket` module is the other end, and these types match its wire messages exactly:
//!
//! ```text
//! request   {"tee": "snp", "report_data": bytes(64)}
//! response  {"evidence": bytes, "certs": [bytes]}          the report; VCEK DER first
//! error     {"code": text, "message": text}
//! ```

use crate::provider::{Provider, ProviderError};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the agent waits for the simulated PSP.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted.
pub const MAX_RESPONSE: usize = 1 << 20;

/// A byte string in CBOR (major type 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteString(#[serde(with = "cvm_keys::cbor::bytes")] pub Vec<u8>);

/// A request.
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

/// Reads one length-prefixed frame of at most `max` bytes.
pub fn read_frame<R: Read>(r: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(std::io::Error::other)?;
    if len > max {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds {max}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// The simulated-PSP provider.
#[derive(Clone, Debug)]
pub struct SimSocket {
    path: PathBuf,
}

impl SimSocket {
    /// A provider talking to the socket at `path`.
    pub fn new(path: &Path) -> Self {
        SimSocket {
            path: path.to_owned(),
        }
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> ProviderError {
        let provider = self.describe();
        let what = what.to_owned();
        move |source| ProviderError::Io {
            provider,
            what,
            source,
        }
    }
}

impl Provider for SimSocket {
    fn describe(&self) -> String {
        format!("sim (simulated PSP socket {})", self.path.display())
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let mut s = UnixStream::connect(&self.path)
            .map_err(self.io("connect (is `cvm-launch run --tee sim --sim-socket` running?)"))?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        s.set_write_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        let req = cvm_keys::cbor::to_vec(&EvidenceRequest {
            tee: "snp".into(),
            report_data: ByteString(report_data.to_vec()),
        })
        .map_err(|e| ProviderError::Bad {
            provider: self.describe(),
            message: e.to_string(),
        })?;
        write_frame(&mut s, &req).map_err(self.io("send request"))?;
        let body = read_frame(&mut s, MAX_RESPONSE).map_err(self.io("read response"))?;
        if let Ok(ok) = cvm_keys::cbor::from_slice::<EvidenceResponse>(&body) {
            return Ok(Evidence {
                tee: TeeKind::Snp,
                evidence: ok.evidence.0,
                certs: ok.certs.into_iter().map(|c| c.0).collect(),
            });
        }
        let message = match cvm_keys::cbor::from_slice::<ErrorResponse>(&body) {
            Ok(e) => format!("refused: {}: {}", e.code, e.message),
            Err(e) => format!("undecodable response: {e}"),
        };
        Err(ProviderError::Bad {
            provider: self.describe(),
            message,
        })
    }
}
