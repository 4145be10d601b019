//! `/dev/sev`, the AMD secure processor driver: SEV_PLATFORM_STATUS (Linux
//! `include/uapi/linux/psp-sev.h`; SEV API spec §5.5 "PLATFORM_STATUS").

use std::fs::File;
use std::path::Path;

use vmm_sys_util::ioctl::ioctl_with_mut_ref;

/// `struct sev_issue_cmd` (psp-sev.h): the command, a user pointer to its data, the firmware
/// error code written back.
#[repr(C)]
#[derive(Debug, Default)]
struct SevIssueCmd {
    cmd: u32,
    data: u64,
    error: u32,
}
const _: () = assert!(std::mem::size_of::<SevIssueCmd>() == 24);

/// `struct sev_user_data_status` (packed).
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct SevUserDataStatus {
    api_major: u8,
    api_minor: u8,
    state: u8,
    flags: u32,
    build: u8,
    guest_count: u32,
}
const _: () = assert!(std::mem::size_of::<SevUserDataStatus>() == 12);

/// `SEV_PLATFORM_STATUS` command id.
const SEV_PLATFORM_STATUS: u32 = 1;

mod nr {
    //! ioctl numbers (`SEV_IOC_TYPE` 'S').
    #![allow(missing_docs)]
    use super::SevIssueCmd;
    use vmm_sys_util::ioctl_iowr_nr;
    ioctl_iowr_nr!(SEV_ISSUE_CMD, b'S' as u32, 0x0, SevIssueCmd);
}
use nr::SEV_ISSUE_CMD;

/// The SEV firmware's answer to PLATFORM_STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SevPlatformStatus {
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// Firmware build id.
    pub build: u8,
    /// Platform state (0 UNINIT, 1 INIT, 2 WORKING).
    pub state: u8,
    /// Number of SEV guests.
    pub guest_count: u32,
}

/// Why `/dev/sev` could not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SevDevError {
    /// Opening the device failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// Device path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The ioctl failed.
    #[error("SEV_PLATFORM_STATUS failed: {errno} (firmware error {fw_error:#x})")]
    Ioctl {
        /// errno.
        errno: vmm_sys_util::errno::Error,
        /// Firmware status code.
        fw_error: u32,
    },
}

/// Issues SEV_PLATFORM_STATUS on `dev` (normally `/dev/sev`).
pub fn platform_status(dev: &Path) -> Result<SevPlatformStatus, SevDevError> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|source| SevDevError::Open {
            path: dev.display().to_string(),
            source,
        })?;
    let mut status = SevUserDataStatus::default();
    let mut cmd = SevIssueCmd {
        cmd: SEV_PLATFORM_STATUS,
        data: std::ptr::addr_of_mut!(status) as u64,
        error: 0,
    };
    // SAFETY: `file` is an open /dev/sev; SEV_ISSUE_CMD reads and writes exactly one
    // `sev_issue_cmd` (our `#[repr(C)]` copy, size asserted), and for SEV_PLATFORM_STATUS the
    // driver writes one 12-byte `sev_user_data_status` to `data`, which points to `status`, alive
    // and exclusively borrowed until the call returns.
    let ret = unsafe { ioctl_with_mut_ref(&file, SEV_ISSUE_CMD(), &mut cmd) };
    if ret != 0 {
        return Err(SevDevError::Ioctl {
            errno: vmm_sys_util::errno::Error::last(),
            fw_error: cmd.error,
        });
    }
    let s = status;
    Ok(SevPlatformStatus {
        api_major: s.api_major,
        api_minor: s.api_minor,
        build: s.build,
        state: s.state,
        guest_count: s.guest_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_is_iowr_s_0_of_24_bytes() {
        assert_eq!(SEV_ISSUE_CMD(), 0xc018_5300);
    }

    #[test]
    fn a_missing_device_is_an_open_error() {
        let e = platform_status(Path::new("/nonexistent/sev")).unwrap_err();
        assert!(matches!(e, SevDevError::Open { .. }), "{e}");
    }
}
