//! The CPUID table an SNP guest's CPUID page is launched with (SEV-SNP ABI spec §8.17.2, page
//! type CPUID; the layout Linux reads as `struct snp_cpuid_table`): a count, then up to 64
//! functions of 48 bytes each (EAX_IN, ECX_IN, XCR0_IN, XSS_IN, EAX, EBX, ECX, EDX, reserved).
//! The PSP checks every value against what the hardware allows during SNP_LAUNCH_UPDATE.

use crate::cvm::cpuid::{CPUID_ENTRY_LEN, EAX, FLAGS, FUNCTION, INDEX, word};

/// Most functions one CPUID page holds.
pub const MAX_FUNCTIONS: usize = 64;
/// Size of one function entry.
const FUNCTION_LEN: usize = 48;
/// Size of the header (count, two reserved fields).
const HEADER_LEN: usize = 16;
/// `kvm_cpuid_entry2.flags` bit: the entry depends on ECX (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
const SIGNIFICANT_INDEX: u32 = 1;
/// XSAVE leaf: its sub-leaves 0 and 1 report sizes for the XCR0 value given as XCR0_IN.
const XSAVE_LEAF: u32 = 0xd;

/// Why no CPUID page could be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "KVM reports {0} CPUID entries, but an SNP CPUID page holds at most 64: this launcher does not choose which to drop"
)]
pub struct TooManyFunctions(pub usize);

/// The CPUID page for `entries` (`struct kvm_cpuid_entry2` as 40 bytes each, the way KVM
/// reports them and the vCPUs get them with `KVM_SET_CPUID2`).
pub fn cpuid_page(entries: &[[u8; CPUID_ENTRY_LEN]]) -> Result<Box<[u8; 4096]>, TooManyFunctions> {
    if entries.len() > MAX_FUNCTIONS {
        return Err(TooManyFunctions(entries.len()));
    }
    let mut page = Box::new([0u8; 4096]);
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = page.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, &(entries.len() as u32).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let (function, index, flags) = (word(e, FUNCTION), word(e, INDEX), word(e, FLAGS));
        let ecx_in = if flags & SIGNIFICANT_INDEX != 0 {
            index
        } else {
            0
        };
        // XCR0 always has x87 (bit 0) set; the XSAVE sizes are given for that minimum.
        let xcr0_in: u64 = u64::from(function == XSAVE_LEAF && ecx_in <= 1);
        let at = HEADER_LEN + i * FUNCTION_LEN;
        put(at, &function.to_le_bytes());
        put(at + 4, &ecx_in.to_le_bytes());
        put(at + 8, &xcr0_in.to_le_bytes());
        // XSS_IN stays 0; then EAX, EBX, ECX, EDX.
        for (k, reg) in (EAX..EAX + 4).enumerate() {
            put(at + 24 + k * 4, &word(e, reg).to_le_bytes());
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> [u8; 40] {
        crate::cvm::cpuid::entry([function, index, flags, regs[0], regs[1], regs[2], regs[3]])
    }

    #[test]
    fn functions_are_laid_out_after_the_count() {
        let page = cpuid_page(&[
            entry(0, 5, 0, [0x10, 1, 2, 3]),
            entry(7, 1, SIGNIFICANT_INDEX, [4, 5, 6, 7]),
            entry(0xd, 0, SIGNIFICANT_INDEX, [8, 9, 10, 11]),
        ])
        .unwrap();
        assert_eq!(&page[..4], &3u32.to_le_bytes());
        let f = |i: usize| &page[16 + i * 48..16 + (i + 1) * 48];
        assert_eq!(&f(0)[..8], &[0; 8], "ECX_IN 0 without a significant index");
        assert_eq!(&f(0)[24..28], &0x10u32.to_le_bytes());
        assert_eq!(&f(1)[..8], &[7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            &f(1)[24..40],
            &[4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0]
        );
        assert_eq!(&f(2)[8..16], &1u64.to_le_bytes(), "XCR0_IN for XSAVE sizes");
        assert!(page[16 + 3 * 48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn more_than_64_functions_are_refused() {
        let many = vec![entry(1, 0, 0, [0; 4]); 65];
        assert_eq!(cpuid_page(&many).unwrap_err(), TooManyFunctions(65));
        assert!(cpuid_page(&many[..64]).is_ok());
    }
}
