//! MRTD: the SHA-384 the TDX module accumulates while the VMM adds and measures initial pages
//! (Intel TDX Module ABI spec, TDH.MEM.PAGE.ADD and TDH.MR.EXTEND "MRTD extension"; finalized by
//! TDH.MR.FINALIZE). One running SHA-384 over, per added page:
//!
//! ```text
//! TDH.MEM.PAGE.ADD  128 bytes: "MEM.PAGE.ADD" ‖ zeros to 16 ‖ GPA u64 ‖ zeros
//! TDH.MR.EXTEND     per 256-byte chunk of a measured page:
//!                   128 bytes: "MR.EXTEND" ‖ zeros to 16 ‖ chunk GPA u64 ‖ zeros, then the 256 bytes
//! ```
//! The VMM (QEMU with KVM_TDX_INIT_MEM_REGION) adds every TDVF section except PAGE_AUG ones, in
//! descriptor order, page by page; pages of MR_EXTEND sections are extended right after their
//! PAGE.ADD (upstream KVM's `tdx_gmem_post_populate`). Some older downstream TDX kernels added all
//! pages of a section before extending any: their MRTD differs and is not computed here.

use ring::digest::{Context, SHA384};

use super::tdvf::{ATTR_MR_EXTEND, ATTR_PAGE_AUG, TdvfError, TdvfSection};
use crate::ovmf::OvmfInfo;

const PAGE: usize = 4096;
const CHUNK: usize = 256;

fn header(op: &[u8], gpa: u64) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..op.len()].copy_from_slice(op);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// A running MRTD.
pub struct Mrtd {
    ctx: Context,
}

impl Default for Mrtd {
    fn default() -> Self {
        Self::new()
    }
}

impl Mrtd {
    /// The state after TDH.MNG.INIT.
    pub fn new() -> Self {
        Self {
            ctx: Context::new(&SHA384),
        }
    }

    /// TDH.MEM.PAGE.ADD of the page at `gpa`.
    pub fn page_add(&mut self, gpa: u64) {
        self.ctx.update(&header(b"MEM.PAGE.ADD", gpa));
    }

    /// TDH.MR.EXTEND of the 256-byte `chunk` at `gpa`.
    pub fn extend(&mut self, gpa: u64, chunk: &[u8; CHUNK]) {
        self.ctx.update(&header(b"MR.EXTEND", gpa));
        self.ctx.update(chunk);
    }

    /// TDH.MR.FINALIZE.
    pub fn finish(self) -> [u8; 48] {
        let mut o = [0u8; 48];
        o.copy_from_slice(self.ctx.finish().as_ref());
        o
    }
}

/// The MRTD of a TD launched from `image` (a TDVF/OVMF with TDX metadata).
pub fn mrtd_of_firmware(image: &[u8]) -> Result<[u8; 48], TdvfError> {
    let info = OvmfInfo::parse(image).map_err(|_| TdvfError::Truncated("footer table"))?;
    let sections = super::tdvf::parse(image, &info)?;
    Ok(mrtd_of_sections(image, &sections))
}

/// The MRTD for already-parsed sections (contents beyond a section's raw data are zero).
pub fn mrtd_of_sections(image: &[u8], sections: &[TdvfSection]) -> [u8; 48] {
    let mut m = Mrtd::new();
    for s in sections {
        if s.attributes & ATTR_PAGE_AUG != 0 {
            continue;
        }
        let raw = image
            .get(s.data_offset as usize..)
            .and_then(|r| r.get(..s.raw_data_size as usize))
            .unwrap_or(&[]);
        let pages = s.memory_data_size / PAGE as u64;
        for p in 0..pages {
            let gpa = s.memory_address + p * PAGE as u64;
            m.page_add(gpa);
            if s.attributes & ATTR_MR_EXTEND != 0 {
                let mut page = [0u8; PAGE];
                let from = p as usize * PAGE;
                if let Some(src) = raw.get(from..) {
                    let n = src.len().min(PAGE);
                    page[..n].copy_from_slice(&src[..n]);
                }
                for (i, chunk) in page.chunks_exact(CHUNK).enumerate() {
                    let mut c = [0u8; CHUNK];
                    c.copy_from_slice(chunk);
                    m.extend(gpa + (i * CHUNK) as u64, &c);
                }
            }
        }
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::super::tdvf::TdvfSectionType;
    use super::*;
    use ring::digest::digest;

    #[test]
    fn buffers_follow_the_module_abi() {
        let h = header(b"MEM.PAGE.ADD", 0xffe0_0000);
        assert_eq!(&h[..12], b"MEM.PAGE.ADD");
        assert_eq!(&h[12..16], &[0; 4]);
        assert_eq!(&h[16..24], &0xffe0_0000u64.to_le_bytes());
        assert!(h[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn one_measured_page_is_one_add_and_sixteen_extends() {
        let image = vec![0x11u8; PAGE];
        let s = TdvfSection {
            data_offset: 0,
            raw_data_size: PAGE as u32,
            memory_address: 0x1000,
            memory_data_size: PAGE as u64,
            kind: TdvfSectionType::BFV,
            attributes: ATTR_MR_EXTEND,
        };
        let mut expect = header(b"MEM.PAGE.ADD", 0x1000).to_vec();
        for i in 0..16u64 {
            expect.extend_from_slice(&header(b"MR.EXTEND", 0x1000 + i * 256));
            expect.extend_from_slice(&[0x11; 256]);
        }
        assert_eq!(
            mrtd_of_sections(&image, &[s]).as_slice(),
            digest(&SHA384, &expect).as_ref()
        );
        let aug = TdvfSection {
            attributes: ATTR_PAGE_AUG,
            ..s
        };
        assert_eq!(
            mrtd_of_sections(&image, &[aug]).as_slice(),
            digest(&SHA384, b"").as_ref()
        );
    }

    #[test]
    fn an_image_without_tdx_metadata_is_refused() {
        assert_eq!(mrtd_of_firmware(&[0; 4096]), Err(TdvfError::Missing));
    }
}
