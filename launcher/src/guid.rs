//! GUIDs in the mixed-endian byte order that EDK2 and QEMU store in firmware tables.

/// A GUID as its 16 bytes in memory (`EFI_GUID`: the first three fields little-endian).
pub type GuidBytes = [u8; 16];

/// Builds the in-memory bytes of the GUID `a-b-c-d[0..2]-d[2..8]`
/// (UEFI spec, appendix A "EFI_GUID": Data1..Data3 little-endian, Data4 as written).
pub const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> GuidBytes {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_first_three_fields_little_endian() {
        // 96b582de-1fb2-45f7-baea-a366c55a082d, the OVMF footer table GUID.
        let g = guid(
            0x96b5_82de,
            0x1fb2,
            0x45f7,
            [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
        );
        assert_eq!(hex::encode(g), "de82b596b21ff745baeaa366c55a082d");
    }
}
