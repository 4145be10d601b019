//! The kernel hashes page of a measured direct boot through OVMF: QEMU writes a table of SHA-256
//! hashes of the kernel, initrd and command line into the firmware's `SNP_KERNEL_HASHES` page
//! (QEMU `target/i386/sev.c`, `SevHashTable`; OVMF `BlobVerifierLibSevHashes` checks it).
//!
//! ```text
//! table  GUID 9438d606-4f22-4cc9-b479-a793d411fd21 ‖ u16 length (168)
//!        cmdline entry ‖ initrd entry ‖ kernel entry   (each: GUID ‖ u16 length (50) ‖ SHA-256)
//!        zero padding to a multiple of 16 (176 bytes)
//! ```

use crate::guid::{GuidBytes, guid};
use ring::digest::{SHA256, digest};

use super::digest::PAGE_SIZE;

const TABLE_GUID: GuidBytes = guid(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const KERNEL_GUID: GuidBytes = guid(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
const INITRD_GUID: GuidBytes = guid(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const CMDLINE_GUID: GuidBytes = guid(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);
const ENTRY_LEN: usize = 16 + 2 + 32;
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN;
/// The table padded to 16 bytes, as QEMU copies it.
pub const PADDED_TABLE_LEN: usize = TABLE_LEN.div_ceil(16) * 16;

/// SHA-256 hashes of what a measured direct boot loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel image file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd file (of the empty string when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line with its terminating NUL (just `"\0"` when empty).
    pub cmdline: [u8; 32],
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut o = [0; 32];
    o.copy_from_slice(digest(&SHA256, b).as_ref());
    o
}

impl KernelHashes {
    /// Hashes the given kernel, initrd and command line the way QEMU does.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        let mut c = cmdline.unwrap_or("").as_bytes().to_vec();
        c.push(0);
        Self {
            kernel: sha256(kernel),
            initrd: sha256(initrd.unwrap_or(&[])),
            cmdline: sha256(&c),
        }
    }

    /// The padded table.
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        t[..16].copy_from_slice(&TABLE_GUID);
        t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (CMDLINE_GUID, &self.cmdline),
            (INITRD_GUID, &self.initrd),
            (KERNEL_GUID, &self.kernel),
        ];
        for (i, (g, h)) in entries.iter().enumerate() {
            let at = 18 + i * ENTRY_LEN;
            t[at..at + 16].copy_from_slice(g);
            t[at + 16..at + 18].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
            t[at + 18..at + ENTRY_LEN].copy_from_slice(*h);
        }
        t
    }

    /// The hashes page: zeros with the table at `offset` (the table GPA's offset in its page).
    /// `None` when the table would not fit in the page.
    pub fn page(&self, offset: usize) -> Option<Box<[u8; PAGE_SIZE]>> {
        let end = offset.checked_add(PADDED_TABLE_LEN)?;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        page.get_mut(offset..end)?.copy_from_slice(&self.table());
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_qemu_sizes_and_order() {
        let h = KernelHashes::new(b"k", None, None);
        let t = h.table();
        assert_eq!(PADDED_TABLE_LEN, 176);
        assert_eq!(u16::from_le_bytes([t[16], t[17]]), 168);
        assert_eq!(&t[18..34], &CMDLINE_GUID);
        assert_eq!(&t[36..68], &sha256(b"\0"));
        assert_eq!(&t[86..118], &sha256(b""));
        assert_eq!(&t[136..168], &sha256(b"k"));
        assert!(h.page(PAGE_SIZE - 100).is_none());
    }
}
