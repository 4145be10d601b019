//! The strict form every request body must have before it is decoded (the codec behind
//! [`cvm_keys::cbor`] is lenient: it skips tags, accepts indefinite and over-long lengths, and lets a
//! struct come as an array). A body is exactly one CBOR data item (RFC 8949 §3) that is a map and holds
//! only:
//!
//! - unsigned and negative integers, byte strings, text strings (valid UTF-8), arrays, maps, and the simple
//!   values `false`, `true` and `null`;
//! - every length and integer in its shortest form ("preferred serialization", RFC 8949 §4.2.1) and of
//!   definite length;
//! - maps whose keys are text strings, each at most once.
//!
//! Tags (major type 6), floats, `undefined` and other simple values, indefinite lengths and reserved
//! additional information are refused, as are bytes after the item. Nesting, map sizes and array lengths
//! are capped so that checking costs time linear in the body.

use crate::cursor::Reader;
use std::collections::BTreeSet;

/// Deepest nesting of arrays and maps (a request is a map of scalars and one list of byte strings).
pub const MAX_DEPTH: usize = 4;
/// Most entries in one map (the largest request has six fields).
pub const MAX_MAP_ENTRIES: u64 = 16;
/// Most items in one array (requests carry at most [`super::MAX_CERTS`] certificates).
pub const MAX_ARRAY_ITEMS: u64 = 64;

/// Why a body is not in the strict form; `offset` counts bytes from the start of the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CBOR at byte {offset}: {what}")]
pub struct StrictError {
    /// Where the offending item starts.
    pub offset: usize,
    /// What is wrong with it.
    pub what: &'static str,
}

/// Check that `body` is one strict CBOR map and nothing else.
pub fn check_body(body: &[u8]) -> Result<(), StrictError> {
    let mut checker = Checker {
        r: Reader::new(body),
    };
    match checker.head()? {
        Head::Major(5, n) => checker.map(n, 1)?,
        _ => {
            return Err(StrictError {
                offset: 0,
                what: "the body must be a CBOR map",
            });
        }
    }
    if checker.r.remaining() != 0 {
        return Err(checker.error("bytes after the body's CBOR item"));
    }
    Ok(())
}

/// An item's initial byte and argument.
enum Head {
    /// Major type 0 to 5 and its argument (value, length or count).
    Major(u8, u64),
    /// `false`, `true` or `null`.
    Simple,
}

struct Checker<'a> {
    r: Reader<'a>,
}

impl<'a> Checker<'a> {
    fn error(&self, what: &'static str) -> StrictError {
        StrictError {
            offset: self.r.offset(),
            what,
        }
    }

    fn truncated(&self) -> StrictError {
        self.error("the body ends inside an item")
    }

    /// Read one initial byte and its argument, refusing every form the strict subset leaves out.
    fn head(&mut self) -> Result<Head, StrictError> {
        let start = self.r.offset();
        let at = |what| StrictError {
            offset: start,
            what,
        };
        let initial = self.r.u8("initial byte").map_err(|_| self.truncated())?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        match major {
            6 => return Err(at("tags are not accepted")),
            7 => {
                return match info {
                    20..=22 => Ok(Head::Simple),
                    25..=27 => Err(at("floating-point numbers are not accepted")),
                    31 => Err(at("indefinite lengths are not accepted")),
                    _ => Err(at(
                        "simple values other than false, true and null are not accepted",
                    )),
                };
            }
            _ => {}
        }
        let (len, min) = match info {
            0..=23 => return Ok(Head::Major(major, u64::from(info))),
            24 => (1, 24),
            25 => (2, 0x100),
            26 => (4, 0x1_0000),
            27 => (8, 0x1_0000_0000),
            31 => return Err(at("indefinite lengths are not accepted")),
            _ => return Err(at("reserved additional information")),
        };
        let bytes = self.r.take(len, "argument").map_err(|_| self.truncated())?;
        let value = bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        if value < min {
            return Err(at("a length or integer is not in its shortest form"));
        }
        Ok(Head::Major(major, value))
    }

