//! SEV-SNP through `/dev/sev-guest`, for kernels without configfs-tsm: SNP_GET_EXT_REPORT, an attestation
//! report with the certificates the host installed (SNP Firmware ABI, MSG_REPORT_REQ; GHCB specification
//! 4.1.8.1 for the certificate table). The device is behind [`SevGuestDevice`]: in production the `sev`
//! crate's guest [`Firmware`] (which owns the ioctls), in tests an in-process fake.

use crate::certtable::{self, CertKind, HostCert};
use crate::provider::{Provider, ProviderError, SEV_GUEST_DEVICE};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use sev::firmware::guest::Firmware;
use sev::firmware::host::CertType;
use std::sync::Arc;

/// Highest VMPL an SNP guest has.
pub const MAX_VMPL: u32 = 3;

/// Why the device produced no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SevDeviceError {
    /// The device could not be opened.
    #[error(
        "open {SEV_GUEST_DEVICE}: {0} (is this an SNP guest with the sev-guest driver loaded? are we root?)"
    )]
    Open(std::io::Error),
    /// The ioctl or the firmware refused the request.
    #[error("SNP_GET_EXT_REPORT failed: {0}")]
    Firmware(String),
}

/// An extended report: the report's bytes and the host's certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtReport {
    /// The attestation report.
    pub report: Vec<u8>,
    /// The certificate table's entries (empty when the host installed none).
    pub certs: Vec<HostCert>,
}

/// SNP_GET_EXT_REPORT on the guest device.
pub trait SevGuestDevice: Send + Sync {
    /// A report over `report_data` at `vmpl`, with the host's certificates.
    fn ext_report(&self, report_data: &[u8; 64], vmpl: u32) -> Result<ExtReport, SevDeviceError>;
}

/// `/dev/sev-guest` through the `sev` crate (it opens the fixed path; the crate parses the table).
#[derive(Clone, Copy, Debug, Default)]
pub struct SevFirmware;

/// The bytes of the GUID the `sev` crate prints for a certificate type (its `Display` is the GUID text).
fn cert_kind(kind: &CertType) -> CertKind {
    let raw = hex::decode(kind.to_string().replace('-', "")).unwrap_or_default();
    CertKind::of_guid(<[u8; 16]>::try_from(raw.as_slice()).unwrap_or([0; 16]))
}

impl SevGuestDevice for SevFirmware {
    fn ext_report(&self, report_data: &[u8; 64], vmpl: u32) -> Result<ExtReport, SevDeviceError> {
        let mut fw = Firmware::open().map_err(SevDeviceError::Open)?;
        let (report, table) = fw
            .get_ext_report(None, Some(*report_data), Some(vmpl))
            .map_err(|e| SevDeviceError::Firmware(e.to_string()))?;
        let certs = table
            .unwrap_or_default()
            .into_iter()
            .map(|e| HostCert {
                kind: cert_kind(&e.cert_type),
                der: e.data,
            })
            .collect();
        Ok(ExtReport { report, certs })
    }
}

/// The `/dev/sev-guest` provider.
#[derive(Clone)]
pub struct SevGuest {
    device: Arc<dyn SevGuestDevice>,
    vmpl: u32,
    certs_required: bool,
}

impl std::fmt::Debug for SevGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevGuest")
            .field("vmpl", &self.vmpl)
            .field("certs_required", &self.certs_required)
            .finish_non_exhaustive()
    }
}

impl SevGuest {
    /// The provider on `/dev/sev-guest`: VMPL 0, a VCEK or VLEK required.
    pub fn new() -> Self {
        Self::with_device(Arc::new(SevFirmware))
    }

    /// The provider on another device (a fake in tests).
    pub fn with_device(device: Arc<dyn SevGuestDevice>) -> Self {
        SevGuest {
            device,
            vmpl: 0,
            certs_required: true,
        }
    }

    /// The VMPL to request (0..=3).
    pub fn with_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = vmpl;
        self
    }

    /// Whether a report without a VCEK or VLEK is an error (the default) or goes out without certificates.
    pub fn with_certs_required(mut self, required: bool) -> Self {
        self.certs_required = required;
        self
    }
}

impl Default for SevGuest {
    fn default() -> Self {
        Self::new()
    }
}

impl Provider for SevGuest {
    fn describe(&self) -> String {
        format!(
            "snp via {SEV_GUEST_DEVICE} (extended report, VMPL {})",
            self.vmpl
        )
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let bad = |message: String| ProviderError::Bad {
            provider: self.describe(),
            message,
        };
        if self.vmpl > MAX_VMPL {
            return Err(bad(format!(
                "VMPL {} is out of range: an SNP guest has VMPLs 0 to {MAX_VMPL}",
                self.vmpl
            )));
        }
        let ext = self
            .device
            .ext_report(report_data, self.vmpl)
            .map_err(|e| bad(e.to_string()))?;
        if ext.report.is_empty() {
            return Err(bad("SNP_GET_EXT_REPORT returned an empty report".into()));
        }
        let certs = certtable::evidence_certs(&ext.certs, self.certs_required)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Evidence {
            tee: TeeKind::Snp,
            evidence: ext.report,
            certs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sev_crate_certificate_types_map_to_their_kinds() {
        assert_eq!(cert_kind(&CertType::VCEK), CertKind::Vcek);
        assert_eq!(cert_kind(&CertType::VLEK), CertKind::Vlek);
        assert_eq!(cert_kind(&CertType::ASK), CertKind::Ask);
        assert_eq!(cert_kind(&CertType::ARK), CertKind::Ark);
        // The CRL's GUID, 92f81bc3-5811-4d3d-97ff-d19f88dc67ea, is kept as it is.
        let CertKind::Other(g) = cert_kind(&CertType::CRL) else {
            panic!("CRL is not a certificate the agent sends");
        };
        assert_eq!(hex::encode(g), "92f81bc358114d3d97ffd19f88dc67ea");
    }
}
