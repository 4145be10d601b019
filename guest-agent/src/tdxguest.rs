//! TDX quotes through `/dev/tdx_guest` (or `/dev/tdx-guest`), for kernels whose TDX guest driver offers
//! GetQuote there but that have no configfs-tsm (Intel's TDX guest kernels; mainline went to configfs-tsm
//! instead), or where configfs is not mounted.
//!
//! One quote: TDX_CMD_GET_REPORT0 gives the TDREPORT over our REPORT_DATA, then TDX_CMD_GET_QUOTE hands the
//! VMM a buffer that starts with the GetQuote header (TDX GHCI 1.0, section 3.3 "TDG.VP.VMCALL<GetQuote>";
//! the kernel's `struct tdx_quote_buf`):
//!
//! ```text
//! offset 0   u64 version   1, set by the TD
//! offset 8   u64 status    set by the VMM: 0 success, 0xffff_ffff_ffff_ffff in flight,
//!                          0x8000_0000_0000_0000 error, 0x8000_0000_0000_0001 quoting service unavailable
//! offset 16  u32 in_len    length of the request that follows, set by the TD
//! offset 20  u32 out_len   length of the answer that replaces it, set by the VMM
//! offset 24  data          in: the request; out: the answer
//! ```
//!
//! What goes in `data` depends on the host ([`Framing`]):
//! - [`Framing::Raw`]: the TDREPORT itself. Upstream QEMU (`tdx_handle_get_quote`,
//!   `tdx-quote-generator.c`) wraps it in a QGS message for the host's Quote Generation Service and writes
//!   back the bare quote; the kernel's own configfs-tsm path sends this form too (`tdx_report_new`).
//! - [`Framing::Qgs`]: a QGS message with a 4-byte big-endian length in front, as Intel's DCAP `libtdx_attest`
//!   builds it (`qgs_msg_gen_get_quote_req`): header `{u16 major_version = 1, u16 minor_version = 1, u32 type
//!   = GET_QUOTE_REQ (0), u32 size, u32 error_code = 0}`, `u32 report_size`, `u32 id_list_size = 0`, the
//!   TDREPORT. Intel's QEMU of the TDX 1.0 era relays these bytes to the QGS as they are and writes back
//!   what the QGS sends: the 4-byte length and a GET_QUOTE_RESP `{header, u32 selected_id_size, u32
//!   quote_size, id, quote}` (`qgs_msg_gen_get_quote_resp`).
//!
//! An answer is read as a QGS frame when its first four bytes (big-endian) are the length of the rest, and
//! as a bare quote otherwise (a v4/v5 quote starts `04 00 02 00` or `05 00 02 00`, far more than a buffer
//! holds). Which framing a host wants cannot be asked: each GetQuote command starts with the framing of the
//! kernels that use that number, and a host that answers "error" or an empty success is asked once more in
//! the other framing. Transient errors are retried ([`crate::retry`]).
//!
//! The answer is written by the untrusted host: [`quote_from_buffer`] and [`qgs_quote`] read it bounded
//! (fuzz targets `tdx_quote_buffer` and `tdx_qgs_response`). The ioctls are behind [`TdxGuestDevice`]: in
//! production [`crate::tdxioctl`], in tests an in-process fake of the driver and the host.

use crate::provider::{Provider, ProviderError};
use crate::retry::{self, Backoff};
use crate::tdxioctl::QUOTE_CMDS;
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use std::path::PathBuf;
use std::sync::Arc;

