//! The PCK certificate's Intel SGX extensions (OID 1.2.840.113741.1.13.1; Intel "SGX PCK Certificate and CRL
//! Profile" §1.3.5): PPID, TCB (sgxtcbcomp01..16svn, pcesvn, cpusvn), PCE-ID, FMSPC and SGX type, read with a
//! small total DER reader. Unknown members (platform instance ID, configuration) are skipped.

use crate::reason::{Reason, Rejection};

/// DER contents of OID 1.2.840.113741.1.13.1 (the SGX extensions).
pub const SGX_EXTENSIONS_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

/// How deep the SGX extension nests; anything deeper is refused.
const MAX_MEMBERS: usize = 64;

/// The SGX extensions of a PCK certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PckExtensions {
    /// PPID (16 bytes).
    pub ppid: Vec<u8>,
    /// sgxtcbcomp01svn..sgxtcbcomp16svn.
    pub sgx_tcb_components: [u8; 16],
    /// PCESVN.
    pub pcesvn: u16,
    /// CPUSVN (16 bytes).
    pub cpusvn: [u8; 16],
    /// PCE-ID (2 bytes).
    pub pceid: [u8; 2],
    /// FMSPC (6 bytes).
    pub fmspc: [u8; 6],
    /// SGX type (0 standard, 1 scalable, 2 scalable with integrity).
    pub sgx_type: u8,
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(
        Reason::Malformed,
        format!("PCK certificate SGX extensions: {}", message.into()),
    )
}

