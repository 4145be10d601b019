//! SEV-SNP through `/dev/sev-guest` (the `sev` crate's guest API: an extended report with the host's
//! certificates), for kernels without configfs-tsm. The ioctls live in the `sev` crate; this crate has no
//! `unsafe`. Not testable without SNP hardware: covered by type-checking only.

use crate::provider::{Provider, ProviderError, SEV_GUEST_DEVICE};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use sev::firmware::guest::Firmware;
use sev::firmware::host::CertType;

/// The `/dev/sev-guest` provider (VMPL 0 unless set).
#[derive(Clone, Copy, Debug, Default)]
pub struct SevGuest {
    /// The VMPL to request.
    pub vmpl: u32,
}

impl Provider for SevGuest {
    fn describe(&self) -> String {
        format!("snp via {SEV_GUEST_DEVICE} (extended report)")
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let mut fw = Firmware::open().map_err(|source| ProviderError::Io {
            provider: self.describe(),
            what: format!("open {SEV_GUEST_DEVICE} (are we root in an SNP guest?)"),
            source,
        })?;
        let (report, table) = fw
            .get_ext_report(None, Some(*report_data), Some(self.vmpl))
            .map_err(|e| ProviderError::Bad {
                provider: self.describe(),
                message: format!("SNP_GET_EXT_REPORT: {e}"),
            })?;
        let table = table.unwrap_or_default();
        let find = |t: CertType| {
            table
                .iter()
                .find(|e| e.cert_type == t)
                .map(|e| e.data.clone())
        };
        // VCEK (or VLEK) first, then ASK and ARK; nothing when the host supplied no leaf.
        let certs = match find(CertType::VCEK).or_else(|| find(CertType::VLEK)) {
            Some(leaf) => std::iter::once(leaf)
                .chain(find(CertType::ASK))
                .chain(find(CertType::ARK))
                .collect(),
            None => Vec::new(),
        };
        Ok(Evidence {
            tee: TeeKind::Snp,
            evidence: report,
            certs,
        })
    }
}
