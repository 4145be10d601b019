//! A small DER writer: just what the simulator needs to build AMD-style certificates, CRLs and PKCS#1
//! private keys by hand (rcgen cannot sign them with RSASSA-PSS). Every function returns one complete TLV.

/// Tag numbers used here.
pub mod tag {
    /// BOOLEAN.
    pub const BOOLEAN: u8 = 0x01;
    /// INTEGER.
    pub const INTEGER: u8 = 0x02;
    /// BIT STRING.
    pub const BIT_STRING: u8 = 0x03;
    /// OCTET STRING.
    pub const OCTET_STRING: u8 = 0x04;
    /// NULL.
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// UTF8String.
    pub const UTF8_STRING: u8 = 0x0c;
    /// PrintableString.
    pub const PRINTABLE_STRING: u8 = 0x13;
    /// IA5String.
    pub const IA5_STRING: u8 = 0x16;
    /// UTCTime.
    pub const UTC_TIME: u8 = 0x17;
    /// GeneralizedTime.
    pub const GENERALIZED_TIME: u8 = 0x18;
    /// SEQUENCE.
    pub const SEQUENCE: u8 = 0x30;
    /// SET.
    pub const SET: u8 = 0x31;
}

/// One TLV with a definite length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already-encoded elements.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SEQUENCE, &parts.concat())
}

/// A SET of already-encoded elements (in the given order; callers pass one element or sorted ones).
pub fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SET, &parts.concat())
}

/// A context-specific tag `[n]`, constructed (explicit tagging) or primitive.
pub fn context(n: u8, constructed: bool, content: &[u8]) -> Vec<u8> {
    tlv(0x80 | if constructed { 0x20 } else { 0 } | n, content)
}

/// A non-negative INTEGER from big-endian magnitude bytes (leading zeros removed, a zero added when the top
/// bit is set).
pub fn uint(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|&&b| b == 0).count();
    let mag = be.get(skip..).unwrap_or(&[]);
    let mut content = Vec::with_capacity(mag.len() + 1);
    if mag.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(mag);
    tlv(tag::INTEGER, &content)
}

/// A non-negative INTEGER.
pub fn u64_int(v: u64) -> Vec<u8> {
    uint(&v.to_be_bytes())
}

/// An OBJECT IDENTIFIER from its arcs (the first two combined as X.690 says).
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        [a] => (a * 40, &[][..]),
        [] => (0, &[][..]),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        content.extend(groups.iter().rev());
    }
    tlv(tag::OID, &content)
}

/// NULL.
pub fn null() -> Vec<u8> {
    tlv(tag::NULL, &[])
}

/// BOOLEAN.
pub fn boolean(v: bool) -> Vec<u8> {
    tlv(tag::BOOLEAN, &[if v { 0xff } else { 0 }])
}

/// A BIT STRING with no unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(tag::BIT_STRING, &content)
}

/// An OCTET STRING.
pub fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(tag::OCTET_STRING, bytes)
}

/// A UTF8String.
pub fn utf8(s: &str) -> Vec<u8> {
    tlv(tag::UTF8_STRING, s.as_bytes())
}

/// A PrintableString (the caller passes printable characters).
pub fn printable(s: &str) -> Vec<u8> {
    tlv(tag::PRINTABLE_STRING, s.as_bytes())
}

/// An IA5String (the caller passes ASCII).
pub fn ia5(s: &str) -> Vec<u8> {
    tlv(tag::IA5_STRING, s.as_bytes())
}

/// An X.509 Time for Unix seconds: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
pub fn time(unix: i64) -> Vec<u8> {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d, h, mi, s) = (
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    );
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
        tlv(tag::UTC_TIME, text.as_bytes())
    } else {
        let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
        tlv(tag::GENERALIZED_TIME, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_lengths_integers_oids_and_times() {
        assert_eq!(tlv(4, &[0; 3]), vec![4, 3, 0, 0, 0]);
        assert_eq!(tlv(4, &[0; 200])[..3], [4, 0x81, 200]);
        assert_eq!(tlv(4, &[0; 300])[..4], [4, 0x82, 1, 44]);
        assert_eq!(u64_int(0), vec![2, 1, 0]);
        assert_eq!(u64_int(0x80), vec![2, 2, 0, 0x80]);
        assert_eq!(uint(&[0, 0, 1]), vec![2, 1, 1]);
        // 1.3.6.1.4.1.3704.1.2
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 3704, 1, 2]),
            vec![6, 9, 0x2b, 6, 1, 4, 1, 0x9c, 0x78, 1, 2]
        );
        assert_eq!(time(0), tlv(tag::UTC_TIME, b"700101000000Z"));
        assert_eq!(time(2_556_144_000)[0], tag::GENERALIZED_TIME); // 2051
    }
}
