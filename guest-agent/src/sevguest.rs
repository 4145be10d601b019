//! SEV-SNP through `/dev/sev-guest`, for kernels without configfs-tsm (or without configfs mounted):
//! SNP_GET_EXT_REPORT, an attestation report with the certificates the host installed (SNP Firmware ABI,
//! MSG_REPORT_REQ / MSG_REPORT_RSP; GHCB specification 4.1.8.1 for the certificate table).
//!
//! The ioctl is behind [`SevGuestDevice`]: in production [`crate::sevioctl`], in tests an in-process fake of
//! the kernel and the host. Everything the device hands back is written by the firmware (the response) or
//! by the untrusted host (the certificate table), and is read here bounded: [`parse_answer`] (fuzz target
//! `snp_ext_report_answer`), with the table going through [`certtable::parse`].
//!
//! Which VMPL to ask for: `--vmpl` when given; otherwise the guest's own, which the firmware takes as the
//! lowest it accepts (a request under VMPCK*n* is refused below VMPL *n*). The sev-guest driver talks to the
//! firmware with the VMPCK of its `vmpck_id` parameter, which `sev_guest_probe` (later `snp_msg_init`) sets
//! to the VMPL the guest runs at when it is left at -1 (`drivers/virt/coco/sev-guest/sev-guest.c`); the
//! parameter is readable at `/sys/module/sev_guest/parameters/vmpck_id` (`sevguest` before Linux 6.2).
//! Where it reads 0 to 3 that is the VMPL asked for; where it is absent or still -1 (kernels that resolve it
//! privately), the agent starts at 0 and steps up while the firmware answers INVALID_PARAM.

use crate::certtable::{self, CertTableError, HostCert};
use crate::provider::{Provider, ProviderError, SEV_GUEST_DEVICE};
use crate::sevioctl::SevGuestFile;
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Highest VMPL an SNP guest has.
pub const MAX_VMPL: u32 = 3;
/// Bytes of `struct snp_report_resp` (the firmware's MSG_REPORT_RSP, decrypted by the kernel).
pub const REPORT_RESP_LEN: usize = 4000;
/// Bytes of the MSG_REPORT_RSP header before the report (`status`, `report_size`, 24 reserved).
pub const REPORT_RESP_HEADER_LEN: usize = 32;
/// The certificate buffer asked for first: the kernel's `SEV_FW_BLOB_MAX_SIZE` (16 KiB), the most it takes.
pub const CERTS_LEN: usize = 16 * 1024;
/// The most certificate-table bytes the agent will make room for when the host asks for more (a page multiple).
pub const MAX_CERTS_LEN: usize = 1 << 20;
/// The page size the kernel requires `certs_len` to be a multiple of.
const PAGE_LEN: usize = 4096;
/// How many SNP_GET_EXT_REPORT calls one report may take (the first, then a larger buffer when asked).
const EXT_REPORT_CALLS: usize = 3;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: the certificate buffer is too small (`include/uapi/linux/sev-guest.h`).
pub const VMM_ERR_INVALID_LEN: u32 = 1;
/// The sev-guest driver's `vmpck_id` parameter, current and pre-6.2 module names.
pub const VMPCK_PARAMS: [&str; 2] = [
    "/sys/module/sev_guest/parameters/vmpck_id",
    "/sys/module/sevguest/parameters/vmpck_id",
];

/// The firmware's status in MSG_REPORT_RSP (SNP Firmware ABI, "Status Codes"; Linux `psp-sev.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareStatus(pub u32);

impl FirmwareStatus {
    /// The report is in the response.
    pub const SUCCESS: FirmwareStatus = FirmwareStatus(0);
    /// A parameter is invalid, e.g. a VMPL below the requester's.
    pub const INVALID_PARAM: FirmwareStatus = FirmwareStatus(0x16);
    /// The key asked for is not available (e.g. no VLEK loaded).
    pub const INVALID_KEY: FirmwareStatus = FirmwareStatus(0x27);
}

impl std::fmt::Display for FirmwareStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            FirmwareStatus::SUCCESS => "success",
            FirmwareStatus::INVALID_PARAM => "INVALID_PARAM",
            FirmwareStatus::INVALID_KEY => "INVALID_KEY",
            _ => "unknown status",
        };
        write!(f, "{:#x} ({name})", self.0)
    }
}

/// What SNP_GET_EXT_REPORT is asked: `struct snp_report_req`'s fields (the reserved bytes are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtReportRequest {
    /// REPORT_DATA.
    pub user_data: [u8; 64],
    /// The VMPL to put in the report.
    pub vmpl: u32,
}

