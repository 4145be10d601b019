//! An SNP attestation report in the JSON shape guest-components' SNP attester sends: the `sev` crate's
//! (6.x) serde form of its parsed `AttestationReport` (byte fields as arrays of numbers, TCB versions as
//! `{fmc, bootloader, tee, snp, microcode}`, versions as `{major, minor, build}`, the signature as `{r, s}`),
//! plus the optional certificate table `[{cert_type, data}]`.
//!
//! The service rebuilds the 1184 bytes of the report from it, following the layout of AMD's SEV-SNP ABI
//! specification (Table "ATTESTATION_REPORT Structure"); reserved fields, which the JSON does not carry, are
//! zero as the firmware writes them, so a genuine report rebuilds to the bytes it signed and anything else
//! fails the signature check. The TCB layout follows `fmc`: present (Turin) or `null` (Milan, Genoa), as the
//! `sev` crate chose it when it parsed the report. The agent does the reverse ([`to_json`]).

use crate::snp::report::{AttestationReport, Product, ReportError, TcbLayout, TcbVersion};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Length of a report.
pub const REPORT_LEN: usize = 1184;

/// A `TcbVersion` as the `sev` crate serializes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbJson {
    /// FMC SPL: `Some` on Turin, `None` (`null`) on Milan and Genoa.
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbJson {
    fn to_bytes(self) -> [u8; 8] {
        match self.fmc {
            Some(fmc) => [
                fmc,
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
            None => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
        }
    }

    fn from_tcb(tcb: TcbVersion, layout: TcbLayout) -> Self {
        let p = tcb.parts(layout);
        TcbJson {
            fmc: p.fmc,
            bootloader: p.bootloader,
            tee: p.tee,
            snp: p.snp,
            microcode: p.microcode,
        }
    }
}

/// A firmware version as the `sev` crate serializes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionJson {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

/// The signature as the `sev` crate serializes it (`r`, `s`: 72 bytes each, little-endian).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureJson {
    /// R.
    pub r: Vec<u8>,
    /// S.
    pub s: Vec<u8>,
}

/// The report as the `sev` crate (6.x) serializes its `AttestationReport`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // The members are the report's fields of the same names (SNP ABI specification).
pub struct ReportJson {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub family_id: Vec<u8>,
    pub image_id: Vec<u8>,
    pub vmpl: u32,
    pub sig_algo: u32,
    pub current_tcb: TcbJson,
    pub plat_info: u64,
    pub key_info: u32,
    pub report_data: Vec<u8>,
    pub measurement: Vec<u8>,
    pub host_data: Vec<u8>,
    pub id_key_digest: Vec<u8>,
    pub author_key_digest: Vec<u8>,
    pub report_id: Vec<u8>,
    pub report_id_ma: Vec<u8>,
    pub reported_tcb: TcbJson,
    pub cpuid_fam_id: Option<u8>,
    pub cpuid_mod_id: Option<u8>,
    pub cpuid_step: Option<u8>,
    pub chip_id: Vec<u8>,
    pub committed_tcb: TcbJson,
    pub current: VersionJson,
    pub committed: VersionJson,
    pub launch_tcb: TcbJson,
    pub launch_mit_vector: Option<u64>,
    pub current_mit_vector: Option<u64>,
    pub signature: SignatureJson,
}

/// A certificate table entry's type as the `sev` crate serializes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum CertType {
    /// The table's closing entry.
    Empty,
    /// AMD root key.
    ARK,
    /// AMD SEV key (or ASVK).
    ASK,
    /// The chip's VCEK.
    VCEK,
    /// A VLEK.
    VLEK,
    /// A CRL.
    CRL,
    /// Another GUID.
    OTHER(String),
}

/// A certificate table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertEntry {
    /// The entry's type.
    pub cert_type: CertType,
    /// The DER bytes.
    pub data: Vec<u8>,
}

/// guest-components' `SnpEvidence`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The report.
    pub attestation_report: ReportJson,
    /// The extended report's certificate table, if the guest had one.
    pub cert_chain: Option<Vec<CertEntry>>,
}

