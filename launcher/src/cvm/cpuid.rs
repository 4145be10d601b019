//! `struct kvm_cpuid_entry2` as the 40 bytes KVM reads and writes (seven little-endian `u32`
//! words — function, index, flags, eax, ebx, ecx, edx — then padding): the form in which CPUID
//! travels between `KVM_GET_SUPPORTED_CPUID`, the TDX capabilities and INIT_VM, the vCPUs'
//! `KVM_SET_CPUID2` and the SNP CPUID page.

/// Size of one `struct kvm_cpuid_entry2`.
pub const CPUID_ENTRY_LEN: usize = 40;

/// Word index of the leaf (function); the other word indexes follow.
pub const FUNCTION: usize = 0;
/// Sub-leaf.
pub const INDEX: usize = 1;
/// `KVM_CPUID_FLAG_*`.
pub const FLAGS: usize = 2;
/// The first output register (EAX); EBX, ECX and EDX follow.
pub const EAX: usize = 3;

/// Word `i` of `entry` (0 past the seven words).
pub fn word(entry: &[u8; CPUID_ENTRY_LEN], i: usize) -> u32 {
    entry
        .get(i * 4..i * 4 + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// An entry from its seven words (padding zero).
pub fn entry(words: [u32; 7]) -> [u8; CPUID_ENTRY_LEN] {
    let mut e = [0u8; CPUID_ENTRY_LEN];
    for (dst, w) in e.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_the_padding_stays_zero() {
        let e = entry([7, 1, 1, 0xa, 0xb, 0xc, 0xd]);
        assert_eq!(
            (0..7).map(|i| word(&e, i)).collect::<Vec<_>>(),
            [7, 1, 1, 0xa, 0xb, 0xc, 0xd]
        );
        assert_eq!(&e[28..], &[0; 12]);
        assert_eq!(word(&e, 10), 0);
    }
}
