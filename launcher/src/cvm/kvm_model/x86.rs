//! The model's x86 vCPU: the state KVM keeps for a vCPU before its guest runs, written from Linux's
//! arch/x86/kvm (`kvm_vcpu_reset` and `__set_sregs_common`/`__get_sregs_common`/`__set_regs` in
//! x86.c; `init_vmcb`, `svm_vcpu_reset`, `svm_get_segment`, `svm_set_segment`, `svm_set_cr0`,
//! `svm_set_cr4`, `svm_set_efer`, `sev_post_set_cr3`, `svm_set_msr` in svm/svm.c;
//! `kvm_apic_set_base` in lapic.c; `kvm_arch_vcpu_ioctl_set_fpu` and `__kvm_set_xcr` in x86.c;
//! `sev_es_sync_vmsa` in svm/sev.c), independently of the launcher's own conversion.
//!
//! The VMCB save area is kept as bytes at the offsets `struct vmcb_save_area` shares with
//! `struct sev_es_save_area` (arch/x86/include/asm/svm.h), because `sev_es_sync_vmsa` starts the
//! VMSA as a copy of it.

use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

use crate::cvm::cpuid::{CPUID_ENTRY_LEN, EAX, FLAGS, FUNCTION, INDEX, word};
use crate::snp::vmsa::offset::*;
use crate::snp::vmsa::{Segment, u64_at};

pub(super) const EINVAL: i32 = 22;

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR4_PAE: u64 = 1 << 5;
const CR4_MCE: u64 = 1 << 6;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_SVME: u64 = 1 << 12;
const DR7_FIXED_1: u64 = 0x400;
const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
const MSR_IA32_CR_PAT: u32 = 0x277;
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
const APIC_DEFAULT_PHYS_BASE: u64 = 0xfee0_0000;
const APIC_BSP: u64 = 1 << 8;
const APIC_X2APIC_ENABLE: u64 = 1 << 10;
const APIC_ENABLE: u64 = 1 << 11;

/// Which segment register (`VCPU_SREG_*`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sreg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl Sreg {
    const fn at(self) -> usize {
        match self {
            Self::Es => ES,
            Self::Cs => CS,
            Self::Ss => SS,
            Self::Ds => DS,
            Self::Fs => FS,
            Self::Gs => GS,
            Self::Ldtr => LDTR,
            Self::Tr => TR,
        }
    }
}

/// `struct fxregs_state` fields `KVM_SET_FPU` writes.
#[derive(Clone)]
struct Fxregs {
    cwd: u16,
    swd: u16,
    twd: u16,
    fop: u16,
    rip: u64,
    rdp: u64,
    mxcsr: u32,
    st: [u8; 128],
    xmm: [u8; 256],
}

/// One vCPU as KVM holds it.
#[derive(Clone)]
pub(crate) struct Vcpu {
    /// The VMCB save area.
    vmcb: [u8; 4096],
    /// `vcpu->arch.regs` in `VCPU_REGS_*` order: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
    regs: [u64; 16],
    rip: u64,
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    xcr0: u64,
    pkru: u32,
    xss: u64,
    dr6: u64,
    apic_base: u64,
    fx: Fxregs,
    /// What `KVM_SET_CPUID2` gave.
    pub(crate) cpuid: Vec<[u8; CPUID_ENTRY_LEN]>,
}

fn pack(var: &kvm_segment) -> u16 {
    // svm_set_segment: type, S, DPL, P (present and usable), AVL, L, DB, G.
    let present = var.present & 1 == 1 && var.unusable == 0;
    u16::from(var.type_ & 0xf)
        | u16::from(var.s & 1) << 4
        | u16::from(var.dpl & 3) << 5
        | u16::from(present) << 7
        | u16::from(var.avl & 1) << 8
        | u16::from(var.l & 1) << 9
        | u16::from(var.db & 1) << 10
        | u16::from(var.g & 1) << 11
}

