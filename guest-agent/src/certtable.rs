//! The SNP extended-report certificate table, as the host hands it to the guest (GHCB specification,
//! section 4.1.8.1 "SNP Extended Guest Request"): entries of a GUID (16 bytes), an offset (u32 LE) and a
//! length (u32 LE), ended by an all-zero entry; offsets count from the table's start. configfs-tsm passes it
//! raw as `auxblob`; `/dev/sev-guest` hands it over in the ioctl's certificate buffer. Both are read by
//! [`parse`] and end in [`evidence_certs`], which picks the report's signing key's certificate and puts the
//! certificates in the order the service expects.
//!
//! The bytes come from the untrusted host: [`parse`] is total and bounded (fuzz target `snp_cert_table`).

/// Most entries read from one table (the GHCB names five kinds; the rest would only cost memory).
pub const MAX_ENTRIES: usize = 32;
/// Bytes of one table entry.
const ENTRY_LEN: usize = 24;

/// The kind of a certificate in the table, from its GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// The chip's VCEK (63da758d-e664-4564-adc5-f4b93be8accd).
    Vcek,
    /// A VLEK (a8074bc2-a25a-483e-aae6-39c045a0b8a1).
    Vlek,
    /// The ASK (4ab7b379-bbac-4fe4-a02f-05aef327c782).
    Ask,
    /// The ARK (c0b406a4-a803-4952-9743-3fb6014cd0ae).
    Ark,
    /// Any other GUID (as written in the table), e.g. a CRL.
    Other([u8; 16]),
}

/// The GUIDs in their canonical (big-endian text) byte order.
const GUIDS: [(CertKind, [u8; 16]); 4] = [
    (
        CertKind::Vcek,
        [
            0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
            0xac, 0xcd,
        ],
    ),
    (
        CertKind::Vlek,
        [
            0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0,
            0xb8, 0xa1,
        ],
    ),
    (
        CertKind::Ask,
        [
            0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27,
            0xc7, 0x82,
        ],
    ),
    (
        CertKind::Ark,
        [
            0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c,
            0xd0, 0xae,
        ],
    ),
];

/// A GUID in the mixed-endian layout of an EFI GUID structure (first three fields little-endian).
fn guid_mixed_endian(g: &[u8; 16]) -> [u8; 16] {
    let mut o = *g;
    o[0..4].reverse();
    o[4..6].reverse();
    o[6..8].reverse();
    o
}

impl CertKind {
    /// The kind of `guid`; hosts write either byte layout, so both are recognized.
    pub fn of_guid(guid: [u8; 16]) -> Self {
        GUIDS
            .iter()
            .find(|(_, g)| *g == guid || guid_mixed_endian(g) == guid)
            .map_or(CertKind::Other(guid), |(k, _)| *k)
    }

    /// The canonical GUID bytes.
    pub fn guid(self) -> [u8; 16] {
        match self {
            CertKind::Other(g) => g,
            known => GUIDS
                .iter()
                .find(|(k, _)| *k == known)
                .map_or([0; 16], |(_, g)| *g),
        }
    }
}

impl std::fmt::Display for CertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertKind::Vcek => f.write_str("VCEK"),
            CertKind::Vlek => f.write_str("VLEK"),
            CertKind::Ask => f.write_str("ASK"),
            CertKind::Ark => f.write_str("ARK"),
            CertKind::Other(g) => write!(f, "GUID {}", hex::encode(g)),
        }
    }
}

/// One certificate the host supplied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCert {
    /// What it is.
    pub kind: CertKind,
    /// Its bytes (DER for the AMD certificates).
    pub der: Vec<u8>,
}

/// Why a certificate table is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertTableError {
    /// The table ends before its all-zero terminating entry.
    #[error("certificate table of {len} bytes has no terminating all-zero entry")]
    Unterminated {
        /// The table's length.
        len: usize,
    },
    /// An entry points outside the table.
    #[error(
        "certificate table entry {index} ({kind}) points at bytes {offset}..{offset}+{length}, past the \
         table's {len} bytes"
    )]
    OutOfBounds {
        /// The entry's position.
        index: usize,
        /// Its kind.
        kind: CertKind,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
        /// The table's length.
        len: usize,
    },
    /// More entries than [`MAX_ENTRIES`].
    #[error("certificate table has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
}

