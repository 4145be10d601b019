//! Guest CPU types and their CPUID signature (CPUID Fn0000_0001_EAX), which QEMU puts in RDX of
//! every initial VMSA. Family/model/stepping are QEMU's `builtin_x86_defs` values.

/// A guest CPU model by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuType {
    /// QEMU's name for the model.
    pub name: &'static str,
    /// Family.
    pub family: u32,
    /// Model.
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
}

/// The CPU types `--cpu-type` accepts.
pub const CPU_TYPES: &[CpuType] = &[
    CpuType::new("EPYC", 23, 1, 2),
    CpuType::new("EPYC-v1", 23, 1, 2),
    CpuType::new("EPYC-v2", 23, 1, 2),
    CpuType::new("EPYC-IBPB", 23, 1, 2),
    CpuType::new("EPYC-v3", 23, 1, 2),
    CpuType::new("EPYC-v4", 23, 1, 2),
    CpuType::new("EPYC-Rome", 23, 49, 0),
    CpuType::new("EPYC-Rome-v1", 23, 49, 0),
    CpuType::new("EPYC-Rome-v2", 23, 49, 0),
    CpuType::new("EPYC-Rome-v3", 23, 49, 0),
    CpuType::new("EPYC-Milan", 25, 1, 1),
    CpuType::new("EPYC-Milan-v1", 25, 1, 1),
    CpuType::new("EPYC-Milan-v2", 25, 1, 1),
    CpuType::new("EPYC-Genoa", 25, 17, 0),
    CpuType::new("EPYC-Genoa-v1", 25, 17, 0),
    CpuType::new("EPYC-Turin", 26, 0, 0),
];

impl CpuType {
    /// A CPU type.
    pub const fn new(name: &'static str, family: u32, model: u32, stepping: u32) -> Self {
        Self {
            name,
            family,
            model,
            stepping,
        }
    }

    /// Looks a type up by its QEMU name (exact match).
    pub fn by_name(name: &str) -> Option<Self> {
        CPU_TYPES.iter().copied().find(|c| c.name == name)
    }

    /// The CPUID Fn0000_0001_EAX signature (AMD CPUID Specification #25481: extended family
    /// `[27:20]` holds family − 0xF when family > 0xF; extended model `[19:16]`, base family `[11:8]`,
    /// base model `[7:4]`, stepping `[3:0]`).
    pub const fn signature(&self) -> u32 {
        let (fam_lo, fam_hi) = if self.family > 0xf {
            (0xf, (self.family - 0xf) & 0xff)
        } else {
            (self.family, 0)
        };
        (fam_hi << 20)
            | (((self.model >> 4) & 0xf) << 16)
            | (fam_lo << 8)
            | ((self.model & 0xf) << 4)
            | (self.stepping & 0xf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_known_processors() {
        assert_eq!(
            CpuType::by_name("EPYC-v4").unwrap().signature(),
            0x0080_0f12
        );
        assert_eq!(
            CpuType::by_name("EPYC-Milan").unwrap().signature(),
            0x00a0_0f11
        );
        assert_eq!(
            CpuType::by_name("EPYC-Genoa").unwrap().signature(),
            0x00a1_0f10
        );
        assert!(CpuType::by_name("epyc").is_none());
    }
}