impl Vcpu {
    /// KVM_CREATE_VCPU → `kvm_vcpu_reset(vcpu, false)` → `svm_vcpu_reset` → `init_vmcb`.
    pub(crate) fn new(id: u32) -> Self {
        let mut v = Self {
            vmcb: [0; 4096],
            regs: [0; 16],
            rip: 0xfff0,
            cr0: 0x6000_0010,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            xcr0: 1,
            pkru: 0,
            xss: 0,
            dr6: DR6_ACTIVE_LOW,
            apic_base: APIC_DEFAULT_PHYS_BASE | APIC_ENABLE | if id == 0 { APIC_BSP } else { 0 },
            // fpstate_init_fxstate.
            fx: Fxregs {
                cwd: 0x37f,
                swd: 0,
                twd: 0,
                fop: 0,
                rip: 0,
                rdp: 0,
                mxcsr: 0x1f80,
                st: [0; 128],
                xmm: [0; 256],
            },
            cpuid: Vec::new(),
        };
        // init_seg / init_sys_seg / the CS of init_vmcb.
        let seg = |selector, attrib, base| Segment {
            selector,
            attrib,
            limit: 0xffff,
            base,
        };
        for at in [ES, SS, DS, FS, GS] {
            seg(0, 0x92, 0).write(&mut v.vmcb, at);
        }
        seg(0xf000, 0x9a, 0xffff_0000).write(&mut v.vmcb, CS);
        seg(0, 0, 0).write(&mut v.vmcb, GDTR);
        seg(0, 0, 0).write(&mut v.vmcb, IDTR);
        seg(0, 0x82, 0).write(&mut v.vmcb, LDTR);
        seg(0, 0x83, 0).write(&mut v.vmcb, TR);
        v.put(G_PAT, PAT_DEFAULT);
        v.put(DR7, DR7_FIXED_1);
        v.put(DR6, DR6_ACTIVE_LOW);
        v.put(RFLAGS, 2);
        v.put(RIP, 0xfff0);
        v.svm_set_efer(0);
        v.svm_set_cr0(0x6000_0010);
        v.svm_set_cr4(0);
        // kvm_vcpu_reset: RDX = CPUID.1.EAX, or 0x600 before any CPUID is set.
        v.regs[2] = 0x600;
        v
    }

