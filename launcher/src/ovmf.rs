//! The parts of an OVMF image that decide an SEV-SNP launch: the GUIDed footer table at the end of the
//! flash image and the SEV metadata it points to.
//!
//! Layout (EDK2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` and `X64/OvmfSevMetadata.asm`): the
//! footer table ends 32 bytes before the end of the image; it is a list of entries read backwards, each
//! `data ‖ u16 size ‖ GUID` where `size` covers all three; the last entry is the table's own header
//! (GUID [`FOOTER_TABLE_GUID`], `size` = the whole table). The SEV metadata entry holds a `u32` offset from
//! the end of the image to a header `"ASEV" ‖ u32 size ‖ u32 version (1) ‖ u32 count`, followed by
//! `count` section descriptors `u32 gpa ‖ u32 size ‖ u32 type`.
//!
//! Every read is bounds-checked: a short or inconsistent image is an error, never a panic.

use crate::guid::{GuidBytes, guid};

/// GUID of the footer table header entry (`96b582de-1fb2-45f7-baea-a366c55a082d`).
pub const FOOTER_TABLE_GUID: GuidBytes = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// GUID of the entry with the GPA of the kernel hashes table (`7255371f-3a3b-4b04-927b-1da6efa8d454`).
pub const SEV_HASH_TABLE_RV_GUID: GuidBytes = guid(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// GUID of the entry with the AP reset address for SEV-ES/SNP (`00f771de-1a7e-4fcb-890e-68c77e2fb44e`).
pub const SEV_ES_RESET_BLOCK_GUID: GuidBytes = guid(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// GUID of the entry pointing to the SEV metadata (`dc886566-984a-4798-a75e-5585a7bf67cc`).
pub const SEV_METADATA_GUID: GuidBytes = guid(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);

/// Bytes between the end of the footer table and the end of the image (the reset vector area).
const FOOTER_TAIL: usize = 32;
/// `u16 size ‖ GUID`.
const ENTRY_HEADER: usize = 18;
/// `"ASEV" ‖ size ‖ version ‖ count`.
const METADATA_HEADER: usize = 16;
/// `gpa ‖ size ‖ type`.
const SECTION_DESC: usize = 12;
/// A real OVMF declares about six sections; anything far beyond is a corrupt image.
const MAX_SECTIONS: u32 = 256;

/// Kind of an SEV metadata section (`OvmfSevMetadata.asm`, `OVMF_SECTION_TYPE_*`); unknown values are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SectionType(pub u32);

impl SectionType {
    /// Memory the SEC phase uses before it validates memory itself (pre-validated, zero).
    pub const SNP_SEC_MEM: Self = Self(1);
    /// The SNP secrets page (SNP ABI spec §8.17.2, page type SECRETS).
    pub const SNP_SECRETS: Self = Self(2);
    /// The CPUID page (page type CPUID).
    pub const CPUID: Self = Self(3);
    /// The SVSM calling area (pre-validated, zero).
    pub const SVSM_CAA: Self = Self(4);
    /// The page that receives QEMU's kernel/initrd/cmdline hash table.
    pub const SNP_KERNEL_HASHES: Self = Self(0x10);
}

impl std::fmt::Display for SectionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            Self::SNP_SEC_MEM => "SNP_SEC_MEM",
            Self::SNP_SECRETS => "SNP_SECRETS",
            Self::CPUID => "CPUID",
            Self::SVSM_CAA => "SVSM_CAA",
            Self::SNP_KERNEL_HASHES => "SNP_KERNEL_HASHES",
            _ => return write!(f, "unknown section type {:#x}", self.0),
        };
        f.write_str(name)
    }
}

/// One SEV metadata section descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest-physical start address.
    pub gpa: u32,
    /// Length in bytes.
    pub size: u32,
    /// What the VMM must put there.
    pub kind: SectionType,
}

