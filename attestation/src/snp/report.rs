//! The SEV-SNP ATTESTATION_REPORT structure (SEV-SNP Firmware ABI spec, "ATTESTATION_REPORT Structure",
//! Table 23 in revision 1.55+; versions 2, 3 and 5): a zero-copy, total parser. Every field is read at its
//! fixed offset with the shared bounded [`Reader`]; nothing here can panic or read out of bounds.
//!
//! Layout (offsets in hex):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 000 | 4 | VERSION |
//! | 004 | 4 | GUEST_SVN |
//! | 008 | 8 | POLICY (guest policy) |
//! | 010 | 16 | FAMILY_ID |
//! | 020 | 16 | IMAGE_ID |
//! | 030 | 4 | VMPL |
//! | 034 | 4 | SIGNATURE_ALGO |
//! | 038 | 8 | CURRENT_TCB |
//! | 040 | 8 | PLATFORM_INFO |
//! | 048 | 4 | flags: AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2) |
//! | 04C | 4 | reserved |
//! | 050 | 64 | REPORT_DATA |
//! | 090 | 48 | MEASUREMENT |
//! | 0C0 | 32 | HOST_DATA |
//! | 0E0 | 48 | ID_KEY_DIGEST |
//! | 110 | 48 | AUTHOR_KEY_DIGEST |
//! | 140 | 32 | REPORT_ID |
//! | 160 | 32 | REPORT_ID_MA |
//! | 180 | 8 | REPORTED_TCB |
//! | 188 | 1+1+1 | CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3+; reserved before) |
//! | 18B | 21 | reserved |
//! | 1A0 | 64 | CHIP_ID |
//! | 1E0 | 8 | COMMITTED_TCB |
//! | 1E8 | 4 | CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR, reserved |
//! | 1EC | 4 | COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR, reserved |
//! | 1F0 | 8 | LAUNCH_TCB |
//! | 1F8 | 8+8 | LAUNCH_MIT_VECTOR, CURRENT_MIT_VECTOR (version 5; reserved before) |
//! | 208 | 152 | reserved |
//! | 2A0 | 512 | SIGNATURE: R (72, little-endian), S (72, little-endian), reserved (368) |
//!
//! The signed bytes are `[0x000, 0x2A0)`.

use crate::cursor::{Reader, Truncated};
use crate::reason::{Reason, Rejection};
use std::fmt;

/// Size of an attestation report in bytes.
pub const REPORT_LEN: usize = 0x4A0;
/// End of the bytes covered by the signature (`[0, SIGNED_LEN)`).
pub const SIGNED_LEN: usize = 0x2A0;
/// Offset of the signature's R component.
pub const SIG_R_OFFSET: usize = 0x2A0;
/// Offset of the signature's S component.
pub const SIG_S_OFFSET: usize = 0x2E8;
/// Size of each of R and S in the report (little-endian, zero-extended).
pub const SIG_COMPONENT_LEN: usize = 72;
/// Size of a P-384 scalar.
pub const P384_SCALAR_LEN: usize = 48;