    /// The content of a byte or text string of `len` bytes.
    fn string(&mut self, len: u64) -> Result<&'a [u8], StrictError> {
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        self.r.take(len, "string").map_err(|_| self.truncated())
    }

    /// One whole item at nesting `depth` (the body's map is depth 1).
    fn item(&mut self, depth: usize) -> Result<(), StrictError> {
        let start = self.r.offset();
        match self.head()? {
            Head::Simple | Head::Major(0 | 1, _) => Ok(()),
            Head::Major(2, len) => self.string(len).map(drop),
            Head::Major(3, len) => self.text(len, start).map(drop),
            Head::Major(4, n) => self.array(n, depth + 1),
            Head::Major(_, n) => self.map(n, depth + 1),
        }
    }

    /// The content of a text string of `len` bytes whose head started at `start`.
    fn text(&mut self, len: u64, start: usize) -> Result<&'a [u8], StrictError> {
        let s = self.string(len)?;
        if std::str::from_utf8(s).is_err() {
            return Err(StrictError {
                offset: start,
                what: "a text string is not valid UTF-8",
            });
        }
        Ok(s)
    }

    fn nested(&self, depth: usize) -> Result<(), StrictError> {
        if depth > MAX_DEPTH {
            return Err(self.error("arrays and maps are nested too deeply"));
        }
        Ok(())
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<(), StrictError> {
        self.nested(depth)?;
        if n > MAX_ARRAY_ITEMS {
            return Err(self.error("an array has too many items"));
        }
        for _ in 0..n {
            self.item(depth)?;
        }
        Ok(())
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<(), StrictError> {
        self.nested(depth)?;
        if n > MAX_MAP_ENTRIES {
            return Err(self.error("a map has too many entries"));
        }
        let mut keys = BTreeSet::new();
        for _ in 0..n {
            let start = self.r.offset();
            let Head::Major(3, len) = self.head()? else {
                return Err(StrictError {
                    offset: start,
                    what: "map keys must be text strings",
                });
            };
            if !keys.insert(self.text(len, start)?) {
                return Err(StrictError {
                    offset: start,
                    what: "a map key appears twice",
                });
            }
            self.item(depth)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_of(body: &[u8]) -> Option<usize> {
        check_body(body).err().map(|e| e.offset)
    }

    #[test]
    fn accepts_what_the_encoder_writes() {
        let body = super::super::encode(&super::super::AttestRequest {
            resource: "db".into(),
            nonce: vec![1; 56],
            tee: super::super::TeeKind::Snp,
            evidence: vec![2; 1184],
            certs: vec![vec![3; 300], vec![]],
            hpke_public_key: vec![4; 32],
        })
        .unwrap();
        assert_eq!(check_body(&body), Ok(()));
        // {"a": [false, true, null, -1, 0]}
        let ok = [0xa1, 0x61, b'a', 0x85, 0xf4, 0xf5, 0xf6, 0x20, 0x00];
        assert_eq!(check_body(&ok), Ok(()));
        for cut in 0..ok.len() {
            assert!(check_body(&ok[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn refuses_every_lenient_form() {
        let cases: &[(&[u8], usize)] = &[
            // Not a map at the top.
            (&[0x81, 0x61, b'a'], 0),
            (&[0x61, b'a'], 0),
            // The self-describe tag (55799) in front of a valid map.
            (&[0xd9, 0xd9, 0xf7, 0xa0], 0),
            // A tag inside.
            (&[0xa1, 0x61, b'a', 0xc2, 0x41, 0x01], 3),
            // A non-minimal length: text of length 1 written with a one-byte argument.
            (&[0xa1, 0x78, 0x01, b'a', 0x00], 1),
            // A non-minimal integer: 5 as a two-byte argument.
            (&[0xa1, 0x61, b'a', 0x19, 0x00, 0x05], 3),
            // Indefinite-length map and byte string.
            (&[0xbf, 0x61, b'a', 0x00, 0xff], 0),
            (&[0xa1, 0x61, b'a', 0x5f, 0x41, 0x00, 0xff], 3),
            // A float and undefined.
            (&[0xa1, 0x61, b'a', 0xf9, 0x3c, 0x00], 3),
            (&[0xa1, 0x61, b'a', 0xf7], 3),
            // An integer key and a byte-string key.
            (&[0xa1, 0x00, 0x00], 1),
            (&[0xa1, 0x41, b'a', 0x00], 1),
            // A duplicate key.
            (&[0xa2, 0x61, b'a', 0x00, 0x61, b'a', 0x01], 4),
            // Invalid UTF-8 in a text string.
            (&[0xa1, 0x61, 0xff, 0x00], 1),
            // Reserved additional information.
            (&[0xa1, 0x61, b'a', 0x1c], 3),
            // A trailing byte.
            (&[0xa0, 0x00], 1),
        ];
        for (body, offset) in cases {
            assert_eq!(offset_of(body), Some(*offset), "{body:02x?}");
        }
    }

    #[test]
    fn caps_nesting_and_sizes() {
        // {"a": [[[]]]} nests three arrays under the top map (depth 4); one more is too deep.
        let ok = [0xa1, 0x61, b'a', 0x81, 0x81, 0x80];
        assert_eq!(check_body(&ok), Ok(()));
        let deep = [0xa1, 0x61, b'a', 0x81, 0x81, 0x81, 0x80];
        assert_eq!(
            check_body(&deep).unwrap_err().what,
            "arrays and maps are nested too deeply"
        );
        // A map claiming 2^32 entries is refused before anything is read.
        let huge = [0xbb, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            check_body(&huge).unwrap_err().what,
            "a map has too many entries"
        );
        let long_string = [
            0xa1, 0x61, b'a', 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(check_body(&long_string).is_err());
    }
}
