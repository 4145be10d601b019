//! The SNP launch digest: a SHA-384 chain over one PAGE_INFO structure per SNP_LAUNCH_UPDATE page
//! (SEV-SNP ABI spec §8.17.2, "SNP_LAUNCH_UPDATE", table "Layout of the PAGE_INFO Structure").
//!
//! ```text
//! 0x00  DIGEST_CUR   48 bytes  the digest so far
//! 0x30  CONTENTS     48 bytes  SHA-384 of the page for NORMAL and VMSA pages, else zero
//! 0x60  LENGTH       u16       0x70
//! 0x62  PAGE_TYPE    u8
//! 0x63  IMI_PAGE     u8        0 (not an incoming migration image)
//! 0x64  VMPL3/2/1    3 × u8    permissions, 0
//! 0x67  reserved     u8
//! 0x68  GPA          u64
//! ```
//! The new digest is SHA-384 of those 0x70 bytes.

use ring::digest::{Context, SHA384, digest};

/// Size of a guest page.
pub const PAGE_SIZE: usize = 4096;
/// Size of a launch digest (SHA-384).
pub const DIGEST_LEN: usize = 48;
/// `LENGTH` of a PAGE_INFO structure.
const PAGE_INFO_LEN: usize = 0x70;
/// GPA recorded for VMSA pages: the RMP records −1, page aligned, with bits above 51 clear
/// (the same value KVM and `sev-snp-measure` use).
pub const VMSA_GPA: u64 = 0x0000_FFFF_FFFF_F000;

/// SNP page types (ABI spec §8.17.2, table "PAGE_TYPE Field").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageType(pub u8);

impl PageType {
    /// Normal page, measured by its contents.
    pub const NORMAL: Self = Self(0x01);
    /// A vCPU save area.
    pub const VMSA: Self = Self(0x02);
    /// A page the PSP zeroes.
    pub const ZERO: Self = Self(0x03);
    /// A page whose contents are not measured.
    pub const UNMEASURED: Self = Self(0x04);
    /// The secrets page.
    pub const SECRETS: Self = Self(0x05);
    /// The CPUID page.
    pub const CPUID: Self = Self(0x06);
}

/// A running SNP launch digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchDigest {
    ld: [u8; DIGEST_LEN],
}

impl Default for LaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchDigest {
    /// The digest before the first page: all zeros.
    pub const fn new() -> Self {
        Self {
            ld: [0; DIGEST_LEN],
        }
    }

    /// The digest so far.
    pub const fn value(&self) -> &[u8; DIGEST_LEN] {
        &self.ld
    }

    /// Extends the digest with one PAGE_INFO whose CONTENTS is `contents`.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; DIGEST_LEN]) {
        let mut info = [0u8; PAGE_INFO_LEN];
        info[..0x30].copy_from_slice(&self.ld);
        info[0x30..0x60].copy_from_slice(contents);
        info[0x60..0x62].copy_from_slice(&(PAGE_INFO_LEN as u16).to_le_bytes());
        info[0x62] = page_type.0;
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.ld.copy_from_slice(digest(&SHA384, &info).as_ref());
    }

    /// Extends the digest with NORMAL pages holding `data` (a whole number of pages) from `gpa` on.
    pub fn update_normal(&mut self, gpa: u64, data: &[u8]) {
        for (gpa, page) in (gpa..).step_by(PAGE_SIZE).zip(data.chunks(PAGE_SIZE)) {
            self.update(PageType::NORMAL, gpa, &page_hash(page));
        }
    }

    /// Extends the digest with pages of a type measured without contents (ZERO, UNMEASURED,
    /// SECRETS, CPUID), `pages` of them from `gpa` on.
    pub fn update_empty(&mut self, page_type: PageType, gpa: u64, pages: u64) {
        for i in 0..pages {
            self.update(page_type, gpa + i * PAGE_SIZE as u64, &[0; DIGEST_LEN]);
        }
    }

    /// Extends the digest with one VMSA page.
    pub fn update_vmsa(&mut self, page: &[u8; PAGE_SIZE]) {
        self.update(PageType::VMSA, VMSA_GPA, &page_hash(page));
    }
}

/// SHA-384 of one page.
pub fn page_hash(page: &[u8]) -> [u8; DIGEST_LEN] {
    let mut ctx = Context::new(&SHA384);
    ctx.update(page);
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_is_hashed_as_the_abi_lays_it_out() {
        let mut d = LaunchDigest::new();
        d.update(PageType::SECRETS, 0x80_d000, &[0; 48]);
        let mut info = [0u8; 0x70];
        info[0x60] = 0x70;
        info[0x62] = 5;
        info[0x68..0x70].copy_from_slice(&0x80_d000u64.to_le_bytes());
        assert_eq!(d.value().as_slice(), digest(&SHA384, &info).as_ref());
    }

    #[test]
    fn normal_pages_chain_one_page_info_per_page() {
        let data = vec![7u8; 2 * PAGE_SIZE];
        let mut a = LaunchDigest::new();
        a.update_normal(0x1000, &data);
        let mut b = LaunchDigest::new();
        b.update(PageType::NORMAL, 0x1000, &page_hash(&data[..PAGE_SIZE]));
        b.update(PageType::NORMAL, 0x2000, &page_hash(&data[PAGE_SIZE..]));
        assert_eq!(a, b);
    }
}
