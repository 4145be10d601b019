//! AMD's X.509 extensions in VCEK and VLEK certificates (AMD "Versioned Chip Endorsement Key (VCEK)
//! Certificate and KDS Interface Specification", #57230, chapter 3, and the VLEK specification): the product
//! name, the security patch levels the key was derived for, the chip's hwID and, for VLEKs, the CSP id.

use super::report::{Product, TcbLayout, TcbVersion};
use x509_parser::certificate::X509Certificate;

/// `1.3.6.1.4.1.3704.1` as DER OID content bytes; AMD's extensions live below it.
const AMD_ARC: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01];

/// Extension arcs below `1.3.6.1.4.1.3704.1`.
mod arc {
    pub const STRUCT_VERSION: &[u8] = &[0x01];
    pub const PRODUCT_NAME: &[u8] = &[0x02];
    pub const BL_SPL: &[u8] = &[0x03, 0x01];
    pub const TEE_SPL: &[u8] = &[0x03, 0x02];
    pub const SNP_SPL: &[u8] = &[0x03, 0x03];
    pub const SPL_4: &[u8] = &[0x03, 0x04];
    pub const SPL_5: &[u8] = &[0x03, 0x05];
    pub const SPL_6: &[u8] = &[0x03, 0x06];
    pub const SPL_7: &[u8] = &[0x03, 0x07];
    pub const UCODE_SPL: &[u8] = &[0x03, 0x08];
    pub const FMC_SPL: &[u8] = &[0x03, 0x09];
    pub const HW_ID: &[u8] = &[0x04];
    pub const CSP_ID: &[u8] = &[0x05];
}

/// The security patch levels a VCEK/VLEK certifies (each `None` when the extension is absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplExtensions {
    /// blSPL (…3704.1.3.1).
    pub bootloader: Option<u8>,
    /// teeSPL (…3704.1.3.2).
    pub tee: Option<u8>,
    /// snpSPL (…3704.1.3.3).
    pub snp: Option<u8>,
    /// spl_4 .. spl_7 (…3704.1.3.4 – .7), reserved levels.
    pub spl_4_7: [Option<u8>; 4],
    /// ucodeSPL (…3704.1.3.8).
    pub microcode: Option<u8>,
    /// fmcSPL (…3704.1.3.9, Turin).
    pub fmc: Option<u8>,
}

/// AMD's extensions of one VCEK or VLEK certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AmdExtensions {
    /// structVersion (…3704.1.1).
    pub struct_version: Option<u8>,
    /// productName1 (…3704.1.2), e.g. `Milan-B0`, `Genoa`, `Turin`.
    pub product_name: Option<String>,
    /// The security patch levels.
    pub spl: SplExtensions,
    /// hwID (…3704.1.4): raw bytes (64; 8 on Turin). VCEK only.
    pub hw_id: Option<Vec<u8>>,
    /// cspID (…3704.1.5): the cloud provider a VLEK was issued to. VLEK only.
    pub csp_id: Option<String>,
}