/// Parses a raw certificate table. An empty input is an empty table (the host supplied none).
pub fn parse(table: &[u8]) -> Result<Vec<HostCert>, CertTableError> {
    let mut out = Vec::new();
    for (index, entry) in table.chunks_exact(ENTRY_LEN).enumerate() {
        let (guid, rest) = entry.split_at(16);
        let (offset, length) = rest.split_at(4);
        let word = |b: &[u8]| b.try_into().map_or(0, u32::from_le_bytes);
        let (offset, length) = (word(offset), word(length));
        let guid: [u8; 16] = guid.try_into().unwrap_or([0; 16]);
        if guid == [0; 16] && offset == 0 && length == 0 {
            return Ok(out);
        }
        if index == MAX_ENTRIES {
            return Err(CertTableError::TooManyEntries);
        }
        let kind = CertKind::of_guid(guid);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let der = start
            .checked_add(usize::try_from(length).unwrap_or(usize::MAX))
            .and_then(|end| table.get(start..end))
            .ok_or(CertTableError::OutOfBounds {
                index,
                kind,
                offset,
                length,
                len: table.len(),
            })?;
        out.push(HostCert {
            kind,
            der: der.to_vec(),
        });
    }
    if table.is_empty() {
        Ok(out)
    } else {
        Err(CertTableError::Unterminated { len: table.len() })
    }
}

/// Encodes a table (canonical GUID layout; the certificates follow the terminator in order). For fakes of
/// the kernel interfaces and tests.
pub fn encode(certs: &[HostCert]) -> Vec<u8> {
    let header = (certs.len() + 1) * ENTRY_LEN;
    let mut table = Vec::new();
    let mut at = header;
    for c in certs {
        table.extend_from_slice(&c.kind.guid());
        table.extend_from_slice(&u32::try_from(at).unwrap_or(u32::MAX).to_le_bytes());
        table.extend_from_slice(&u32::try_from(c.der.len()).unwrap_or(u32::MAX).to_le_bytes());
        at += c.der.len();
    }
    table.extend_from_slice(&[0; ENTRY_LEN]);
    for c in certs {
        table.extend_from_slice(&c.der);
    }
    table
}

/// The key an SNP report names in its SIGNING_KEY field (bits 4:2 of the flags at 0x48).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportSigner {
    /// A VCEK or a VLEK: the kind of certificate that verifies the report.
    Leaf(CertKind),
    /// Neither (an unsigned report, a reserved value, or bytes that are not a report), and why.
    Neither(String),
}

/// Which certificate verifies `report`, from its SIGNING_KEY (SNP Firmware ABI, ATTESTATION_REPORT).
pub fn report_signer(report: &[u8]) -> ReportSigner {
    use cvm_attest::snp::report::SigningKey;
    match cvm_attest::snp::AttestationReport::parse(report) {
        Ok(r) => match r.signing_key() {
            SigningKey::VCEK => ReportSigner::Leaf(CertKind::Vcek),
            SigningKey::VLEK => ReportSigner::Leaf(CertKind::Vlek),
            other => ReportSigner::Neither(format!("the report's SIGNING_KEY is {other:?}")),
        },
        Err(e) => ReportSigner::Neither(format!("the report does not parse ({e})")),
    }
}

/// The report's signing key is not in the host's table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the host supplied no {wanted} with the extended report (certificate table: {found}): install the \
     platform's {wanted} on the host (e.g. `snphost import`), or pass --omit-certs when the service holds this \
     platform's certificates"
)]
pub struct MissingLeaf {
    /// What was needed: `VCEK`, `VLEK`, or why neither could be chosen.
    pub wanted: String,
    /// What the table held, for the message.
    pub found: String,
}

