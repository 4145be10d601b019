//! The `/dev/tdx_guest` ioctls (with [`crate::sevioctl`], the agent's device ioctls: the only `unsafe` in
//! this crate, DESIGN.md).
//!
//! Numbers and layouts (Linux `include/uapi/linux/tdx-guest.h`, and Intel's TDX guest kernels for
//! GetQuote, which mainline never merged):
//! - `TDX_CMD_GET_REPORT0 = _IOWR('T', 1, struct tdx_report_req)`, `struct tdx_report_req { __u8
//!   reportdata[64]; __u8 tdreport[1024]; }`.
//! - `TDX_CMD_GET_QUOTE`, argument `struct tdx_quote_req { __u64 buf; __u64 len; }` pointing at a GetQuote
//!   buffer ([`crate::tdxguest`]). Its number differs between driver generations ([`QUOTE_CMDS`]):
//!   `_IOR('T', 4, …)` in Intel's TDX 1.0 guest kernels (what Intel's DCAP `libtdx_attest` issues, with a
//!   QGS-framed request), `_IOWR('T', 4, …)` in their "v3" driver, `_IOR('T', 2, …)` in the GetQuote
//!   patches posted to LKML, `_IOWR('T', 2, …)` in go-tdx-guest (on `/dev/tdx-guest`, with a bare TDREPORT).
//!   [`crate::tdxguest`] tries them in that order, moving on when the driver does not know the command:
//!   `ENOTTY` (`tdx_guest_ioctl`'s default) or `EINVAL` (what some drivers answer instead).

use crate::tdxguest::{Framing, QuoteCmd, TDREPORT_LEN, TdxDeviceError, TdxGuestDevice};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `_IOC(dir, type, nr, size)` of `<asm-generic/ioctl.h>` (x86: 8-bit nr and type, 14-bit size).
pub(crate) const fn ioc(dir: u64, ty: u8, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr
}
/// `_IOC_READ`.
const IOC_READ: u64 = 2;
/// `_IOC_READ | _IOC_WRITE`.
pub(crate) const IOC_READ_WRITE: u64 = 3;

/// `struct tdx_report_req`.
#[repr(C)]
struct ReportReq {
    reportdata: [u8; 64],
    tdreport: [u8; TDREPORT_LEN],
}
const _: () = assert!(std::mem::size_of::<ReportReq>() == 64 + 1024);

/// `struct tdx_quote_req`.
#[repr(C)]
struct QuoteReq {
    buf: u64,
    len: u64,
}
const _: () = assert!(std::mem::size_of::<QuoteReq>() == 16);

/// `TDX_CMD_GET_REPORT0`.
pub const TDX_CMD_GET_REPORT0: u64 = ioc(IOC_READ_WRITE, b'T', 1, std::mem::size_of::<ReportReq>());
/// The `TDX_CMD_GET_QUOTE` commands, in the order tried, each with the framing its kernels' hosts expect.
pub const QUOTE_CMDS: [QuoteCmd; 4] = [
    QuoteCmd {
        number: ioc(IOC_READ, b'T', 4, std::mem::size_of::<QuoteReq>()),
        name: "TDX_CMD_GET_QUOTE _IOR('T', 4) (Intel TDX 1.0 guest kernels, DCAP libtdx_attest)",
        framing: Framing::Qgs,
    },
    QuoteCmd {
        number: ioc(IOC_READ_WRITE, b'T', 4, std::mem::size_of::<QuoteReq>()),
        name: "TDX_CMD_GET_QUOTE _IOWR('T', 4) (Intel's v3 TDX guest driver)",
        framing: Framing::Raw,
    },
    QuoteCmd {
        number: ioc(IOC_READ, b'T', 2, std::mem::size_of::<QuoteReq>()),
        name: "TDX_CMD_GET_QUOTE _IOR('T', 2) (the LKML GetQuote patches)",
        framing: Framing::Raw,
    },
    QuoteCmd {
        number: ioc(IOC_READ_WRITE, b'T', 2, std::mem::size_of::<QuoteReq>()),
        name: "TDX_CMD_GET_QUOTE _IOWR('T', 2) (go-tdx-guest)",
        framing: Framing::Raw,
    },
];