/// A minimal DER reader: tag, definite length, contents. Total: every read is bounds-checked.
struct Der<'a> {
    bytes: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next TLV: (tag, contents).
    fn next(&mut self) -> Result<(u8, &'a [u8]), Rejection> {
        let (&tag, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| bad("truncated tag"))?;
        if tag & 0x1f == 0x1f {
            return Err(bad("multi-byte tags are not used here"));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(|| bad("truncated length"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 3 {
                return Err(bad("unsupported length encoding"));
            }
            let (len_bytes, after) = rest
                .split_at_checked(n)
                .ok_or_else(|| bad("truncated length"))?;
            rest = after;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 || len_bytes.first() == Some(&0) {
                return Err(bad("non-minimal length"));
            }
            len
        };
        let (contents, after) = rest
            .split_at_checked(len)
            .ok_or_else(|| bad("truncated contents"))?;
        self.bytes = after;
        Ok((tag, contents))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], Rejection> {
        let (t, contents) = self.next()?;
        if t != tag {
            return Err(bad(format!("{what}: tag {t:#04x}, expected {tag:#04x}")));
        }
        Ok(contents)
    }
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const ENUMERATED: u8 = 0x0a;

/// A non-negative DER INTEGER that fits `max`.
fn small_uint(contents: &[u8], max: u32, what: &str) -> Result<u32, Rejection> {
    let digits = match contents {
        [] => return Err(bad(format!("{what}: empty integer"))),
        [b, ..] if b & 0x80 != 0 => return Err(bad(format!("{what}: negative"))),
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    if digits.len() > 4 {
        return Err(bad(format!("{what}: too large")));
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    if value > max {
        return Err(bad(format!("{what}: {value} exceeds {max}")));
    }
    Ok(value)
}

fn fixed<const N: usize>(contents: &[u8], what: &str) -> Result<[u8; N], Rejection> {
    contents
        .try_into()
        .map_err(|_| bad(format!("{what}: {} bytes, expected {N}", contents.len())))
}

/// The sub-OID arc after the SGX extensions OID (`…13.1.<arc>`), or `None` for another OID.
fn arc(oid: &[u8]) -> Option<&[u8]> {
    oid.strip_prefix(SGX_EXTENSIONS_OID)
}

impl PckExtensions {
    /// Parse the DER value of the SGX extensions (a SEQUENCE of SEQUENCE { OID, value }).
    pub fn parse(der: &[u8]) -> Result<Self, Rejection> {
        let mut outer = Der::new(der);
        let members = outer.expect(SEQUENCE, "SGX extensions")?;
        if !outer.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let mut ppid = None;
        let mut tcb = None;
        let mut pceid = None;
        let mut fmspc = None;
        let mut sgx_type = None;
        let mut members = Der::new(members);
        let mut count = 0;
        while !members.is_empty() {
            count += 1;
            if count > MAX_MEMBERS {
                return Err(bad("too many members"));
            }
            let mut member = Der::new(members.expect(SEQUENCE, "member")?);
            let oid = member.expect(OID, "member OID")?;
            let (tag, value) = member.next()?;
            if !member.is_empty() {
                return Err(bad("member with extra fields"));
            }
            match arc(oid) {
                Some([1]) if tag == OCTET_STRING => set(&mut ppid, value.to_vec(), "PPID")?,
                Some([2]) if tag == SEQUENCE => set(&mut tcb, parse_tcb(value)?, "TCB")?,
                Some([3]) if tag == OCTET_STRING => {
                    set(&mut pceid, fixed::<2>(value, "PCE-ID")?, "PCE-ID")?
                }
                Some([4]) if tag == OCTET_STRING => {
                    set(&mut fmspc, fixed::<6>(value, "FMSPC")?, "FMSPC")?
                }
                Some([5]) if tag == ENUMERATED => {
                    let t = small_uint(value, u32::from(u8::MAX), "SGX type")?;
                    set(
                        &mut sgx_type,
                        u8::try_from(t).unwrap_or(u8::MAX),
                        "SGX type",
                    )?
                }
                Some([1..=5]) => return Err(bad(format!("member {oid:02x?} has tag {tag:#04x}"))),
                _ => {} // platform instance ID, configuration, future members
            }
        }
        let (sgx_tcb_components, pcesvn, cpusvn) = tcb.ok_or_else(|| bad("no TCB"))?;
        Ok(PckExtensions {
            ppid: ppid.ok_or_else(|| bad("no PPID"))?,
            sgx_tcb_components,
            pcesvn,
            cpusvn,
            pceid: pceid.ok_or_else(|| bad("no PCE-ID"))?,
            fmspc: fmspc.ok_or_else(|| bad("no FMSPC"))?,
            sgx_type: sgx_type.ok_or_else(|| bad("no SGX type"))?,
        })
    }
}

fn set<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), Rejection> {
    if slot.is_some() {
        return Err(bad(format!("{what} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// The TCB member: sgxtcbcomp01..16svn (arcs 2.1..2.16), pcesvn (2.17), cpusvn (2.18).
fn parse_tcb(der: &[u8]) -> Result<([u8; 16], u16, [u8; 16]), Rejection> {
    let mut comps: [Option<u8>; 16] = [None; 16];
    let mut pcesvn = None;
    let mut cpusvn = None;
    let mut items = Der::new(der);
    let mut count = 0;
    while !items.is_empty() {
        count += 1;
        if count > MAX_MEMBERS {
            return Err(bad("too many TCB members"));
        }
        let mut item = Der::new(items.expect(SEQUENCE, "TCB member")?);
        let oid = item.expect(OID, "TCB member OID")?;
        let (tag, value) = item.next()?;
        if !item.is_empty() {
            return Err(bad("TCB member with extra fields"));
        }
        match arc(oid) {
            Some([2, n @ 1..=16]) if tag == INTEGER => {
                let svn = small_uint(value, u32::from(u8::MAX), "sgxtcbcompsvn")?;
                let slot = comps
                    .get_mut(usize::from(*n) - 1)
                    .ok_or_else(|| bad("TCB component index"))?;
                set(slot, u8::try_from(svn).unwrap_or(u8::MAX), "sgxtcbcompsvn")?;
            }
            Some([2, 17]) if tag == INTEGER => {
                let svn = small_uint(value, u32::from(u16::MAX), "pcesvn")?;
                set(
                    &mut pcesvn,
                    u16::try_from(svn).unwrap_or(u16::MAX),
                    "pcesvn",
                )?;
            }
            Some([2, 18]) if tag == OCTET_STRING => {
                set(&mut cpusvn, fixed::<16>(value, "cpusvn")?, "cpusvn")?
            }
            _ => return Err(bad(format!("unexpected TCB member {oid:02x?}"))),
        }
    }
    let mut out = [0u8; 16];
    for (o, c) in out.iter_mut().zip(comps) {
        *o = c.ok_or_else(|| bad("missing sgxtcbcompsvn"))?;
    }
    Ok((
        out,
        pcesvn.ok_or_else(|| bad("no pcesvn"))?,
        cpusvn.ok_or_else(|| bad("no cpusvn"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_truncated_and_empty_extensions() {
        assert!(PckExtensions::parse(&[]).is_err());
        assert!(PckExtensions::parse(&[0x30, 0x00]).is_err());
        assert!(PckExtensions::parse(&[0x30, 0x81]).is_err());
        assert!(PckExtensions::parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(PckExtensions::parse(&[0x30, 0x02, 0x30, 0x00, 0x00]).is_err());
    }
}
