//! Total parsers for Intel TDX DCAP quotes, versions 4 and 5 (Intel TDX DCAP Quote Generation Library and
//! Quote Format spec: §A.3 "Version 4 Quote Format", §A.4 "Version 5 Quote Format"; the ECDSA quote signature
//! data, certification data types 5 and 6, the QE report (an SGX REPORT body) and the QE authentication data).
//!
//! Every structure is a zero-copy view over the quote bytes, read with the shared bounded
//! [`Reader`](crate::cursor::Reader): a short or inconsistent input is `MALFORMED`, never a panic. Bytes after
//! the declared signature data are accepted only when they are all zero (quote buffers are often padded).

use crate::cursor::Reader;
use crate::reason::{Reason, Rejection};

/// Size of the quote header (all versions).
pub const HEADER_LEN: usize = 48;
/// Size of a TDX 1.0 TD report body (v4 quotes, v5 body type 2).
pub const TD10_BODY_LEN: usize = 584;
/// Size of a TDX 1.5 TD report body (v5 body type 3).
pub const TD15_BODY_LEN: usize = 648;
/// Size of an SGX REPORT body (the QE report).
pub const QE_REPORT_LEN: usize = 384;
/// TEE type of TDX in the quote header.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type 2: ECDSA P-256 with SHA-256.
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// Certification data type 5: the PCK certificate chain, PEM.
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Certification data type 6: QE report certification data (wraps type 5).
pub const CERT_DATA_QE_REPORT: u16 = 6;
/// v5 body type 2: TDX 1.0 TD report.
pub const BODY_TYPE_TD10: u16 = 2;
/// v5 body type 3: TDX 1.5 TD report.
pub const BODY_TYPE_TD15: u16 = 3;

/// Upper bound for the PCK chain PEM: a real chain is under 4 KiB; this bounds what later steps hash and parse.
pub const MAX_PCK_CHAIN_LEN: usize = 64 * 1024;

/// The 48-byte quote header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Quote version (4 or 5).
    pub version: u16,
    /// Attestation key type (2 = ECDSA P-256).
    pub att_key_type: u16,
    /// TEE type (0x81 = TDX).
    pub tee_type: u32,
    /// QE SVN (reserved in v4).
    pub qe_svn: u16,
    /// PCE SVN (reserved in v4).
    pub pce_svn: u16,
    /// QE vendor ID (Intel: 939a7233f79c4ca9940a0db3957f0607).
    pub qe_vendor_id: &'a [u8; 16],
    /// User data (the first 16 bytes are the platform's QE identifier).
    pub user_data: &'a [u8; 20],
}

/// The TD report in the quote body (TDX 1.0 fields, plus the TDX 1.5 ones when present).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdReport<'a> {
    /// TEE_TCB_SVN: [0] TDX module SVN, [1] TDX module major version, [2..] platform components.
    pub tee_tcb_svn: &'a [u8; 16],
    /// Measurement of the TDX module.
    pub mrseam: &'a [u8; 48],
    /// Signer of the TDX module (zero for Intel's).
    pub mrsignerseam: &'a [u8; 48],
    /// SEAM attributes.
    pub seam_attributes: &'a [u8; 8],
    /// TD attributes (bit 0: DEBUG).
    pub td_attributes: &'a [u8; 8],
    /// XFAM.
    pub xfam: &'a [u8; 8],
    /// Build-time measurement of the TD.
    pub mrtd: &'a [u8; 48],
    /// Software-defined configuration ID.
    pub mrconfigid: &'a [u8; 48],
    /// Software-defined owner ID.
    pub mrowner: &'a [u8; 48],
    /// Software-defined owner configuration.
    pub mrownerconfig: &'a [u8; 48],
    /// Run-time measurement registers 0..3.
    pub rtmr: [&'a [u8; 48]; 4],
    /// REPORTDATA chosen by the TD.
    pub report_data: &'a [u8; 64],
    /// TDX 1.5 only: TEE_TCB_SVN2.
    pub tee_tcb_svn2: Option<&'a [u8; 16]>,
    /// TDX 1.5 only: MRSERVICETD.
    pub mrservicetd: Option<&'a [u8; 48]>,
}

impl TdReport<'_> {
    /// TD_ATTRIBUTES.DEBUG (bit 0): the TD's memory and state are readable by the host.
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 == 1
    }
}