/// Why the ioctl failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SevIoctlError {
    /// The device could not be opened.
    #[error("open: {0}")]
    Open(std::io::Error),
    /// The ioctl returned an error.
    #[error("{}", ioctl_text(.errno, .exitinfo2))]
    Ioctl {
        /// The errno.
        errno: i32,
        /// `exitinfo2` as the kernel wrote it back: firmware error in bits 31:0, VMM error in bits 63:32.
        exitinfo2: u64,
        /// `certs_len` as the kernel wrote it back (the length the host asked for on `INVALID_LEN`).
        certs_len: u32,
    },
}

/// The errno and `exitinfo2`'s two halves, for [`SevIoctlError::Ioctl`]'s message.
fn ioctl_text(errno: &i32, exitinfo2: &u64) -> String {
    format!(
        "{} (firmware error {:#x}, VMM error {:#x})",
        std::io::Error::from_raw_os_error(*errno),
        exitinfo2 & 0xffff_ffff,
        exitinfo2 >> 32
    )
}

/// SNP_GET_EXT_REPORT on the guest device.
pub trait SevGuestDevice: Send + Sync {
    /// The device's name, for messages.
    fn name(&self) -> String;
    /// One SNP_GET_EXT_REPORT: `req` with a certificate buffer of `certs.len()` bytes (`certs_len`; empty:
    /// no certificates asked for). The device writes `resp` and the host's table into `certs`.
    fn get_ext_report(
        &self,
        req: &ExtReportRequest,
        resp: &mut [u8; REPORT_RESP_LEN],
        certs: &mut [u8],
    ) -> Result<(), SevIoctlError>;
}

/// An extended report: the report's bytes and the host's certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtReport {
    /// The attestation report.
    pub report: Vec<u8>,
    /// The certificate table's entries (empty when the host installed none).
    pub certs: Vec<HostCert>,
}

/// Why an answer holds no usable report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The response is shorter than its header.
    #[error(
        "the MSG_REPORT_RSP of {0} bytes is shorter than its {REPORT_RESP_HEADER_LEN}-byte header"
    )]
    Short(usize),
    /// The firmware refused.
    #[error("the firmware answered MSG_REPORT_REQ with status {0}")]
    Firmware(FirmwareStatus),
    /// The declared report runs past the response.
    #[error(
        "the firmware's report_size {size} runs past the {room} bytes after the response header"
    )]
    ReportSize {
        /// `report_size`.
        size: u32,
        /// The room after the header.
        room: usize,
    },
    /// Status success with no report.
    #[error("the firmware answered with an empty report")]
    Empty,
    /// The host's certificate table is unusable.
    #[error("the host's certificate table: {0}")]
    Certs(CertTableError),
}

/// The little-endian `u32` at `at` in `buf`, when it is there.
fn word(buf: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Reads one answer: the MSG_REPORT_RSP in `resp` (status, `report_size`, the report after the 32-byte
/// header, all inside `resp`) and the host's certificate table in `certs` (zero-filled by the kernel before
/// the host's bytes are copied in, so an all-zero buffer is an empty table).
pub fn parse_answer(resp: &[u8], certs: &[u8]) -> Result<ExtReport, AnswerError> {
    let (Some(status), Some(size)) = (word(resp, 0), word(resp, 4)) else {
        return Err(AnswerError::Short(resp.len()));
    };
    let body = resp
        .get(REPORT_RESP_HEADER_LEN..)
        .ok_or(AnswerError::Short(resp.len()))?;
    let status = FirmwareStatus(status);
    if status != FirmwareStatus::SUCCESS {
        return Err(AnswerError::Firmware(status));
    }
    if size == 0 {
        return Err(AnswerError::Empty);
    }
    let report = usize::try_from(size)
        .ok()
        .and_then(|n| body.get(..n))
        .ok_or(AnswerError::ReportSize {
            size,
            room: body.len(),
        })?;
    let certs = certtable::parse(certs).map_err(AnswerError::Certs)?;
    Ok(ExtReport {
        report: report.to_vec(),
        certs,
    })
}

/// Why the device produced no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SevDeviceError {
    /// The device could not be opened.
    #[error(
        "open {path}: {source} (is this an SNP guest with the sev-guest driver loaded? are we root?)"
    )]
    Open {
        /// The device.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The ioctl failed.
    #[error("SNP_GET_EXT_REPORT on {path} failed: {source}")]
    Ioctl {
        /// The device.
        path: String,
        /// The error.
        source: SevIoctlError,
    },
    /// The host asked for a certificate buffer the agent will not make (or the kernel does not take).
    #[error(
        "SNP_GET_EXT_REPORT on {path}: the host's certificate table needs {needed} bytes, which {why}: \
         install fewer certificates on the host, or pass --omit-certs and give the service the VCEK"
    )]
    CertsLen {
        /// The device.
        path: String,
        /// The length the host asked for.
        needed: u32,
        /// Why it cannot be given.
        why: String,
    },
    /// The answer is unusable.
    #[error("SNP_GET_EXT_REPORT on {path}: {source}")]
    Answer {
        /// The device.
        path: String,
        /// What is wrong.
        source: AnswerError,
    },
}

