//! One bounded cursor for every untrusted byte: reads never go past the end, and every failure says where.

use crate::reason::{Reason, Rejection};

/// A read past the end of the input (or a length that does not fit).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("truncated input: {what} needs {needed} bytes at offset {offset}, {available} left")]
pub struct Truncated {
    /// What was being read.
    pub what: &'static str,
    /// Offset from the start of the input.
    pub offset: usize,
    /// Bytes the field needs.
    pub needed: usize,
    /// Bytes that were left.
    pub available: usize,
}

impl From<Truncated> for Rejection {
    fn from(t: Truncated) -> Self {
        Rejection::new(Reason::Malformed, t.to_string())
    }
}

/// A reader over a byte slice that hands out sub-slices and little-endian integers, never panicking.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    /// Offset of the next byte from the start of the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.offset)
    }

    /// The unread bytes, consuming them.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.bytes.get(self.offset..).unwrap_or_default();
        self.offset = self.bytes.len();
        rest
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.offset.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.offset..end)) {
            Some(slice) => {
                self.offset += n;
                Ok(slice)
            }
            None => Err(Truncated {
                what,
                offset: self.offset,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    /// A reader over the next `n` bytes (a length-prefixed field), consuming them here. Its offsets count
    /// from the start of that field.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, Truncated> {
        Ok(Reader::new(self.take(n, what)?))
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian u16.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u32.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u64.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Truncated> {
        self.take(n, what).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_refuses_past_the_end() {
        let bytes = [1u8, 2, 0, 3, 0, 0, 0, 9];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.u16_le("b"), Ok(2));
        assert_eq!(r.u32_le("c"), Ok(3));
        assert_eq!(r.remaining(), 1);
        let err = r.u16_le("d").unwrap_err();
        assert_eq!((err.offset, err.needed, err.available), (7, 2, 1));
        assert_eq!(r.take(1, "e"), Ok(&[9u8][..]));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn rejects_lengths_that_overflow() {
        let mut r = Reader::new(&[0u8; 4]);
        r.skip(2, "x").unwrap();
        assert!(r.take(usize::MAX, "huge").is_err());
        assert!(r.sub(3, "sub").is_err());
        assert_eq!(r.sub(2, "sub").unwrap().remaining(), 2);
    }
}
