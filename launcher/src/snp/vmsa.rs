//! Initial VMSA pages (the encrypted vCPU save area of an SEV-ES/SNP guest, AMD APM Vol. 2 Table B-4
//! "VMSA Layout, State Save Area for SEV-ES") as KVM builds them from the reset state, per VMM.

use super::digest::PAGE_SIZE;

/// Which VMM's reset state to reproduce: QEMU, AWS EC2 and Google GCE differ in a few registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmmType {
    /// QEMU/KVM (also this launcher).
    Qemu,
    /// AWS EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl VmmType {
    /// Parses `qemu`, `ec2` or `gce` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "qemu" => Some(Self::Qemu),
            "ec2" => Some(Self::Ec2),
            "gce" => Some(Self::Gce),
            _ => None,
        }
    }

    /// The lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Ec2 => "ec2",
            Self::Gce => "gce",
        }
    }
}

/// Reset address of the bootstrap processor.
pub const BSP_RESET_EIP: u32 = 0xffff_fff0;

/// Offsets in the save area (AMD APM Vol. 2 Table B-4; Linux `struct sev_es_save_area`,
/// arch/x86/include/asm/svm.h, whose first 744 bytes share their offsets with the VMCB's
/// `struct vmcb_save_area`).
pub mod offset {
    #![allow(missing_docs)]
    // Segments: selector u16, attributes u16 (packed, APM §15.5.1), limit u32, base u64.
    pub const ES: usize = 0x000;
    pub const CS: usize = 0x010;
    pub const SS: usize = 0x020;
    pub const DS: usize = 0x030;
    pub const FS: usize = 0x040;
    pub const GS: usize = 0x050;
    pub const GDTR: usize = 0x060;
    pub const LDTR: usize = 0x070;
    pub const IDTR: usize = 0x080;
    pub const TR: usize = 0x090;
    pub const CPL: usize = 0x0cb;
    pub const EFER: usize = 0x0d0;
    pub const XSS: usize = 0x140;
    pub const CR4: usize = 0x148;
    pub const CR3: usize = 0x150;
    pub const CR0: usize = 0x158;
    pub const DR7: usize = 0x160;
    pub const DR6: usize = 0x168;
    pub const RFLAGS: usize = 0x170;
    pub const RIP: usize = 0x178;
    pub const RSP: usize = 0x1d8;
    pub const RAX: usize = 0x1f8;
    pub const CR2: usize = 0x240;
    pub const G_PAT: usize = 0x268;
    pub const PKRU: usize = 0x2e8;
    pub const RCX: usize = 0x308;
    pub const RDX: usize = 0x310;
    pub const RBX: usize = 0x318;
    pub const RBP: usize = 0x328;
    pub const RSI: usize = 0x330;
    pub const RDI: usize = 0x338;
    /// R8; R9..R15 follow, 8 bytes apart.
    pub const R8: usize = 0x340;
    pub const SEV_FEATURES: usize = 0x3b0;
    pub const XCR0: usize = 0x3e8;
    pub const X87_DP: usize = 0x400;
    pub const MXCSR: usize = 0x408;
    pub const X87_FTW: usize = 0x40c;
    pub const X87_FSW: usize = 0x40e;
    pub const X87_FCW: usize = 0x410;
    pub const X87_FOP: usize = 0x412;
    pub const X87_DS: usize = 0x414;
    pub const X87_CS: usize = 0x416;
    pub const X87_RIP: usize = 0x418;
    /// ST0..ST7: bytes 0–7 of each register, 8 bytes apart, then bytes 8–9 of each at +64.
    pub const FPREG_X87: usize = 0x420;
    /// XMM0..XMM15, 16 bytes each.
    pub const FPREG_XMM: usize = 0x470;
    /// The upper halves of YMM0..YMM15, 16 bytes each.
    pub const FPREG_YMM: usize = 0x570;
    /// End of the architectural save area (`sizeof(struct sev_es_save_area)`).
    pub const END: usize = 0x670;
    /// Size of the VMCB save area copied into the VMSA (`sizeof(struct vmcb_save_area)`).
    pub const VMCB_SAVE_LEN: usize = 0x2e8;
}
use offset::*;

/// A segment register of the save area (the VMCB's `struct vmcb_seg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes in the VMCB's packed form: type `[3:0]`, S `[4]`, DPL `[6:5]`, P `[7]`,
    /// AVL `[8]`, L `[9]`, DB `[10]`, G `[11]`.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

