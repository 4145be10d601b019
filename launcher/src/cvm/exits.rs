//! The runtime exits a confidential guest needs from its VMM, over a small trait so that the
//! resulting ioctls (their argument bytes) and guest-memory writes can be recorded in tests:
//!
//! - `KVM_EXIT_HYPERCALL` with `KVM_HC_MAP_GPA_RANGE` (Linux `Documentation/virt/kvm/x86/hypercalls.rst`
//!   §8; SNP guests issue it through the GHCB page-state change, TDX guests through
//!   TDG.VP.VMCALL<MapGPA>): convert `a1` 4 KiB pages at `a0` to private (`a2` bit 4,
//!   ENCRYPTED) or shared, by `KVM_SET_MEMORY_ATTRIBUTES`.
//! - `KVM_EXIT_MEMORY_FAULT` (`Documentation/virt/kvm/api.rst`): the guest touched a page whose
//!   private/shared state differs from its access; convert `[gpa, gpa + size)` to what the access
//!   wanted (`KVM_MEMORY_EXIT_FLAG_PRIVATE`) and re-enter.
//! - `KVM_EXIT_TDX` with TDG.VP.VMCALL<GetQuote> (TDX GHCI spec §3.3): the guest's shared buffer
//!   holds a TDREPORT; a [`QuoteService`] turns it into a quote written back into the buffer.
//! - `KVM_EXIT_TDX` with TDG.VP.VMCALL<GetTdVmCallInfo> leaf 1 (GHCI §3.1): which TDVMCALLs
//!   the host supports, from KVM_TDX_CAPABILITIES ([`tdvmcall_info`]).

use std::mem::{offset_of, size_of};

use kvm_bindings::{
    KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEMORY_EXIT_FLAG_PRIVATE, kvm_memory_attributes,
};

use super::tdx::TdVmCallInfo;
use super::{OpsError, put};

/// `KVM_HC_MAP_GPA_RANGE` (include/uapi/linux/kvm_para.h).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED`: the range becomes private.
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// TDG.VP.VMCALL<GetTdVmCallInfo> sub-function (GHCI §3.1).
pub const TDVMCALL_GET_TD_VM_CALL_INFO: u64 = 0x10000;
/// TDG.VP.VMCALL<GetQuote> sub-function (GHCI §3.3).
pub const TDVMCALL_GET_QUOTE: u64 = 0x10002;
/// Of the TDVMCALLs KVM leaves to userspace (GetTdVmCallInfo leaf 1, R11 and R12), those this VMM
/// handles: none (it does not implement SetupEventNotifyInterrupt, R11 bit 1).
pub const VMM_TDVMCALLS: [u64; 2] = [0, 0];
/// TDVMCALL status: success.
pub const TDVMCALL_STATUS_SUCCESS: u64 = 0;
/// TDVMCALL status: an operand (the buffer's address, size or header) is invalid.
pub const TDVMCALL_STATUS_INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
/// GetQuote buffer status: the quote is in the buffer.
pub const GET_QUOTE_SUCCESS: u64 = 0;
/// GetQuote buffer status: the quote could not be produced.
pub const GET_QUOTE_ERROR: u64 = 0x8000_0000_0000_0000;
/// GetQuote buffer status: the quote service is unavailable.
pub const GET_QUOTE_SERVICE_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
/// Size of the GetQuote buffer header: version, status, in_len, out_len.
pub const GET_QUOTE_HEADER_LEN: usize = 24;
/// Largest GetQuote buffer read from the guest (quotes with certification data are ≈ 5–8 KiB).
pub const MAX_GET_QUOTE_BUFFER: u64 = 1 << 20;
/// The errno `KVM_HC_MAP_GPA_RANGE` returns to the guest for a bad request.
const EINVAL: u64 = 22;

const _: () = assert!(size_of::<kvm_memory_attributes>() == 32);

/// What a runtime exit handler needs from the VM.
pub trait MemoryOps {
    /// `KVM_SET_MEMORY_ATTRIBUTES` on the VM fd with a `struct kvm_memory_attributes`.
    fn set_memory_attributes(&mut self, payload: &[u8; 32]) -> Result<(), OpsError>;
    /// Reads guest memory that the guest shares with the host.
    fn read_shared(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), OpsError>;
    /// Writes guest memory that the guest shares with the host.
    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OpsError>;
}