/// The TDX guest device of mainline Linux (`KBUILD_MODNAME` of `tdx-guest.c`).
pub const TDX_GUEST_DEVICE: &str = "/dev/tdx_guest";
/// The device names tried, in order: mainline's, then the older `tdx-guest` (Intel's early drivers, the
/// default of go-tdx-guest).
pub const TDX_GUEST_DEVICES: [&str; 2] = [TDX_GUEST_DEVICE, "/dev/tdx-guest"];
/// Bytes of a TDREPORT (TDREPORT_STRUCT).
pub const TDREPORT_LEN: usize = 1024;
/// Offset of REPORTDATA in a TDREPORT (in its REPORTMACSTRUCT).
pub const TDREPORT_REPORTDATA: usize = 128;
/// Bytes of the GetQuote header.
pub const HEADER_LEN: usize = 24;
/// The GetQuote buffer handed to the VMM: header and room for the answer (4 pages, as DCAP's
/// `libtdx_attest` uses; Intel's quotes with their PCK chain stay under 8 KiB).
pub const QUOTE_BUF_LEN: usize = 16 * 1024;
/// The GetQuote header version the TD writes.
pub const GET_QUOTE_VERSION: u64 = 1;
/// Bytes of the big-endian length in front of a QGS message.
pub const QGS_LEN_PREFIX: usize = 4;
/// Bytes of a QGS message header.
pub const QGS_HEADER_LEN: usize = 16;
/// Bytes of a GET_QUOTE_REQ or GET_QUOTE_RESP before its variable part (header and two `u32` sizes).
pub const QGS_BODY_OFFSET: usize = QGS_HEADER_LEN + 8;
/// The QGS message major version (only the major version is checked by the QGS).
pub const QGS_MAJOR_VERSION: u16 = 1;
/// The QGS message minor version DCAP and QEMU write.
pub const QGS_MINOR_VERSION: u16 = 1;
/// QGS message type GET_QUOTE_REQ.
pub const QGS_GET_QUOTE_REQ: u32 = 0;
/// QGS message type GET_QUOTE_RESP.
pub const QGS_GET_QUOTE_RESP: u32 = 1;

/// How the TDREPORT is put in the GetQuote buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The bare TDREPORT; the host wraps it (upstream QEMU).
    Raw,
    /// A length-prefixed QGS GET_QUOTE_REQ; the host relays it (Intel's QEMU of the TDX 1.0 era).
    Qgs,
}

impl Framing {
    /// The other framing.
    pub fn other(self) -> Framing {
        match self {
            Framing::Raw => Framing::Qgs,
            Framing::Qgs => Framing::Raw,
        }
    }
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Framing::Raw => "raw TDREPORT",
            Framing::Qgs => "QGS-framed request",
        })
    }
}

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
    /// The VMM reported success with no answer.
    #[error("the VMM answered GetQuote with an empty answer")]
    Empty,
    /// The answer's declared length runs past the buffer.
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
    /// The QGS answer is unusable.
    #[error("the QGS answer: {0}")]
    Qgs(QgsError),
}

/// Why a QGS GET_QUOTE_RESP holds no quote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QgsError {
    /// Shorter than what it must hold.
    #[error("{len} bytes are fewer than the {need} of a GET_QUOTE_RESP")]
    Short {
        /// The message's length.
        len: usize,
        /// The least it must hold.
        need: usize,
    },
    /// Not major version 1.
    #[error("message version {major}.{minor}, expected {QGS_MAJOR_VERSION}.x")]
    Version {
        /// `major_version`.
        major: u16,
        /// `minor_version`.
        minor: u16,
    },
    /// Not a GET_QUOTE_RESP.
    #[error("message type {0}, expected GET_QUOTE_RESP ({QGS_GET_QUOTE_RESP})")]
    Type(u32),
    /// The header's size is not the message's.
    #[error("header size {declared} for a {actual}-byte message")]
    Size {
        /// `size` in the header.
        declared: u32,
        /// The message's length.
        actual: usize,
    },
    /// The QGS reported an error.
    #[error("the QGS answered with error code {0:#x}")]
    Code(u32),
    /// `selected_id_size` and `quote_size` do not add up to the message.
    #[error(
        "selected_id_size {id} + quote_size {quote} do not fill the {body} bytes after the header"
    )]
    Lengths {
        /// `selected_id_size`.
        id: u32,
        /// `quote_size`.
        quote: u32,
        /// The bytes after the fixed part.
        body: usize,
    },
    /// No quote.
    #[error("quote_size is 0")]
    EmptyQuote,
}