/// An AMD extension whose value cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("AMD certificate extension {name}: {problem}")]
pub struct ExtensionError {
    /// Which extension.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// One DER TLV with a short-form or one/two-byte long-form length; the whole input must be that TLV.
fn der_tlv(bytes: &[u8], tag: u8) -> Option<&[u8]> {
    let [t, len, rest @ ..] = bytes else {
        return None;
    };
    if *t != tag {
        return None;
    }
    let (len, rest) = match (*len, rest) {
        (l, rest) if l < 0x80 => (usize::from(l), rest),
        (0x81, [l, rest @ ..]) if *l >= 0x80 => (usize::from(*l), rest),
        (0x82, [h, l, rest @ ..]) if *h != 0 => (usize::from(*h) << 8 | usize::from(*l), rest),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

/// A DER INTEGER in `0..=255` (minimal encoding).
fn der_u8(value: &[u8], name: &'static str) -> Result<u8, ExtensionError> {
    let bad = |problem| ExtensionError { name, problem };
    match der_tlv(value, 0x02) {
        Some([v]) if *v < 0x80 => Ok(*v),
        Some([0, v]) if *v >= 0x80 => Ok(*v),
        Some(_) => Err(bad("not an INTEGER in 0..=255")),
        None => Err(bad("not a DER INTEGER")),
    }
}

/// A DER IA5String.
fn der_ia5(value: &[u8], name: &'static str) -> Result<String, ExtensionError> {
    let text = der_tlv(value, 0x16).ok_or(ExtensionError {
        name,
        problem: "not a DER IA5String",
    })?;
    if !text.is_ascii() {
        return Err(ExtensionError {
            name,
            problem: "not ASCII",
        });
    }
    Ok(text.iter().map(|&b| char::from(b)).collect())
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), ExtensionError> {
    if slot.is_some() {
        return Err(ExtensionError {
            name,
            problem: "appears twice",
        });
    }
    *slot = Some(value);
    Ok(())
}

impl AmdExtensions {
    /// Read AMD's extensions from a certificate. Other extensions are ignored; an AMD extension that appears
    /// twice or cannot be decoded is an error.
    pub fn from_cert(cert: &X509Certificate<'_>) -> Result<Self, ExtensionError> {
        let mut out = AmdExtensions::default();
        for ext in cert.extensions() {
            let Some(sub) = ext.oid.as_bytes().strip_prefix(AMD_ARC) else {
                continue;
            };
            let v = ext.value;
            match sub {
                arc::STRUCT_VERSION => set_once(
                    &mut out.struct_version,
                    der_u8(v, "structVersion")?,
                    "structVersion",
                )?,
                arc::PRODUCT_NAME => set_once(
                    &mut out.product_name,
                    der_ia5(v, "productName1")?,
                    "productName1",
                )?,
                arc::BL_SPL => set_once(&mut out.spl.bootloader, der_u8(v, "blSPL")?, "blSPL")?,
                arc::TEE_SPL => set_once(&mut out.spl.tee, der_u8(v, "teeSPL")?, "teeSPL")?,
                arc::SNP_SPL => set_once(&mut out.spl.snp, der_u8(v, "snpSPL")?, "snpSPL")?,
                arc::UCODE_SPL => {
                    set_once(&mut out.spl.microcode, der_u8(v, "ucodeSPL")?, "ucodeSPL")?
                }
                arc::FMC_SPL => set_once(&mut out.spl.fmc, der_u8(v, "fmcSPL")?, "fmcSPL")?,
                arc::SPL_4 | arc::SPL_5 | arc::SPL_6 | arc::SPL_7 => {
                    let index = match sub {
                        arc::SPL_4 => 0,
                        arc::SPL_5 => 1,
                        arc::SPL_6 => 2,
                        _ => 3,
                    };
                    if let Some(slot) = out.spl.spl_4_7.get_mut(index) {
                        set_once(slot, der_u8(v, "spl_4..7")?, "spl_4..7")?;
                    }
                }
                // hwID is the raw chip id, not DER-wrapped (KDS spec, table "VCEK extensions").
                arc::HW_ID => set_once(&mut out.hw_id, v.to_vec(), "hwID")?,
                arc::CSP_ID => set_once(&mut out.csp_id, der_ia5(v, "cspID")?, "cspID")?,
                _ => {}
            }
        }
        Ok(out)
    }

    /// The product named by productName1: the part before `-` (`Milan-B0` → Milan).
    pub fn product(&self) -> Option<Product> {
        let name = self.product_name.as_deref()?;
        Product::from_name(name.split('-').next().unwrap_or(name))
    }

    /// Compare the certified levels with a TCB_VERSION under `layout`. Returns the first difference as
    /// `(extension name, certificate value, report value)`; a required level that is absent is a difference
    /// too (certificate value `None`). The reserved levels (spl_4..7) are compared only when present.
    pub fn tcb_difference(
        &self,
        tcb: TcbVersion,
        layout: TcbLayout,
    ) -> Option<(&'static str, Option<u8>, u8)> {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = tcb.bytes();
        let s = &self.spl;
        let [spl4, spl5, spl6, spl7] = s.spl_4_7;
        // (name, certificate value, report byte, required)
        let checks: [(&'static str, Option<u8>, u8, bool); 9] = match layout {
            TcbLayout::MilanGenoa => [
                ("blSPL", s.bootloader, b0, true),
                ("teeSPL", s.tee, b1, true),
                ("spl_4", spl4, b2, false),
                ("spl_5", spl5, b3, false),
                ("spl_6", spl6, b4, false),
                ("spl_7", spl7, b5, false),
                ("snpSPL", s.snp, b6, true),
                ("ucodeSPL", s.microcode, b7, true),
                // Milan/Genoa have no FMC: a certificate that claims one is not for this layout.
                ("fmcSPL", s.fmc, 0, false),
            ],
            TcbLayout::Turin => [
                ("fmcSPL", s.fmc, b0, true),
                ("blSPL", s.bootloader, b1, true),
                ("teeSPL", s.tee, b2, true),
                ("snpSPL", s.snp, b3, true),
                ("spl_5", spl5, b4, false),
                ("spl_6", spl6, b5, false),
                ("spl_7", spl7, b6, false),
                ("ucodeSPL", s.microcode, b7, true),
                // Turin has no spl_4 (its byte holds SNP).
                ("spl_4", spl4, 0, false),
            ],
        };
        checks
            .into_iter()
            .find(|&(_, cert, report, required)| match cert {
                Some(c) => c != report,
                None => required,
            })
            .map(|(name, cert, report, _)| (name, cert, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_small_der_values() {
        assert_eq!(der_u8(&[2, 1, 0x47], "x"), Ok(0x47));
        assert_eq!(der_u8(&[2, 2, 0, 0xd9], "x"), Ok(0xd9));
        assert!(der_u8(&[2, 2, 0, 0x10], "x").is_err());
        assert!(der_u8(&[2, 1, 0x80], "x").is_err());
        assert!(der_u8(&[2, 2, 1, 0], "x").is_err());
        assert!(der_u8(&[4, 1, 0], "x").is_err());
        assert!(der_u8(&[2, 1], "x").is_err());
        assert_eq!(der_ia5(b"\x16\x05Turin", "x").unwrap(), "Turin");
        assert!(der_ia5(b"\x16\x06Turin", "x").is_err());
    }

    #[test]
    fn compares_tcb_by_layout() {
        let ext = AmdExtensions {
            spl: SplExtensions {
                bootloader: Some(1),
                tee: Some(0),
                snp: Some(2),
                microcode: Some(71),
                fmc: Some(0),
                spl_4_7: [None, Some(0), Some(0), Some(0)],
            },
            ..Default::default()
        };
        let turin = TcbVersion(0x4700_0000_0200_0100);
        assert_eq!(ext.tcb_difference(turin, TcbLayout::Turin), None);
        assert!(ext.tcb_difference(turin, TcbLayout::MilanGenoa).is_some());
        let bumped = TcbVersion(0x4800_0000_0200_0100);
        assert_eq!(
            ext.tcb_difference(bumped, TcbLayout::Turin),
            Some(("ucodeSPL", Some(71), 72))
        );
    }
}