/// Why the JSON does not describe a report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnpJsonError {
    /// A byte field has the wrong length.
    #[error("attestation_report.{field} has {got} bytes; the report's field has {want}")]
    Length {
        /// The field.
        field: &'static str,
        /// Its length.
        got: usize,
        /// The report's.
        want: usize,
    },
    /// Optional fields do not match the report's version.
    #[error("attestation_report: {0}")]
    Version(String),
    /// The raw report does not parse (agent side).
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Writes fields at their offsets.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(dst) = self.out.get_mut(offset..offset + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    fn field(
        &mut self,
        offset: usize,
        name: &'static str,
        bytes: &[u8],
        want: usize,
    ) -> Result<(), SnpJsonError> {
        if bytes.len() != want {
            return Err(SnpJsonError::Length {
                field: name,
                got: bytes.len(),
                want,
            });
        }
        self.put(offset, bytes);
        Ok(())
    }
}

impl ReportJson {
    /// The report's bytes (see the module doc).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnpJsonError> {
        let v3 = self.version >= 3;
        let v5 = self.version >= 5;
        let cpuid = [self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step];
        if cpuid.iter().any(Option::is_some) != v3 || cpuid.iter().any(Option::is_none) == v3 {
            return Err(SnpJsonError::Version(format!(
                "the cpuid fields are present exactly from version 3 on (version {})",
                self.version
            )));
        }
        let mit = [self.launch_mit_vector, self.current_mit_vector];
        if mit.iter().any(Option::is_some) != v5 || mit.iter().any(Option::is_none) == v5 {
            return Err(SnpJsonError::Version(format!(
                "the mitigation vectors are present exactly from version 5 on (version {})",
                self.version
            )));
        }
        let mut w = Writer {
            out: vec![0u8; REPORT_LEN],
        };
        w.put(0x00, &self.version.to_le_bytes());
        w.put(0x04, &self.guest_svn.to_le_bytes());
        w.put(0x08, &self.policy.to_le_bytes());
        w.field(0x10, "family_id", &self.family_id, 16)?;
        w.field(0x20, "image_id", &self.image_id, 16)?;
        w.put(0x30, &self.vmpl.to_le_bytes());
        w.put(0x34, &self.sig_algo.to_le_bytes());
        w.put(0x38, &self.current_tcb.to_bytes());
        w.put(0x40, &self.plat_info.to_le_bytes());
        w.put(0x48, &self.key_info.to_le_bytes());
        w.field(0x50, "report_data", &self.report_data, 64)?;
        w.field(0x90, "measurement", &self.measurement, 48)?;
        w.field(0xC0, "host_data", &self.host_data, 32)?;
        w.field(0xE0, "id_key_digest", &self.id_key_digest, 48)?;
        w.field(0x110, "author_key_digest", &self.author_key_digest, 48)?;
        w.field(0x140, "report_id", &self.report_id, 32)?;
        w.field(0x160, "report_id_ma", &self.report_id_ma, 32)?;
        w.put(0x180, &self.reported_tcb.to_bytes());
        w.put(0x188, &cpuid.map(|c| c.unwrap_or(0)));
        w.field(0x1A0, "chip_id", &self.chip_id, 64)?;
        w.put(0x1E0, &self.committed_tcb.to_bytes());
        w.put(
            0x1E8,
            &[self.current.build, self.current.minor, self.current.major],
        );
        w.put(
            0x1EC,
            &[
                self.committed.build,
                self.committed.minor,
                self.committed.major,
            ],
        );
        w.put(0x1F0, &self.launch_tcb.to_bytes());
        w.put(0x1F8, &self.launch_mit_vector.unwrap_or(0).to_le_bytes());
        w.put(0x200, &self.current_mit_vector.unwrap_or(0).to_le_bytes());
        w.field(0x2A0, "signature.r", &self.signature.r, 72)?;
        w.field(0x2E8, "signature.s", &self.signature.s, 72)?;
        Ok(w.out)
    }
}

