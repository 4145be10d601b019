//! The `/dev/sev-guest` ioctl, SNP_GET_EXT_REPORT, issued directly (the agent's device ioctls are the only
//! `unsafe` in this crate; DESIGN.md).
//!
//! Numbers and layouts (Linux `include/uapi/linux/sev-guest.h`):
//! - `struct snp_report_req { __u8 user_data[64]; __u32 vmpl; __u8 rsvd[28]; }` (96 bytes);
//! - `struct snp_ext_report_req { struct snp_report_req data; __u64 certs_address; __u32 certs_len; }`
//!   (112 bytes with the C padding);
//! - `struct snp_report_resp { __u8 data[4000]; }`;
//! - `struct snp_guest_request_ioctl { __u8 msg_version; __u64 req_data; __u64 resp_data; __u64 exitinfo2; }`
//!   (32 bytes; `exitinfo2` is the firmware error in bits 31:0 and the VMM error in bits 63:32);
//! - `SNP_GET_EXT_REPORT = _IOWR('S', 2, struct snp_guest_request_ioctl)`.
//!
//! What the kernel does with them (`drivers/virt/coco/sev-guest/sev-guest.c`, `get_ext_report` and
//! `snp_guest_ioctl`): `certs_len` must be a multiple of the page size and at most `SEV_FW_BLOB_MAX_SIZE`
//! (16 KiB) or the call fails with `EINVAL`; the certificate buffer is zero-filled, then the host's table is
//! copied in. When the host needs more room it fails with `EIO`, `exitinfo2` carries
//! `SNP_GUEST_VMM_ERR_INVALID_LEN` in its VMM half, and the kernel writes the length the host asked for back
//! into `certs_len`. The parsing of what comes back is [`crate::sevguest`]'s, bounded.

use crate::sevguest::{ExtReportRequest, REPORT_RESP_LEN, SevGuestDevice, SevIoctlError};
use crate::tdxioctl::{IOC_READ_WRITE, ioc};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `struct snp_report_req`.
#[repr(C)]
struct ReportReq {
    user_data: [u8; 64],
    vmpl: u32,
    rsvd: [u8; 28],
}
const _: () = assert!(std::mem::size_of::<ReportReq>() == 96);

/// `struct snp_ext_report_req`.
#[repr(C)]
struct ExtReportReq {
    data: ReportReq,
    certs_address: u64,
    certs_len: u32,
}
const _: () = assert!(std::mem::size_of::<ExtReportReq>() == 112);
const _: () = assert!(std::mem::offset_of!(ExtReportReq, certs_address) == 96);
const _: () = assert!(std::mem::offset_of!(ExtReportReq, certs_len) == 104);

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
struct GuestRequestIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}
const _: () = assert!(std::mem::size_of::<GuestRequestIoctl>() == 32);
const _: () = assert!(std::mem::offset_of!(GuestRequestIoctl, exitinfo2) == 24);

/// `_IOWR('S', 2, struct snp_guest_request_ioctl)`.
pub const SNP_GET_EXT_REPORT: u64 = ioc(
    IOC_READ_WRITE,
    b'S',
    2,
    std::mem::size_of::<GuestRequestIoctl>(),
);

/// The message version the kernel's own callers use (`sev_report_new`); it must be non-zero.
const MSG_VERSION: u8 = 1;

/// The SEV guest device at a path (opened for each request).
#[derive(Clone, Debug)]
pub struct SevGuestFile {
    path: PathBuf,
}

impl SevGuestFile {
    /// The device at `path` (normally [`crate::provider::SEV_GUEST_DEVICE`]).
    pub fn new(path: &Path) -> Self {
        SevGuestFile {
            path: path.to_owned(),
        }
    }
}

impl SevGuestDevice for SevGuestFile {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn get_ext_report(
        &self,
        req: &ExtReportRequest,
        resp: &mut [u8; REPORT_RESP_LEN],
        certs: &mut [u8],
    ) -> Result<(), SevIoctlError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(SevIoctlError::Open)?;
        let certs_len = u32::try_from(certs.len()).map_err(|_| SevIoctlError::Ioctl {
            errno: libc::EINVAL,
            exitinfo2: 0,
            certs_len: u32::MAX,
        })?;
        let mut ext = ExtReportReq {
            data: ReportReq {
                user_data: req.user_data,
                vmpl: req.vmpl,
                rsvd: [0; 28],
            },
            certs_address: if certs.is_empty() {
                0
            } else {
                certs.as_mut_ptr() as u64
            },
            certs_len,
        };
        let mut arg = GuestRequestIoctl {
            msg_version: MSG_VERSION,
            req_data: &mut ext as *mut ExtReportReq as u64,
            resp_data: resp.as_mut_ptr() as u64,
            exitinfo2: 0,
        };
        // SAFETY: `file` is open for the call. `arg` is a live, exclusively borrowed `struct
        // snp_guest_request_ioctl` of the size encoded in the command; it names `ext` (112 bytes, exclusively
        // borrowed, which the kernel reads and may write `certs_len` back into), `resp` (exactly the 4000
        // bytes of `struct snp_report_resp`) and `certs` by its address and exact length in `certs_len`, all
        // alive and not otherwise borrowed until the call returns, so the kernel writes only inside them.
        let ret = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                SNP_GET_EXT_REPORT as libc::c_ulong,
                &mut arg as *mut GuestRequestIoctl,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        Err(SevIoctlError::Ioctl {
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            exitinfo2: arg.exitinfo2,
            certs_len: ext.certs_len,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_ioctl_number_matches_the_kernel_header() {
        // _IOWR('S', 0x2, struct snp_guest_request_ioctl) with the 32-byte struct.
        assert_eq!(SNP_GET_EXT_REPORT, 0xc020_5302);
    }

    #[test]
    fn a_device_without_the_ioctl_gives_its_errno() {
        // /dev/null knows no ioctl: ENOTTY, no VMM error, certs_len as sent.
        let dev = SevGuestFile::new(Path::new("/dev/null"));
        let mut resp = [0u8; REPORT_RESP_LEN];
        let mut certs = vec![0u8; 4096];
        let e = dev
            .get_ext_report(
                &ExtReportRequest {
                    user_data: [1; 64],
                    vmpl: 0,
                },
                &mut resp,
                &mut certs,
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                SevIoctlError::Ioctl {
                    errno: libc::ENOTTY,
                    exitinfo2: 0,
                    certs_len: 4096
                }
            ),
            "{e}"
        );
        let missing = SevGuestFile::new(Path::new("/nonexistent/sev-guest"));
        assert!(matches!(
            missing.get_ext_report(
                &ExtReportRequest {
                    user_data: [0; 64],
                    vmpl: 0
                },
                &mut resp,
                &mut certs
            ),
            Err(SevIoctlError::Open(_))
        ));
    }
}