/// Whoever turns a TDREPORT into a quote (a quoting enclave, or the simulated one).
pub trait QuoteService {
    /// The quote for `tdreport` (1024 bytes).
    fn quote(&self, tdreport: &[u8]) -> Result<Vec<u8>, String>;
}

/// `struct kvm_memory_attributes` making `[gpa, gpa + size)` private or shared.
pub fn attributes_bytes(gpa: u64, size: u64, private: bool) -> [u8; 32] {
    let mut b = [0u8; 32];
    let attributes = if private {
        u64::from(KVM_MEMORY_ATTRIBUTE_PRIVATE)
    } else {
        0
    };
    put(
        &mut b,
        offset_of!(kvm_memory_attributes, address),
        &gpa.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(kvm_memory_attributes, size),
        &size.to_le_bytes(),
    );
    put(
        &mut b,
        offset_of!(kvm_memory_attributes, attributes),
        &attributes.to_le_bytes(),
    );
    b
}

/// Converts `[gpa, gpa + size)` (whole 4 KiB pages) to private or shared.
pub fn convert(
    ops: &mut dyn MemoryOps,
    gpa: u64,
    size: u64,
    private: bool,
) -> Result<(), OpsError> {
    if size == 0
        || !gpa.is_multiple_of(4096)
        || !size.is_multiple_of(4096)
        || gpa.checked_add(size).is_none()
    {
        return Err(OpsError::BadRange { gpa, size });
    }
    ops.set_memory_attributes(&attributes_bytes(gpa, size, private))
}

/// Handles `KVM_HC_MAP_GPA_RANGE(a0 = gpa, a1 = pages, a2 = attributes)`; returns the value for
/// `kvm_run.hypercall.ret` (0, or `-EINVAL` for a range that is not whole pages or that KVM
/// refused).
pub fn map_gpa_range(ops: &mut dyn MemoryOps, args: &[u64; 6]) -> u64 {
    let [gpa, pages, attrs, ..] = *args;
    let private = attrs & KVM_MAP_GPA_RANGE_ENCRYPTED != 0;
    match pages
        .checked_mul(4096)
        .ok_or(OpsError::BadRange { gpa, size: pages })
        .and_then(|size| convert(ops, gpa, size, private))
    {
        Ok(()) => 0,
        Err(_) => EINVAL.wrapping_neg(),
    }
}

/// Handles `KVM_EXIT_MEMORY_FAULT`: the range becomes what the faulting access wanted.
pub fn memory_fault(
    ops: &mut dyn MemoryOps,
    flags: u64,
    gpa: u64,
    size: u64,
) -> Result<(), OpsError> {
    let private = flags & u64::from(KVM_MEMORY_EXIT_FLAG_PRIVATE) != 0;
    // The whole pages covering [gpa, gpa + size), without overflow.
    let start = gpa & !0xfff;
    let end = gpa
        .checked_add(size)
        .and_then(|e| e.checked_next_multiple_of(4096))
        .ok_or(OpsError::BadRange { gpa, size })?;
    convert(ops, start, end - start, private)
}

/// The answer to TDG.VP.VMCALL<GetTdVmCallInfo>(`leaf`), R11..R14, as QEMU's
/// `tdx_handle_get_tdvmcall_info` (target/i386/kvm/tdx.c) gives it: for leaf 1 (the only one KVM
/// hands to userspace, `tdx_get_td_vm_call_info`), the TDVMCALLs KVM handles plus those it leaves
/// to userspace that this VMM handles ([`VMM_TDVMCALLS`]); `None` for other leaves (KVM's
/// preset answer stands).
pub fn tdvmcall_info(leaf: u64, caps: &TdVmCallInfo) -> Option<[u64; 4]> {
    (leaf == 1).then_some([
        caps.kernel_r11 | (caps.user_r11 & VMM_TDVMCALLS[0]),
        caps.kernel_r12 | (caps.user_r12 & VMM_TDVMCALLS[1]),
        0,
        0,
    ])
}