/// The GetQuote buffer ([`QUOTE_BUF_LEN`] bytes) asking for a quote over `tdreport` in `framing`.
pub fn quote_buffer(tdreport: &[u8], framing: Framing) -> Result<Vec<u8>, QuoteBufferError> {
    if tdreport.len() != TDREPORT_LEN {
        return Err(QuoteBufferError::Tdreport(tdreport.len()));
    }
    let data = match framing {
        Framing::Raw => tdreport.to_vec(),
        Framing::Qgs => {
            let size = (QGS_BODY_OFFSET + TDREPORT_LEN) as u32;
            let mut m = Vec::with_capacity(QGS_LEN_PREFIX + size as usize);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&QGS_MAJOR_VERSION.to_le_bytes());
            m.extend_from_slice(&QGS_MINOR_VERSION.to_le_bytes());
            m.extend_from_slice(&QGS_GET_QUOTE_REQ.to_le_bytes());
            m.extend_from_slice(&size.to_le_bytes());
            m.extend_from_slice(&0u32.to_le_bytes()); // error_code
            m.extend_from_slice(&(TDREPORT_LEN as u32).to_le_bytes()); // report_size
            m.extend_from_slice(&0u32.to_le_bytes()); // id_list_size
            m.extend_from_slice(tdreport);
            m
        }
    };
    let mut buf = Vec::with_capacity(QUOTE_BUF_LEN);
    buf.extend_from_slice(&GET_QUOTE_VERSION.to_le_bytes());
    buf.extend_from_slice(&QuoteStatus::SUCCESS.0.to_le_bytes());
    buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&data);
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

/// The quote in a QGS frame: the 4-byte big-endian length, then a GET_QUOTE_RESP of exactly that length
/// whose header checks out (version 1.x, type, size, error code 0) and whose `selected_id_size` and
/// `quote_size` fill it (the checks of DCAP's `qgs_msg_inflate_get_quote_resp` and QEMU's
/// `tdx_get_quote_read`). `None` when `data` is not a QGS frame (its prefix is not the rest's length).
pub fn qgs_quote(data: &[u8]) -> Option<Result<&[u8], QgsError>> {
    let len = u32::from_be_bytes(field(data, 0)?);
    let msg = data.get(QGS_LEN_PREFIX..)?;
    if usize::try_from(len).ok()? != msg.len() {
        return None;
    }
    Some(qgs_response(msg))
}

/// A GET_QUOTE_RESP message (without the length prefix), checked as [`qgs_quote`] says.
pub fn qgs_response(msg: &[u8]) -> Result<&[u8], QgsError> {
    let short = |need| QgsError::Short {
        len: msg.len(),
        need,
    };
    let u32_at = |at| field(msg, at).map(u32::from_le_bytes);
    let u16_at = |at| field(msg, at).map(u16::from_le_bytes);
    let (Some(major), Some(minor), Some(kind), Some(size), Some(code)) =
        (u16_at(0), u16_at(2), u32_at(4), u32_at(8), u32_at(12))
    else {
        return Err(short(QGS_HEADER_LEN));
    };
    if major != QGS_MAJOR_VERSION {
        return Err(QgsError::Version { major, minor });
    }
    if kind != QGS_GET_QUOTE_RESP {
        return Err(QgsError::Type(kind));
    }
    if usize::try_from(size).ok() != Some(msg.len()) {
        return Err(QgsError::Size {
            declared: size,
            actual: msg.len(),
        });
    }
    if code != 0 {
        return Err(QgsError::Code(code));
    }
    let (Some(id), Some(quote)) = (u32_at(16), u32_at(20)) else {
        return Err(short(QGS_BODY_OFFSET));
    };
    let body = msg.get(QGS_BODY_OFFSET..).unwrap_or_default();
    let lengths = QgsError::Lengths {
        id,
        quote,
        body: body.len(),
    };
    let (Ok(id_len), Ok(quote_len)) = (usize::try_from(id), usize::try_from(quote)) else {
        return Err(lengths);
    };
    if id_len.checked_add(quote_len) != Some(body.len()) {
        return Err(lengths);
    }
    if quote_len == 0 {
        return Err(QgsError::EmptyQuote);
    }
    body.get(id_len..).ok_or(lengths)
}