/// The TCB layout the `sev` crate (6.x) picks for a report: from the CPUID fields (version 3+), else
/// Turin when CHIP_ID looks like Turin's (8 bytes, then zeros).
fn layout(r: &AttestationReport<'_>) -> TcbLayout {
    match r.cpuid {
        Some(_) => r
            .cpuid_product()
            .map_or(TcbLayout::MilanGenoa, Product::tcb_layout),
        None => {
            let (head, tail) = r.chip_id.split_at(8);
            if tail.iter().all(|b| *b == 0) && head.iter().any(|b| *b != 0) {
                TcbLayout::Turin
            } else {
                TcbLayout::MilanGenoa
            }
        }
    }
}

/// The guest side's evidence JSON for a raw report and its certificates (the first is the VCEK, or the
/// VLEK when the report says so; the rest are intermediates; `None` sends no table).
pub fn to_json(raw: &[u8], certs: Option<&[Vec<u8>]>) -> Result<Value, SnpJsonError> {
    let r = AttestationReport::parse(raw)?;
    let l = layout(&r);
    let tcb = |t| TcbJson::from_tcb(t, l);
    let ver = |v: crate::snp::report::FirmwareVersion| VersionJson {
        major: v.major,
        minor: v.minor,
        build: v.build,
    };
    let report = ReportJson {
        version: r.version.0,
        guest_svn: r.guest_svn,
        policy: r.policy.0,
        family_id: r.family_id.to_vec(),
        image_id: r.image_id.to_vec(),
        vmpl: r.vmpl,
        sig_algo: r.signature_algo.0,
        current_tcb: tcb(r.current_tcb),
        plat_info: r.platform_info.0,
        key_info: r.flags.0,
        report_data: r.report_data.to_vec(),
        measurement: r.measurement.to_vec(),
        host_data: r.host_data.to_vec(),
        id_key_digest: r.id_key_digest.to_vec(),
        author_key_digest: r.author_key_digest.to_vec(),
        report_id: r.report_id.to_vec(),
        report_id_ma: r.report_id_ma.to_vec(),
        reported_tcb: tcb(r.reported_tcb),
        cpuid_fam_id: r.cpuid.map(|c| c.family),
        cpuid_mod_id: r.cpuid.map(|c| c.model),
        cpuid_step: r.cpuid.map(|c| c.stepping),
        chip_id: r.chip_id.to_vec(),
        committed_tcb: tcb(r.committed_tcb),
        current: ver(r.current_version),
        committed: ver(r.committed_version),
        launch_tcb: tcb(r.launch_tcb),
        launch_mit_vector: r.launch_mit_vector,
        current_mit_vector: r.current_mit_vector,
        signature: SignatureJson {
            r: r.signature.r.to_vec(),
            s: r.signature.s.to_vec(),
        },
    };
    let leaf_type = if r.signing_key() == crate::snp::report::SigningKey::VLEK {
        CertType::VLEK
    } else {
        CertType::VCEK
    };
    let cert_chain = certs.map(|certs| {
        certs
            .iter()
            .enumerate()
            .map(|(i, der)| CertEntry {
                cert_type: if i == 0 {
                    leaf_type.clone()
                } else {
                    CertType::ASK
                },
                data: der.clone(),
            })
            .collect()
    });
    serde_json::to_value(SnpEvidence {
        attestation_report: report,
        cert_chain,
    })
    .map_err(|e| SnpJsonError::Version(e.to_string()))
}

/// The report bytes and the certificates (VCEK/VLEK first, then ASK/ASVK, then ARK; CRLs and other
/// entries are not used) of guest-components' SNP evidence.
pub fn from_json(evidence: &Value) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let ev: SnpEvidence = serde_json::from_value(evidence.clone())
        .map_err(|e| crate::excerpt::truncate(format!("SNP evidence: {e}")))?;
    let raw = ev
        .attestation_report
        .to_bytes()
        .map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    for wanted in [
        [CertType::VCEK, CertType::VLEK],
        [CertType::ASK, CertType::ASK],
        [CertType::ARK, CertType::ARK],
    ] {
        for e in ev.cert_chain.iter().flatten() {
            if wanted.contains(&e.cert_type) && certs.len() < crate::protocol::MAX_CERTS {
                certs.push(e.data.clone());
            }
        }
    }
    Ok((raw, certs))
}
