//! The only door to the CBOR codec in the workspace (DESIGN.md wants `serde_cbor` swappable: nothing else may
//! name it). Decoding is capped in size and rejects trailing bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The default cap on an encoded value, in bytes (1 MiB): bodies larger than this are refused before parsing,
/// limiting the memory a peer can make us allocate.
pub const DEFAULT_MAX_LEN: usize = 1 << 20;

/// Errors encoding or decoding CBOR.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// The encoded value is larger than the cap.
    #[error("CBOR value of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The bytes are not the expected CBOR value (syntax, type, missing or unknown field).
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// There are bytes after one complete value.
    #[error("trailing bytes after the CBOR value")]
    TrailingBytes,
    /// The value could not be encoded.
    #[error("cannot encode as CBOR: {0}")]
    Encode(String),
}

/// Encodes `value` (capped at [`DEFAULT_MAX_LEN`]).
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    to_vec_capped(value, DEFAULT_MAX_LEN)
}

/// Encodes `value`, failing if the encoding is longer than `max_len`.
pub fn to_vec_capped<T: Serialize>(value: &T, max_len: usize) -> Result<Vec<u8>, CborError> {
    let v = serde_cbor::to_vec(value).map_err(|e| CborError::Encode(e.to_string()))?;
    if v.len() > max_len {
        return Err(CborError::TooLarge {
            len: v.len(),
            max: max_len,
        });
    }
    Ok(v)
}

/// Decodes exactly one value from `bytes` (at most [`DEFAULT_MAX_LEN`]); trailing bytes are an error.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    from_slice_capped(bytes, DEFAULT_MAX_LEN)
}

/// Decodes exactly one value from `bytes`, refusing inputs longer than `max_len` before parsing.
pub fn from_slice_capped<T: DeserializeOwned>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, CborError> {
    if bytes.len() > max_len {
        return Err(CborError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let mut de = serde_cbor::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).map_err(|e| CborError::Malformed(e.to_string()))?;
    de.end().map_err(|e| {
        if e.is_syntax() {
            CborError::TrailingBytes
        } else {
            CborError::Malformed(e.to_string())
        }
    })?;
    Ok(value)
}

/// Serde helpers to carry `Vec<u8>` as a CBOR byte string (major type 2) instead of an array of integers:
/// `#[serde(with = "cvm_keys::cbor::bytes")]`.
pub mod bytes {
    use serde::{Deserializer, Serializer, de};
    use std::fmt;

    /// Serializes a byte slice as a CBOR byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes a CBOR byte string (only; arrays of integers are refused).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        name: String,
        #[serde(with = "bytes")]
        data: Vec<u8>,
    }

    fn msg() -> Msg {
        Msg {
            name: "x".into(),
            data: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trips_a_struct_with_byte_strings() {
        let v = to_vec(&msg()).unwrap();
        // map(2) "name" "x" "data" bytes(3)
        assert!(v.windows(4).any(|w| w == [0x43, 1, 2, 3]));
        assert_eq!(from_slice::<Msg>(&v).unwrap(), msg());
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut v = to_vec(&msg()).unwrap();
        v.push(0);
        assert!(matches!(
            from_slice::<Msg>(&v),
            Err(CborError::TrailingBytes)
        ));
    }

    #[test]
    fn rejects_inputs_over_the_cap() {
        let v = to_vec(&msg()).unwrap();
        assert!(matches!(
            from_slice_capped::<Msg>(&v, v.len() - 1),
            Err(CborError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_every_truncation() {
        let v = to_vec(&msg()).unwrap();
        for n in 0..v.len() {
            assert!(from_slice::<Msg>(&v[..n]).is_err(), "prefix {n} accepted");
        }
    }
}
