//! TDX quotes through `/dev/tdx_guest`, for kernels whose TDX guest driver offers quotes there but that
//! have no configfs-tsm (Intel's TDX 1.0 guest kernels; the GetQuote ioctl never reached mainline, which
//! went to configfs-tsm instead).
//!
//! One quote: TDX_CMD_GET_REPORT0 gives the TDREPORT over our REPORT_DATA, then TDX_CMD_GET_QUOTE hands the
//! VMM a buffer that starts with the GetQuote header (TDX GHCI 1.0, section 3.3 "TDG.VP.VMCALL<GetQuote>";
//! the kernel's `struct tdx_quote_hdr`):
//!
//! ```text
//! offset 0   u64 version   1, set by the TD
//! offset 8   u64 status    set by the VMM: 0 success, 0xffff_ffff_ffff_ffff in flight,
//!                          0x8000_0000_0000_0000 error, 0x8000_0000_0000_0001 quoting service unavailable
//! offset 16  u32 in_len    length of the TDREPORT that follows, set by the TD
//! offset 20  u32 out_len   length of the quote that replaces it, set by the VMM
//! offset 24  data          in: the TDREPORT; out: the quote
//! ```
//!
//! The answer is written by the untrusted host: [`quote_from_buffer`] reads it bounded (fuzz target
//! `tdx_quote_buffer`). The ioctls are behind [`TdxGuestDevice`]: in production [`crate::tdxioctl`], in
//! tests an in-process fake.

use crate::provider::{Provider, ProviderError};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use std::path::PathBuf;
use std::sync::Arc;

/// The TDX guest device.
pub const TDX_GUEST_DEVICE: &str = "/dev/tdx_guest";
/// Bytes of a TDREPORT (TDREPORT_STRUCT).
pub const TDREPORT_LEN: usize = 1024;
/// Offset of REPORTDATA in a TDREPORT (in its REPORTMACSTRUCT).
pub const TDREPORT_REPORTDATA: usize = 128;
/// Bytes of the GetQuote header.
pub const HEADER_LEN: usize = 24;
/// The GetQuote buffer handed to the VMM: header and room for the quote (the kernel drivers allow 16 KiB;
/// Intel's quotes with their PCK chain stay under 8 KiB).
pub const QUOTE_BUF_LEN: usize = 16 * 1024;
/// The GetQuote header version the TD writes.
pub const GET_QUOTE_VERSION: u64 = 1;

/// The GetQuote status the VMM writes (GHCI 1.0, 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteStatus(pub u64);

impl QuoteStatus {
    /// The quote is in the buffer.
    pub const SUCCESS: QuoteStatus = QuoteStatus(0);
    /// The VMM has not finished.
    pub const IN_FLIGHT: QuoteStatus = QuoteStatus(u64::MAX);
    /// The quote could not be made.
    pub const ERROR: QuoteStatus = QuoteStatus(0x8000_0000_0000_0000);
    /// The host's quote generation service is not reachable.
    pub const SERVICE_UNAVAILABLE: QuoteStatus = QuoteStatus(0x8000_0000_0000_0001);
}

impl std::fmt::Display for QuoteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            QuoteStatus::SUCCESS => "success",
            QuoteStatus::IN_FLIGHT => "still in flight",
            QuoteStatus::ERROR => "error",
            QuoteStatus::SERVICE_UNAVAILABLE => {
                "quote service unavailable (is the host's QGS running and reachable by the VMM?)"
            }
            _ => "unknown status",
        };
        write!(f, "{:#018x} ({name})", self.0)
    }
}