/// Handles TDG.VP.VMCALL<GetQuote>(`gpa`, `size`): reads the TDREPORT from the shared buffer,
/// asks `service`, writes the quote (or an error status) back into the buffer's header and
/// data. Returns the TDVMCALL status for `kvm_run.tdx.get_quote.ret`.
///
/// Buffer (GHCI §3.3, "Format of shared GPA"): `u64 version = 1`, `u64 status`,
/// `u32 in_len`, `u32 out_len`, then `in_len` bytes of TDREPORT in / `out_len` bytes of quote out.
pub fn get_quote(ops: &mut dyn MemoryOps, service: &dyn QuoteService, gpa: u64, size: u64) -> u64 {
    if !gpa.is_multiple_of(4096)
        || !(GET_QUOTE_HEADER_LEN as u64..=MAX_GET_QUOTE_BUFFER).contains(&size)
    {
        return TDVMCALL_STATUS_INVALID_OPERAND;
    }
    let mut buf = vec![0u8; size as usize];
    if ops.read_shared(gpa, &mut buf).is_err() {
        return TDVMCALL_STATUS_INVALID_OPERAND;
    }
    let Some((header, data)) = buf.split_at_checked(GET_QUOTE_HEADER_LEN) else {
        return TDVMCALL_STATUS_INVALID_OPERAND;
    };
    let in_len = header
        .get(16..20)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes) as usize;
    let Some(tdreport) = data.get(..in_len).filter(|r| !r.is_empty()) else {
        return TDVMCALL_STATUS_INVALID_OPERAND;
    };
    let (status, quote) = match service.quote(tdreport) {
        Ok(q) if q.len() <= data.len() => (GET_QUOTE_SUCCESS, q),
        Ok(_) => (GET_QUOTE_ERROR, Vec::new()),
        Err(_) => (GET_QUOTE_SERVICE_UNAVAILABLE, Vec::new()),
    };
    let mut out = Vec::with_capacity(GET_QUOTE_HEADER_LEN + quote.len());
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&(in_len as u32).to_le_bytes());
    out.extend_from_slice(&(quote.len() as u32).to_le_bytes());
    out.extend_from_slice(&quote);
    match ops.write_shared(gpa, &out) {
        Ok(()) => TDVMCALL_STATUS_SUCCESS,
        Err(_) => TDVMCALL_STATUS_INVALID_OPERAND,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cvm::{Recorder, Target};

    fn attrs(call: &crate::cvm::Call) -> (u64, u64, u64, u64) {
        let f = |at| crate::cvm::get_u64(&call.payload, at);
        (f(0), f(8), f(16), f(24))
    }

    #[test]
    fn map_gpa_range_converts_whole_pages_both_ways() {
        let mut rec = Recorder::default();
        assert_eq!(
            map_gpa_range(
                &mut rec,
                &[0x10_0000, 4, KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0]
            ),
            0
        );
        assert_eq!(map_gpa_range(&mut rec, &[0x20_0000, 1, 0, 0, 0, 0]), 0);
        assert_eq!(rec.calls.len(), 2);
        assert_eq!(rec.calls[0].target, Target::MemoryAttributes);
        assert_eq!(rec.calls[0].payload.len(), 32);
        assert_eq!(attrs(&rec.calls[0]), (0x10_0000, 0x4000, 8, 0));
        assert_eq!(attrs(&rec.calls[1]), (0x20_0000, 0x1000, 0, 0));
    }

    #[test]
    fn map_gpa_range_refuses_partial_pages_with_einval_and_no_ioctl() {
        let mut rec = Recorder::default();
        let einval = 22u64.wrapping_neg();
        assert_eq!(map_gpa_range(&mut rec, &[0x10_0800, 1, 0, 0, 0, 0]), einval);
        assert_eq!(map_gpa_range(&mut rec, &[0x10_0000, 0, 0, 0, 0, 0]), einval);
        assert_eq!(
            map_gpa_range(&mut rec, &[0x1000, u64::MAX, 0, 0, 0, 0]),
            einval
        );
        assert!(rec.calls.is_empty());
    }

    #[test]
    fn a_memory_fault_converts_to_what_the_access_wanted() {
        let mut rec = Recorder::default();
        let private = u64::from(KVM_MEMORY_EXIT_FLAG_PRIVATE);
        memory_fault(&mut rec, private, 0x30_0000, 0x1000).unwrap();
        memory_fault(&mut rec, 0, 0x30_0000, 0x2000).unwrap();
        assert_eq!(attrs(&rec.calls[0]), (0x30_0000, 0x1000, 8, 0));
        assert_eq!(attrs(&rec.calls[1]), (0x30_0000, 0x2000, 0, 0));
        // An unaligned fault covers every page it touches; a range past the end of the address
        // space is refused without an ioctl (fuzz target launch_guest_exits).
        memory_fault(&mut rec, 0, 0x30_0ff8, 0x10).unwrap();
        assert_eq!(attrs(&rec.calls[2]), (0x30_0000, 0x2000, 0, 0));
        assert!(memory_fault(&mut rec, 0, u64::MAX - 0xfff, 0x2000).is_err());
        assert!(memory_fault(&mut rec, 0, 0x1000, u64::MAX).is_err());
        assert_eq!(rec.calls.len(), 3);
    }

    #[test]
    fn get_tdvmcall_info_leaf_1_reports_kvms_tdvmcalls_and_those_this_vmm_handles() {
        let caps = TdVmCallInfo {
            kernel_r11: 1 << 0,
            user_r11: 1 << 1,
            kernel_r12: 1 << 3,
            user_r12: 1 << 4,
        };
        assert_eq!(tdvmcall_info(1, &caps), Some([1 << 0, 1 << 3, 0, 0]));
        assert_eq!(tdvmcall_info(0, &caps), None);
        assert_eq!(tdvmcall_info(2, &caps), None);
    }

    struct Qe;
    impl QuoteService for Qe {
        fn quote(&self, tdreport: &[u8]) -> Result<Vec<u8>, String> {
            let mut q = b"QUOTE:".to_vec();
            q.extend_from_slice(&tdreport[..8]);
            Ok(q)
        }
    }

    struct Down;
    impl QuoteService for Down {
        fn quote(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Err("no quoting enclave".into())
        }
    }

    fn guest_buffer(rec: &mut Recorder, gpa: usize, size: usize) {
        rec.memory.resize(gpa + size, 0);
        let b = &mut rec.memory[gpa..gpa + size];
        b[..8].copy_from_slice(&1u64.to_le_bytes());
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // in flight
        b[16..20].copy_from_slice(&1024u32.to_le_bytes());
        b[24..24 + 1024].fill(0x5a);
    }

    #[test]
    fn get_quote_writes_the_quote_into_the_shared_buffer() {
        let mut rec = Recorder::default();
        guest_buffer(&mut rec, 0x8000, 0x2000);
        assert_eq!(
            get_quote(&mut rec, &Qe, 0x8000, 0x2000),
            TDVMCALL_STATUS_SUCCESS
        );
        let b = &rec.memory[0x8000..];
        assert_eq!(&b[8..16], &GET_QUOTE_SUCCESS.to_le_bytes());
        assert_eq!(&b[16..20], &1024u32.to_le_bytes());
        assert_eq!(&b[20..24], &14u32.to_le_bytes());
        assert_eq!(&b[24..38], b"QUOTE:ZZZZZZZZ");
    }

    #[test]
    fn get_quote_reports_a_missing_service_and_bad_buffers() {
        let mut rec = Recorder::default();
        guest_buffer(&mut rec, 0x8000, 0x2000);
        assert_eq!(
            get_quote(&mut rec, &Down, 0x8000, 0x2000),
            TDVMCALL_STATUS_SUCCESS
        );
        assert_eq!(
            &rec.memory[0x8000 + 8..0x8000 + 16],
            &GET_QUOTE_SERVICE_UNAVAILABLE.to_le_bytes()
        );
        // Not page aligned, too small for the header, TDREPORT longer than the buffer.
        assert_eq!(
            get_quote(&mut rec, &Qe, 0x8010, 0x1000),
            TDVMCALL_STATUS_INVALID_OPERAND
        );
        assert_eq!(
            get_quote(&mut rec, &Qe, 0x8000, 8),
            TDVMCALL_STATUS_INVALID_OPERAND
        );
        assert_eq!(
            get_quote(&mut rec, &Qe, 0x8000, 0x100),
            TDVMCALL_STATUS_INVALID_OPERAND
        );
        // Outside guest memory.
        assert_eq!(
            get_quote(&mut rec, &Qe, 0x10_0000, 0x1000),
            TDVMCALL_STATUS_INVALID_OPERAND
        );
    }
}
