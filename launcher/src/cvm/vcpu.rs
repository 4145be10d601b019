//! The vCPU ioctls a confidential launch issues, over a small trait ([`VcpuOps`]: real vCPU fds in
//! [`crate::kvm::confidential`], the KVM model in tests), and the register state that makes KVM
//! build a given SNP VMSA page ([`VcpuState::from_vmsa`]).
//!
//! At SNP_LAUNCH_FINISH KVM builds each vCPU's VMSA from the state userspace gave the vCPU (Linux
//! arch/x86/kvm/svm/sev.c, `sev_es_sync_vmsa`): it copies the VMCB save area (segments in the
//! VMCB's packed attribute form as `svm_set_segment` stores them, descriptor tables, CR0/3/4 and
//! EFER as `svm_set_cr0`/`svm_set_cr4`/`svm_set_efer`/`sev_post_set_cr3` store them, RFLAGS, DR7,
//! the PAT MSR as G_PAT), then the GPRs and RIP, XCR0, PKRU, XSS, DR6 and the guest FPU state
//! (x87 and SSE registers, MXCSR). So the launcher sets every one of those from the VMSA page the
//! plan measured, and the page KVM builds is that page. What KVM adds by itself is left out of
//! what is set: EFER.SVME (`svm_set_efer`), CR4.MCE (the host's, `svm_set_cr4`), SEV_FEATURES
//! (KVM_SEV_INIT2); DR6, DR7, CR2 and the YMM upper halves keep KVM's reset values, which are the
//! plan's.

use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

use super::OpsError;
use super::cpuid::CPUID_ENTRY_LEN;
use crate::snp::digest::PAGE_SIZE;
use crate::snp::vmsa::offset::*;
use crate::snp::vmsa::{Segment, u16_at, u32_at, u64_at};

/// `MSR_IA32_CR_PAT`: KVM copies it into the VMCB's G_PAT (`svm_set_msr`).
pub const MSR_IA32_CR_PAT: u32 = 0x277;
/// EFER.SVME, which KVM sets in the VMCB itself.
pub const EFER_SVME: u64 = 1 << 12;
/// CR4.MCE, which KVM takes from the host (`svm_set_cr4`).
pub const CR4_MCE: u64 = 1 << 6;

/// The vCPU ioctls of [`VcpuOps`], as recorded in tests ([`super::Target::Vcpu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum VcpuIoctl {
    /// `KVM_SET_CPUID2`.
    SetCpuid = 1,
    /// `KVM_GET_SREGS`.
    GetSregs,
    /// `KVM_SET_SREGS`.
    SetSregs,
    /// `KVM_SET_REGS`.
    SetRegs,
    /// `KVM_SET_FPU`.
    SetFpu,
    /// `KVM_SET_XCRS` (XCR0).
    SetXcr0,
    /// `KVM_SET_MSRS` (one MSR).
    SetMsr,
}

/// The vCPU ioctls of a launch, on vCPU `vcpu` (its index).
pub trait VcpuOps {
    /// `KVM_SET_CPUID2` with `entries` (`kvm_cpuid_entry2` bytes).
    fn set_cpuid(&mut self, vcpu: u32, entries: &[[u8; CPUID_ENTRY_LEN]]) -> Result<(), OpsError>;
    /// `KVM_GET_SREGS`.
    fn get_sregs(&mut self, vcpu: u32) -> Result<kvm_sregs, OpsError>;
    /// `KVM_SET_SREGS`.
    fn set_sregs(&mut self, vcpu: u32, sregs: &kvm_sregs) -> Result<(), OpsError>;
    /// `KVM_SET_REGS`.
    fn set_regs(&mut self, vcpu: u32, regs: &kvm_regs) -> Result<(), OpsError>;
    /// `KVM_SET_FPU`.
    fn set_fpu(&mut self, vcpu: u32, fpu: &kvm_fpu) -> Result<(), OpsError>;
    /// `KVM_SET_XCRS` with XCR0 only.
    fn set_xcr0(&mut self, vcpu: u32, xcr0: u64) -> Result<(), OpsError>;
    /// `KVM_SET_MSRS` with one MSR.
    fn set_msr(&mut self, vcpu: u32, index: u32, value: u64) -> Result<(), OpsError>;
}

/// What a vCPU is given so that KVM builds a given VMSA page from it.
#[derive(Clone, Copy, Debug)]
pub struct VcpuState {
    /// Segments, descriptor tables, control registers, EFER.
    pub sregs: kvm_sregs,
    /// GPRs, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// x87 and SSE state.
    pub fpu: kvm_fpu,
    /// XCR0.
    pub xcr0: u64,
    /// The PAT MSR.
    pub pat: u64,
}

/// The `kvm_segment` that `svm_set_segment` (arch/x86/kvm/svm/svm.c) stores as `s`: it packs
/// type, S, DPL, P (present and usable), AVL, L, DB and G into the VMCB attribute word.
pub fn kvm_segment_of(s: &Segment) -> kvm_segment {
    let bit = |n: u16| u8::from((s.attrib >> n) & 1 == 1);
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (s.attrib & 0xf) as u8,
        present: bit(7),
        dpl: ((s.attrib >> 5) & 3) as u8,
        db: bit(10),
        s: bit(4),
        l: bit(9),
        g: bit(11),
        avl: bit(8),
        unusable: 1 - bit(7),
        padding: 0,
    }
}

fn dtable(page: &[u8; PAGE_SIZE], at: usize) -> kvm_dtable {
    let s = Segment::read(page, at);
    kvm_dtable {
        base: s.base,
        limit: s.limit as u16,
        padding: [0; 3],
    }
}