/// Why the GetQuote buffer holds no quote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteBufferError {
    /// The buffer is shorter than the header.
    #[error("GetQuote buffer of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    /// The VMM reported a failure.
    #[error("the VMM answered GetQuote with status {0}")]
    Status(QuoteStatus),
    /// The VMM reported success with no quote.
    #[error("the VMM answered GetQuote with an empty quote")]
    Empty,
    /// The quote's declared length runs past the buffer.
    #[error("GetQuote out_len {out_len} runs past the {room} bytes after the header")]
    OutOfBounds {
        /// The declared length.
        out_len: u32,
        /// The room in the buffer.
        room: usize,
    },
    /// The TDREPORT is not [`TDREPORT_LEN`] bytes.
    #[error("TDREPORT is {0} bytes, expected {TDREPORT_LEN}")]
    Tdreport(usize),
}

/// The GetQuote buffer ([`QUOTE_BUF_LEN`] bytes) asking for a quote over `tdreport`.
pub fn quote_buffer(tdreport: &[u8]) -> Result<Vec<u8>, QuoteBufferError> {
    if tdreport.len() != TDREPORT_LEN {
        return Err(QuoteBufferError::Tdreport(tdreport.len()));
    }
    let mut buf = Vec::with_capacity(QUOTE_BUF_LEN);
    buf.extend_from_slice(&GET_QUOTE_VERSION.to_le_bytes());
    buf.extend_from_slice(&QuoteStatus::SUCCESS.0.to_le_bytes());
    buf.extend_from_slice(&(TDREPORT_LEN as u32).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(tdreport);
    buf.resize(QUOTE_BUF_LEN, 0);
    Ok(buf)
}

/// The header's fields, read from an answered buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteHeader {
    /// `version`.
    pub version: u64,
    /// `status`.
    pub status: QuoteStatus,
    /// `in_len`.
    pub in_len: u32,
    /// `out_len`.
    pub out_len: u32,
}

/// `N` bytes of `buf` at `at`, when they are there.
fn field<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Reads the header of a GetQuote buffer.
pub fn quote_header(buf: &[u8]) -> Result<QuoteHeader, QuoteBufferError> {
    let read = || {
        Some(QuoteHeader {
            version: u64::from_le_bytes(field(buf, 0)?),
            status: QuoteStatus(u64::from_le_bytes(field(buf, 8)?)),
            in_len: u32::from_le_bytes(field(buf, 16)?),
            out_len: u32::from_le_bytes(field(buf, 20)?),
        })
    };
    read().ok_or(QuoteBufferError::Short(buf.len()))
}

/// The quote in an answered GetQuote buffer: status success, `out_len` bytes after the header, all inside
/// the buffer.
pub fn quote_from_buffer(buf: &[u8]) -> Result<&[u8], QuoteBufferError> {
    let h = quote_header(buf)?;
    if h.status != QuoteStatus::SUCCESS {
        return Err(QuoteBufferError::Status(h.status));
    }
    if h.out_len == 0 {
        return Err(QuoteBufferError::Empty);
    }
    let data = buf.get(HEADER_LEN..).unwrap_or_default();
    usize::try_from(h.out_len)
        .ok()
        .and_then(|n| data.get(..n))
        .ok_or(QuoteBufferError::OutOfBounds {
            out_len: h.out_len,
            room: data.len(),
        })
}

/// Why the device gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdxDeviceError {
    /// The device could not be opened.
    #[error(
        "open {path}: {source} (is this a TDX guest with the tdx_guest driver loaded? are we root?)"
    )]
    Open {
        /// The device.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{cmd} on {path}: {source}")]
    Ioctl {
        /// The command's name.
        cmd: &'static str,
        /// The device.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The driver knows none of the GetQuote ioctls.
    #[error(
        "{path} offers no quotes (the driver knows no TDX_CMD_GET_QUOTE): use a kernel with configfs-tsm \
         (Linux 6.7+, /sys/kernel/config/tsm/report) or Intel's TDX guest kernel"
    )]
    NoQuotes {
        /// The device.
        path: PathBuf,
    },
}