/// The quote in an answered GetQuote buffer: status success, `out_len` bytes after the header, all inside
/// the buffer; a QGS frame is unwrapped, anything else is the bare quote.
pub fn quote_from_buffer(buf: &[u8]) -> Result<&[u8], QuoteBufferError> {
    let h = quote_header(buf)?;
    if h.status != QuoteStatus::SUCCESS {
        return Err(QuoteBufferError::Status(h.status));
    }
    if h.out_len == 0 {
        return Err(QuoteBufferError::Empty);
    }
    let data = buf.get(HEADER_LEN..).unwrap_or_default();
    let answer = usize::try_from(h.out_len)
        .ok()
        .and_then(|n| data.get(..n))
        .ok_or(QuoteBufferError::OutOfBounds {
            out_len: h.out_len,
            room: data.len(),
        })?;
    match qgs_quote(answer) {
        Some(quote) => quote.map_err(QuoteBufferError::Qgs),
        None => Ok(answer),
    }
}

/// A GetQuote ioctl command: its number, what it is called, and the framing its kernels' hosts expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteCmd {
    /// The ioctl number.
    pub number: u64,
    /// Where it comes from, for messages.
    pub name: &'static str,
    /// The framing tried first with it.
    pub framing: Framing,
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
    /// The VMM still had the request in flight when the driver returned.
    #[error("GetQuote on {path}: the VMM still has the request in flight")]
    InFlight {
        /// The device.
        path: PathBuf,
    },
}

impl TdxDeviceError {
    /// Busy, interrupted, timed out or in flight: worth another try ([`retry::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            TdxDeviceError::Ioctl { source, .. } => retry::is_transient(source),
            TdxDeviceError::InFlight { .. } => true,
            TdxDeviceError::Open { .. } => false,
        }
    }

    /// `ENOTTY` or `EINVAL` from an ioctl: the driver does not know the command.
    fn is_unknown_command(&self) -> bool {
        matches!(self, TdxDeviceError::Ioctl { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)))
    }
}

/// The ioctls of the TDX guest device.
pub trait TdxGuestDevice: Send + Sync {
    /// The device's name, for messages.
    fn name(&self) -> String;
    /// TDX_CMD_GET_REPORT0: the TDREPORT over `report_data`.
    fn get_report0(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxDeviceError>;
    /// The GetQuote ioctl `cmd`: hands `buf` (a GetQuote buffer) to the VMM, which answers in place.
    fn get_quote(&self, cmd: &QuoteCmd, buf: &mut [u8]) -> Result<(), TdxDeviceError>;
}

/// The `/dev/tdx_guest` quote provider.
#[derive(Clone)]
pub struct TdxGuest {
    device: Arc<dyn TdxGuestDevice>,
    backoff: Backoff,
    note: Option<String>,
}

impl std::fmt::Debug for TdxGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxGuest")
            .field("device", &self.device.name())
            .finish_non_exhaustive()
    }
}

/// What one GetQuote command gave.
enum Tried {
    /// The quote.
    Quote(Vec<u8>),
    /// The driver does not know the command.
    Unknown(String),
    /// The host took neither framing (status error, or an empty answer), with what it said to each.
    Refused(Vec<String>),
}

impl TdxGuest {
    /// The provider on `device`.
    pub fn with_device(device: Arc<dyn TdxGuestDevice>) -> Self {
        TdxGuest {
            device,
            backoff: Backoff::TDX_QUOTE,
            note: None,
        }
    }

    /// How transient errors are retried (default [`Backoff::TDX_QUOTE`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A sentence added to every error (e.g. why configfs-tsm was not used).
    pub fn with_note(mut self, note: &str) -> Self {
        self.note = Some(note.to_owned());
        self
    }

    fn bad(&self, message: String) -> ProviderError {
        ProviderError::Bad {
            provider: self.describe(),
            message: match &self.note {
                Some(note) => format!("{message}; {note}"),
                None => message,
            },
        }
    }

    /// One GetQuote with `cmd` and `request`, transient errors retried: the answered buffer.
    fn ask(&self, cmd: &QuoteCmd, request: &[u8]) -> Result<Vec<u8>, TdxDeviceError> {
        retry::retry(&self.backoff, TdxDeviceError::is_transient, || {
            let mut buf = request.to_vec();
            self.device.get_quote(cmd, &mut buf)?;
            match quote_header(&buf) {
                Ok(h) if h.status == QuoteStatus::IN_FLIGHT => Err(TdxDeviceError::InFlight {
                    path: self.device.name().into(),
                }),
                _ => Ok(buf),
            }
        })
    }

