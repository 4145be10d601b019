//! The model's SNP VM: KVM's SEV commands (Linux arch/x86/kvm/svm/sev.c: `__sev_guest_init`,
//! `snp_launch_start`, `snp_launch_update` → `kvm_gmem_populate` (virt/kvm/guest_memfd.c) →
//! `sev_gmem_post_populate`, `snp_launch_finish` → `snp_launch_update_vmsa` →
//! `sev_es_sync_vmsa`) and the firmware under them (SEV-SNP ABI §8.17: one PAGE_INFO per page
//! into the launch digest; a CPUID page whose values it refuses is written back with the values
//! it accepts and fails with INVALID_PARAM).

use std::collections::BTreeSet;
use std::mem::offset_of;

use kvm_bindings::{kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_update};

use super::KvmModel;
use super::x86::EINVAL;
use crate::cvm::snp::{
    SEV_INIT2, SEV_RET_INVALID_PARAM, SNP_LAUNCH_FINISH, SNP_LAUNCH_START, SNP_LAUNCH_UPDATE,
    command_name,
};
use crate::cvm::{AlignedPages, OpsError, get_u64};
use crate::snp::digest::{LaunchDigest, PageType, page_hash};

const EIO: i32 = 5;
const ENOTTY: i32 = 25;
/// SEV_FEATURES bit 0, SNPActive: KVM adds it for an SNP VM.
const SNP_ACTIVE: u64 = 1;
/// The VMSA features this model's KVM supports (`sev_supported_vmsa_features`: DebugSwap).
const SUPPORTED_VMSA_FEATURES: u64 = 1 << 5;
/// `SNP_POLICY_MASK_VALID` and `SNP_POLICY_MASK_RSVD_MBO` of sev.c.
const POLICY_VALID: u64 = 0xffff | 1 << 16 | 1 << 17 | 1 << 19 | 1 << 20;
const POLICY_RSVD_MBO: u64 = 1 << 17;

/// A CPUID bit the firmware refuses: leaf, sub-leaf (`None`: any), register (0 = EAX), mask.
pub(crate) type Refused = (u32, Option<u32>, usize, u32);

/// What the model's SNP firmware refuses in a CPUID page, written from QEMU's
/// `sev_snp_mask_cpuid_features` (target/i386/sev.c), the bits it removes because the firmware
/// refuses them (independently of the launcher's own list).
pub(crate) const FIRMWARE_REFUSES: [Refused; 8] = [
    (1, None, 2, 1 << 24),              // TSC_DEADLINE
    (7, Some(0), 1, 1 << 1),            // TSC_ADJUST
    (7, Some(0), 3, 1 << 26),           // SPEC_CTRL
    (7, Some(0), 3, 1 << 27),           // STIBP
    (7, Some(0), 3, 1 << 28),           // FLUSH_L1D
    (7, Some(0), 3, 1 << 29 | 1 << 30), // ARCH_CAPABILITIES, CORE_CAPABILITY
    (7, Some(0), 3, 1 << 31),           // SSBD
    (0x8000_0008, None, 1, 1 << 25),    // VIRT_SSBD
];

/// The model's SEV firmware and the knobs of its KVM.
#[derive(Clone, Debug)]
pub(crate) struct SnpFirmware {
    /// CPUID bits refused in a CPUID page.
    pub(crate) refuses: Vec<Refused>,
    /// At most this many pages per SNP_LAUNCH_UPDATE (a pending signal stops
    /// `kvm_gmem_populate` early and KVM reports the progress).
    pub(crate) pages_per_call: Option<u64>,
}

impl Default for SnpFirmware {
    fn default() -> Self {
        Self {
            refuses: FIRMWARE_REFUSES.to_vec(),
            pages_per_call: None,
        }
    }
}

/// The SNP state of the model's VM.
#[derive(Debug, Default)]
pub(crate) struct SnpVm {
    /// The firmware.
    pub(crate) firmware: SnpFirmware,
    /// `vmsa_features` of KVM_SEV_INIT2, once issued.
    vmsa_features: Option<u64>,
    /// SNP_LAUNCH_START created the context.
    started: bool,
    /// The launch digest the firmware computes.
    pub(crate) digest: LaunchDigest,
    /// GFNs already populated (their RMP entries are assigned).
    populated: BTreeSet<u64>,
    /// The VMSAs KVM built at SNP_LAUNCH_FINISH, by vCPU.
    pub(crate) vmsas: Vec<Box<[u8; 4096]>>,
    /// The CPUID pages the firmware accepted.
    pub(crate) cpuid_pages: Vec<Box<[u8; 4096]>>,
    /// SNP_LAUNCH_FINISH succeeded.
    pub(crate) finished: bool,
}

impl SnpVm {
    /// A VM before KVM_SEV_INIT2, on `firmware`.
    pub(crate) fn new(firmware: SnpFirmware) -> Self {
        Self {
            firmware,
            ..Self::default()
        }
    }
}

