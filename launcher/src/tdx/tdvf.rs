//! TDVF metadata (Intel "TDX Virtual Firmware Design Guide" §11 "TDVF Metadata"; EDK2
//! `OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm`): the footer table entry
//! [`TDX_METADATA_OFFSET_GUID`] holds a `u32` offset from the end of the image to the descriptor
//! `"TDVF" ‖ u32 length ‖ u32 version (1) ‖ u32 count`, followed by `count` 32-byte sections
//! `u32 data_offset ‖ u32 raw_data_size ‖ u64 memory_address ‖ u64 memory_data_size ‖ u32 type ‖
//! u32 attributes`.

use crate::guid::{GuidBytes, guid};
use crate::ovmf::OvmfInfo;

/// GUID of the footer table entry pointing to the TDVF descriptor
/// (`e47a6535-984a-4798-865e-4685a7bf8ec2`).
pub const TDX_METADATA_OFFSET_GUID: GuidBytes = guid(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

/// Section attribute: the section's contents are measured into MRTD (TDH.MR.EXTEND).
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
/// Section attribute: the pages are added later with TDH.MEM.PAGE.AUG (not measured).
pub const ATTR_PAGE_AUG: u32 = 1 << 1;
/// Largest section count accepted (OVMF declares about six).
const MAX_SECTIONS: u32 = 64;

/// TDVF section types; unknown values are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdvfSectionType(pub u32);

impl TdvfSectionType {
    /// Boot firmware volume (code).
    pub const BFV: Self = Self(0);
    /// Configuration firmware volume (variables).
    pub const CFV: Self = Self(1);
    /// TD hand-off block, written by the VMM.
    pub const TD_HOB: Self = Self(2);
    /// Temporary memory, zero.
    pub const TEMP_MEM: Self = Self(3);
    /// Permanent memory, accepted later.
    pub const PERM_MEM: Self = Self(4);
    /// A payload (kernel).
    pub const PAYLOAD: Self = Self(5);
    /// The payload's parameters.
    pub const PAYLOAD_PARAM: Self = Self(6);
}

/// One TDVF section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the section's bytes in the image (BFV/CFV).
    pub data_offset: u32,
    /// Number of bytes in the image.
    pub raw_data_size: u32,
    /// Guest-physical address.
    pub memory_address: u64,
    /// Size in guest memory.
    pub memory_data_size: u64,
    /// Type.
    pub kind: TdvfSectionType,
    /// Attributes ([`ATTR_MR_EXTEND`], [`ATTR_PAGE_AUG`]).
    pub attributes: u32,
}

/// Why TDVF metadata is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TdvfError {
    /// No TDX metadata entry in the footer table.
    #[error(
        "the firmware has no TDX metadata (footer GUID e47a6535-…): it is not a TDVF/TDX-capable OVMF"
    )]
    Missing,
    /// The image is too short for what the metadata claims.
    #[error("the firmware's TDVF metadata is truncated or inconsistent: {0}")]
    Truncated(&'static str),
    /// Wrong signature or version.
    #[error(
        "the firmware's TDVF descriptor has signature {0:?} / version {1} (expected \"TDVF\" / 1)"
    )]
    BadDescriptor([u8; 4], u32),
    /// Too many sections.
    #[error("the firmware's TDVF descriptor declares {0} sections (at most 64 are accepted)")]
    TooManySections(u32),
    /// A section that cannot be measured as declared.
    #[error("TDVF section {index} ({what})")]
    BadSection {
        /// Index in the descriptor.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads the TDVF sections of `image` (whose footer table is `info`).
pub fn parse(image: &[u8], info: &OvmfInfo) -> Result<Vec<TdvfSection>, TdvfError> {
    let entry = info
        .entry(&TDX_METADATA_OFFSET_GUID)
        .ok_or(TdvfError::Missing)?;
    let off = u32_at(entry, 0).ok_or(TdvfError::Truncated("metadata entry"))?;
    let start = usize::try_from(off)
        .ok()
        .and_then(|o| image.len().checked_sub(o))
        .ok_or(TdvfError::Truncated(
            "descriptor offset points before the image",
        ))?;
    let desc = image
        .get(start..)
        .ok_or(TdvfError::Truncated("descriptor"))?;
    let sig: [u8; 4] = desc
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(TdvfError::Truncated("descriptor"))?;
    let version = u32_at(desc, 8).ok_or(TdvfError::Truncated("descriptor"))?;
    if &sig != b"TDVF" || version != 1 {
        return Err(TdvfError::BadDescriptor(sig, version));
    }
    let count = u32_at(desc, 12).ok_or(TdvfError::Truncated("descriptor"))?;
    if count > MAX_SECTIONS {
        return Err(TdvfError::TooManySections(count));
    }
    (0..count as usize)
        .map(|i| {
            let at = 16 + 32 * i;
            let t = |o| u32_at(desc, at + o).ok_or(TdvfError::Truncated("section list"));
            let w = |o| u64_at(desc, at + o).ok_or(TdvfError::Truncated("section list"));
            let s = TdvfSection {
                data_offset: t(0)?,
                raw_data_size: t(4)?,
                memory_address: w(8)?,
                memory_data_size: w(16)?,
                kind: TdvfSectionType(t(24)?),
                attributes: t(28)?,
            };
            check(i, &s, image.len())?;
            Ok(s)
        })
        .collect()
}

fn check(index: usize, s: &TdvfSection, image_len: usize) -> Result<(), TdvfError> {
    let bad = |what| Err(TdvfError::BadSection { index, what });
    if !s.memory_address.is_multiple_of(4096) || !s.memory_data_size.is_multiple_of(4096) {
        return bad("not page aligned");
    }
    if u64::from(s.raw_data_size) > s.memory_data_size {
        return bad("more raw data than memory");
    }
    let end = u64::from(s.data_offset) + u64::from(s.raw_data_size);
    if end > image_len as u64 {
        return bad("raw data beyond the end of the image");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::TestImage;

    #[test]
    fn reads_the_sections_of_a_built_image() {
        let t = TestImage::tdvf_default();
        let img = t.build();
        let info = OvmfInfo::parse(&img).unwrap();
        assert_eq!(parse(&img, &info).unwrap(), t.tdvf);
    }

    #[test]
    fn no_cut_of_the_image_panics() {
        let img = TestImage::tdvf_default().build();
        for cut in 0..img.len() {
            let tail = &img[cut..];
            if let Ok(info) = OvmfInfo::parse(tail) {
                let _ = parse(tail, &info);
            }
        }
    }

    #[test]
    fn rejects_sections_that_do_not_fit() {
        let mut t = TestImage::tdvf_default();
        t.tdvf[0].raw_data_size = 0x10_0000;
        let img = t.build();
        let info = OvmfInfo::parse(&img).unwrap();
        assert!(matches!(
            parse(&img, &info),
            Err(TdvfError::BadSection { index: 0, .. })
        ));
        let mut t = TestImage::tdvf_default();
        t.tdvf[2].memory_address = 0x80_9800;
        let img = t.build();
        let info = OvmfInfo::parse(&img).unwrap();
        assert!(matches!(
            parse(&img, &info),
            Err(TdvfError::BadSection { index: 2, .. })
        ));
    }
}