/// The QE report: an SGX REPORT body (384 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QeReport<'a> {
    /// All 384 bytes (what the PCK key signs).
    pub raw: &'a [u8; QE_REPORT_LEN],
    /// CPUSVN.
    pub cpusvn: &'a [u8; 16],
    /// MISCSELECT (little-endian u32).
    pub miscselect: u32,
    /// ATTRIBUTES.
    pub attributes: &'a [u8; 16],
    /// MRENCLAVE.
    pub mrenclave: &'a [u8; 32],
    /// MRSIGNER.
    pub mrsigner: &'a [u8; 32],
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
    /// REPORTDATA: SHA-256(attestation key ‖ QE auth data) ‖ 0³².
    pub report_data: &'a [u8; 64],
}

/// The ECDSA quote signature data with its certification data (type 6 wrapping type 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureData<'a> {
    /// ECDSA P-256 signature `r ‖ s` over the signed quote bytes.
    pub signature: &'a [u8; 64],
    /// The attestation key, `x ‖ y` (uncompressed point without the 0x04 prefix).
    pub attestation_key: &'a [u8; 64],
    /// The QE report.
    pub qe_report: QeReport<'a>,
    /// ECDSA P-256 signature `r ‖ s` of the QE report by the PCK key.
    pub qe_report_signature: &'a [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: &'a [u8],
    /// The PCK certificate chain, PEM (trailing NUL bytes removed).
    pub pck_chain_pem: &'a [u8],
}

/// A parsed TDX quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote<'a> {
    /// The header.
    pub header: Header<'a>,
    /// v5 body type (2 or 3); `None` for v4.
    pub body_type: Option<u16>,
    /// The TD report.
    pub td_report: TdReport<'a>,
    /// The bytes the attestation key signs: header ‖ body (v4), header ‖ body type ‖ body size ‖ body (v5).
    pub signed: &'a [u8],
    /// The signature data.
    pub signature_data: SignatureData<'a>,
}

fn malformed(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::Malformed, message)
}

fn arr<'a, const N: usize>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<&'a [u8; N], Rejection> {
    let bytes = r.take(N, what)?;
    bytes
        .try_into()
        .map_err(|_| malformed(format!("{what}: wrong length")))
}

impl<'a> Header<'a> {
    /// Read the 48-byte header and check version, attestation key type and TEE type, in that order.
    pub fn read(r: &mut Reader<'a>) -> Result<Self, Rejection> {
        let version = r.u16_le("header.version")?;
        let att_key_type = r.u16_le("header.att_key_type")?;
        let tee_type = r.u32_le("header.tee_type")?;
        let qe_svn = r.u16_le("header.qe_svn")?;
        let pce_svn = r.u16_le("header.pce_svn")?;
        let qe_vendor_id = arr::<16>(r, "header.qe_vendor_id")?;
        let user_data = arr::<20>(r, "header.user_data")?;
        if version != 4 && version != 5 {
            return Err(Rejection::new(
                Reason::UnsupportedVersion,
                format!("quote version {version} (supported: 4, 5)"),
            ));
        }
        if tee_type != TEE_TYPE_TDX {
            return Err(Rejection::new(
                Reason::UnsupportedTeeType,
                format!("quote TEE type {tee_type:#x} (TDX is 0x81)"),
            ));
        }
        if att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(Rejection::new(
                Reason::UnsupportedAttKeyType,
                format!("attestation key type {att_key_type} (supported: 2, ECDSA P-256)"),
            ));
        }
        Ok(Header {
            version,
            att_key_type,
            tee_type,
            qe_svn,
            pce_svn,
            qe_vendor_id,
            user_data,
        })
    }
}

impl<'a> TdReport<'a> {
    /// Read a TD report body of `len` bytes (584 for TDX 1.0, 648 for TDX 1.5) that `r` holds exactly.
    fn read(r: &mut Reader<'a>, tdx15: bool) -> Result<Self, Rejection> {
        let tee_tcb_svn = arr::<16>(r, "td_report.tee_tcb_svn")?;
        let mrseam = arr::<48>(r, "td_report.mrseam")?;
        let mrsignerseam = arr::<48>(r, "td_report.mrsignerseam")?;
        let seam_attributes = arr::<8>(r, "td_report.seam_attributes")?;
        let td_attributes = arr::<8>(r, "td_report.td_attributes")?;
        let xfam = arr::<8>(r, "td_report.xfam")?;
        let mrtd = arr::<48>(r, "td_report.mrtd")?;
        let mrconfigid = arr::<48>(r, "td_report.mrconfigid")?;
        let mrowner = arr::<48>(r, "td_report.mrowner")?;
        let mrownerconfig = arr::<48>(r, "td_report.mrownerconfig")?;
        let rtmr = [
            arr::<48>(r, "td_report.rtmr0")?,
            arr::<48>(r, "td_report.rtmr1")?,
            arr::<48>(r, "td_report.rtmr2")?,
            arr::<48>(r, "td_report.rtmr3")?,
        ];
        let report_data = arr::<64>(r, "td_report.report_data")?;
        let (tee_tcb_svn2, mrservicetd) = if tdx15 {
            (
                Some(arr::<16>(r, "td_report.tee_tcb_svn2")?),
                Some(arr::<48>(r, "td_report.mrservicetd")?),
            )
        } else {
            (None, None)
        };
        Ok(TdReport {
            tee_tcb_svn,
            mrseam,
            mrsignerseam,
            seam_attributes,
            td_attributes,
            xfam,
            mrtd,
            mrconfigid,
            mrowner,
            mrownerconfig,
            rtmr,
            report_data,
            tee_tcb_svn2,
            mrservicetd,
        })
    }
}

