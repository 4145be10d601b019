//! Where a direct Linux boot puts things in guest memory (the "magic addresses", Firecracker's
//! `arch/x86_64` layer) and the pages built for it: GDT, identity page tables, the zero page.
//!
//! ```text
//! 0x0000_1000  GDT (null, null, __BOOT_CS = 0x10, __BOOT_DS = 0x18, TSS = 0x20)
//! 0x0000_7000  boot_params, the "zero page"            (RSI at the 64-bit entry)
//! 0x0000_8ff0  initial stack pointer
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four PDs: 4 GiB identity-mapped with 2 MiB pages
//! 0x0002_0000  kernel command line (NUL-terminated)
//! 0x0010_0000  protected-mode kernel; entry at +0x200
//! top of RAM   initrd, page aligned, below initrd_addr_max
//! ```

use super::bzimage::HEADER_START;

/// GDT address.
pub const GDT_GPA: u64 = 0x1000;
/// Zero page address.
pub const BOOT_PARAMS_GPA: u64 = 0x7000;
/// Initial RSP (the decompressor switches to its own stack at once).
pub const BOOT_STACK: u64 = 0x8ff0;
/// PML4 address (CR3).
pub const PML4_GPA: u64 = 0x9000;
/// Command line address.
pub const CMDLINE_GPA: u64 = 0x2_0000;
/// Where the protected-mode kernel is loaded (HIGH_MEMORY, the 1 MiB mark of the boot protocol).
pub const KERNEL_GPA: u64 = 0x10_0000;
/// End of the low usable RAM in the e820 map (the EBDA would start here on a PC).
pub const LOW_RAM_END: u64 = 0x9_fc00;

/// GDT selectors the 64-bit boot protocol names (`Documentation/arch/x86/boot.rst`, "64-bit
/// Boot Protocol": CS = __BOOT_CS, DS/ES/SS = __BOOT_DS).
pub const BOOT_CS: u16 = 0x10;
/// __BOOT_DS.
pub const BOOT_DS: u16 = 0x18;
/// The TSS (KVM needs a usable TR in long mode).
pub const BOOT_TSS: u16 = 0x20;

/// The GDT: 64-bit code (L=1, D=0), flat 4 GiB data, a 32-bit TSS descriptor.
pub const GDT: [u64; 5] = [
    0,
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

/// e820 type of usable RAM.
const E820_RAM: u32 = 1;

// boot_params fields (`Documentation/arch/x86/zero-page.rst`, setup header fields from boot.rst).
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const HEAP_END_PTR: usize = 0x224;
const CMD_LINE_PTR: usize = 0x228;
/// "Undefined" boot loader id: 0xff (boot.rst, type_of_loader).
const LOADER_UNDEFINED: u8 = 0xff;
/// loadflags bit 7, CAN_USE_HEAP.
const CAN_USE_HEAP: u8 = 0x80;

/// The GDT page.
pub fn gdt_page() -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    for (d, e) in p.chunks_exact_mut(8).zip(GDT) {
        d.copy_from_slice(&e.to_le_bytes());
    }
    p
}

/// Seven pages at [`PML4_GPA`]: PML4 → PDPT → four PDs of 2 MiB pages, identity-mapping 4 GiB.
pub fn page_tables() -> Vec<u8> {
    const PRESENT_RW: u64 = 0x3;
    const PAGE_SIZE_2M: u64 = 0x80;
    let mut t = vec![0u8; 7 * 4096];
    let mut set = |table: usize, index: usize, entry: u64| {
        let at = table * 4096 + index * 8;
        if let Some(d) = t.get_mut(at..at + 8) {
            d.copy_from_slice(&entry.to_le_bytes());
        }
    };
    set(0, 0, (PML4_GPA + 0x1000) | PRESENT_RW);
    for pd in 0..4u64 {
        set(
            1,
            pd as usize,
            (PML4_GPA + 0x2000 + pd * 0x1000) | PRESENT_RW,
        );
        for i in 0..512u64 {
            let addr = (pd << 30) | (i << 21);
            set(
                2 + pd as usize,
                i as usize,
                addr | PRESENT_RW | PAGE_SIZE_2M,
            );
        }
    }
    t
}

/// Where the initrd goes: the highest page-aligned address where it ends below both the end of
/// RAM and `initrd_addr_max` and starts above the kernel's `init_size` footprint.
pub fn initrd_gpa(ram_end: u64, initrd_addr_max: u32, kernel_end: u64, len: u64) -> Option<u64> {
    let limit = ram_end.min(u64::from(initrd_addr_max) + 1);
    let gpa = limit.checked_sub(len)? & !0xfff;
    (gpa >= kernel_end).then_some(gpa)
}