impl Segment {
    /// The segment at `at` of `page`.
    pub fn read(page: &[u8; PAGE_SIZE], at: usize) -> Self {
        Self {
            selector: u16_at(page, at),
            attrib: u16_at(page, at + 2),
            limit: u32_at(page, at + 4),
            base: u64_at(page, at + 8),
        }
    }

    /// Writes the segment at `at` of `page`.
    pub fn write(&self, page: &mut [u8; PAGE_SIZE], at: usize) {
        page[at..at + 2].copy_from_slice(&self.selector.to_le_bytes());
        page[at + 2..at + 4].copy_from_slice(&self.attrib.to_le_bytes());
        page[at + 4..at + 8].copy_from_slice(&self.limit.to_le_bytes());
        page[at + 8..at + 16].copy_from_slice(&self.base.to_le_bytes());
    }
}

/// The little-endian `u64` at `at` of `page` (0 past its end).
pub fn u64_at(page: &[u8; PAGE_SIZE], at: usize) -> u64 {
    page.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The little-endian `u32` at `at` of `page` (0 past its end).
pub fn u32_at(page: &[u8; PAGE_SIZE], at: usize) -> u32 {
    page.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The little-endian `u16` at `at` of `page` (0 past its end).
pub fn u16_at(page: &[u8; PAGE_SIZE], at: usize) -> u16 {
    page.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

/// The register values that make up one initial VMSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmsaParams {
    /// Reset address: `CS.base = eip & 0xffff0000`, `RIP = eip & 0xffff`.
    pub eip: u32,
    /// SEV_FEATURES (guest features; bit 0 SNPActive).
    pub sev_features: u64,
    /// CPUID signature of the guest CPU (RDX at reset) for QEMU.
    pub cpu_signature: u32,
    /// Whose reset state.
    pub vmm: VmmType,
}

fn put_seg(
    page: &mut [u8; PAGE_SIZE],
    at: usize,
    selector: u16,
    attrib: u16,
    limit: u32,
    base: u64,
) {
    Segment {
        selector,
        attrib,
        limit,
        base,
    }
    .write(page, at);
}

fn put_u64(page: &mut [u8; PAGE_SIZE], at: usize, v: u64) {
    page[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Builds the 4 KiB initial VMSA page for `p`.
pub fn build(p: &VmsaParams) -> Box<[u8; PAGE_SIZE]> {
    let (cs_attr, ss_attr, tr_attr, rdx, mxcsr, fcw, g_pat) = match p.vmm {
        VmmType::Qemu => (
            0x9b,
            0x93,
            0x8b,
            u64::from(p.cpu_signature),
            0x1f80u32,
            0x37fu16,
            0x0007_0406_0007_0406u64,
        ),
        VmmType::Ec2 => {
            let cs = if p.eip == BSP_RESET_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, 0x600, 0, 0, 0x0007_0406_0007_0406)
        }
        VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
    };
    let mut page = Box::new([0u8; PAGE_SIZE]);
    let pg = &mut *page;
    put_seg(pg, ES, 0, 0x93, 0xffff, 0);
    put_seg(
        pg,
        CS,
        0xf000,
        cs_attr,
        0xffff,
        u64::from(p.eip & 0xffff_0000),
    );
    put_seg(pg, SS, 0, ss_attr, 0xffff, 0);
    put_seg(pg, DS, 0, 0x93, 0xffff, 0);
    put_seg(pg, FS, 0, 0x93, 0xffff, 0);
    put_seg(pg, GS, 0, 0x93, 0xffff, 0);
    put_seg(pg, GDTR, 0, 0, 0xffff, 0);
    put_seg(pg, LDTR, 0, 0x82, 0xffff, 0);
    put_seg(pg, IDTR, 0, 0, 0xffff, 0);
    put_seg(pg, TR, 0, tr_attr, 0xffff, 0);
    put_u64(pg, EFER, 0x1000); // EFER.SVME, set by KVM
    put_u64(pg, CR4, 0x40); // CR4.MCE, set by KVM
    put_u64(pg, CR0, 0x10); // CR0.ET
    put_u64(pg, DR7, 0x400);
    put_u64(pg, DR6, 0xffff_0ff0);
    put_u64(pg, RFLAGS, 0x2);
    put_u64(pg, RIP, u64::from(p.eip & 0xffff));
    put_u64(pg, G_PAT, g_pat);
    put_u64(pg, RDX, rdx);
    put_u64(pg, SEV_FEATURES, p.sev_features);
    put_u64(pg, XCR0, 0x1);
    pg[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    pg[X87_FCW..X87_FCW + 2].copy_from_slice(&fcw.to_le_bytes());
    page
}

/// The 64-bit entry state of a directly booted kernel (Linux boot protocol, "64-bit Boot
/// Protocol"): long mode with paging, flat segments from the loader's GDT, interrupts off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongModeEntry {
    /// Entry point.
    pub rip: u64,
    /// RSI (the zero page's address for Linux).
    pub rsi: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// CR3: the identity-mapping PML4.
    pub cr3: u64,
    /// GDT base.
    pub gdt_base: u64,
    /// GDT limit (size − 1).
    pub gdt_limit: u16,
    /// Code selector (L=1 descriptor).
    pub cs: u16,
    /// Data selector for DS, ES, SS (FS and GS too).
    pub ds: u16,
    /// TSS selector.
    pub tr: u16,
}

/// CR0 of [`LongModeEntry`]: PE, ET, PG.
pub const LONG_MODE_CR0: u64 = 0x8000_0011;
/// CR4 of [`LongModeEntry`]: PAE.
pub const LONG_MODE_CR4: u64 = 0x20;
/// EFER of [`LongModeEntry`]: LME, LMA.
pub const LONG_MODE_EFER: u64 = 0x500;

/// The VMSA page of a vCPU that starts at `e` (the reset-state page of [`build`] with the
/// long-mode registers in place; segment attributes in the VMCB's packed form, APM Vol. 2 §15.5.1).
pub fn build_long_mode(e: &LongModeEntry, sev_features: u64, vmm: VmmType) -> Box<[u8; PAGE_SIZE]> {
    let mut page = build(&VmsaParams {
        eip: 0,
        sev_features,
        cpu_signature: 0,
        vmm,
    });
    let pg = &mut *page;
    // Code: type 0xb, S, P, L, G. Data: type 0x3, S, P, DB, G. TSS: busy 64-bit TSS, P.
    put_seg(pg, CS, e.cs, 0xa9b, 0xffff_ffff, 0);
    for at in [ES, SS, DS, FS, GS] {
        put_seg(pg, at, e.ds, 0xc93, 0xffff_ffff, 0);
    }
    put_seg(pg, GDTR, 0, 0, u32::from(e.gdt_limit), e.gdt_base);
    put_seg(pg, TR, e.tr, 0x8b, 0xfffff, 0);
    put_u64(pg, EFER, LONG_MODE_EFER | 0x1000);
    put_u64(pg, CR4, LONG_MODE_CR4 | 0x40);
    put_u64(pg, CR3, e.cr3);
    put_u64(pg, CR0, LONG_MODE_CR0);
    put_u64(pg, RIP, e.rip);
    put_u64(pg, RSP, e.rsp);
    put_u64(pg, RSI, e.rsi);
    put_u64(pg, RDX, 0);
    page
}

/// RDX of a VMSA page built by [`build`] (what a plain-KVM vCPU gets so that it starts like the
/// measured VMSA).
pub fn rdx(page: &[u8; PAGE_SIZE]) -> u64 {
    u64_at(page, RDX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsp_reset_state_for_qemu() {
        let p = build(&VmsaParams {
            eip: BSP_RESET_EIP,
            sev_features: 1,
            cpu_signature: 0x800f12,
            vmm: VmmType::Qemu,
        });
        assert_eq!(
            &p[CS..CS + 16],
            &[
                0x00, 0xf0, 0x9b, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0
            ]
        );
        assert_eq!(&p[RIP..RIP + 8], &0xfff0u64.to_le_bytes());
        assert_eq!(&p[RDX..RDX + 8], &0x800f12u64.to_le_bytes());
        assert_eq!(p[SEV_FEATURES], 1);
    }

    #[test]
    fn ec2_uses_a_non_accessed_code_segment_only_for_the_bsp() {
        let mk = |eip| {
            build(&VmsaParams {
                eip,
                sev_features: 1,
                cpu_signature: 0,
                vmm: VmmType::Ec2,
            })
        };
        assert_eq!(mk(BSP_RESET_EIP)[CS + 2], 0x9a);
        assert_eq!(mk(0xffff_e004)[CS + 2], 0x9b);
    }
}