    fn put(&mut self, at: usize, value: u64) {
        self.vmcb[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Register `reg` (0 = EAX) of the vCPU's CPUID entry for `leaf`/`index`
    /// (`kvm_find_cpuid_entry_index`: the index counts only for significant-index entries).
    fn cpuid_reg(&self, leaf: u32, index: u32, reg: usize) -> u32 {
        self.cpuid
            .iter()
            .find(|e| {
                word(e, FUNCTION) == leaf && (word(e, FLAGS) & 1 == 0 || word(e, INDEX) == index)
            })
            .map_or(0, |e| word(e, EAX + reg))
    }

    fn svm_set_efer(&mut self, efer: u64) {
        self.efer = efer;
        self.put(EFER, efer | EFER_SVME);
    }

    fn svm_set_cr0(&mut self, cr0: u64) {
        if self.efer & EFER_LME != 0 && self.cr0 & CR0_PG == 0 && cr0 & CR0_PG != 0 {
            self.efer |= EFER_LMA;
            let e = u64_at(&self.vmcb, EFER) | EFER_LMA | EFER_LME;
            self.put(EFER, e);
        }
        self.cr0 = cr0;
        // KVM_X86_QUIRK_CD_NW_CLEARED (enabled by default).
        self.put(CR0, cr0 & !(CR0_CD | CR0_NW));
    }

    fn svm_set_cr4(&mut self, cr4: u64) {
        self.cr4 = cr4;
        // The host's CR4.MCE (set on every SEV host).
        self.put(CR4, cr4 | CR4_MCE);
    }

    fn get_segment(&self, which: Sreg) -> kvm_segment {
        let s = Segment::read(&self.vmcb, which.at());
        let a = s.attrib;
        let mut var = kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: (a & 0xf) as u8,
            s: ((a >> 4) & 1) as u8,
            dpl: ((a >> 5) & 3) as u8,
            present: ((a >> 7) & 1) as u8,
            avl: ((a >> 8) & 1) as u8,
            l: ((a >> 9) & 1) as u8,
            db: ((a >> 10) & 1) as u8,
            g: u8::from(s.limit > 0xfffff),
            unusable: 0,
            padding: 0,
        };
        var.unusable = 1 - var.present;
        match which {
            Sreg::Tr => var.type_ |= 0x2,
            Sreg::Ds | Sreg::Es | Sreg::Fs | Sreg::Gs if var.unusable == 0 => var.type_ |= 0x1,
            Sreg::Ss => {
                if var.unusable == 1 {
                    var.db = 0;
                }
                var.dpl = self.vmcb[CPL];
            }
            _ => {}
        }
        var
    }

    fn set_segment(&mut self, var: &kvm_segment, which: Sreg) {
        Segment {
            selector: var.selector,
            attrib: pack(var),
            limit: var.limit,
            base: var.base,
        }
        .write(&mut self.vmcb, which.at());
        if which == Sreg::Ss {
            self.vmcb[CPL] = var.dpl & 3;
        }
    }

    /// KVM_GET_SREGS.
    pub(crate) fn get_sregs(&self) -> kvm_sregs {
        let dt = |at| {
            let s = Segment::read(&self.vmcb, at);
            kvm_dtable {
                base: s.base,
                limit: s.limit as u16,
                padding: [0; 3],
            }
        };
        kvm_sregs {
            cs: self.get_segment(Sreg::Cs),
            ds: self.get_segment(Sreg::Ds),
            es: self.get_segment(Sreg::Es),
            fs: self.get_segment(Sreg::Fs),
            gs: self.get_segment(Sreg::Gs),
            ss: self.get_segment(Sreg::Ss),
            tr: self.get_segment(Sreg::Tr),
            ldt: self.get_segment(Sreg::Ldtr),
            gdt: dt(GDTR),
            idt: dt(IDTR),
            cr0: self.cr0,
            cr2: self.cr2,
            cr3: self.cr3,
            cr4: self.cr4,
            cr8: 0,
            efer: self.efer,
            apic_base: self.apic_base,
            interrupt_bitmap: [0; 4],
        }
    }

    /// `kvm_apic_set_base(vcpu, value, host_initiated = true)`: X2APIC mode needs X2APIC in the
    /// vCPU's CPUID (CPUID.1.ECX\[21\]), or it is a reserved bit.
    pub(crate) fn apic_set_base(&mut self, value: u64) -> Result<(), i32> {
        if value == self.apic_base {
            return Ok(());
        }
        let x2apic = self.cpuid_reg(1, 0, 2) & (1 << 21) != 0;
        let reserved = 0x2ff | if x2apic { 0 } else { APIC_X2APIC_ENABLE };
        let invalid_mode = value & APIC_ENABLE == 0 && value & APIC_X2APIC_ENABLE != 0;
        if value & reserved != 0 || invalid_mode {
            return Err(EINVAL);
        }
        self.apic_base = value;
        Ok(())
    }

    /// KVM_SET_SREGS (`kvm_is_valid_sregs`, then `__set_sregs_common` in its order).
    pub(crate) fn set_sregs(&mut self, s: &kvm_sregs) -> Result<(), i32> {
        let long = s.efer & EFER_LME != 0 && s.cr0 & CR0_PG != 0;
        let bad_long = if long {
            s.cr4 & CR4_PAE == 0 || s.efer & EFER_LMA == 0
        } else {
            s.efer & EFER_LMA != 0
        };
        let bad_cr0 = (s.cr0 & CR0_PG != 0 && s.cr0 & CR0_PE == 0)
            || (s.cr0 & CR0_NW != 0 && s.cr0 & CR0_CD == 0);
        // kvm_valid_efer: SVME only with SVM in the guest's CPUID.
        let svm = self.cpuid_reg(0x8000_0001, 0, 2) & (1 << 2) != 0;
        if bad_long || bad_cr0 || (s.efer & EFER_SVME != 0 && !svm) {
            return Err(EINVAL);
        }
        self.apic_set_base(s.apic_base)?;
        for (at, dt) in [(IDTR, &s.idt), (GDTR, &s.gdt)] {
            Segment {
                limit: u32::from(dt.limit),
                base: dt.base,
                ..Segment::read(&self.vmcb, at)
            }
            .write(&mut self.vmcb, at);
        }
        self.cr2 = s.cr2;
        self.cr3 = s.cr3;
        // sev_post_set_cr3: an SEV-ES/SNP vCPU's CR3 goes into the VMCB at once.
        self.put(CR3, s.cr3);
        self.svm_set_efer(s.efer);
        self.svm_set_cr0(s.cr0);
        self.svm_set_cr4(s.cr4);
        for (var, which) in [
            (&s.cs, Sreg::Cs),
            (&s.ds, Sreg::Ds),
            (&s.es, Sreg::Es),
            (&s.fs, Sreg::Fs),
            (&s.gs, Sreg::Gs),
            (&s.ss, Sreg::Ss),
            (&s.tr, Sreg::Tr),
            (&s.ldt, Sreg::Ldtr),
        ] {
            self.set_segment(var, which);
        }
        Ok(())
    }

    /// KVM_SET_REGS (`__set_regs`: RFLAGS always gets its fixed bit 1).
    pub(crate) fn set_regs(&mut self, r: &kvm_regs) {
        self.regs = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        self.rip = r.rip;
        self.put(RFLAGS, r.rflags | 2);
    }

    /// KVM_SET_FPU (`kvm_arch_vcpu_ioctl_set_fpu`).
    pub(crate) fn set_fpu(&mut self, f: &kvm_fpu) {
        for (i, st) in f.fpr.iter().enumerate() {
            self.fx.st[i * 16..i * 16 + 16].copy_from_slice(st);
        }
        for (i, x) in f.xmm.iter().enumerate() {
            self.fx.xmm[i * 16..i * 16 + 16].copy_from_slice(x);
        }
        self.fx.cwd = f.fcw;
        self.fx.swd = f.fsw;
        self.fx.twd = u16::from(f.ftwx);
        self.fx.fop = f.last_opcode;
        self.fx.rip = f.last_ip;
        self.fx.rdp = f.last_dp;
        self.fx.mxcsr = f.mxcsr;
    }

    /// KVM_SET_XCRS with XCR0 (`__kvm_set_xcr`): x87 always on, AVX only with SSE, nothing the
    /// vCPU's CPUID.0xD.0 does not list.
    pub(crate) fn set_xcr0(&mut self, xcr0: u64) -> Result<(), i32> {
        let supported =
            u64::from(self.cpuid_reg(0xd, 0, 0)) | u64::from(self.cpuid_reg(0xd, 0, 3)) << 32 | 1;
        if xcr0 & 1 == 0 || (xcr0 & 4 != 0 && xcr0 & 2 == 0) || xcr0 & !supported != 0 {
            return Err(EINVAL);
        }
        self.xcr0 = xcr0;
        Ok(())
    }

    /// KVM_SET_MSRS with one MSR; only the PAT is modelled (`kvm_pat_valid`, then `svm_set_msr`
    /// copies it into G_PAT).
    pub(crate) fn set_msr(&mut self, index: u32, value: u64) -> Result<(), i32> {
        let valid_pat = value & 0xf8f8_f8f8_f8f8_f8f8 == 0
            && value.to_le_bytes().iter().all(|&b| b != 2 && b != 3);
        if index != MSR_IA32_CR_PAT || !valid_pat {
            return Err(EINVAL);
        }
        self.put(G_PAT, value);
        Ok(())
    }

    /// `sev_es_sync_vmsa`: the VMSA KVM builds from this vCPU at SNP_LAUNCH_FINISH.
    pub(crate) fn sync_vmsa(&self, sev_features: u64) -> Result<Box<[u8; 4096]>, i32> {
        if u64_at(&self.vmcb, DR7) & !DR7_FIXED_1 != 0 {
            return Err(EINVAL);
        }
        let mut v = Box::new([0u8; 4096]);
        v[..VMCB_SAVE_LEN].copy_from_slice(&self.vmcb[..VMCB_SAVE_LEN]);
        let mut put = |at: usize, bytes: &[u8]| v[at..at + bytes.len()].copy_from_slice(bytes);
        let r = &self.regs;
        for (at, value) in [
            (RAX, r[0]),
            (RCX, r[1]),
            (RDX, r[2]),
            (RBX, r[3]),
            (RSP, r[4]),
            (RBP, r[5]),
            (RSI, r[6]),
            (RDI, r[7]),
            (RIP, self.rip),
            (XCR0, self.xcr0),
            (XSS, self.xss),
            (DR6, self.dr6),
            (SEV_FEATURES, sev_features),
            (X87_DP, self.fx.rdp),
            (X87_RIP, self.fx.rip),
        ] {
            put(at, &value.to_le_bytes());
        }
        for (i, value) in r[8..].iter().enumerate() {
            put(R8 + 8 * i, &value.to_le_bytes());
        }
        put(PKRU, &self.pkru.to_le_bytes());
        put(MXCSR, &self.fx.mxcsr.to_le_bytes());
        put(X87_FTW, &self.fx.twd.to_le_bytes());
        put(X87_FSW, &self.fx.swd.to_le_bytes());
        put(X87_FCW, &self.fx.cwd.to_le_bytes());
        put(X87_FOP, &self.fx.fop.to_le_bytes());
        put(X87_DS, &[0, 0]);
        put(X87_CS, &[0, 0]);
        for i in 0..8 {
            let st = &self.fx.st[i * 16..i * 16 + 10];
            put(FPREG_X87 + i * 8, &st[..8]);
            put(FPREG_X87 + 64 + i * 2, &st[8..10]);
        }
        put(FPREG_XMM, &self.fx.xmm);
        // The YMM upper halves come from the XSAVE area, which nothing here sets: zero.
        Ok(v)
    }
}