macro_rules! newtype_consts {
    ($(#[$doc:meta])* $name:ident($int:ty) { $($(#[$cdoc:meta])* $cname:ident = $value:expr,)* } names { $($nconst:ident => $nstr:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $int);

        impl $name {
            $($(#[$cdoc])* pub const $cname: $name = $name($value);)*

            /// The name of a known value, `None` for values this verifier does not know.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$nconst => Some($nstr),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}({n})", stringify!($name)),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }
    };
}

newtype_consts! {
    /// The report format version (VERSION).
    ReportVersion(u32) {
        /// The original layout: no CPUID fields.
        V2 = 2,
        /// Adds CPUID_FAM_ID / CPUID_MOD_ID / CPUID_STEP.
        V3 = 3,
        /// Newer firmware: adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR.
        V5 = 5,
    } names { V2 => "2", V3 => "3", V5 => "5", }
}

impl ReportVersion {
    /// Whether this verifier parses the version (2, 3 or 5).
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            ReportVersion::V2 | ReportVersion::V3 | ReportVersion::V5
        )
    }
}

newtype_consts! {
    /// SIGNATURE_ALGO (ABI spec, "Signature Algorithm Encodings").
    SignatureAlgorithm(u32) {
        /// Invalid (no signature).
        INVALID = 0,
        /// ECDSA P-384 with SHA-384: the only one SNP firmware uses.
        ECDSA_P384_SHA384 = 1,
    } names { INVALID => "invalid", ECDSA_P384_SHA384 => "ECDSA P-384 with SHA-384", }
}

newtype_consts! {
    /// The key that signed the report (flags bits 4:2, SIGNING_KEY).
    SigningKey(u8) {
        /// Versioned Chip Endorsement Key.
        VCEK = 0,
        /// Versioned Loaded Endorsement Key (issued to a cloud provider).
        VLEK = 1,
        /// No key: the report is not signed.
        NONE = 7,
    } names { VCEK => "vcek", VLEK => "vlek", NONE => "none", }
}

/// The flags word at 0x48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportFlags(pub u32);

impl ReportFlags {
    /// AUTHOR_KEY_EN: the digest of the author key is in AUTHOR_KEY_DIGEST.
    pub const AUTHOR_KEY_EN: u32 = 1 << 0;
    /// MASK_CHIP_KEY: the chip key is masked (the report is then not signed).
    pub const MASK_CHIP_KEY: u32 = 1 << 1;

    /// Bit 0.
    pub fn author_key_en(self) -> bool {
        self.0 & Self::AUTHOR_KEY_EN != 0
    }
    /// Bit 1.
    pub fn mask_chip_key(self) -> bool {
        self.0 & Self::MASK_CHIP_KEY != 0
    }
    /// Bits 4:2.
    pub fn signing_key(self) -> SigningKey {
        // The mask keeps three bits, so the value fits a u8.
        SigningKey(((self.0 >> 2) & 0x7) as u8)
    }
}

/// The guest policy (ABI spec, "Guest Policy Structure"). Unknown bits are kept in the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Host SMT usage allowed.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RESERVED_MBO: u64 = 1 << 17;
    /// Association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging allowed: the host can read and write the guest's memory.
    pub const DEBUG: u64 = 1 << 19;
    /// The guest can only be activated on one socket.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL may be populated with devices or memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS memory encryption required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// RAPL must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Page move / swap commands disabled for the guest.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;

    /// ABI_MINOR (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        self.0.to_le_bytes()[0]
    }
    /// ABI_MAJOR (bits 15:8).
    pub fn abi_major(self) -> u8 {
        self.0.to_le_bytes()[1]
    }
    /// Whether `bit` (one of the constants) is set.
    pub fn has(self, bit: u64) -> bool {
        self.0 & bit != 0
    }
    /// The DEBUG bit.
    pub fn debug(self) -> bool {
        self.has(Self::DEBUG)
    }
}

/// PLATFORM_INFO (ABI spec, "PLATFORM_INFO Field"). Unknown bits are kept in the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    /// SMT is enabled.
    pub const SMT_EN: u64 = 1 << 0;
    /// TSME is enabled.
    pub const TSME_EN: u64 = 1 << 1;
    /// ECC memory is in use.
    pub const ECC_EN: u64 = 1 << 2;
    /// RAPL is disabled.
    pub const RAPL_DIS: u64 = 1 << 3;
    /// Ciphertext hiding is enabled.
    pub const CIPHERTEXT_HIDING_EN: u64 = 1 << 4;
    /// Alias detection completed since the last reset with no aliasing addresses.
    pub const ALIAS_CHECK_COMPLETE: u64 = 1 << 5;
    /// SEV-TIO is enabled.
    pub const TIO_EN: u64 = 1 << 7;

    /// Whether `bit` (one of the constants) is set.
    pub fn has(self, bit: u64) -> bool {
        self.0 & bit != 0
    }
}

/// Which byte layout a TCB_VERSION uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa: BOOT_LOADER, TEE, 4 reserved, SNP, MICROCODE.
    MilanGenoa,
    /// Turin: FMC, BOOT_LOADER, TEE, SNP, 3 reserved, MICROCODE.
    Turin,
}

/// A TCB_VERSION: eight security patch levels whose byte positions depend on the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcbVersion(pub u64);

/// The components of a [`TcbVersion`] under one layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcbParts {
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// The eight bytes, least significant first.
    pub fn bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }

    /// The named components under `layout`.
    pub fn parts(self, layout: TcbLayout) -> TcbParts {
        let [b0, b1, b2, b3, _, _, b6, b7] = self.bytes();
        match layout {
            TcbLayout::MilanGenoa => TcbParts {
                fmc: None,
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
            },
            TcbLayout::Turin => TcbParts {
                fmc: Some(b0),
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
            },
        }
    }
}

/// A firmware version (build, minor, major as stored; shown as `major.minor.build`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// CPUID family, model and stepping (version 3+), as the report stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    /// CPUID_FAM_ID (extended family + base family).
    pub family: u8,
    /// CPUID_MOD_ID (extended model : base model).
    pub model: u8,
    /// CPUID_STEP.
    pub stepping: u8,
}

