//! The CPUID table an SNP guest's CPUID page is launched with (SEV-SNP ABI spec §8.17.2, page
//! type CPUID; the layout Linux reads as `struct snp_cpuid_table`): a count, then up to 64
//! functions of 48 bytes each (EAX_IN, ECX_IN, XCR0_IN, XSS_IN, EAX, EBX, ECX, EDX, reserved).
//! The PSP checks every value against what the hardware allows during SNP_LAUNCH_UPDATE; when it
//! refuses the page it writes the values it accepts into it, which [`mismatches`] lists.
//!
//! Built as QEMU builds it (target/i386/sev.c, `sev_snp_cpuid_info_fill`) from the CPUID the vCPUs
//! get ([`snp_cpuid`]: KVM's, without the bits QEMU's `sev_snp_mask_cpuid_features` removes for
//! SNP guests).

use std::fmt;

use crate::cvm::cpuid::{CPUID_ENTRY_LEN, EAX, FLAGS, FUNCTION, INDEX, entry, word};

/// Most functions one CPUID page holds.
pub const MAX_FUNCTIONS: usize = 64;
/// Size of one function entry.
const FUNCTION_LEN: usize = 48;
/// Size of the header (count, two reserved fields).
const HEADER_LEN: usize = 16;
/// Offset of EAX (then EBX, ECX, EDX) in a function entry.
const OUTPUTS: usize = 24;
/// `kvm_cpuid_entry2.flags` bit: the entry depends on ECX (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
const SIGNIFICANT_INDEX: u32 = 1;
/// XSAVE leaf: its sub-leaves 0 and 1 report sizes for the XCR0 value given as XCR0_IN.
const XSAVE_LEAF: u32 = 0xd;
/// The XSAVE area size for XCR0 = x87 only (legacy area and header), which QEMU puts in EBX of
/// leaf 0xD sub-leaves 0 and 1 with XCR0_IN = 1: guests compute larger sizes themselves.
pub const XSAVE_SIZE_X87: u32 = 0x240;

/// A feature bit SNP firmware refuses in a CPUID page: leaf, sub-leaf (`None`: any), register
/// (word index: [`EAX`] + 0..3), mask.
type Masked = (u32, Option<u32>, usize, u32);

/// The bits QEMU removes from an SNP guest's CPUID (target/i386/sev.c,
/// `sev_snp_mask_cpuid_features`): TSC_DEADLINE (1.ECX\[24\]), TSC_ADJUST (7.0.EBX\[1\]),
/// SPEC_CTRL, STIBP, FLUSH_L1D, ARCH_CAPABILITIES, CORE_CAPABILITY, SSBD (7.0.EDX\[26..31\]) and
/// VIRT_SSBD (8000_0008.EBX\[25\]).
pub const SNP_MASKED: [Masked; 4] = [
    (1, None, EAX + 2, 1 << 24),
    (7, Some(0), EAX + 1, 1 << 1),
    (7, Some(0), EAX + 3, 0xfc00_0000),
    (0x8000_0008, None, EAX + 1, 1 << 25),
];

/// Why no CPUID page could be built.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "KVM reports {0} CPUID entries, but an SNP CPUID page holds at most 64: this launcher does not choose which to drop"
)]
pub struct TooManyFunctions(pub usize);

/// One difference between the CPUID page the launcher gave and the one the firmware accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuidMismatch {
    /// The number of functions differs.
    Count {
        /// Ours.
        provided: u32,
        /// The firmware's.
        expected: u32,
    },
    /// A function's outputs (EAX, EBX, ECX, EDX) differ.
    Function {
        /// EAX_IN.
        leaf: u32,
        /// ECX_IN.
        index: u32,
        /// Ours.
        provided: [u32; 4],
        /// The firmware's.
        expected: [u32; 4],
    },
}

impl fmt::Display for CpuidMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count { provided, expected } => {
                write!(f, "{expected} functions instead of {provided}")
            }
            Self::Function {
                leaf,
                index,
                provided: p,
                expected: e,
            } => write!(
                f,
                "function {leaf:#x} index {index:#x}: eax {:#010x} ebx {:#010x} ecx {:#010x} edx {:#010x} instead of eax {:#010x} ebx {:#010x} ecx {:#010x} edx {:#010x}",
                e[0], e[1], e[2], e[3], p[0], p[1], p[2], p[3]
            ),
        }
    }
}