/// Why an OVMF image could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OvmfError {
    /// The image is too short for what its tables claim.
    #[error("firmware image is truncated or inconsistent: {0}")]
    Truncated(&'static str),
    /// A footer table entry declares a size smaller than its own header.
    #[error("firmware footer table entry has invalid size {0} (minimum 18)")]
    BadEntrySize(u16),
    /// The SEV metadata does not start with "ASEV".
    #[error("firmware SEV metadata has a wrong signature (expected \"ASEV\")")]
    BadMetadataSignature,
    /// The SEV metadata has a version other than 1.
    #[error("firmware SEV metadata version {0} is not supported (only version 1)")]
    BadMetadataVersion(u32),
    /// The SEV metadata declares an absurd number of sections.
    #[error("firmware SEV metadata declares {0} sections (at most 256 are accepted)")]
    TooManySections(u32),
}

/// The SEV-relevant view of an OVMF image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OvmfInfo {
    /// Footer table entries (GUID, data), in the order they appear from the end of the image.
    pub table: Vec<(GuidBytes, Vec<u8>)>,
    /// SEV metadata sections in declaration order (empty when the image has none).
    pub sections: Vec<MetadataSection>,
}

impl OvmfInfo {
    /// Reads the footer table and the SEV metadata of `image`. An image without a footer table
    /// (no [`FOOTER_TABLE_GUID`] at its place) yields an empty [`OvmfInfo`].
    pub fn parse(image: &[u8]) -> Result<Self, OvmfError> {
        let table = parse_footer_table(image)?;
        let mut info = Self {
            table,
            sections: Vec::new(),
        };
        if let Some(entry) = info.entry(&SEV_METADATA_GUID) {
            let offset = read_u32(entry, 0).ok_or(OvmfError::Truncated("SEV metadata entry"))?;
            info.sections = parse_metadata(image, offset)?;
        }
        Ok(info)
    }

    /// The data of the footer table entry `guid`, if present.
    pub fn entry(&self, guid: &GuidBytes) -> Option<&[u8]> {
        self.table
            .iter()
            .find(|(g, _)| g == guid)
            .map(|(_, d)| d.as_slice())
    }

    /// The AP reset address (SEV-ES reset block, first `u32`), if the image declares one.
    pub fn sev_es_reset_eip(&self) -> Option<u32> {
        self.entry(&SEV_ES_RESET_BLOCK_GUID)
            .and_then(|d| read_u32(d, 0))
    }

    /// The GPA of the kernel hashes table, if the image declares a non-zero one.
    pub fn sev_hash_table_gpa(&self) -> Option<u32> {
        self.entry(&SEV_HASH_TABLE_RV_GUID)
            .and_then(|d| read_u32(d, 0))
            .filter(|&gpa| gpa != 0)
    }

    /// Whether the metadata declares a section of `kind`.
    pub fn has_section(&self, kind: SectionType) -> bool {
        self.sections.iter().any(|s| s.kind == kind)
    }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([
        s.first().copied()?,
        s.get(1).copied()?,
    ]))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

fn parse_footer_table(image: &[u8]) -> Result<Vec<(GuidBytes, Vec<u8>)>, OvmfError> {
    let Some(footer_at) = image.len().checked_sub(FOOTER_TAIL + ENTRY_HEADER) else {
        return Ok(Vec::new());
    };
    let Some(header) = image.get(footer_at..footer_at + ENTRY_HEADER) else {
        return Ok(Vec::new());
    };
    if header.get(2..) != Some(&FOOTER_TABLE_GUID[..]) {
        return Ok(Vec::new());
    }
    let size = read_u16(header, 0).ok_or(OvmfError::Truncated("footer table header"))?;
    let Some(table_len) = usize::from(size).checked_sub(ENTRY_HEADER) else {
        return Ok(Vec::new());
    };
    let start = footer_at
        .checked_sub(table_len)
        .ok_or(OvmfError::Truncated(
            "footer table is longer than the image",
        ))?;
    let mut rest = image
        .get(start..footer_at)
        .ok_or(OvmfError::Truncated("footer table"))?;
    let mut entries = Vec::new();
    while rest.len() >= ENTRY_HEADER {
        let head_at = rest.len() - ENTRY_HEADER;
        let size = read_u16(rest, head_at).ok_or(OvmfError::Truncated("footer entry"))?;
        let entry_len = usize::from(size);
        if entry_len < ENTRY_HEADER {
            return Err(OvmfError::BadEntrySize(size));
        }
        let entry_start = rest
            .len()
            .checked_sub(entry_len)
            .ok_or(OvmfError::Truncated(
                "footer entry is longer than the table",
            ))?;
        let guid: GuidBytes = rest
            .get(head_at + 2..)
            .and_then(|g| g.try_into().ok())
            .ok_or(OvmfError::Truncated("footer entry GUID"))?;
        let data = rest
            .get(entry_start..head_at)
            .ok_or(OvmfError::Truncated("footer entry data"))?;
        entries.push((guid, data.to_vec()));
        rest = rest
            .get(..entry_start)
            .ok_or(OvmfError::Truncated("footer table"))?;
    }
    Ok(entries)
}