/// One extended report at `vmpl`: SNP_GET_EXT_REPORT with a [`CERTS_LEN`] buffer, then again with the
/// length the kernel reports when the host's table did not fit (page-aligned, above the last, at most
/// [`MAX_CERTS_LEN`]), at most [`EXT_REPORT_CALLS`] calls.
pub fn ext_report(
    device: &dyn SevGuestDevice,
    report_data: &[u8; 64],
    vmpl: u32,
) -> Result<ExtReport, SevDeviceError> {
    let path = device.name();
    let req = ExtReportRequest {
        user_data: *report_data,
        vmpl,
    };
    let mut certs_len = CERTS_LEN;
    let mut grown = false;
    for _ in 0..EXT_REPORT_CALLS {
        let mut resp = [0u8; REPORT_RESP_LEN];
        let mut certs = vec![0u8; certs_len];
        match device.get_ext_report(&req, &mut resp, &mut certs) {
            Ok(()) => {
                return parse_answer(&resp, &certs)
                    .map_err(|source| SevDeviceError::Answer { path, source });
            }
            Err(SevIoctlError::Open(source)) => return Err(SevDeviceError::Open { path, source }),
            Err(SevIoctlError::Ioctl {
                exitinfo2,
                certs_len: needed,
                ..
            }) if exitinfo2 >> 32 == u64::from(VMM_ERR_INVALID_LEN) => {
                let n = usize::try_from(needed).unwrap_or(usize::MAX);
                let why = if n <= certs_len {
                    Some(format!("is not more than the {certs_len} bytes given"))
                } else if n > MAX_CERTS_LEN {
                    Some(format!("is more than the agent's limit of {MAX_CERTS_LEN}"))
                } else if !n.is_multiple_of(PAGE_LEN) {
                    Some("is not a whole number of pages".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(SevDeviceError::CertsLen { path, needed, why });
                }
                certs_len = n;
                grown = true;
            }
            Err(SevIoctlError::Ioctl { errno, .. }) if grown && errno == libc::EINVAL => {
                return Err(SevDeviceError::CertsLen {
                    path,
                    needed: u32::try_from(certs_len).unwrap_or(u32::MAX),
                    why: format!(
                        "this kernel does not take (it allows at most {CERTS_LEN} bytes of certificates)"
                    ),
                });
            }
            Err(source) => return Err(SevDeviceError::Ioctl { path, source }),
        }
    }
    Err(SevDeviceError::CertsLen {
        path,
        needed: u32::try_from(certs_len).unwrap_or(u32::MAX),
        why: format!("kept growing over {EXT_REPORT_CALLS} calls"),
    })
}

/// The `/dev/sev-guest` provider.
#[derive(Clone)]
pub struct SevGuest {
    device: Arc<dyn SevGuestDevice>,
    vmpl: Option<u32>,
    vmpck_params: Vec<PathBuf>,
    certs_required: bool,
}

impl std::fmt::Debug for SevGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevGuest")
            .field("device", &self.device.name())
            .field("vmpl", &self.vmpl)
            .field("certs_required", &self.certs_required)
            .finish_non_exhaustive()
    }
}

impl SevGuest {
    /// The provider on `/dev/sev-guest`: the guest's own VMPL, a VCEK or VLEK required.
    pub fn new() -> Self {
        Self::with_device(Arc::new(SevGuestFile::new(Path::new(SEV_GUEST_DEVICE))))
    }

    /// The provider on another device (a fake in tests).
    pub fn with_device(device: Arc<dyn SevGuestDevice>) -> Self {
        SevGuest {
            device,
            vmpl: None,
            vmpck_params: VMPCK_PARAMS.iter().map(PathBuf::from).collect(),
            certs_required: true,
        }
    }