/// The CPUID an SNP guest's vCPUs get (`KVM_SET_CPUID2`) and its CPUID page is built from:
/// `supported` (`KVM_GET_SUPPORTED_CPUID`) without the [`SNP_MASKED`] bits.
pub fn snp_cpuid(supported: &[[u8; CPUID_ENTRY_LEN]]) -> Vec<[u8; CPUID_ENTRY_LEN]> {
    supported
        .iter()
        .map(|e| {
            let mut w: [u32; 7] = core::array::from_fn(|i| word(e, i));
            for (leaf, sub, reg, mask) in SNP_MASKED {
                if w[FUNCTION] == leaf && sub.is_none_or(|s| s == w[INDEX]) {
                    w[reg] &= !mask;
                }
            }
            entry(w)
        })
        .collect()
}

fn put(page: &mut [u8; 4096], at: usize, bytes: &[u8]) {
    if let Some(dst) = page.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn u32_at(page: &[u8; 4096], at: usize) -> u32 {
    page.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The CPUID page for `entries` (`struct kvm_cpuid_entry2` as 40 bytes each, the way the vCPUs
/// get them with `KVM_SET_CPUID2`): ECX_IN only for entries with a significant index; for leaf
/// 0xD sub-leaves 0 and 1, XCR0_IN = 1, XSS_IN = 0 and EBX = [`XSAVE_SIZE_X87`], as QEMU's
/// `sev_snp_cpuid_info_fill`.
pub fn cpuid_page(entries: &[[u8; CPUID_ENTRY_LEN]]) -> Result<Box<[u8; 4096]>, TooManyFunctions> {
    if entries.len() > MAX_FUNCTIONS {
        return Err(TooManyFunctions(entries.len()));
    }
    let mut page = Box::new([0u8; 4096]);
    put(&mut page, 0, &(entries.len() as u32).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let (function, index, flags) = (word(e, FUNCTION), word(e, INDEX), word(e, FLAGS));
        let ecx_in = if flags & SIGNIFICANT_INDEX != 0 {
            index
        } else {
            0
        };
        let mut outputs: [u32; 4] = core::array::from_fn(|k| word(e, EAX + k));
        let xsave_base = function == XSAVE_LEAF && ecx_in <= 1;
        if xsave_base {
            outputs[1] = XSAVE_SIZE_X87;
        }
        let at = HEADER_LEN + i * FUNCTION_LEN;
        put(&mut page, at, &function.to_le_bytes());
        put(&mut page, at + 4, &ecx_in.to_le_bytes());
        put(&mut page, at + 8, &u64::from(xsave_base).to_le_bytes());
        // XSS_IN stays 0; then EAX, EBX, ECX, EDX.
        for (k, v) in outputs.iter().enumerate() {
            put(&mut page, at + OUTPUTS + k * 4, &v.to_le_bytes());
        }
    }
    Ok(page)
}

/// The differences between the CPUID page `provided` and the page the firmware wrote back,
/// `expected`, as QEMU's `sev_snp_cpuid_report_mismatches` reports them: the count, or each
/// function whose 48 bytes differ.
pub fn mismatches(provided: &[u8; 4096], expected: &[u8; 4096]) -> Vec<CpuidMismatch> {
    let (p, e) = (u32_at(provided, 0), u32_at(expected, 0));
    if p != e {
        return vec![CpuidMismatch::Count {
            provided: p,
            expected: e,
        }];
    }
    (0..(p as usize).min(MAX_FUNCTIONS))
        .filter_map(|i| {
            let at = HEADER_LEN + i * FUNCTION_LEN;
            if provided.get(at..at + FUNCTION_LEN) == expected.get(at..at + FUNCTION_LEN) {
                return None;
            }
            let regs = |page: &[u8; 4096]| -> [u32; 4] {
                core::array::from_fn(|k| u32_at(page, at + OUTPUTS + k * 4))
            };
            Some(CpuidMismatch::Function {
                leaf: u32_at(provided, at),
                index: u32_at(provided, at + 4),
                provided: regs(provided),
                expected: regs(expected),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm_entry(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> [u8; 40] {
        entry([function, index, flags, regs[0], regs[1], regs[2], regs[3]])
    }

    #[test]
    fn functions_are_laid_out_after_the_count() {
        let page = cpuid_page(&[
            kvm_entry(0, 5, 0, [0x10, 1, 2, 3]),
            kvm_entry(7, 1, SIGNIFICANT_INDEX, [4, 5, 6, 7]),
            kvm_entry(0xd, 2, SIGNIFICANT_INDEX, [8, 9, 10, 11]),
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
        assert_eq!(&f(2)[8..16], &[0; 8], "sub-leaf 2 is a component size");
        assert_eq!(&f(2)[28..32], &9u32.to_le_bytes());
        assert!(page[16 + 3 * 48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn xsave_sizes_are_given_for_xcr0_x87_only() {
        let page = cpuid_page(&[
            kvm_entry(0xd, 0, SIGNIFICANT_INDEX, [0x2e7, 0x988, 0x988, 0]),
            kvm_entry(0xd, 1, SIGNIFICANT_INDEX, [0xf, 0x988, 0, 0]),
        ])
        .unwrap();
        for i in 0..2 {
            let f = &page[16 + i * 48..16 + (i + 1) * 48];
            assert_eq!(&f[8..16], &1u64.to_le_bytes(), "XCR0_IN");
            assert_eq!(&f[16..24], &[0; 8], "XSS_IN");
            assert_eq!(&f[28..32], &0x240u32.to_le_bytes(), "EBX");
        }
        assert_eq!(&page[16 + 24..16 + 28], &0x2e7u32.to_le_bytes());
        assert_eq!(&page[16 + 32..16 + 36], &0x988u32.to_le_bytes(), "ECX kept");
    }

    #[test]
    fn snp_cpuid_drops_the_bits_qemu_drops_and_keeps_the_rest() {
        let all = [u32::MAX; 4];
        let out = snp_cpuid(&[
            kvm_entry(1, 0, 0, all),
            kvm_entry(7, 0, SIGNIFICANT_INDEX, all),
            kvm_entry(7, 1, SIGNIFICANT_INDEX, all),
            kvm_entry(0x8000_0008, 0, 0, all),
            kvm_entry(0x8000_0001, 0, 0, all),
        ]);
        let regs = |i: usize| -> [u32; 4] { core::array::from_fn(|k| word(&out[i], EAX + k)) };
        assert_eq!(regs(0), [u32::MAX, u32::MAX, !(1 << 24), u32::MAX]);
        assert_eq!(regs(1), [u32::MAX, !(1 << 1), u32::MAX, 0x03ff_ffff]);
        assert_eq!(regs(2), all, "sub-leaf 1 of leaf 7 untouched");
        assert_eq!(regs(3), [u32::MAX, !(1 << 25), u32::MAX, u32::MAX]);
        assert_eq!(regs(4), all);
        assert_eq!(word(&out[1], FLAGS), SIGNIFICANT_INDEX);
    }

    #[test]
    fn mismatches_name_each_differing_function_or_the_count() {
        let ours = cpuid_page(&[
            kvm_entry(1, 0, 0, [1, 2, 3, 4]),
            kvm_entry(7, 0, SIGNIFICANT_INDEX, [5, 6, 7, 8]),
        ])
        .unwrap();
        let mut theirs = ours.clone();
        theirs[16 + 48 + 36..16 + 48 + 40].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            mismatches(&ours, &theirs),
            vec![CpuidMismatch::Function {
                leaf: 7,
                index: 0,
                provided: [5, 6, 7, 8],
                expected: [5, 6, 7, 0],
            }]
        );
        assert!(mismatches(&ours, &ours).is_empty());
        theirs[0] = 1;
        assert_eq!(
            mismatches(&ours, &theirs),
            vec![CpuidMismatch::Count {
                provided: 2,
                expected: 1
            }]
        );
        let text = CpuidMismatch::Function {
            leaf: 7,
            index: 0,
            provided: [5, 6, 7, 8],
            expected: [5, 6, 7, 0],
        }
        .to_string();
        assert!(
            text.contains("function 0x7 index 0x0") && text.contains("edx 0x00000000 instead of"),
            "{text}"
        );
    }

    #[test]
    fn more_than_64_functions_are_refused() {
        let many = vec![kvm_entry(1, 0, 0, [0; 4]); 65];
        assert_eq!(cpuid_page(&many).unwrap_err(), TooManyFunctions(65));
        assert!(cpuid_page(&many[..64]).is_ok());
    }
}
