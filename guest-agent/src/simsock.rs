//! `--tee sim`: the launcher's simulated PSP on a Unix socket (`cvm-launch run --tee sim --sim-socket`).
//!
//! Each message is a 4-byte big-endian length followed by that much CBOR; the launcher's
//! `sim_socket` module is the other end; both use the wire types of `cvm_attest::sim::wire`:
//!
//! ```text
//! request   {"tee": "snp"|"tdx", "report_data": bytes(64)}
//! response  {"evidence": bytes, "certs": [bytes]}          snp: the report, VCEK DER first; tdx: a quote
//! error     {"code": text, "message": text}
//! ```

use crate::provider::{Provider, ProviderError};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the agent waits for the simulated PSP.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted.
pub const MAX_RESPONSE: usize = 1 << 20;

pub use cvm_attest::sim::wire::{
    ByteString, ErrorResponse, EvidenceRequest, EvidenceResponse, read_frame, write_frame,
};

/// The simulated-PSP provider.
#[derive(Clone, Debug)]
pub struct SimSocket {
    path: PathBuf,
    format: TeeKind,
}

impl SimSocket {
    /// A provider asking the socket at `path` for evidence in `format` (an SNP report or a TDX
    /// quote).
    pub fn new(path: &Path, format: TeeKind) -> Self {
        SimSocket {
            path: path.to_owned(),
            format,
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
        format!(
            "sim ({}-format evidence from the simulated PSP socket {})",
            wire_name(self.format),
            self.path.display()
        )
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let mut s = UnixStream::connect(&self.path)
            .map_err(self.io("connect (is `cvm-launch run --tee sim --sim-socket` running?)"))?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        s.set_write_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        let req = cvm_keys::cbor::to_vec(&EvidenceRequest {
            tee: wire_name(self.format).into(),
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
                tee: self.format,
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

/// The socket's name for an evidence format.
fn wire_name(format: TeeKind) -> &'static str {
    match format {
        TeeKind::Snp => "snp",
        TeeKind::Tdx => "tdx",
    }
}