/// The certificates to send with an SNP report: the certificate of the key the report names in SIGNING_KEY
/// (VCEK or VLEK) first, then the ASK (for a VLEK, the host's intermediate in that slot) and the ARK when
/// present. Without that certificate: an error when `required`, else nothing (the service uses the chain
/// it holds).
pub fn evidence_certs(
    certs: &[HostCert],
    signer: &ReportSigner,
    required: bool,
) -> Result<Vec<Vec<u8>>, MissingLeaf> {
    let find = |k: CertKind| certs.iter().find(|c| c.kind == k).map(|c| c.der.clone());
    let leaf = match signer {
        ReportSigner::Leaf(kind) => find(*kind),
        ReportSigner::Neither(_) => None,
    };
    let Some(leaf) = leaf else {
        if !required {
            return Ok(Vec::new());
        }
        let kinds: Vec<String> = certs.iter().map(|c| c.kind.to_string()).collect();
        return Err(MissingLeaf {
            wanted: match signer {
                ReportSigner::Leaf(kind) => kind.to_string(),
                ReportSigner::Neither(why) => format!("VCEK or VLEK ({why})"),
            },
            found: if kinds.is_empty() {
                "empty".into()
            } else {
                kinds.join(", ")
            },
        });
    };
    let mut out = vec![leaf];
    out.extend(find(CertKind::Ask));
    out.extend(find(CertKind::Ark));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert(kind: CertKind, der: &[u8]) -> HostCert {
        HostCert {
            kind,
            der: der.to_vec(),
        }
    }

    #[test]
    fn round_trips_and_reads_both_guid_layouts() {
        let certs = vec![
            cert(CertKind::Ark, b"ark."),
            cert(CertKind::Vcek, b"vcek"),
            cert(CertKind::Ask, b"ask."),
        ];
        let t = encode(&certs);
        assert_eq!(parse(&t).unwrap(), certs);
        let mut mixed = t.clone();
        mixed[24..40].copy_from_slice(&guid_mixed_endian(&CertKind::Vcek.guid()));
        assert_eq!(parse(&mixed).unwrap()[1].kind, CertKind::Vcek);
        // The VCEK goes first whatever the table order.
        assert_eq!(
            evidence_certs(&certs, &VCEK, true).unwrap(),
            vec![b"vcek".to_vec(), b"ask.".to_vec(), b"ark.".to_vec()]
        );
        assert!(parse(&[]).unwrap().is_empty());
        assert!(parse(&[0; 24]).unwrap().is_empty());
        // Trailing page padding after the certificates is fine.
        let mut padded = t;
        padded.resize(4096, 0);
        assert_eq!(parse(&padded).unwrap(), certs);
    }

    #[test]
    fn rejects_truncated_and_out_of_bounds_tables() {
        let t = encode(&[cert(CertKind::Vcek, b"vcek-der")]);
        for len in 1..t.len() {
            assert!(parse(&t[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut bad = t.clone();
        bad[16] = 0xff;
        let e = parse(&bad).unwrap_err();
        assert!(matches!(
            e,
            CertTableError::OutOfBounds {
                index: 0,
                kind: CertKind::Vcek,
                ..
            }
        ));
        assert!(e.to_string().contains("VCEK"), "{e}");
        let mut many = Vec::new();
        for _ in 0..=MAX_ENTRIES {
            many.extend_from_slice(&[1; 16]);
            many.extend_from_slice(&[0; 8]);
        }
        many.extend_from_slice(&[0; 24]);
        assert_eq!(parse(&many), Err(CertTableError::TooManyEntries));
    }

    const VCEK: ReportSigner = ReportSigner::Leaf(CertKind::Vcek);
    const VLEK: ReportSigner = ReportSigner::Leaf(CertKind::Vlek);

    #[test]
    fn a_missing_leaf_is_an_error_only_when_required() {
        let certs = [cert(CertKind::Ask, b"a"), cert(CertKind::Ark, b"r")];
        let e = evidence_certs(&certs, &VCEK, true).unwrap_err().to_string();
        assert!(
            e.contains("no VCEK") && e.contains("ASK, ARK") && e.contains("--omit-certs"),
            "{e}"
        );
        assert!(
            evidence_certs(&[], &VCEK, true)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(evidence_certs(&certs, &VCEK, false).unwrap().is_empty());
        let vlek = [cert(CertKind::Vlek, b"v"), cert(CertKind::Ask, b"a")];
        assert_eq!(
            evidence_certs(&vlek, &VLEK, true).unwrap(),
            vec![b"v".to_vec(), b"a".to_vec()]
        );
        // A report that names neither key gets no leaf, and says why.
        let neither = ReportSigner::Neither("the report's SIGNING_KEY is SigningKey(0x7)".into());
        let e = evidence_certs(&vlek, &neither, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("VCEK or VLEK (the report's SIGNING_KEY"), "{e}");
    }

    #[test]
    fn the_reports_signing_key_chooses_between_a_vcek_and_a_vlek() {
        // Hosts with a VLEK may keep the VCEK in the table too: the report's SIGNING_KEY decides.
        let both = [
            cert(CertKind::Vcek, b"vcek"),
            cert(CertKind::Vlek, b"vlek"),
            cert(CertKind::Ask, b"asvk"),
            cert(CertKind::Ark, b"ark"),
        ];
        assert_eq!(
            evidence_certs(&both, &VLEK, true).unwrap(),
            vec![b"vlek".to_vec(), b"asvk".to_vec(), b"ark".to_vec()]
        );
        assert_eq!(evidence_certs(&both, &VCEK, true).unwrap()[0], b"vcek");
        // A VLEK-signed report with only a VCEK from the host: the VCEK would not verify it.
        let e = evidence_certs(&both[..1], &VLEK, true).unwrap_err();
        assert_eq!(e.wanted, "VLEK");
    }

    #[test]
    fn the_signing_key_is_read_from_the_reports_flags() {
        // Version 2 report, SIGNATURE_ALGO 1; flags at 0x48.
        let mut r = vec![0u8; cvm_attest::snp::report::REPORT_LEN];
        r[0] = 2;
        r[0x34] = 1;
        assert_eq!(report_signer(&r), VCEK);
        r[0x48] = 1 << 2;
        assert_eq!(report_signer(&r), VLEK);
        r[0x48] = 7 << 2;
        assert!(matches!(report_signer(&r), ReportSigner::Neither(w) if w.contains("SIGNING_KEY")));
        assert!(
            matches!(report_signer(&r[..100]), ReportSigner::Neither(w) if w.contains("does not parse"))
        );
    }
}
