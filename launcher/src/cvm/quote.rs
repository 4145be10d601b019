//! A [`QuoteService`] that forwards TDX GetQuote to the simulated PSP socket (`cvm-launch run
//! --sim-socket PATH`, the wire format of `cvm_attest::sim::wire`): it sends the TDREPORT's
//! REPORTDATA as a `{"tee": "tdx", report_data}` request and returns the v4 quote. (A real
//! quoting enclave takes the whole TDREPORT; the simulated one signs REPORTDATA with the launch's
//! MRTD.)

use std::path::PathBuf;

use cvm_attest::sim::wire::{ErrorResponse, EvidenceResponse};

use super::exits::QuoteService;
use crate::sim_socket;

/// Offset of REPORTDATA in TDREPORT_STRUCT (TDX module ABI, TDG.MR.REPORT: REPORTMACSTRUCT's
/// REPORTTYPE 8, reserved 8, CPUSVN 16, TEE_TCB_INFO_HASH 48, TEE_INFO_HASH 48, then REPORTDATA).
pub const TDREPORT_REPORTDATA: usize = 128;

/// The simulated quoting service at a Unix socket.
#[derive(Clone, Debug)]
pub struct SimQuoteSocket {
    /// The socket path.
    pub path: PathBuf,
}

impl QuoteService for SimQuoteSocket {
    fn quote(&self, tdreport: &[u8]) -> Result<Vec<u8>, String> {
        let report_data: &[u8; 64] = tdreport
            .get(TDREPORT_REPORTDATA..TDREPORT_REPORTDATA + 64)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("a TDREPORT of {} bytes has no REPORTDATA", tdreport.len()))?;
        let body = sim_socket::request(&self.path, "tdx", report_data)
            .map_err(|e| format!("quote socket {}: {e}", self.path.display()))?;
        match cvm_keys::cbor::from_slice::<EvidenceResponse>(&body) {
            Ok(r) => Ok(r.evidence.0),
            Err(_) => Err(match cvm_keys::cbor::from_slice::<ErrorResponse>(&body) {
                Ok(e) => format!("quote socket refused: {} {}", e.code, e.message),
                Err(e) => format!("quote socket answered something else: {e}"),
            }),
        }
    }
}

/// The quote service of a TDX run without `--quote-socket`: every GetQuote is answered with
/// "service unavailable" in the guest's buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoQuoteService;

impl QuoteService for NoQuoteService {
    fn quote(&self, _: &[u8]) -> Result<Vec<u8>, String> {
        Err("no quote service (run with --quote-socket PATH)".into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cvm::Recorder;
    use crate::cvm::exits::{GET_QUOTE_SUCCESS, TDVMCALL_STATUS_SUCCESS, get_quote};
    use crate::devices::psp::ReportSigner;

    struct Qe;
    impl ReportSigner for Qe {
        fn snp_report(&self, _: &[u8; 64]) -> Result<Vec<u8>, String> {
            Err("tdx only".into())
        }
        fn certs(&self) -> Vec<Vec<u8>> {
            Vec::new()
        }
        fn tdx_quote(&self, rd: &[u8; 64]) -> Result<Vec<u8>, String> {
            let mut q = b"v4 quote over ".to_vec();
            q.extend_from_slice(rd);
            Ok(q)
        }
    }

    #[test]
    fn without_a_socket_get_quote_reports_the_service_unavailable() {
        let mut rec = Recorder {
            memory: vec![0; 0x2000],
            ..Recorder::default()
        };
        rec.memory[..8].copy_from_slice(&1u64.to_le_bytes());
        rec.memory[16..20].copy_from_slice(&1024u32.to_le_bytes());
        assert_eq!(
            get_quote(&mut rec, &NoQuoteService, 0, 0x2000),
            TDVMCALL_STATUS_SUCCESS
        );
        assert_eq!(
            &rec.memory[8..16],
            &crate::cvm::exits::GET_QUOTE_SERVICE_UNAVAILABLE.to_le_bytes()
        );
    }

    #[test]
    fn get_quote_is_answered_by_the_sim_socket_with_the_reportdata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psp.sock");
        let _server = sim_socket::serve(&path, Arc::new(Qe)).unwrap();
        let mut rec = Recorder {
            memory: vec![0; 0x3000],
            ..Recorder::default()
        };
        let buf = &mut rec.memory[0x1000..0x3000];
        buf[..8].copy_from_slice(&1u64.to_le_bytes());
        buf[16..20].copy_from_slice(&1024u32.to_le_bytes());
        buf[24 + TDREPORT_REPORTDATA..24 + TDREPORT_REPORTDATA + 64].fill(0x42);
        let svc = SimQuoteSocket { path };
        assert_eq!(
            get_quote(&mut rec, &svc, 0x1000, 0x2000),
            TDVMCALL_STATUS_SUCCESS
        );
        let b = &rec.memory[0x1000..];
        assert_eq!(&b[8..16], &GET_QUOTE_SUCCESS.to_le_bytes());
        assert_eq!(&b[20..24], &(14u32 + 64).to_le_bytes());
        assert_eq!(&b[24..38], b"v4 quote over ");
        assert!(b[38..102].iter().all(|&x| x == 0x42));
    }
}