    /// The quote from `cmd`: in its framing, then, when the host refuses that, in the other.
    fn quote_with(&self, cmd: &QuoteCmd, tdreport: &[u8]) -> Result<Tried, ProviderError> {
        let mut refused = Vec::new();
        for framing in [cmd.framing, cmd.framing.other()] {
            let request = quote_buffer(tdreport, framing).map_err(|e| self.bad(e.to_string()))?;
            let buf = match self.ask(cmd, &request) {
                Ok(buf) => buf,
                // The driver does not look inside the buffer: an unknown command is unknown in any framing.
                Err(e) if e.is_unknown_command() && refused.is_empty() => {
                    return Ok(Tried::Unknown(e.to_string()));
                }
                Err(e) => return Err(self.bad(e.to_string())),
            };
            match quote_from_buffer(&buf) {
                Ok(quote) => return Ok(Tried::Quote(quote.to_vec())),
                Err(
                    e @ (QuoteBufferError::Status(QuoteStatus::ERROR) | QuoteBufferError::Empty),
                ) => {
                    refused.push(format!("{} with a {framing}: {e}", cmd.name));
                }
                Err(e) => return Err(self.bad(format!("{} with a {framing}: {e}", cmd.name))),
            }
        }
        Ok(Tried::Refused(refused))
    }
}

impl Provider for TdxGuest {
    fn tee(&self) -> Option<TeeKind> {
        Some(TeeKind::Tdx)
    }