/// What the zero page says besides the kernel's own header.
#[derive(Clone, Copy, Debug)]
pub struct BootParamsInput<'a> {
    /// The bzImage's setup header bytes (from 0x1f1).
    pub header: &'a [u8],
    /// End of guest RAM (RAM is `[0, LOW_RAM_END)` and `[KERNEL_GPA, ram_end)`).
    pub ram_end: u64,
    /// Command line length without the NUL.
    pub cmdline_len: u32,
    /// Initrd address and length.
    pub initrd: Option<(u64, u64)>,
}

/// The zero page: the kernel's setup header with the loader's fields filled in, and the e820 map.
pub fn boot_params(p: &BootParamsInput<'_>) -> Vec<u8> {
    let mut z = vec![0u8; 4096];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(d) = z.get_mut(at..at + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    };
    put(HEADER_START, p.header);
    put(TYPE_OF_LOADER, &[LOADER_UNDEFINED]);
    let loadflags = p.header.get(LOADFLAGS - HEADER_START).copied().unwrap_or(0);
    put(LOADFLAGS, &[loadflags | CAN_USE_HEAP]);
    // heap_end_ptr is an offset from the real-mode code's start; unused by the 64-bit entry but
    // set as the protocol asks of loaders that set CAN_USE_HEAP.
    put(HEAP_END_PTR, &0xfe00u16.to_le_bytes());
    let cmd_line_ptr = if p.cmdline_len > 0 { CMDLINE_GPA } else { 0 };
    put(CMD_LINE_PTR, &(cmd_line_ptr as u32).to_le_bytes());
    if let Some((gpa, len)) = p.initrd {
        put(RAMDISK_IMAGE, &(gpa as u32).to_le_bytes());
        put(RAMDISK_SIZE, &(len as u32).to_le_bytes());
    }
    let e820 = [
        (0, LOW_RAM_END),
        (KERNEL_GPA, p.ram_end.saturating_sub(KERNEL_GPA)),
    ];
    put(E820_ENTRIES, &[e820.len() as u8]);
    for (i, (addr, size)) in e820.into_iter().enumerate() {
        let at = E820_TABLE + i * 20;
        put(at, &addr.to_le_bytes());
        put(at + 8, &size.to_le_bytes());
        put(at + 16, &E820_RAM.to_le_bytes());
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_identity_map_four_gib() {
        let t = page_tables();
        let entry = |table: usize, i: usize| {
            u64::from_le_bytes(t[table * 4096 + i * 8..][..8].try_into().unwrap())
        };
        assert_eq!(entry(0, 0), 0xa003);
        assert_eq!(entry(1, 3), 0xe003);
        assert_eq!(entry(2, 1), 0x20_0083);
        assert_eq!(entry(5, 511), 0xffe0_0083);
    }

    #[test]
    fn zero_page_carries_header_loader_fields_and_e820() {
        let header = [0x11u8; 0x26c - 0x1f1];
        let z = boot_params(&BootParamsInput {
            header: &header,
            ram_end: 256 << 20,
            cmdline_len: 10,
            initrd: Some((0x0f00_0000, 0x1234)),
        });
        assert_eq!(z[0x1f1], 0x11);
        assert_eq!(z[TYPE_OF_LOADER], 0xff);
        assert_eq!(z[LOADFLAGS], 0x91);
        assert_eq!(&z[CMD_LINE_PTR..][..4], &0x2_0000u32.to_le_bytes());
        assert_eq!(&z[RAMDISK_IMAGE..][..4], &0x0f00_0000u32.to_le_bytes());
        assert_eq!(&z[RAMDISK_SIZE..][..4], &0x1234u32.to_le_bytes());
        assert_eq!(z[E820_ENTRIES], 2);
        assert_eq!(&z[E820_TABLE + 20..][..8], &0x10_0000u64.to_le_bytes());
        assert_eq!(
            &z[E820_TABLE + 28..][..8],
            &((256u64 << 20) - 0x10_0000).to_le_bytes()
        );
    }

    #[test]
    fn initrd_sits_at_the_top_below_both_limits() {
        assert_eq!(
            initrd_gpa(256 << 20, u32::MAX, 0, 0x1800),
            Some((256 << 20) - 0x2000)
        );
        assert_eq!(
            initrd_gpa(256 << 20, 0x7fff_ffff, 0, 0x1000),
            Some((256 << 20) - 0x1000)
        );
        assert_eq!(initrd_gpa(8 << 20, u32::MAX, 7 << 20, 2 << 20), None);
    }
}
