//! The TD HOB a VMM hands to TDVF (Intel TDVF Design Guide §4.1 "TD Hand-Off Block"; HOB formats
//! from the UEFI PI specification, vol. 3 §5): a PHIT header, one resource descriptor per range
//! of guest RAM — accepted (added with INIT_MEM_REGION) or unaccepted — and an end marker. Its
//! GPA reaches the BSP in RCX (KVM_TDX_INIT_VCPU). The TD HOB section is not in the MRTD, but
//! TDVF measures the HOB list into RTMR0, so it is built exactly as QEMU builds it
//! (hw/i386/tdvf-hob.c, `tdvf_hob_create`): the PHIT's memory top/bottom fields zero (TDVF ignores
//! them), EfiEndOfHobList the address just past the end marker, the RAM ranges in address order.

use super::tdvf::{TdvfSection, TdvfSectionType};

/// `EFI_HOB_TYPE_HANDOFF`.
const HOB_HANDOFF: u16 = 0x0001;
/// `EFI_HOB_TYPE_RESOURCE_DESCRIPTOR`.
const HOB_RESOURCE: u16 = 0x0003;
/// `EFI_HOB_TYPE_END_OF_HOB_LIST`.
const HOB_END: u16 = 0xffff;
/// `EFI_HOB_HANDOFF_TABLE_VERSION`.
const HANDOFF_VERSION: u32 = 9;
/// `EFI_RESOURCE_SYSTEM_MEMORY`: memory the TD can use as is (accepted).
const RESOURCE_SYSTEM_MEMORY: u32 = 0;
/// `EFI_RESOURCE_MEMORY_UNACCEPTED`: memory TDVF must accept before use.
const RESOURCE_MEMORY_UNACCEPTED: u32 = 7;
/// PRESENT | INITIALIZED | TESTED.
const RESOURCE_ATTRIBUTES: u32 = 0x7;
/// Sizes of the PHIT, a resource descriptor, the end marker.
const HANDOFF_LEN: u16 = 56;
const RESOURCE_LEN: u16 = 48;
const END_LEN: u16 = 8;

/// Why no HOB list could be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TdHobError {
    /// The HOB list did not fit its section.
    #[error("the TD HOB needs {need} bytes but its TDVF section has {have}")]
    TooLarge {
        /// Bytes needed.
        need: u64,
        /// Section size.
        have: u64,
    },
    /// A range to accept is not guest RAM (QEMU's `tdx_accept_ram_range` refuses it too).
    #[error(
        "the TDVF section at {gpa:#x} size {len:#x} must lie in guest RAM (below {ram:#x}): raise --memory"
    )]
    OutsideRam {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
        /// End of guest RAM.
        ram: u64,
    },
}

/// The ranges QEMU accepts as RAM before it builds the HOB (`tdx_finalize_vm`,
/// target/i386/kvm/tdx.c): the TD_HOB and TEMP_MEM sections; the firmware volumes are not RAM and
/// PERM_MEM is accepted by TDVF later.
pub fn accepted(sections: &[TdvfSection]) -> Vec<(u64, u64)> {
    sections
        .iter()
        .filter(|s| matches!(s.kind, TdvfSectionType::TD_HOB | TdvfSectionType::TEMP_MEM))
        .map(|s| (s.memory_address, s.memory_data_size))
        .collect()
}

fn header(b: &mut Vec<u8>, kind: u16, len: u16) {
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
}

fn resource(b: &mut Vec<u8>, kind: u32, start: u64, len: u64) {
    header(b, HOB_RESOURCE, RESOURCE_LEN);
    b.extend_from_slice(&[0; 16]); // Owner GUID: none.
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&RESOURCE_ATTRIBUTES.to_le_bytes());
    b.extend_from_slice(&start.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
}