    fn describe(&self) -> String {
        format!("tdx via {} (GetQuote)", self.device.name())
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let tdreport = retry::retry(&self.backoff, TdxDeviceError::is_transient, || {
            self.device.get_report0(report_data)
        })
        .map_err(|e| self.bad(e.to_string()))?;
        let mut unknown = Vec::new();
        let mut refused = Vec::new();
        for cmd in &QUOTE_CMDS {
            match self.quote_with(cmd, &tdreport)? {
                Tried::Quote(quote) => {
                    return Ok(Evidence {
                        tee: TeeKind::Tdx,
                        evidence: quote,
                        certs: Vec::new(),
                    });
                }
                Tried::Unknown(m) => unknown.push(m),
                Tried::Refused(m) => refused.extend(m),
            }
        }
        if refused.is_empty() {
            return Err(self.bad(format!(
                "{} offers no quotes (the driver knows no TDX_CMD_GET_QUOTE: {}): use a kernel with \
                 configfs-tsm (Linux 6.7+, /sys/kernel/config/tsm/report) or Intel's TDX guest kernel",
                self.device.name(),
                unknown.join("; ")
            )));
        }
        Err(self.bad(format!(
            "the host answered GetQuote in neither framing ({}): check that the host's QGS runs and that \
             the VMM is configured to reach it (QEMU: tdx-guest quote-generation-socket)",
            refused.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answered(status: u64, out_len: u32, answer: &[u8]) -> Vec<u8> {
        let mut buf = quote_buffer(&[0; TDREPORT_LEN], Framing::Raw).unwrap();
        buf[8..16].copy_from_slice(&status.to_le_bytes());
        buf[20..24].copy_from_slice(&out_len.to_le_bytes());
        buf[HEADER_LEN..HEADER_LEN + answer.len()].copy_from_slice(answer);
        buf
    }

    /// A GET_QUOTE_RESP as `qgs_msg_gen_get_quote_resp` writes it, with the 4-byte length in front.
    fn qgs_frame(id: &[u8], quote: &[u8], code: u32) -> Vec<u8> {
        let size = (QGS_BODY_OFFSET + id.len() + quote.len()) as u32;
        let mut m = size.to_be_bytes().to_vec();
        m.extend_from_slice(&1u16.to_le_bytes());
        m.extend_from_slice(&1u16.to_le_bytes());
        m.extend_from_slice(&QGS_GET_QUOTE_RESP.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&code.to_le_bytes());
        m.extend_from_slice(&(id.len() as u32).to_le_bytes());
        m.extend_from_slice(&(quote.len() as u32).to_le_bytes());
        m.extend_from_slice(id);
        m.extend_from_slice(quote);
        m
    }

    #[test]
    fn the_raw_request_has_the_ghci_header_then_the_tdreport() {
        let buf = quote_buffer(&[7; TDREPORT_LEN], Framing::Raw).unwrap();
        assert_eq!(buf.len(), QUOTE_BUF_LEN);
        let h = quote_header(&buf).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.status, QuoteStatus::SUCCESS);
        assert_eq!((h.in_len, h.out_len), (1024, 0));
        assert_eq!(&buf[24..24 + 1024], &[7; 1024][..]);
        assert!(buf[24 + 1024..].iter().all(|b| *b == 0));
        assert_eq!(
            quote_buffer(&[0; 10], Framing::Raw),
            Err(QuoteBufferError::Tdreport(10))
        );
    }

    #[test]
    fn the_qgs_request_is_length_prefixed_get_quote_req() {
        let buf = quote_buffer(&[7; TDREPORT_LEN], Framing::Qgs).unwrap();
        let h = quote_header(&buf).unwrap();
        // 4-byte prefix + 16-byte header + report_size + id_list_size + TDREPORT.
        assert_eq!(h.in_len, 4 + 24 + 1024);
        let d = &buf[HEADER_LEN..];
        assert_eq!(d[0..4], 1048u32.to_be_bytes());
        assert_eq!(d[4..8], [1, 0, 1, 0]); // version 1.1
        assert_eq!(d[8..12], 0u32.to_le_bytes()); // GET_QUOTE_REQ
        assert_eq!(d[12..16], 1048u32.to_le_bytes()); // size
        assert_eq!(d[16..20], [0; 4]); // error_code
        assert_eq!(d[20..24], 1024u32.to_le_bytes()); // report_size
        assert_eq!(d[24..28], [0; 4]); // id_list_size
        assert_eq!(&d[28..28 + 1024], &[7; 1024][..]);
    }

    #[test]
    fn reads_a_bare_quote_and_rejects_bad_answers() {
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

    #[test]
    fn unwraps_a_qgs_answer_and_checks_every_length() {
        let frame = qgs_frame(b"", b"the quote", 0);
        let buf = answered(0, frame.len() as u32, &frame);
        assert_eq!(quote_from_buffer(&buf).unwrap(), b"the quote");
        // A selected attestation key id before the quote is skipped.
        let with_id = qgs_frame(&[9; 16], b"q", 0);
        assert_eq!(qgs_quote(&with_id).unwrap().unwrap(), b"q");
        // Every truncation of the message (prefix adjusted) is refused, never read past.
        for cut in 1..frame.len() - 4 {
            let mut short = frame[..frame.len() - cut].to_vec();
            let rest = (short.len() - 4) as u32;
            short[0..4].copy_from_slice(&rest.to_be_bytes());
            assert!(qgs_quote(&short).unwrap().is_err(), "cut {cut}");
        }
        // A prefix that is not the rest's length: a bare quote.
        let mut other = frame.clone();
        other[3] ^= 1;
        assert!(qgs_quote(&other).is_none());
        let set = |at: usize, v: &[u8]| {
            let mut f = frame.clone();
            f[at..at + v.len()].copy_from_slice(v);
            qgs_quote(&f).unwrap().unwrap_err()
        };
        assert_eq!(
            set(4, &2u16.to_le_bytes()),
            QgsError::Version { major: 2, minor: 1 }
        );
        assert_eq!(set(8, &0u32.to_le_bytes()), QgsError::Type(0));
        assert!(matches!(
            set(12, &7u32.to_le_bytes()),
            QgsError::Size { declared: 7, .. }
        ));
        assert!(matches!(
            set(24, &u32::MAX.to_le_bytes()),
            QgsError::Lengths { .. }
        ));
        assert!(matches!(
            set(20, &u32::MAX.to_le_bytes()),
            QgsError::Lengths { .. }
        ));
        assert!(matches!(
            set(20, &2u32.to_le_bytes()),
            QgsError::Lengths { .. }
        ));
        assert_eq!(
            qgs_quote(&qgs_frame(b"", b"", 0)).unwrap(),
            Err(QgsError::EmptyQuote)
        );
        // An error answer (qgs_msg_gen_error_resp: header and two zero sizes) names its code.
        let e = qgs_quote(&qgs_frame(b"", b"", 0x12)).unwrap().unwrap_err();
        assert_eq!(e, QgsError::Code(0x12));
        assert!(e.to_string().contains("0x12"));
    }
}
