//! The TD HOB a VMM hands to TDVF (Intel TDVF Design Guide §4.1 "TD Hand-Off Block"; HOB formats
//! from the UEFI PI specification, vol. 3 §5): a PHIT header, one resource descriptor per range
//! of guest RAM — accepted (added with INIT_MEM_REGION) or unaccepted — and an end marker. Its
//! GPA reaches the BSP in RCX (KVM_TDX_INIT_VCPU). The TD HOB section is not measured.

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

/// The HOB list did not fit its section.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("the TD HOB needs {need} bytes but its TDVF section has {have}")]
pub struct HobTooLarge {
    /// Bytes needed.
    pub need: u64,
    /// Section size.
    pub have: u64,
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
/// (GPA, length) were added with INIT_MEM_REGION; placed in the TD HOB section at `hob_gpa` of
/// `hob_len` bytes.
pub fn td_hob(
    hob_gpa: u64,
    hob_len: u64,
    ram_bytes: u64,
    accepted: &[(u64, u64)],
) -> Result<Vec<u8>, HobTooLarge> {
    let mut ranges: Vec<(u64, u64)> = accepted
        .iter()
        .filter(|(gpa, len)| *len > 0 && *gpa < ram_bytes)
        .map(|&(gpa, len)| (gpa, len.min(ram_bytes - gpa)))
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
        return Err(HobTooLarge {
            need,
            have: hob_len,
        });
    }
    let mut b = Vec::with_capacity(need as usize);
    header(&mut b, HOB_HANDOFF, HANDOFF_LEN);
    b.extend_from_slice(&HANDOFF_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // BootMode: BOOT_WITH_FULL_CONFIGURATION.
    // EfiMemoryTop, EfiMemoryBottom, EfiFreeMemoryTop, EfiFreeMemoryBottom, EfiEndOfHobList.
    let end = hob_gpa + need;
    for v in [
        hob_gpa + hob_len,
        hob_gpa,
        hob_gpa + hob_len,
        end,
        end - u64::from(END_LEN),
    ] {
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
        assert_eq!(u64_at(&b, 48), 0x80_9000 + 56 + 4 * 48, "EfiEndOfHobList");
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
    fn a_list_larger_than_its_section_is_refused() {
        assert_eq!(
            td_hob(0x1000, 64, 0x10_0000, &[]).unwrap_err(),
            HobTooLarge {
                need: 112,
                have: 64
            }
        );
    }
}