/// The ioctls of the TDX guest device.
pub trait TdxGuestDevice: Send + Sync {
    /// The device's name, for messages.
    fn name(&self) -> String;
    /// TDX_CMD_GET_REPORT0: the TDREPORT over `report_data`.
    fn get_report0(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxDeviceError>;
    /// TDX_CMD_GET_QUOTE: hands `buf` (a GetQuote buffer) to the VMM, which answers in place.
    fn get_quote(&self, buf: &mut [u8]) -> Result<(), TdxDeviceError>;
}

/// The `/dev/tdx_guest` quote provider.
#[derive(Clone)]
pub struct TdxGuest {
    device: Arc<dyn TdxGuestDevice>,
}

impl std::fmt::Debug for TdxGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxGuest")
            .field("device", &self.device.name())
            .finish()
    }
}

impl TdxGuest {
    /// The provider on `device`.
    pub fn with_device(device: Arc<dyn TdxGuestDevice>) -> Self {
        TdxGuest { device }
    }
}

impl Provider for TdxGuest {
    fn describe(&self) -> String {
        format!("tdx via {} (GetQuote)", self.device.name())
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let bad = |message: String| ProviderError::Bad {
            provider: self.describe(),
            message,
        };
        let tdreport = self
            .device
            .get_report0(report_data)
            .map_err(|e| bad(e.to_string()))?;
        let mut buf = quote_buffer(&tdreport).map_err(|e| bad(e.to_string()))?;
        self.device
            .get_quote(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        let quote = quote_from_buffer(&buf).map_err(|e| bad(e.to_string()))?;
        Ok(Evidence {
            tee: TeeKind::Tdx,
            evidence: quote.to_vec(),
            certs: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answered(status: u64, out_len: u32, quote: &[u8]) -> Vec<u8> {
        let mut buf = quote_buffer(&[0; TDREPORT_LEN]).unwrap();
        buf[8..16].copy_from_slice(&status.to_le_bytes());
        buf[20..24].copy_from_slice(&out_len.to_le_bytes());
        buf[HEADER_LEN..HEADER_LEN + quote.len()].copy_from_slice(quote);
        buf
    }

    #[test]
    fn the_request_buffer_has_the_ghci_header_then_the_tdreport() {
        let buf = quote_buffer(&[7; TDREPORT_LEN]).unwrap();
        assert_eq!(buf.len(), QUOTE_BUF_LEN);
        let h = quote_header(&buf).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.status, QuoteStatus::SUCCESS);
        assert_eq!((h.in_len, h.out_len), (1024, 0));
        assert_eq!(&buf[24..24 + 1024], &[7; 1024][..]);
        assert!(buf[24 + 1024..].iter().all(|b| *b == 0));
        assert_eq!(quote_buffer(&[0; 10]), Err(QuoteBufferError::Tdreport(10)));
    }

    #[test]
    fn reads_the_quote_and_rejects_bad_answers() {
        let buf = answered(0, 5, b"quote");
        assert_eq!(quote_from_buffer(&buf).unwrap(), b"quote");
        for len in 0..HEADER_LEN {
            assert_eq!(
                quote_from_buffer(&buf[..len]),
                Err(QuoteBufferError::Short(len))
            );
        }
        // out_len past the end, by one byte and by a lot.
        let room = (QUOTE_BUF_LEN - HEADER_LEN) as u32;
        assert!(quote_from_buffer(&answered(0, room, b"")).is_ok());
        for n in [room + 1, u32::MAX] {
            assert_eq!(
                quote_from_buffer(&answered(0, n, b"")),
                Err(QuoteBufferError::OutOfBounds {
                    out_len: n,
                    room: room as usize
                })
            );
        }
        assert_eq!(
            quote_from_buffer(&answered(0, 0, b"")),
            Err(QuoteBufferError::Empty)
        );
        let e = quote_from_buffer(&answered(0x8000_0000_0000_0001, 5, b"quote")).unwrap_err();
        assert!(e.to_string().contains("QGS"), "{e}");
        let e = quote_from_buffer(&answered(u64::MAX, 0, b"")).unwrap_err();
        assert!(e.to_string().contains("in flight"), "{e}");
    }
}