impl<'a> QeReport<'a> {
    /// Read the 384-byte SGX REPORT body (SGX SDM "REPORT structure", body only).
    pub fn read(r: &mut Reader<'a>) -> Result<Self, Rejection> {
        let raw = arr::<QE_REPORT_LEN>(&mut r.clone(), "qe_report")?;
        let cpusvn = arr::<16>(r, "qe_report.cpusvn")?;
        let miscselect = r.u32_le("qe_report.miscselect")?;
        r.skip(28, "qe_report.reserved1")?;
        let attributes = arr::<16>(r, "qe_report.attributes")?;
        let mrenclave = arr::<32>(r, "qe_report.mrenclave")?;
        r.skip(32, "qe_report.reserved2")?;
        let mrsigner = arr::<32>(r, "qe_report.mrsigner")?;
        r.skip(96, "qe_report.reserved3")?;
        let isvprodid = r.u16_le("qe_report.isvprodid")?;
        let isvsvn = r.u16_le("qe_report.isvsvn")?;
        r.skip(60, "qe_report.reserved4")?;
        let report_data = arr::<64>(r, "qe_report.report_data")?;
        Ok(QeReport {
            raw,
            cpusvn,
            miscselect,
            attributes,
            mrenclave,
            mrsigner,
            isvprodid,
            isvsvn,
            report_data,
        })
    }
}

/// Read a certification data header: type (u16) and a bounded reader over its `size` (u32) bytes.
fn cert_data<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<(u16, Reader<'a>), Rejection> {
    let kind = r.u16_le(what)?;
    let size = r.u32_le(what)?;
    let size = usize::try_from(size).map_err(|_| malformed(format!("{what}: size too large")))?;
    Ok((kind, r.sub(size, what)?))
}

fn expect_end(r: &Reader<'_>, what: &str) -> Result<(), Rejection> {
    if r.remaining() == 0 {
        Ok(())
    } else {
        Err(malformed(format!(
            "{} unexpected bytes at the end of {what}",
            r.remaining()
        )))
    }
}

impl<'a> SignatureData<'a> {
    /// Read the ECDSA 256-bit quote signature data that `r` holds exactly (spec §A.3.8, §A.3.9–A.3.11).
    pub fn read(r: &mut Reader<'a>) -> Result<Self, Rejection> {
        let signature = arr::<64>(r, "quote signature")?;
        let attestation_key = arr::<64>(r, "attestation key")?;
        let (outer_type, mut outer) = cert_data(r, "certification data")?;
        expect_end(r, "the quote signature data")?;
        if outer_type != CERT_DATA_QE_REPORT {
            return Err(malformed(format!(
                "certification data type {outer_type} (expected 6, QE report certification data)"
            )));
        }
        let qe_report = QeReport::read(&mut outer)?;
        let qe_report_signature = arr::<64>(&mut outer, "QE report signature")?;
        let auth_len = usize::from(outer.u16_le("QE auth data size")?);
        let qe_auth_data = outer.take(auth_len, "QE auth data")?;
        let (inner_type, mut inner) = cert_data(&mut outer, "nested certification data")?;
        expect_end(&outer, "the QE report certification data")?;
        if inner_type != CERT_DATA_PCK_CHAIN {
            return Err(malformed(format!(
                "nested certification data type {inner_type} (expected 5, PCK certificate chain)"
            )));
        }
        let mut pem = inner.rest();
        while let [rest @ .., 0] = pem {
            pem = rest;
        }
        if pem.is_empty() || pem.len() > MAX_PCK_CHAIN_LEN {
            return Err(malformed(format!(
                "PCK certificate chain of {} bytes (expected 1..={MAX_PCK_CHAIN_LEN})",
                pem.len()
            )));
        }
        Ok(SignatureData {
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem: pem,
        })
    }
}