/// An AMD EPYC product line with SEV-SNP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4; also Bergamo and Siena, which share Genoa's keys).
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Product {
    /// AMD's name, as in KDS URLs and certificate names.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// The product for AMD's name (`Milan`, `Genoa`, `Turin`), exactly.
    pub fn from_name(name: &str) -> Option<Product> {
        match name {
            "Milan" => Some(Product::Milan),
            "Genoa" => Some(Product::Genoa),
            "Turin" => Some(Product::Turin),
            _ => None,
        }
    }

    /// The product for a CPUID family and model (AMD PPRs; same table as AMD's KDS documentation).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    /// The TCB_VERSION layout this product's firmware uses.
    pub fn tcb_layout(self) -> TcbLayout {
        match self {
            Product::Milan | Product::Genoa => TcbLayout::MilanGenoa,
            Product::Turin => TcbLayout::Turin,
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The signature field: R and S as stored (72 bytes each, little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportSignature<'a> {
    /// R, little-endian, zero-extended to 72 bytes.
    pub r: &'a [u8; SIG_COMPONENT_LEN],
    /// S, little-endian, zero-extended to 72 bytes.
    pub s: &'a [u8; SIG_COMPONENT_LEN],
}

impl ReportSignature<'_> {
    /// R‖S as 96 big-endian bytes (ring's fixed-size P-384 form), or `None` when a byte above the 48th of R
    /// or S is non-zero: such a value is not a P-384 scalar, so the signature is invalid (never truncated).
    pub fn to_fixed_be(&self) -> Option<[u8; 2 * P384_SCALAR_LEN]> {
        let (r_low, r_high) = self.r.split_at(P384_SCALAR_LEN);
        let (s_low, s_high) = self.s.split_at(P384_SCALAR_LEN);
        if r_high.iter().chain(s_high).any(|&b| b != 0) {
            return None;
        }
        let mut out = [0u8; 2 * P384_SCALAR_LEN];
        let (r_out, s_out) = out.split_at_mut(P384_SCALAR_LEN);
        for (dst, src) in r_out.iter_mut().zip(r_low.iter().rev()) {
            *dst = *src;
        }
        for (dst, src) in s_out.iter_mut().zip(s_low.iter().rev()) {
            *dst = *src;
        }
        Some(out)
    }
}

/// A parsed attestation report: typed views into the original bytes.
#[derive(Clone, Copy, Debug)]
pub struct AttestationReport<'a> {
    /// The whole report (1184 bytes).
    pub raw: &'a [u8; REPORT_LEN],
    /// VERSION.
    pub version: ReportVersion,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: GuestPolicy,
    /// FAMILY_ID.
    pub family_id: &'a [u8; 16],
    /// IMAGE_ID.
    pub image_id: &'a [u8; 16],
    /// VMPL of the request.
    pub vmpl: u32,
    /// SIGNATURE_ALGO.
    pub signature_algo: SignatureAlgorithm,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub platform_info: PlatformInfo,
    /// The flags word (AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY).
    pub flags: ReportFlags,
    /// REPORT_DATA, chosen by the guest.
    pub report_data: &'a [u8; 64],
    /// MEASUREMENT: the launch digest.
    pub measurement: &'a [u8; 48],
    /// HOST_DATA, chosen by the host at launch.
    pub host_data: &'a [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: &'a [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: &'a [u8; 48],
    /// REPORT_ID.
    pub report_id: &'a [u8; 32],
    /// REPORT_ID_MA.
    pub report_id_ma: &'a [u8; 32],
    /// REPORTED_TCB: the TCB the VCEK is derived from.
    pub reported_tcb: TcbVersion,
    /// CPUID family / model / stepping (version 3+).
    pub cpuid: Option<Cpuid>,
    /// CHIP_ID (zero for VLEK-signed reports or when masked; Turin: 8 bytes, then zeros).
    pub chip_id: &'a [u8; 64],
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// Current firmware version.
    pub current_version: FirmwareVersion,
    /// Committed firmware version.
    pub committed_version: FirmwareVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbVersion,
    /// LAUNCH_MIT_VECTOR (version 5).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (version 5).
    pub current_mit_vector: Option<u64>,
    /// The signature.
    pub signature: ReportSignature<'a>,
}

/// Why bytes are not a report this verifier can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not exactly 1184 bytes.
    #[error("an SNP attestation report is {REPORT_LEN} bytes, got {0}")]
    WrongSize(usize),
    /// A version other than 2, 3 or 5.
    #[error("SNP report version {0} is not supported (supported: 2, 3, 5)")]
    UnsupportedVersion(u32),
    /// Cannot happen for 1184 bytes; kept so the parser stays total.
    #[error("{0}")]
    Truncated(#[from] Truncated),
}

impl From<ReportError> for Rejection {
    fn from(e: ReportError) -> Self {
        let reason = match e {
            ReportError::UnsupportedVersion(_) => Reason::UnsupportedVersion,
            ReportError::WrongSize(_) | ReportError::Truncated(_) => Reason::Malformed,
        };
        Rejection::new(reason, e.to_string())
    }
}

fn fixed<'a, const N: usize>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<&'a [u8; N], Truncated> {
    let offset = r.offset();
    let bytes = r.take(N, what)?;
    <&[u8; N]>::try_from(bytes).map_err(|_| Truncated {
        what,
        offset,
        needed: N,
        available: bytes.len(),
    })
}

fn version_triple(r: &mut Reader<'_>, what: &'static str) -> Result<FirmwareVersion, Truncated> {
    let build = r.u8(what)?;
    let minor = r.u8(what)?;
    let major = r.u8(what)?;
    r.skip(1, "reserved after firmware version")?;
    Ok(FirmwareVersion {
        major,
        minor,
        build,
    })
}

impl<'a> AttestationReport<'a> {
    /// Parse a report: exactly [`REPORT_LEN`] bytes of version 2, 3 or 5. The signature is not checked here.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ReportError> {
        let raw = <&[u8; REPORT_LEN]>::try_from(bytes)
            .map_err(|_| ReportError::WrongSize(bytes.len()))?;
        let mut r = Reader::new(raw);
        let version = ReportVersion(r.u32_le("VERSION")?);
        if !version.is_supported() {
            return Err(ReportError::UnsupportedVersion(version.0));
        }
        let guest_svn = r.u32_le("GUEST_SVN")?;
        let policy = GuestPolicy(r.u64_le("POLICY")?);
        let family_id = fixed(&mut r, "FAMILY_ID")?;
        let image_id = fixed(&mut r, "IMAGE_ID")?;
        let vmpl = r.u32_le("VMPL")?;
        let signature_algo = SignatureAlgorithm(r.u32_le("SIGNATURE_ALGO")?);
        let current_tcb = TcbVersion(r.u64_le("CURRENT_TCB")?);
        let platform_info = PlatformInfo(r.u64_le("PLATFORM_INFO")?);
        let flags = ReportFlags(r.u32_le("flags")?);
        r.skip(4, "reserved at 0x4C")?;
        let report_data = fixed(&mut r, "REPORT_DATA")?;
        let measurement = fixed(&mut r, "MEASUREMENT")?;
        let host_data = fixed(&mut r, "HOST_DATA")?;
        let id_key_digest = fixed(&mut r, "ID_KEY_DIGEST")?;
        let author_key_digest = fixed(&mut r, "AUTHOR_KEY_DIGEST")?;
        let report_id = fixed(&mut r, "REPORT_ID")?;
        let report_id_ma = fixed(&mut r, "REPORT_ID_MA")?;
        let reported_tcb = TcbVersion(r.u64_le("REPORTED_TCB")?);
        let [family, model, stepping] = r.array::<3>("CPUID_FAM_ID/MOD_ID/STEP")?;
        let cpuid = (version != ReportVersion::V2).then_some(Cpuid {
            family,
            model,
            stepping,
        });
        r.skip(21, "reserved at 0x18B")?;
        let chip_id = fixed(&mut r, "CHIP_ID")?;
        let committed_tcb = TcbVersion(r.u64_le("COMMITTED_TCB")?);
        let current_version = version_triple(&mut r, "CURRENT_BUILD/MINOR/MAJOR")?;
        let committed_version = version_triple(&mut r, "COMMITTED_BUILD/MINOR/MAJOR")?;
        let launch_tcb = TcbVersion(r.u64_le("LAUNCH_TCB")?);
        let launch_mit = r.u64_le("LAUNCH_MIT_VECTOR")?;
        let current_mit = r.u64_le("CURRENT_MIT_VECTOR")?;
        let v5 = version == ReportVersion::V5;
        r.skip(SIGNED_LEN - 0x208, "reserved at 0x208")?;
        let sig_r = fixed(&mut r, "SIGNATURE R")?;
        let sig_s = fixed(&mut r, "SIGNATURE S")?;
        r.skip(
            REPORT_LEN - SIG_S_OFFSET - SIG_COMPONENT_LEN,
            "reserved signature bytes",
        )?;
        debug_assert_eq!(r.remaining(), 0);
        Ok(AttestationReport {
            raw,
            version,
            guest_svn,
            policy,
            family_id,
            image_id,
            vmpl,
            signature_algo,
            current_tcb,
            platform_info,
            flags,
            report_data,
            measurement,
            host_data,
            id_key_digest,
            author_key_digest,
            report_id,
            report_id_ma,
            reported_tcb,
            cpuid,
            chip_id,
            committed_tcb,
            current_version,
            committed_version,
            launch_tcb,
            launch_mit_vector: v5.then_some(launch_mit),
            current_mit_vector: v5.then_some(current_mit),
            signature: ReportSignature { r: sig_r, s: sig_s },
        })
    }

    /// The bytes the signature covers, `[0, 0x2A0)`.
    pub fn signed_bytes(&self) -> &'a [u8] {
        let raw: &'a [u8] = self.raw;
        raw.get(..SIGNED_LEN).unwrap_or(raw)
    }

    /// The key that signed the report (flags bits 4:2).
    pub fn signing_key(&self) -> SigningKey {
        self.flags.signing_key()
    }

    /// The product the CPUID fields name (version 3+), if they name one.
    pub fn cpuid_product(&self) -> Option<Product> {
        self.cpuid
            .and_then(|c| Product::from_cpuid(c.family, c.model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; REPORT_LEN];
        b[..4].copy_from_slice(&version.to_le_bytes());
        b[0x34] = 1;
        b
    }

    #[test]
    fn rejects_every_wrong_size() {
        let b = sample(2);
        for len in [0, 1, 4, SIGNED_LEN, REPORT_LEN - 1] {
            assert_eq!(
                AttestationReport::parse(&b[..len]).unwrap_err(),
                ReportError::WrongSize(len)
            );
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            AttestationReport::parse(&longer).unwrap_err(),
            ReportError::WrongSize(REPORT_LEN + 1)
        );
    }

    #[test]
    fn rejects_unknown_versions_and_keeps_optional_fields_per_version() {
        for v in [0, 1, 4, 6, u32::MAX] {
            assert_eq!(
                AttestationReport::parse(&sample(v)).unwrap_err(),
                ReportError::UnsupportedVersion(v)
            );
        }
        let v2 = sample(2);
        let r = AttestationReport::parse(&v2).unwrap();
        assert!(r.cpuid.is_none() && r.launch_mit_vector.is_none());
        let v3 = sample(3);
        let r = AttestationReport::parse(&v3).unwrap();
        assert!(r.cpuid.is_some() && r.current_mit_vector.is_none());
        let v5 = sample(5);
        let r = AttestationReport::parse(&v5).unwrap();
        assert_eq!(r.launch_mit_vector, Some(0));
    }

    #[test]
    fn splits_tcb_versions_by_layout() {
        let milan = TcbVersion(0xdb18_0000_0000_0004);
        let p = milan.parts(TcbLayout::MilanGenoa);
        assert_eq!(
            (p.fmc, p.bootloader, p.tee, p.snp, p.microcode),
            (None, 4, 0, 24, 219)
        );
        let turin = TcbVersion(0x4700_0000_0200_0100);
        let p = turin.parts(TcbLayout::Turin);
        assert_eq!(
            (p.fmc, p.bootloader, p.tee, p.snp, p.microcode),
            (Some(0), 1, 0, 2, 71)
        );
    }

    #[test]
    fn converts_signature_and_refuses_high_bytes() {
        let mut r = [0u8; 72];
        let mut s = [0u8; 72];
        r[0] = 1;
        s[47] = 2;
        let sig = ReportSignature { r: &r, s: &s };
        let be = sig.to_fixed_be().unwrap();
        assert_eq!(be[47], 1);
        assert_eq!(be[48], 2);
        s[48] = 1;
        let sig = ReportSignature { r: &r, s: &s };
        assert!(sig.to_fixed_be().is_none());
    }

    #[test]
    fn reads_flags_and_unknown_values() {
        assert_eq!(ReportFlags(4).signing_key(), SigningKey::VLEK);
        assert_eq!(ReportFlags(0x1c).signing_key(), SigningKey::NONE);
        assert_eq!(format!("{:?}", SigningKey(3)), "SigningKey(0x3)");
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1a, 0x02), Some(Product::Turin));
        assert!(GuestPolicy(0xb0000).debug());
    }
}