impl VcpuState {
    /// The state that makes KVM build `page` (see the module documentation); what the VMSA does
    /// not hold (CR2, CR8, APIC base, pending interrupts) comes from `current`, the vCPU's
    /// `KVM_GET_SREGS`.
    pub fn from_vmsa(page: &[u8; PAGE_SIZE], current: &kvm_sregs) -> Self {
        let seg = |at| kvm_segment_of(&Segment::read(page, at));
        let sregs = kvm_sregs {
            cs: seg(CS),
            ds: seg(DS),
            es: seg(ES),
            fs: seg(FS),
            gs: seg(GS),
            ss: seg(SS),
            tr: seg(TR),
            ldt: seg(LDTR),
            gdt: dtable(page, GDTR),
            idt: dtable(page, IDTR),
            cr0: u64_at(page, CR0),
            cr3: u64_at(page, CR3),
            cr4: u64_at(page, CR4) & !CR4_MCE,
            efer: u64_at(page, EFER) & !EFER_SVME,
            ..*current
        };
        let r = |i: usize| u64_at(page, R8 + 8 * i);
        let regs = kvm_regs {
            rax: u64_at(page, RAX),
            rbx: u64_at(page, RBX),
            rcx: u64_at(page, RCX),
            rdx: u64_at(page, RDX),
            rsi: u64_at(page, RSI),
            rdi: u64_at(page, RDI),
            rsp: u64_at(page, RSP),
            rbp: u64_at(page, RBP),
            r8: r(0),
            r9: r(1),
            r10: r(2),
            r11: r(3),
            r12: r(4),
            r13: r(5),
            r14: r(6),
            r15: r(7),
            rip: u64_at(page, RIP),
            rflags: u64_at(page, RFLAGS),
        };
        let mut fpu = kvm_fpu {
            fcw: u16_at(page, X87_FCW),
            fsw: u16_at(page, X87_FSW),
            ftwx: u16_at(page, X87_FTW) as u8,
            last_opcode: u16_at(page, X87_FOP),
            last_ip: u64_at(page, X87_RIP),
            last_dp: u64_at(page, X87_DP),
            mxcsr: u32_at(page, MXCSR),
            ..kvm_fpu::default()
        };
        // The VMSA keeps bytes 0-7 of each x87 register together, then bytes 8-9 of each.
        for (i, st) in fpu.fpr.iter_mut().enumerate() {
            let low = FPREG_X87 + i * 8;
            let high = FPREG_X87 + 64 + i * 2;
            st[..8].copy_from_slice(&page[low..low + 8]);
            st[8..10].copy_from_slice(&page[high..high + 2]);
        }
        for (i, xmm) in fpu.xmm.iter_mut().enumerate() {
            let at = FPREG_XMM + i * 16;
            xmm.copy_from_slice(&page[at..at + 16]);
        }
        Self {
            sregs,
            regs,
            fpu,
            xcr0: u64_at(page, XCR0),
            pat: u64_at(page, G_PAT),
        }
    }
}

/// Gives vCPU `vcpu` the state of the VMSA page `page` (its CPUID must already be set: KVM checks
/// XCR0 and the PAT against it).
pub fn set_from_vmsa(
    ops: &mut dyn VcpuOps,
    vcpu: u32,
    page: &[u8; PAGE_SIZE],
) -> Result<(), OpsError> {
    let current = ops.get_sregs(vcpu)?;
    let s = VcpuState::from_vmsa(page, &current);
    ops.set_sregs(vcpu, &s.sregs)?;
    ops.set_regs(vcpu, &s.regs)?;
    ops.set_fpu(vcpu, &s.fpu)?;
    ops.set_xcr0(vcpu, s.xcr0)?;
    ops.set_msr(vcpu, MSR_IA32_CR_PAT, s.pat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::vmsa::{self, BSP_RESET_EIP, VmmType, VmsaParams};

    #[test]
    fn segment_attributes_unpack_into_the_fields_svm_set_segment_packs() {
        let cs = kvm_segment_of(&Segment {
            selector: 0x10,
            attrib: 0xa9b,
            limit: 0xffff_ffff,
            base: 0,
        });
        assert_eq!((cs.type_, cs.s, cs.dpl, cs.present), (0xb, 1, 0, 1));
        assert_eq!((cs.avl, cs.l, cs.db, cs.g, cs.unusable), (0, 1, 0, 1, 0));
        let absent = kvm_segment_of(&Segment::default());
        assert_eq!((absent.present, absent.unusable), (0, 1));
    }

    #[test]
    fn the_state_of_a_reset_vmsa_leaves_out_what_kvm_adds() {
        let page = vmsa::build(&VmsaParams {
            eip: BSP_RESET_EIP,
            sev_features: 1,
            cpu_signature: 0xa0_0f11,
            vmm: VmmType::Qemu,
        });
        let current = kvm_sregs {
            apic_base: 0xfee0_0900,
            ..kvm_sregs::default()
        };
        let s = VcpuState::from_vmsa(&page, &current);
        assert_eq!(
            (s.sregs.cs.selector, s.sregs.cs.base, s.sregs.cs.type_),
            (0xf000, 0xffff_0000, 0xb)
        );
        assert_eq!((s.sregs.efer, s.sregs.cr4, s.sregs.cr0), (0, 0, 0x10));
        assert_eq!(s.sregs.apic_base, 0xfee0_0900, "kept from the vCPU");
        assert_eq!(
            (s.regs.rip, s.regs.rdx, s.regs.rflags),
            (0xfff0, 0xa0_0f11, 2)
        );
        assert_eq!((s.fpu.fcw, s.fpu.mxcsr, s.xcr0), (0x37f, 0x1f80, 1));
        assert_eq!(s.pat, 0x0007_0406_0007_0406);
    }
}