fn fail(id: u32, errno: i32, fw_error: u64) -> OpsError {
    OpsError::Ioctl {
        what: command_name(id),
        errno,
        fw_error,
    }
}

fn u32_at(page: &[u8; 4096], at: usize) -> u32 {
    u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]])
}

impl SnpFirmware {
    /// The CPUID page the firmware accepts in place of `page` (the same page when it accepts it):
    /// refused bits cleared; for leaf 0xD sub-leaves 0 and 1 with XCR0_IN = 1, EBX the size of
    /// the x87-only XSAVE area (0x240).
    fn expected_cpuid(&self, page: &[u8; 4096]) -> Box<[u8; 4096]> {
        let mut out = Box::new(*page);
        let count = (u32_at(page, 0) as usize).min(64);
        for i in 0..count {
            let at = 16 + i * 48;
            let (leaf, index) = (u32_at(page, at), u32_at(page, at + 4));
            let xcr0_in = get_u64(page, at + 8);
            for &(l, sub, reg, mask) in &self.refuses {
                if l == leaf && sub.is_none_or(|s| s == index) {
                    let r = at + 24 + 4 * reg;
                    let v = u32_at(&out, r) & !mask;
                    out[r..r + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            if leaf == 0xd && index <= 1 && xcr0_in == 1 {
                let r = at + 24 + 4; // EBX
                out[r..r + 4].copy_from_slice(&0x240u32.to_le_bytes());
            }
        }
        out
    }
}

impl KvmModel {
    fn snp_vm(&mut self) -> Result<&mut SnpVm, OpsError> {
        match &mut self.tee {
            super::Tee::Snp(s) => Ok(s),
            super::Tee::Tdx(_) => Err(fail(0, ENOTTY, 0)),
        }
    }

    /// `sev_mem_enc_ioctl` for KVM_SEV_INIT2, SNP_LAUNCH_START and SNP_LAUNCH_FINISH.
    pub(super) fn sev_command(&mut self, id: u32, payload: &mut [u8]) -> Result<(), OpsError> {
        let vcpus = self.vcpus.len();
        match id {
            SEV_INIT2 => {
                // __sev_guest_init.
                let features = get_u64(payload, offset_of!(kvm_sev_init, vmsa_features));
                let flags = get_u64(payload, offset_of!(kvm_sev_init, flags)) as u32;
                let ghcb = get_u64(payload, offset_of!(kvm_sev_init, ghcb_version)) as u16;
                let snp = self.snp_vm()?;
                if vcpus > 0
                    || flags != 0
                    || features & !SUPPORTED_VMSA_FEATURES != 0
                    || ghcb > 2
                    || snp.vmsa_features.is_some()
                {
                    return Err(fail(id, EINVAL, 0));
                }
                snp.vmsa_features = Some(features | SNP_ACTIVE);
                Ok(())
            }
            SNP_LAUNCH_START => {
                // snp_launch_start.
                let policy = get_u64(payload, 0);
                let flags = payload
                    .get(24..26)
                    .map_or(0, |f| u16::from_le_bytes([f[0], f[1]]));
                let snp = self.snp_vm()?;
                if snp.vmsa_features.is_none() {
                    return Err(fail(id, ENOTTY, 0));
                }
                if snp.started
                    || flags != 0
                    || policy & !POLICY_VALID != 0
                    || policy & POLICY_RSVD_MBO == 0
                {
                    return Err(fail(id, EINVAL, 0));
                }
                snp.started = true;
                Ok(())
            }
            SNP_LAUNCH_FINISH => self.snp_launch_finish(payload),
            _ => Err(fail(id, EINVAL, 0)),
        }
    }

    /// `snp_launch_finish`: `snp_launch_update_vmsa` (one VMSA per vCPU, built by
    /// `sev_es_sync_vmsa` from its state and measured), then the firmware's LAUNCH_FINISH.
    fn snp_launch_finish(&mut self, payload: &[u8]) -> Result<(), OpsError> {
        let id = SNP_LAUNCH_FINISH;
        let flags = payload
            .get(offset_of!(kvm_sev_snp_launch_finish, flags)..)
            .and_then(|f| f.get(..2))
            .map_or(0, |f| u16::from_le_bytes([f[0], f[1]]));
        let vmsas = {
            let snp = self.snp_vm()?;
            if !snp.started {
                return Err(fail(id, EINVAL, 0));
            }
            if flags != 0 || payload.len() != 88 {
                return Err(fail(id, EINVAL, 0));
            }
            snp.vmsa_features.unwrap_or(SNP_ACTIVE)
        };
        let pages = self
            .vcpus
            .iter()
            .map(|v| v.sync_vmsa(vmsas))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|errno| fail(id, errno, 0))?;
        let snp = self.snp_vm()?;
        for p in &pages {
            snp.digest.update_vmsa(p);
        }
        snp.vmsas = pages;
        snp.finished = true;
        Ok(())
    }

    /// `snp_launch_update` → `kvm_gmem_populate` → `sev_gmem_post_populate`, page by page.
    pub(super) fn snp_launch_update(
        &mut self,
        p: &mut [u8; 64],
        mut source: Option<&mut AlignedPages>,
    ) -> Result<(), OpsError> {
        let id = SNP_LAUNCH_UPDATE;
        let gfn = get_u64(p, offset_of!(kvm_sev_snp_launch_update, gfn_start));
        let uaddr = get_u64(p, offset_of!(kvm_sev_snp_launch_update, uaddr));
        let len = get_u64(p, offset_of!(kvm_sev_snp_launch_update, len));
        let t = PageType(p[offset_of!(kvm_sev_snp_launch_update, type_)]);
        let flags = u16::from_le_bytes([
            p[offset_of!(kvm_sev_snp_launch_update, flags)],
            p[offset_of!(kvm_sev_snp_launch_update, flags) + 1],
        ]);
        if !self.snp_vm()?.started {
            return Err(fail(id, EINVAL, 0));
        }
        let types = [
            PageType::NORMAL,
            PageType::ZERO,
            PageType::UNMEASURED,
            PageType::SECRETS,
            PageType::CPUID,
        ];
        if len == 0 || !len.is_multiple_of(4096) || flags != 0 || !types.contains(&t) {
            return Err(fail(id, EINVAL, 0));
        }
        // Only ZERO pages go without a source; the source must be page aligned.
        let src = (t != PageType::ZERO).then_some(uaddr);
        if src.is_some_and(|s| !s.is_multiple_of(4096)) {
            return Err(fail(id, EINVAL, 0));
        }
        let Some(slot_end) = self.slot_end(gfn) else {
            return Err(fail(id, EINVAL, 0));
        };
        let mut npages = (len / 4096).min(slot_end - gfn);
        if let Some(limit) = self.snp_vm()?.firmware.pages_per_call {
            npages = npages.min(limit);
        }
        let mut done = 0;
        let mut error = None;
        while done < npages {
            match self.populate_one(gfn + done, t, src.map(|s| s + done * 4096), &mut source) {
                Ok(()) => done += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let (Some(fw_error), 0) = (error, done) {
            // kvm_gmem_populate returns the error only when no page was done; snp_launch_update
            // turns it into -EIO with the firmware's error code (0 when KVM itself refused).
            return Err(fail(id, EIO, fw_error));
        }
        let put =
            |p: &mut [u8; 64], at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(
            p,
            offset_of!(kvm_sev_snp_launch_update, gfn_start),
            gfn + done,
        );
        put(
            p,
            offset_of!(kvm_sev_snp_launch_update, len),
            len - done * 4096,
        );
        if t != PageType::ZERO {
            put(
                p,
                offset_of!(kvm_sev_snp_launch_update, uaddr),
                uaddr + done * 4096,
            );
        }
        Ok(())
    }

    /// One page of `kvm_gmem_populate` + `sev_gmem_post_populate` + the firmware's LAUNCH_UPDATE;
    /// the error is the firmware's error code (0 when KVM refused the page: not private, no
    /// source, already populated, a source outside the caller's pages).
    fn populate_one(
        &mut self,
        gfn: u64,
        t: PageType,
        src: Option<u64>,
        source: &mut Option<&mut AlignedPages>,
    ) -> Result<(), u64> {
        if !self.private.contains(&gfn) {
            return Err(0);
        }
        let contents: Option<&mut [u8; 4096]> = match src {
            None if t != PageType::ZERO => return Err(0),
            None => None,
            Some(addr) => {
                // The source must be memory the caller handed over for this call.
                let pages = source.as_deref_mut().ok_or(0u64)?;
                let base = pages.addr();
                let index = addr
                    .checked_sub(base)
                    .map(|off| (off / 4096) as usize)
                    .filter(|_| addr < base + pages.len())
                    .ok_or(0u64)?;
                Some(pages.pages_mut().nth(index).ok_or(0u64)?)
            }
        };
        let snp = match &mut self.tee {
            super::Tee::Snp(s) => s,
            super::Tee::Tdx(_) => return Err(0),
        };
        if snp.populated.contains(&gfn) {
            return Err(0);
        }
        let gpa = gfn * 4096;
        match (t, contents) {
            (PageType::NORMAL, Some(page)) => snp.digest.update(t, gpa, &page_hash(&page[..])),
            (PageType::CPUID, Some(page)) => {
                let expected = snp.firmware.expected_cpuid(page);
                if *expected != *page {
                    // The firmware's values go back to the caller's source page.
                    *page = *expected;
                    return Err(SEV_RET_INVALID_PARAM);
                }
                snp.cpuid_pages.push(expected);
                snp.digest.update(t, gpa, &[0; 48]);
            }
            _ => snp.digest.update(t, gpa, &[0; 48]),
        }
        snp.populated.insert(gfn);
        Ok(())
    }
}