    /// The VMPL to request (0..=3), instead of the guest's own.
    pub fn with_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = Some(vmpl);
        self
    }

    /// Where the driver's `vmpck_id` parameter is read (default [`VMPCK_PARAMS`]; the first readable wins).
    pub fn with_vmpck_params(mut self, paths: &[PathBuf]) -> Self {
        self.vmpck_params = paths.to_vec();
        self
    }

    /// Whether a report without a VCEK or VLEK is an error (the default) or goes out without certificates.
    pub fn with_certs_required(mut self, required: bool) -> Self {
        self.certs_required = required;
        self
    }

    /// The VMPL the driver's key belongs to, when its `vmpck_id` parameter says (0..=3).
    pub fn driver_vmpl(&self) -> Option<u32> {
        self.vmpck_params.iter().find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let id: i64 = text.trim().parse().ok()?;
            u32::try_from(id).ok().filter(|v| *v <= MAX_VMPL)
        })
    }

    fn bad(&self, message: String) -> ProviderError {
        ProviderError::Bad {
            provider: self.describe(),
            message,
        }
    }
}

impl Default for SevGuest {
    fn default() -> Self {
        Self::new()
    }
}

impl Provider for SevGuest {
    fn tee(&self) -> Option<TeeKind> {
        Some(TeeKind::Snp)
    }

    fn describe(&self) -> String {
        match self.vmpl {
            Some(v) => format!("snp via {} (extended report, VMPL {v})", self.device.name()),
            None => format!(
                "snp via {} (extended report, the guest's VMPL)",
                self.device.name()
            ),
        }
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let floor = self.driver_vmpl();
        let first = self.vmpl.or(floor).unwrap_or(0);
        if first > MAX_VMPL {
            return Err(self.bad(format!(
                "VMPL {first} is out of range: an SNP guest has VMPLs 0 to {MAX_VMPL}"
            )));
        }
        // Step up only when neither --vmpl nor the driver said which VMPL is the guest's.
        let probe = self.vmpl.is_none() && floor.is_none();
        let mut vmpl = first;
        let ext = loop {
            match ext_report(self.device.as_ref(), report_data, vmpl) {
                Ok(ext) => break ext,
                Err(SevDeviceError::Answer {
                    source: AnswerError::Firmware(FirmwareStatus::INVALID_PARAM),
                    ..
                }) if probe && vmpl < MAX_VMPL => vmpl += 1,
                Err(SevDeviceError::Answer {
                    source: AnswerError::Firmware(FirmwareStatus::INVALID_PARAM),
                    ..
                }) => {
                    let floor = floor.map_or(String::new(), |f| {
                        format!(
                            " (the sev-guest driver uses VMPCK{f}: this guest runs at VMPL {f})"
                        )
                    });
                    return Err(self.bad(format!(
                        "the firmware refused a report at VMPL {vmpl} (INVALID_PARAM): a guest gets reports \
                         only at its own VMPL or above{floor}; pass --vmpl with this guest's VMPL or higher, \
                         or leave --vmpl out"
                    )));
                }
                Err(e) => return Err(self.bad(e.to_string())),
            }
        };
        let certs = certtable::evidence_certs(
            &ext.certs,
            &certtable::report_signer(&ext.report),
            self.certs_required,
        )
        .map_err(|e| self.bad(e.to_string()))?;
        Ok(Evidence {
            tee: TeeKind::Snp,
            evidence: ext.report,
            certs,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn resp(status: u32, size: u32, report: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_RESP_LEN];
        r[0..4].copy_from_slice(&status.to_le_bytes());
        r[4..8].copy_from_slice(&size.to_le_bytes());
        r[32..32 + report.len()].copy_from_slice(report);
        r
    }

    #[test]
    fn reads_the_report_and_refuses_what_runs_past_the_response() {
        let ok = parse_answer(&resp(0, 6, b"report"), &[0; 4096]).unwrap();
        assert_eq!(ok.report, b"report");
        assert!(ok.certs.is_empty());
        for len in 0..8 {
            assert_eq!(
                parse_answer(&resp(0, 6, b"report")[..len], &[]),
                Err(AnswerError::Short(len))
            );
        }
        let room = (REPORT_RESP_LEN - 32) as u32;
        assert_eq!(
            parse_answer(&resp(0, room, b""), &[]).unwrap().report.len(),
            3968
        );
        for size in [room + 1, u32::MAX] {
            assert_eq!(
                parse_answer(&resp(0, size, b""), &[]),
                Err(AnswerError::ReportSize {
                    size,
                    room: room as usize
                })
            );
        }
        assert_eq!(parse_answer(&resp(0, 0, b""), &[]), Err(AnswerError::Empty));
        let e = parse_answer(&resp(0x16, 1184, b""), &[]).unwrap_err();
        assert_eq!(e, AnswerError::Firmware(FirmwareStatus::INVALID_PARAM));
        assert!(e.to_string().contains("0x16 (INVALID_PARAM)"), "{e}");
    }
}