/// The HOB list for a TD with `ram_bytes` of RAM from GPA 0, of which the `accepted` ranges
/// (GPA, length: the TD_HOB and TEMP_MEM sections) were added with INIT_MEM_REGION; placed in the
/// TD HOB section at `hob_gpa` of `hob_len` bytes.
pub fn td_hob(
    hob_gpa: u64,
    hob_len: u64,
    ram_bytes: u64,
    accepted: &[(u64, u64)],
) -> Result<Vec<u8>, TdHobError> {
    if let Some(&(gpa, len)) = accepted
        .iter()
        .find(|(gpa, len)| gpa.checked_add(*len).is_none_or(|end| end > ram_bytes))
    {
        return Err(TdHobError::OutsideRam {
            gpa,
            len,
            ram: ram_bytes,
        });
    }
    let mut ranges: Vec<(u64, u64)> = accepted
        .iter()
        .filter(|(_, len)| *len > 0)
        .copied()
        .collect();
    ranges.sort_unstable();
    let mut body = Vec::new();
    let mut at = 0u64;
    for (gpa, len) in ranges {
        if gpa > at {
            resource(&mut body, RESOURCE_MEMORY_UNACCEPTED, at, gpa - at);
        }
        let start = gpa.max(at);
        let end = gpa + len;
        if end > start {
            resource(&mut body, RESOURCE_SYSTEM_MEMORY, start, end - start);
        }
        at = at.max(end);
    }
    if at < ram_bytes {
        resource(&mut body, RESOURCE_MEMORY_UNACCEPTED, at, ram_bytes - at);
    }
    let need = u64::from(HANDOFF_LEN) + body.len() as u64 + u64::from(END_LEN);
    if need > hob_len {
        return Err(TdHobError::TooLarge {
            need,
            have: hob_len,
        });
    }
    let mut b = Vec::with_capacity(need as usize);
    header(&mut b, HOB_HANDOFF, HANDOFF_LEN);
    b.extend_from_slice(&HANDOFF_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // BootMode: BOOT_WITH_FULL_CONFIGURATION.
    // EfiMemoryTop, EfiMemoryBottom, EfiFreeMemoryTop, EfiFreeMemoryBottom: zero (TDVF ignores
    // them); EfiEndOfHobList: just past the end marker.
    for v in [0, 0, 0, 0, hob_gpa + need] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&body);
    header(&mut b, HOB_END, END_LEN);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn ram_is_split_into_accepted_and_unaccepted_ranges() {
        let b = td_hob(
            0x80_9000,
            0x2000,
            0x100_0000,
            &[(0x80_0000, 0x9000), (0x80_9000, 0x2000)],
        )
        .unwrap();
        assert_eq!(b.len(), 56 + 4 * 48 + 8);
        assert_eq!((u16_at(&b, 0), u16_at(&b, 2)), (HOB_HANDOFF, 56));
        let r = |i: usize| {
            let at = 56 + i * 48;
            assert_eq!((u16_at(&b, at), u16_at(&b, at + 2)), (HOB_RESOURCE, 48));
            let kind = u32::from_le_bytes(b[at + 24..at + 28].try_into().unwrap());
            (kind, u64_at(&b, at + 32), u64_at(&b, at + 40))
        };
        assert_eq!(r(0), (RESOURCE_MEMORY_UNACCEPTED, 0, 0x80_0000));
        assert_eq!(r(1), (RESOURCE_SYSTEM_MEMORY, 0x80_0000, 0x9000));
        assert_eq!(r(2), (RESOURCE_SYSTEM_MEMORY, 0x80_9000, 0x2000));
        assert_eq!(
            r(3),
            (
                RESOURCE_MEMORY_UNACCEPTED,
                0x80_b000,
                0x100_0000 - 0x80_b000
            )
        );
        assert_eq!(u16_at(&b, 56 + 4 * 48), HOB_END);
    }

    #[test]
    fn only_the_td_hob_and_temporary_memory_are_accepted() {
        let s = |kind, memory_address| TdvfSection {
            data_offset: 0,
            raw_data_size: 0,
            memory_address,
            memory_data_size: 0x1000,
            kind,
            attributes: 0,
        };
        let sections = [
            s(TdvfSectionType::BFV, 0xffc8_4000),
            s(TdvfSectionType::CFV, 0xffc0_0000),
            s(TdvfSectionType::TD_HOB, 0x80_9000),
            s(TdvfSectionType::TEMP_MEM, 0x80_0000),
            s(TdvfSectionType::PERM_MEM, 0x90_0000),
        ];
        assert_eq!(
            accepted(&sections),
            [(0x80_9000, 0x1000), (0x80_0000, 0x1000)]
        );
    }

    #[test]
    fn the_hand_off_table_is_qemus() {
        let b = td_hob(0x80_9000, 0x2000, 0x100_0000, &[(0x80_9000, 0x2000)]).unwrap();
        let len = 56 + 3 * 48 + 8;
        assert_eq!(b.len(), len);
        assert_eq!(
            &b[8..12],
            &9u32.to_le_bytes(),
            "EFI_HOB_HANDOFF_TABLE_VERSION"
        );
        assert_eq!(&b[12..16], &[0; 4], "BootMode");
        assert_eq!(
            &b[16..48],
            &[0; 32],
            "EfiMemoryTop/Bottom, EfiFreeMemoryTop/Bottom"
        );
        assert_eq!(u64_at(&b, 48), 0x80_9000 + len as u64, "EfiEndOfHobList");
        assert_eq!((u16_at(&b, len - 8), u16_at(&b, len - 6)), (HOB_END, 8));
    }

    #[test]
    fn a_list_larger_than_its_section_or_a_range_outside_ram_is_refused() {
        assert_eq!(
            td_hob(0x1000, 64, 0x10_0000, &[]).unwrap_err(),
            TdHobError::TooLarge {
                need: 112,
                have: 64
            }
        );
        assert_eq!(
            td_hob(0x1000, 0x1000, 0x10_0000, &[(0xff_0000, 0x1000)]).unwrap_err(),
            TdHobError::OutsideRam {
                gpa: 0xff_0000,
                len: 0x1000,
                ram: 0x10_0000
            }
        );
    }
}
