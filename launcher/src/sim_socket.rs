//! The simulated PSP for host processes: a Unix socket speaking length-prefixed CBOR, so a
//! `cvm-agent --tee sim` on the host gets the same reports the guest gets.
//!
//! Each message is a 4-byte big-endian length followed by that many bytes of CBOR (requests at
//! most [`MAX_REQUEST`] bytes). A connection may carry several requests, one at a time.
//!
//! ```text
//! request   {"tee": "snp"|"tdx", "report_data": bytes(64)}
//! response  {"evidence": bytes, "certs": [bytes]}          snp: the report, VCEK DER first in certs
//!                                                          tdx: a v4 quote (PCK chain inside), no certs
//! error     {"code": text, "message": text}                 code: MALFORMED | UNSUPPORTED_TEE_TYPE | SIGNER_FAILED
//! ```

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::devices::psp::ReportSigner;

/// Largest request accepted (a request is about 90 bytes).
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send a request before the connection is dropped.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub use cvm_attest::sim::wire::{
    ByteString, ErrorResponse, EvidenceRequest, EvidenceResponse, write_frame,
};

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// Binding failed.
    #[error(
        "cannot listen on {path}: {source} (does the directory exist; is a stale socket there?)"
    )]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A listening socket; the file is removed on drop.
#[derive(Debug)]
pub struct SimSocket {
    path: PathBuf,
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` and serves requests with `signer` on a background thread for the life of the
/// process (the returned guard removes the socket file); a client silent for [`READ_TIMEOUT`] is
/// dropped.
pub fn serve(path: &Path, signer: Arc<dyn ReportSigner>) -> Result<SimSocket, SocketError> {
    serve_with(path, signer, Some(READ_TIMEOUT))
}

/// [`serve`] with another limit on a client's silence: `None` for QEMU's virtio-serial connection,
/// which stays open for the whole run and carries a request whenever the guest's agent asks.
pub fn serve_with(
    path: &Path,
    signer: Arc<dyn ReportSigner>,
    read_timeout: Option<Duration>,
) -> Result<SimSocket, SocketError> {
    // A socket left by a launcher that was killed: nobody listens there any more.
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && UnixStream::connect(path).is_err()
    {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => handle(stream, signer.as_ref(), read_timeout),
                Err(_) => continue,
            }
        }
    });
    Ok(SimSocket {
        path: path.to_owned(),
    })
}

fn handle(mut stream: UnixStream, signer: &dyn ReportSigner, read_timeout: Option<Duration>) {
    let _ = stream.set_read_timeout(read_timeout);
    while let Some(body) = read_frame(&mut stream) {
        let reply = answer(&body, signer);
        if write_frame(&mut stream, &reply).is_err() {
            return;
        }
    }
}

fn read_frame(stream: &mut UnixStream) -> Option<Vec<u8>> {
    match cvm_attest::sim::wire::read_frame(stream, MAX_REQUEST) {
        Ok(body) => Some(body),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let _ = write_frame(stream, &error("MALFORMED", format!("request: {e}")));
            None
        }
        Err(_) => None,
    }
}

fn error(code: &str, message: String) -> Vec<u8> {
    cvm_keys::cbor::to_vec(&ErrorResponse {
        code: code.to_owned(),
        message,
    })
    .unwrap_or_default()
}

/// Answers one request body (CBOR bytes in, CBOR bytes out).
pub fn answer(body: &[u8], signer: &dyn ReportSigner) -> Vec<u8> {
    let req: EvidenceRequest = match cvm_keys::cbor::from_slice_capped(body, MAX_REQUEST) {
        Ok(r) => r,
        Err(e) => return error("MALFORMED", format!("request: {e}")),
    };
    if req.tee != "snp" && req.tee != "tdx" {
        return error(
            "UNSUPPORTED_TEE_TYPE",
            format!(
                "tee {:?}: the simulated PSP serves \"snp\" and \"tdx\"",
                req.tee
            ),
        );
    }
    let Ok(rd) = <[u8; 64]>::try_from(req.report_data.0.as_slice()) else {
        return error(
            "MALFORMED",
            format!(
                "report_data is {} bytes; it must be 64",
                req.report_data.0.len()
            ),
        );
    };
    let signed = if req.tee == "tdx" {
        signer.tdx_quote(&rd).map(|quote| (quote, Vec::new()))
    } else {
        signer
            .snp_report(&rd)
            .map(|report| (report, signer.certs()))
    };
    match signed {
        Ok((evidence, certs)) => cvm_keys::cbor::to_vec(&EvidenceResponse {
            evidence: ByteString(evidence),
            certs: certs.into_iter().map(ByteString).collect(),
        })
        .unwrap_or_else(|e| error("SIGNER_FAILED", e.to_string())),
        Err(e) => error("SIGNER_FAILED", e),
    }
}

/// A client: asks the socket at `path` for `tee` ("snp" or "tdx") evidence over `report_data`.
pub fn request(path: &Path, tee: &str, report_data: &[u8; 64]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    let req = cvm_keys::cbor::to_vec(&EvidenceRequest {
        tee: tee.into(),
        report_data: ByteString(report_data.to_vec()),
    })
    .map_err(std::io::Error::other)?;
    write_frame(&mut s, &req)?;
    cvm_attest::sim::wire::read_frame(&mut s, cvm_keys::cbor::DEFAULT_MAX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl ReportSigner for Echo {
        fn snp_report(&self, rd: &[u8; 64]) -> Result<Vec<u8>, String> {
            Ok(rd.to_vec())
        }
        fn certs(&self) -> Vec<Vec<u8>> {
            vec![b"vcek".to_vec()]
        }
    }

    #[test]
    fn serves_evidence_and_refuses_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psp.sock");
        let guard = serve(&path, Arc::new(Echo)).unwrap();
        let body = request(&path, "snp", &[7; 64]).unwrap();
        let resp: EvidenceResponse = cvm_keys::cbor::from_slice(&body).unwrap();
        assert_eq!(resp.evidence.0, vec![7; 64]);
        assert_eq!(resp.certs, vec![ByteString(b"vcek".to_vec())]);

        // Echo has no TDX plan: the signer's refusal comes back as SIGNER_FAILED.
        let body = request(&path, "tdx", &[7; 64]).unwrap();
        let e: ErrorResponse = cvm_keys::cbor::from_slice(&body).unwrap();
        assert_eq!(e.code, "SIGNER_FAILED");
        assert!(e.message.contains("SNP reports only"), "{}", e.message);

        let bad = cvm_keys::cbor::to_vec(&EvidenceRequest {
            tee: "sgx".into(),
            report_data: ByteString(vec![0; 64]),
        })
        .unwrap();
        let e: ErrorResponse = cvm_keys::cbor::from_slice(&answer(&bad, &Echo)).unwrap();
        assert_eq!(e.code, "UNSUPPORTED_TEE_TYPE");
        let short = cvm_keys::cbor::to_vec(&EvidenceRequest {
            tee: "snp".into(),
            report_data: ByteString(vec![0; 63]),
        })
        .unwrap();
        let e: ErrorResponse = cvm_keys::cbor::from_slice(&answer(&short, &Echo)).unwrap();
        assert_eq!(e.code, "MALFORMED");
        let e: ErrorResponse = cvm_keys::cbor::from_slice(&answer(b"\xff", &Echo)).unwrap();
        assert_eq!(e.code, "MALFORMED");
        drop(guard);
        assert!(!path.exists());
    }
}