/// The TDX guest device at a path (opened for each request).
#[derive(Clone, Debug)]
pub struct TdxGuestFile {
    path: PathBuf,
}

impl TdxGuestFile {
    /// The device at `path` (normally [`crate::tdxguest::TDX_GUEST_DEVICE`]).
    pub fn new(path: &Path) -> Self {
        TdxGuestFile {
            path: path.to_owned(),
        }
    }

    fn open(&self) -> Result<File, TdxDeviceError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|source| TdxDeviceError::Open {
                path: self.path.clone(),
                source,
            })
    }

    fn ioctl_error(&self, cmd: &'static str) -> TdxDeviceError {
        TdxDeviceError::Ioctl {
            cmd,
            path: self.path.clone(),
            source: std::io::Error::last_os_error(),
        }
    }
}

impl TdxGuestDevice for TdxGuestFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn get_report0(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxDeviceError> {
        let file = self.open()?;
        let mut req = ReportReq {
            reportdata: *report_data,
            tdreport: [0; TDREPORT_LEN],
        };
        // SAFETY: `file` is open for the call; `req` is a live, exclusively borrowed `struct tdx_report_req`
        // whose size is the one encoded in the command, so the driver reads and writes only inside it.
        let ret = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TDX_CMD_GET_REPORT0 as libc::c_ulong,
                &mut req as *mut ReportReq,
            )
        };
        if ret != 0 {
            return Err(self.ioctl_error("TDX_CMD_GET_REPORT0"));
        }
        Ok(req.tdreport.to_vec())
    }

    fn get_quote(&self, cmd: &QuoteCmd, buf: &mut [u8]) -> Result<(), TdxDeviceError> {
        let file = self.open()?;
        let req = QuoteReq {
            buf: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
        };
        // SAFETY: `file` is open for the call; `req` names `buf`, which is exclusively borrowed for the
        // whole call, by its address and exact length, so the driver copies the GetQuote buffer in and the
        // answer out only within it; `req` itself (16 bytes, the size every GetQuote number encodes) is only
        // read.
        let ret = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                cmd.number as libc::c_ulong,
                &req as *const QuoteReq,
            )
        };
        if ret != 0 {
            return Err(self.ioctl_error(cmd.name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // _IOWR('T', 1, 1088 bytes), _IOR('T', 4, 16), _IOWR('T', 4, 16), _IOR('T', 2, 16), _IOWR('T', 2, 16).
        assert_eq!(TDX_CMD_GET_REPORT0, 0xc440_5401);
        let numbers: Vec<u64> = QUOTE_CMDS.iter().map(|c| c.number).collect();
        assert_eq!(
            numbers,
            [0x8010_5404, 0xc010_5404, 0x8010_5402, 0xc010_5402]
        );
        // Only DCAP's number starts with the QGS framing.
        assert_eq!(QUOTE_CMDS[0].framing, Framing::Qgs);
        assert!(QUOTE_CMDS[1..].iter().all(|c| c.framing == Framing::Raw));
    }

    #[test]
    fn a_device_without_the_ioctls_gives_clear_errors() {
        // /dev/null knows no ioctl: ENOTTY for the report and for a GetQuote number.
        let dev = TdxGuestFile::new(Path::new("/dev/null"));
        let e = dev.get_report0(&[0; 64]).unwrap_err().to_string();
        assert!(e.starts_with("TDX_CMD_GET_REPORT0 on /dev/null"), "{e}");
        let mut buf = vec![0u8; 64];
        let e = dev.get_quote(&QUOTE_CMDS[3], &mut buf).unwrap_err();
        assert!(e.to_string().contains("go-tdx-guest"), "{e}");
        assert!(
            matches!(&e, TdxDeviceError::Ioctl { source, .. } if source.raw_os_error() == Some(libc::ENOTTY))
        );
        let missing = TdxGuestFile::new(Path::new("/nonexistent/tdx_guest"));
        let e = missing.get_report0(&[0; 64]).unwrap_err().to_string();
        assert!(
            e.contains("open /nonexistent/tdx_guest") && e.contains("tdx_guest driver"),
            "{e}"
        );
    }
}
