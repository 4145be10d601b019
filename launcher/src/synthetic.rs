//! Synthetic OVMF-like firmware images: a deterministic body with the footer table and SEV metadata
//! of [`crate::ovmf`], for tests and benchmarks that need layouts Debian's OVMF builds do not have
//! (for example an `SNP_KERNEL_HASHES` section). Such an image measures like OVMF but does not boot.

use crate::ovmf::{
    FOOTER_TABLE_GUID, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_METADATA_GUID,
};
use crate::tdx::tdvf::{TDX_METADATA_OFFSET_GUID, TdvfSection};

/// One section descriptor to write into the synthetic SEV metadata.
#[derive(Clone, Copy, Debug)]
pub struct TestSection {
    /// Guest-physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Raw section type (`OVMF_SECTION_TYPE_*`).
    pub kind: u32,
}

impl TestSection {
    /// A section descriptor.
    pub const fn new(gpa: u32, size: u32, kind: u32) -> Self {
        Self { gpa, size, kind }
    }
}

/// Description of a synthetic firmware image; [`TestImage::build`] lays it out.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Total size in bytes (a multiple of 4096, at least 8 KiB).
    pub size: usize,
    /// SEV metadata sections; an empty list writes no metadata entry.
    pub sections: Vec<TestSection>,
    /// Metadata signature (normally `"ASEV"`).
    pub signature: [u8; 4],
    /// Metadata version (normally 1).
    pub version: u32,
    /// AP reset address for the SEV-ES reset block entry.
    pub reset_eip: Option<u32>,
    /// GPA of the kernel hashes table.
    pub hash_table_gpa: Option<u32>,
    /// Seed of the body's byte pattern, so different images measure differently.
    pub seed: u8,
    /// TDVF sections; an empty list writes no TDX metadata entry.
    pub tdvf: Vec<TdvfSection>,
}

impl Default for TestImage {
    /// 64 KiB with the six section kinds an SNP OVMF (`OvmfPkg/AmdSev`) declares, the hash table at
    /// an offset inside its page, and an AP reset address.
    fn default() -> Self {
        Self {
            size: 64 * 1024,
            sections: vec![
                TestSection::new(0x80_0000, 0x9000, 1),
                TestSection::new(0x80_a000, 0x3000, 1),
                TestSection::new(0x80_d000, 0x1000, 2),
                TestSection::new(0x80_e000, 0x1000, 3),
                TestSection::new(0x80_f000, 0x1000, 0x10),
                TestSection::new(0x81_0000, 0x1000, 4),
            ],
            signature: *b"ASEV",
            version: 1,
            reset_eip: Some(0xffff_e004),
            hash_table_gpa: Some(0x80_fc00),
            seed: 1,
            tdvf: Vec::new(),
        }
    }
}

impl TestImage {
    /// A 64 KiB image with TDVF metadata like OVMF's: a measured BFV (the first 48 KiB of the image),
    /// a CFV, a TD HOB, temporary memory and a PAGE_AUG permanent-memory section.
    pub fn tdvf_default() -> Self {
        use crate::tdx::tdvf::{ATTR_MR_EXTEND, ATTR_PAGE_AUG, TdvfSectionType as T};
        let sec =
            |data_offset, raw_data_size, memory_address, memory_data_size, kind, attributes| {
                TdvfSection {
                    data_offset,
                    raw_data_size,
                    memory_address,
                    memory_data_size,
                    kind,
                    attributes,
                }
            };
        Self {
            tdvf: vec![
                sec(0x4000, 0xc000, 0xffff_4000, 0xc000, T::BFV, ATTR_MR_EXTEND),
                sec(0, 0x4000, 0xffff_0000, 0x4000, T::CFV, 0),
                sec(0, 0, 0x80_9000, 0x2000, T::TD_HOB, 0),
                sec(0, 0, 0x80_0000, 0x6000, T::TEMP_MEM, 0),
                sec(0, 0, 0x90_0000, 0x1000, T::PERM_MEM, ATTR_PAGE_AUG),
            ],
            ..Self::default()
        }
    }

    /// Lays out the image: pattern body, metadata 4 KiB before the end, footer table before the
    /// 32-byte reset-vector tail.
    pub fn build(&self) -> Vec<u8> {
        let mut img: Vec<u8> = (0..self.size)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(self.seed))
            .collect();
        let meta_at = self.size - 0x1000;
        let mut meta = Vec::new();
        meta.extend_from_slice(&self.signature);
        meta.extend_from_slice(&(16 + 12 * self.sections.len() as u32).to_le_bytes());
        meta.extend_from_slice(&self.version.to_le_bytes());
        meta.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for s in &self.sections {
            for v in [s.gpa, s.size, s.kind] {
                meta.extend_from_slice(&v.to_le_bytes());
            }
        }
        img[meta_at..meta_at + meta.len()].copy_from_slice(&meta);

        let mut entries: Vec<(Vec<u8>, [u8; 16])> = Vec::new();
        if !self.tdvf.is_empty() {
            let td_at = self.size - 0x800;
            let mut d = Vec::new();
            d.extend_from_slice(b"TDVF");
            d.extend_from_slice(&(16 + 32 * self.tdvf.len() as u32).to_le_bytes());
            d.extend_from_slice(&1u32.to_le_bytes());
            d.extend_from_slice(&(self.tdvf.len() as u32).to_le_bytes());
            for s in &self.tdvf {
                d.extend_from_slice(&s.data_offset.to_le_bytes());
                d.extend_from_slice(&s.raw_data_size.to_le_bytes());
                d.extend_from_slice(&s.memory_address.to_le_bytes());
                d.extend_from_slice(&s.memory_data_size.to_le_bytes());
                d.extend_from_slice(&s.kind.0.to_le_bytes());
                d.extend_from_slice(&s.attributes.to_le_bytes());
            }
            img[td_at..td_at + d.len()].copy_from_slice(&d);
            let off = (self.size - td_at) as u32;
            entries.push((off.to_le_bytes().to_vec(), TDX_METADATA_OFFSET_GUID));
        }
        if !self.sections.is_empty() {
            let off = (self.size - meta_at) as u32;
            entries.push((off.to_le_bytes().to_vec(), SEV_METADATA_GUID));
        }
        if let Some(eip) = self.reset_eip {
            entries.push((eip.to_le_bytes().to_vec(), SEV_ES_RESET_BLOCK_GUID));
        }
        if let Some(gpa) = self.hash_table_gpa {
            let mut d = gpa.to_le_bytes().to_vec();
            d.extend_from_slice(&0x400u32.to_le_bytes());
            entries.push((d, SEV_HASH_TABLE_RV_GUID));
        }
        let mut table = Vec::new();
        for (data, guid) in &entries {
            table.extend_from_slice(data);
            table.extend_from_slice(&((data.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(guid);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_TABLE_GUID);
        let end = self.size - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        img
    }
}