impl<'a> Quote<'a> {
    /// Parse a whole quote. Bytes after the declared signature data must all be zero.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Rejection> {
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r)?;
        let (body_type, tdx15) = if header.version == 5 {
            let body_type = r.u16_le("v5 body type")?;
            let body_size = r.u32_le("v5 body size")?;
            let tdx15 = match (body_type, body_size) {
                (BODY_TYPE_TD10, 584) => false,
                (BODY_TYPE_TD15, 648) => true,
                (BODY_TYPE_TD10 | BODY_TYPE_TD15, size) => {
                    return Err(malformed(format!(
                        "v5 body type {body_type} with size {size} (TDX 1.0: 584, TDX 1.5: 648)"
                    )));
                }
                (other, _) => {
                    return Err(Rejection::new(
                        Reason::UnsupportedVersion,
                        format!(
                            "v5 quote body type {other} (supported: 2 = TDX 1.0, 3 = TDX 1.5; 1 is SGX)"
                        ),
                    ));
                }
            };
            (Some(body_type), tdx15)
        } else {
            (None, false)
        };
        let body_len = if tdx15 { TD15_BODY_LEN } else { TD10_BODY_LEN };
        let mut body = r.sub(body_len, "TD report")?;
        let td_report = TdReport::read(&mut body, tdx15)?;
        let signed_len = r.offset();
        let signed = bytes
            .get(..signed_len)
            .ok_or_else(|| malformed("signed bytes out of range"))?;
        let sig_len = r.u32_le("signature data length")?;
        let sig_len =
            usize::try_from(sig_len).map_err(|_| malformed("signature data length too large"))?;
        let mut sig = r.sub(sig_len, "signature data")?;
        let signature_data = SignatureData::read(&mut sig)?;
        let trailing = r.rest();
        if let Some(pos) = trailing.iter().position(|&b| b != 0) {
            return Err(malformed(format!(
                "non-zero byte after the declared signature data at offset {}",
                signed_len + 4 + sig_len + pos
            )));
        }
        Ok(Quote {
            header,
            body_type,
            td_report,
            signed,
            signature_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var_os("CVM_VECTORS")
            .map(std::path::PathBuf::from)
            .or_else(|| Some(crate_dir.join("../../shared/vectors")).filter(|d| d.exists()))
            .unwrap_or_else(|| crate_dir.join("../../../shared/vectors"));
        std::fs::read(dir.join("tdx").join(name)).unwrap()
    }

    #[test]
    fn parses_v4_and_v5_tdx15_quotes() {
        let q4 = vector("v4-dcapqvl-quote.bin");
        let q = Quote::parse(&q4).unwrap();
        assert_eq!(q.header.version, 4);
        assert_eq!(q.signed.len(), 48 + 584);
        assert_eq!(q.signature_data.qe_auth_data.len(), 32);
        assert!(
            q.signature_data
                .pck_chain_pem
                .ends_with(b"-----END CERTIFICATE-----\n")
        );
        let q5 = vector("v5-gotdx-quote.bin");
        let q = Quote::parse(&q5).unwrap();
        assert_eq!((q.header.version, q.body_type), (5, Some(3)));
        assert_eq!(q.signed.len(), 48 + 6 + 648);
        assert!(q.td_report.mrservicetd.is_some());
    }

    #[test]
    fn rejects_every_truncation_and_non_zero_padding() {
        let q4 = vector("v4-dcapqvl-quote.bin");
        let declared = 48 + 584 + 4 + 4300;
        for len in 0..declared {
            let err = Quote::parse(&q4[..len]).unwrap_err();
            assert_eq!(err.reason, Reason::Malformed, "length {len}");
        }
        let mut padded = q4.clone();
        *padded.last_mut().unwrap() = 1;
        assert_eq!(Quote::parse(&padded).unwrap_err().reason, Reason::Malformed);
    }

    #[test]
    fn classifies_versions_tee_and_key_types() {
        let mut q = vector("v4-dcapqvl-quote.bin");
        q[0] = 3;
        assert_eq!(
            Quote::parse(&q).unwrap_err().reason,
            Reason::UnsupportedVersion
        );
        let mut q = vector("v4-dcapqvl-quote.bin");
        q[4] = 0;
        assert_eq!(
            Quote::parse(&q).unwrap_err().reason,
            Reason::UnsupportedTeeType
        );
        let mut q = vector("v4-dcapqvl-quote.bin");
        q[2] = 3;
        assert_eq!(
            Quote::parse(&q).unwrap_err().reason,
            Reason::UnsupportedAttKeyType
        );
    }
}
