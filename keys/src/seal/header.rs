//! The sealed-file header: its CBOR wire form, validation, and bounded parsing of untrusted bytes.

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{
    ALGORITHM, HEADER_MAGIC, MAGIC, MAX_CHUNK_SIZE, MAX_HEADER_LEN, MIN_CHUNK_SIZE,
    NONCE_PREFIX_LEN, SealError, VERSION, read_full,
};
use crate::cbor;
use crate::keyfile::KeyId;

/// The CBOR header as it is on the wire (text keys, byte strings).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    magic: String,
    version: u32,
    alg: String,
    chunk_size: u32,
    #[serde(with = "cbor::bytes")]
    key_id: Vec<u8>,
    #[serde(with = "cbor::bytes")]
    nonce_prefix: Vec<u8>,
}

/// A parsed, validated sealed-file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Algorithm name ([`ALGORITHM`]).
    pub algorithm: String,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Id of the key the file is sealed for.
    pub key_id: KeyId,
    /// The random nonce prefix of this file.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "format:       cvm sealed file, version {}", self.version)?;
        writeln!(f, "algorithm:    {}", self.algorithm)?;
        writeln!(f, "chunk size:   {} bytes", self.chunk_size)?;
        writeln!(f, "key id:       {}", self.key_id)?;
        write!(f, "nonce prefix: {}", hex::encode(self.nonce_prefix))
    }
}

pub(super) fn check_chunk_size(chunk_size: u32) -> Result<(), String> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(())
    } else {
        Err(format!(
            "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        ))
    }
}

impl Header {
    /// Encodes the full file prefix: magic ‖ u16 length ‖ CBOR header. These bytes are the AAD of every chunk.
    pub fn encode(&self) -> Result<Vec<u8>, SealError> {
        let wire = WireHeader {
            magic: HEADER_MAGIC.to_string(),
            version: self.version,
            alg: self.algorithm.clone(),
            chunk_size: self.chunk_size,
            key_id: self.key_id.0.to_vec(),
            nonce_prefix: self.nonce_prefix.to_vec(),
        };
        let body = cbor::to_vec_capped(&wire, MAX_HEADER_LEN)
            .map_err(|e| SealError::MalformedHeader(e.to_string()))?;
        let len = u16::try_from(body.len())
            .map_err(|_| SealError::MalformedHeader("header too long".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses the file prefix at the start of `bytes` (untrusted). Returns the header and the number of bytes
    /// it occupies; bytes after it (the chunks) are not examined.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), SealError> {
        let mut r = SliceReader(bytes);
        let magic = r.take(MAGIC.len()).ok_or(SealError::NotSealed)?;
        if magic != MAGIC {
            return Err(SealError::NotSealed);
        }
        let len_bytes = r
            .take(2)
            .ok_or_else(|| SealError::MalformedHeader("truncated header length".into()))?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len == 0 || len > MAX_HEADER_LEN {
            return Err(SealError::MalformedHeader(format!(
                "header length {len} is outside 1..={MAX_HEADER_LEN}"
            )));
        }
        let body = r
            .take(len)
            .ok_or_else(|| SealError::MalformedHeader("truncated header".into()))?;
        let header = Self::from_cbor(body)?;
        Ok((header, MAGIC.len() + 2 + len))
    }

    fn from_cbor(body: &[u8]) -> Result<Header, SealError> {
        let wire: WireHeader = cbor::from_slice_capped(body, MAX_HEADER_LEN)
            .map_err(|e| SealError::MalformedHeader(e.to_string()))?;
        if wire.magic != HEADER_MAGIC {
            return Err(SealError::MalformedHeader(format!(
                "header magic {:?} is not {HEADER_MAGIC:?}",
                wire.magic
            )));
        }
        if wire.version != VERSION {
            return Err(SealError::UnsupportedVersion(wire.version));
        }
        if wire.alg != ALGORITHM {
            return Err(SealError::UnsupportedAlgorithm(wire.alg));
        }
        check_chunk_size(wire.chunk_size).map_err(SealError::MalformedHeader)?;
        let key_id: [u8; 16] = wire
            .key_id
            .as_slice()
            .try_into()
            .map_err(|_| SealError::MalformedHeader("key id is not 16 bytes".into()))?;
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] =
            wire.nonce_prefix.as_slice().try_into().map_err(|_| {
                SealError::MalformedHeader(format!("nonce prefix is not {NONCE_PREFIX_LEN} bytes"))
            })?;
        Ok(Header {
            version: wire.version,
            algorithm: wire.alg,
            chunk_size: wire.chunk_size,
            key_id: KeyId(key_id),
            nonce_prefix,
        })
    }
}

/// A bounded cursor over untrusted bytes.
struct SliceReader<'a>(&'a [u8]);

impl<'a> SliceReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
}

/// Reads the file prefix from a stream: exactly the magic, the length and the header, never more.
/// Returns the header and the prefix bytes (the AAD).
pub fn read_header<R: Read>(input: &mut R) -> Result<(Header, Vec<u8>), SealError> {
    let mut prefix = vec![0u8; MAGIC.len() + 2];
    let n = read_full(input, &mut prefix).map_err(SealError::Read)?;
    if n < MAGIC.len() || &prefix[..MAGIC.len()] != MAGIC {
        return Err(SealError::NotSealed);
    }
    if n < prefix.len() {
        return Err(SealError::MalformedHeader("truncated header length".into()));
    }
    let len = usize::from(u16::from_be_bytes([
        prefix[MAGIC.len()],
        prefix[MAGIC.len() + 1],
    ]));
    if len == 0 || len > MAX_HEADER_LEN {
        return Err(SealError::MalformedHeader(format!(
            "header length {len} is outside 1..={MAX_HEADER_LEN}"
        )));
    }
    let start = prefix.len();
    prefix.resize(start + len, 0);
    let got = read_full(input, &mut prefix[start..]).map_err(SealError::Read)?;
    if got < len {
        return Err(SealError::MalformedHeader("truncated header".into()));
    }
    let (header, _) = Header::parse(&prefix)?;
    Ok((header, prefix))
}