fn parse_metadata(image: &[u8], offset_from_end: u32) -> Result<Vec<MetadataSection>, OvmfError> {
    let start = usize::try_from(offset_from_end)
        .ok()
        .and_then(|o| image.len().checked_sub(o))
        .ok_or(OvmfError::Truncated(
            "SEV metadata offset points before the image",
        ))?;
    let header = image
        .get(start..)
        .and_then(|h| h.get(..METADATA_HEADER))
        .ok_or(OvmfError::Truncated("SEV metadata header"))?;
    if header.get(..4) != Some(b"ASEV".as_slice()) {
        return Err(OvmfError::BadMetadataSignature);
    }
    let version = read_u32(header, 8).ok_or(OvmfError::Truncated("SEV metadata header"))?;
    if version != 1 {
        return Err(OvmfError::BadMetadataVersion(version));
    }
    let count = read_u32(header, 12).ok_or(OvmfError::Truncated("SEV metadata header"))?;
    if count > MAX_SECTIONS {
        return Err(OvmfError::TooManySections(count));
    }
    let items_at = start + METADATA_HEADER;
    (0..count as usize)
        .map(|i| {
            let at = items_at + i * SECTION_DESC;
            let desc = image
                .get(at..at + SECTION_DESC)
                .ok_or(OvmfError::Truncated("SEV metadata section list"))?;
            let field = |o| read_u32(desc, o).ok_or(OvmfError::Truncated("SEV metadata section"));
            Ok(MetadataSection {
                gpa: field(0)?,
                size: field(4)?,
                kind: SectionType(field(8)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{TestImage, TestSection};

    #[test]
    fn reads_sections_and_entries_of_a_built_image() {
        let img = TestImage::default().build();
        let info = OvmfInfo::parse(&img).unwrap();
        assert_eq!(info.sections.len(), 6);
        assert_eq!(info.sections[0].kind, SectionType::SNP_SEC_MEM);
        assert_eq!(info.sev_es_reset_eip(), Some(0xffff_e004));
        assert!(info.sev_hash_table_gpa().is_some());
        assert!(info.has_section(SectionType::SNP_KERNEL_HASHES));
    }

    #[test]
    fn an_image_without_footer_has_no_tables() {
        let info = OvmfInfo::parse(&[0u8; 4096]).unwrap();
        assert!(info.table.is_empty() && info.sections.is_empty());
        assert_eq!(OvmfInfo::parse(&[]).unwrap(), OvmfInfo::default());
    }

    #[test]
    fn rejects_every_truncation_of_the_metadata_without_panicking() {
        let img = TestImage {
            sections: vec![TestSection::new(0x80_0000, 0x1000, 1)],
            ..TestImage::default()
        }
        .build();
        // Cutting the front changes where "offset from end" lands; none may panic.
        for cut in 0..img.len() {
            let _ = OvmfInfo::parse(&img[cut..]);
        }
    }

    #[test]
    fn rejects_wrong_signature_and_version() {
        let t = TestImage {
            signature: *b"XSEV",
            ..TestImage::default()
        };
        assert_eq!(
            OvmfInfo::parse(&t.build()),
            Err(OvmfError::BadMetadataSignature)
        );
        let t = TestImage {
            version: 2,
            ..TestImage::default()
        };
        assert_eq!(
            OvmfInfo::parse(&t.build()),
            Err(OvmfError::BadMetadataVersion(2))
        );
    }
}
