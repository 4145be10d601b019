//! The bzImage setup header (Linux `Documentation/arch/x86/boot.rst`, "The Real-Mode Kernel
//! Header"): where the protected-mode kernel starts in the file and what the kernel asks of its
//! loader. Offsets are file offsets, equal to their offsets in `boot_params` (the zero page).

/// Offset of `setup_sects`, the first byte of the header copied into `boot_params`.
pub const HEADER_START: usize = 0x1f1;
/// Offset of the byte holding the header's length past 0x202 (the jump at 0x200).
const HEADER_LEN_BYTE: usize = 0x201;
/// Offset of the header's own end marker base (the length counts from here).
const HEADER_LEN_BASE: usize = 0x202;
const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const INITRD_ADDR_MAX: usize = 0x22c;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;

/// Oldest protocol accepted: 2.06 has `cmdline_size` (and 2.12 `xloadflags`, checked below).
pub const MIN_VERSION: u16 = 0x0206;
/// `xloadflags` bit 0, XLF_KERNEL_64: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// Offset of the 64-bit entry point from the protected-mode kernel's load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;

/// Why a file is not a kernel this loader boots.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BzImageError {
    /// Too short or without the `HdrS` magic / 0xAA55 boot flag.
    #[error(
        "the kernel is not a bzImage (no \"HdrS\" setup header at 0x202): pass arch/x86/boot/bzImage or /boot/vmlinuz-*, not vmlinux"
    )]
    NotBzImage,
    /// Boot protocol too old.
    #[error(
        "the kernel speaks boot protocol {0:#06x}; this loader needs 2.06 or later (Linux 2.6.22+)"
    )]
    OldProtocol(u16),
    /// No 64-bit entry point.
    #[error(
        "the kernel has no 64-bit entry point (xloadflags bit XLF_KERNEL_64 clear): build an x86_64 kernel"
    )]
    Not64Bit,
}

/// A bzImage split into its parts.
#[derive(Debug)]
pub struct BzImage<'a> {
    /// The setup header bytes, `[0x1f1, 0x202 + header[0x201])`, to copy into `boot_params`.
    pub header: &'a [u8],
    /// The protected-mode kernel (after the `setup_sects + 1` real-mode sectors).
    pub kernel: &'a [u8],
    /// Boot protocol version.
    pub version: u16,
    /// Highest address the initrd may end at (`initrd_addr_max`).
    pub initrd_addr_max: u32,
    /// Largest command line the kernel takes, excluding the terminating NUL.
    pub cmdline_size: u32,
    /// The address the kernel prefers to be loaded at.
    pub pref_address: u64,
    /// Memory the kernel needs from its load address on, before it relocates itself.
    pub init_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> BzImage<'a> {
    /// Parses `file`.
    pub fn parse(file: &'a [u8]) -> Result<Self, BzImageError> {
        if file.get(MAGIC..MAGIC + 4) != Some(b"HdrS") || u16_at(file, BOOT_FLAG) != Some(0xaa55) {
            return Err(BzImageError::NotBzImage);
        }
        let version = u16_at(file, VERSION).ok_or(BzImageError::NotBzImage)?;
        if version < MIN_VERSION {
            return Err(BzImageError::OldProtocol(version));
        }
        // "xloadflags" exists from 2.12 on; a 2.06–2.11 kernel has no 64-bit entry either.
        let xloadflags = if version >= 0x020c {
            u16_at(file, XLOADFLAGS).ok_or(BzImageError::NotBzImage)?
        } else {
            0
        };
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BzImageError::Not64Bit);
        }
        let header_end = HEADER_LEN_BASE + usize::from(*file.get(HEADER_LEN_BYTE).unwrap_or(&0));
        let header = file
            .get(HEADER_START..header_end)
            .ok_or(BzImageError::NotBzImage)?;
        // "If setup_sects is 0, the real value is 4."
        let setup_sects = match file.get(SETUP_SECTS) {
            Some(0) => 4,
            Some(&n) => usize::from(n),
            None => return Err(BzImageError::NotBzImage),
        };
        let kernel = file
            .get((setup_sects + 1) * 512..)
            .filter(|k| !k.is_empty())
            .ok_or(BzImageError::NotBzImage)?;
        let field = |at| u32_at(file, at).ok_or(BzImageError::NotBzImage);
        Ok(Self {
            header,
            kernel,
            version,
            initrd_addr_max: field(INITRD_ADDR_MAX)?,
            cmdline_size: field(CMDLINE_SIZE)?,
            pref_address: u64_at(file, PREF_ADDRESS).ok_or(BzImageError::NotBzImage)?,
            init_size: field(INIT_SIZE)?,
        })
    }
}

/// A minimal bzImage for tests: one setup sector after the boot sector, the header fields a
/// loader reads (protocol `version`, `xloadflags`, initrd limit, command-line size, preferred
/// address, init size), then `kernel` as the protected-mode kernel (its 64-bit entry point is
/// `kernel[0x200]`).
pub fn synthetic(version: u16, xloadflags: u16, kernel: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 2 * 512];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = f.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(SETUP_SECTS, &[1]);
    put(BOOT_FLAG, &0xaa55u16.to_le_bytes());
    put(0x200, &[0xeb]);
    put(HEADER_LEN_BYTE, &[0x6a]); // the header ends at 0x26c, as in Linux 6.x
    put(MAGIC, b"HdrS");
    put(VERSION, &version.to_le_bytes());
    put(INITRD_ADDR_MAX, &0x7fff_ffffu32.to_le_bytes());
    put(XLOADFLAGS, &xloadflags.to_le_bytes());
    put(CMDLINE_SIZE, &2047u32.to_le_bytes());
    put(PREF_ADDRESS, &0x100_0000u64.to_le_bytes());
    put(INIT_SIZE, &0x10_0000u32.to_le_bytes());
    f.extend_from_slice(kernel);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_header_and_protected_mode_kernel() {
        let f = synthetic(0x020f, 3, &[0xcc; 5000]);
        let b = BzImage::parse(&f).unwrap();
        assert_eq!(b.header.len(), 0x26c - 0x1f1);
        assert_eq!(b.kernel.len(), 5000);
        assert!(b.kernel.iter().all(|&x| x == 0xcc));
        assert_eq!(b.cmdline_size, 2047);
        assert_eq!(b.initrd_addr_max, 0x7fff_ffff);
    }

    #[test]
    fn refuses_what_it_cannot_boot() {
        assert_eq!(
            BzImage::parse(b"\x7fELF").unwrap_err(),
            BzImageError::NotBzImage
        );
        assert_eq!(
            BzImage::parse(&synthetic(0x0205, 0, &[0xcc; 10])).unwrap_err(),
            BzImageError::OldProtocol(0x0205)
        );
        assert_eq!(
            BzImage::parse(&synthetic(0x020f, 0, &[0xcc; 10])).unwrap_err(),
            BzImageError::Not64Bit
        );
        assert_eq!(
            BzImage::parse(&synthetic(0x020f, 1, &[0xcc; 0])).unwrap_err(),
            BzImageError::NotBzImage
        );
        let f = synthetic(0x020f, 1, &[0xcc; 100]);
        for len in 0..0x26c {
            assert!(BzImage::parse(&f[..len]).is_err(), "prefix {len}");
        }
    }
}
