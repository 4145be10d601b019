//! Sealed files (DESIGN.md "Sealed workload data"): AES-256-GCM in the STREAM construction, in constant
//! memory for any size.
//!
//! Layout of a sealed file:
//!
//! ```text
//! "CVMSEAL\n"                 8-byte magic
//! u16 big-endian              length of the CBOR header (1..=MAX_HEADER_LEN)
//! CBOR header                 {magic, version, alg, chunk_size, key_id, nonce_prefix}
//! chunk 0 .. chunk n          each: ciphertext (chunk_size bytes; the last one 0..=chunk_size) ‖ 16-byte tag
//! ```
//!
//! Every chunk is sealed with AAD = the whole prefix above (magic, length and header bytes), and
//! nonce = 7-byte random prefix ‖ 32-bit big-endian chunk counter ‖ last-chunk flag (1 for the final chunk,
//! else 0). So a flipped bit anywhere, a truncation (at or between chunk boundaries), reordered or swapped
//! chunks, and chunks from another file (another random prefix and header) all fail authentication. An empty
//! input still has one (empty, final) chunk, so a file cut right after its header is refused too.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cbor;
use crate::fsutil::AtomicFile;
use crate::keyfile::{Key256, KeyId};

/// The file magic (8 bytes).
pub const MAGIC: &[u8; 8] = b"CVMSEAL\n";
/// The magic string inside the CBOR header.
pub const HEADER_MAGIC: &str = "cvm-sealed";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// The only algorithm: AES-256-GCM, STREAM construction with 7-byte prefix, 32-bit counter, last flag.
pub const ALGORITHM: &str = "AES-256-GCM-STREAM";
/// The default chunk size (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size accepted (tests use small chunks to exercise many boundaries).
pub const MIN_CHUNK_SIZE: u32 = 16;
/// Largest chunk size accepted: a header from an untrusted file decides the buffer we allocate, so it is
/// capped (4 MiB) to keep memory small and constant.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Largest CBOR header accepted (ours is about 100 bytes).
pub const MAX_HEADER_LEN: usize = 1024;
/// Length of the random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of a GCM tag.
pub const TAG_LEN: usize = 16;

/// Errors from sealing, unsealing or inspecting. [`SealError::is_refusal`] tells a refused input (tampered,
/// wrong key, not a sealed file) from an I/O or usage problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The input does not start with the sealed-file magic.
    #[error("not a cvm sealed file (bad magic)")]
    NotSealed,
    /// The header is malformed.
    #[error("malformed sealed-file header: {0}")]
    MalformedHeader(String),
    /// The header names a version this code does not read.
    #[error("unsupported sealed-file version {0}")]
    UnsupportedVersion(u32),
    /// The header names an unknown algorithm.
    #[error("unsupported sealed-file algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The file was sealed for another key.
    #[error("wrong key: the file is sealed for key id {sealed_for}, this key is {this_key}")]
    WrongKey {
        /// The key id in the header.
        sealed_for: KeyId,
        /// The key id of the key given.
        this_key: KeyId,
    },
    /// The stream ends before the final chunk.
    #[error("truncated: the sealed data ends before its final chunk (at chunk {chunk})")]
    Truncated {
        /// Index of the missing or partial chunk.
        chunk: u64,
    },
    /// A chunk failed authentication.
    #[error(
        "chunk {chunk} failed authentication: the file was tampered with, truncated, reordered or mixed with another file"
    )]
    Tampered {
        /// Index of the chunk.
        chunk: u64,
    },
    /// More chunks than the 32-bit counter allows.
    #[error("input too large: more than 2^32 chunks")]
    TooLarge,
    /// Invalid options (chunk size out of range).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Reading the input failed.
    #[error("reading the input: {0}")]
    Read(#[source] io::Error),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Write(#[source] io::Error),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The AEAD key could not be set up.
    #[error("the AES-256-GCM key could not be set up")]
    Crypto,
}

impl SealError {
    /// True when the input itself was refused (not sealed, malformed, wrong key, tampered, truncated),
    /// false for I/O and usage errors.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SealError::NotSealed
                | SealError::MalformedHeader(_)
                | SealError::UnsupportedVersion(_)
                | SealError::UnsupportedAlgorithm(_)
                | SealError::WrongKey { .. }
                | SealError::Truncated { .. }
                | SealError::Tampered { .. }
        )
    }
}

/// Options for sealing.
#[derive(Clone, Copy, Debug)]
pub struct SealOptions {
    /// Plaintext bytes per chunk ([`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
}

impl Default for SealOptions {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

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

fn check_chunk_size(chunk_size: u32) -> Result<(), String> {
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

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one byte of look-ahead; `None` at the end of the input.
fn read_one<R: Read>(input: &mut R) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    Ok((read_full(input, &mut b)? == 1).then_some(b[0]))
}

/// The STREAM nonce for chunk `counter`: prefix ‖ counter (u32 BE) ‖ last flag.
pub(crate) fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

pub(crate) fn aead_key(key: &Key256) -> Result<LessSafeKey, SealError> {
    // AES-256 accepts every 32-byte key; `new` only fails for a wrong length, which the type rules out.
    UnboundKey::new(&AES_256_GCM, key.as_bytes())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Crypto)
}

/// Totals of one seal or unseal run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// Plaintext bytes.
    pub plaintext_bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
}

/// Seals `input` to `output` under `key`. Memory use is one chunk buffer, whatever the input size.
pub fn seal_stream<R: Read, W: Write>(
    key: &Key256,
    mut input: R,
    mut output: W,
    options: SealOptions,
) -> Result<StreamSummary, SealError> {
    check_chunk_size(options.chunk_size).map_err(SealError::InvalidOption)?;
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    SystemRandom::new()
        .fill(&mut nonce_prefix)
        .map_err(|_| SealError::Random)?;
    let header = Header {
        version: VERSION,
        algorithm: ALGORITHM.to_string(),
        chunk_size: options.chunk_size,
        key_id: key.key_id(),
        nonce_prefix,
    };
    let aad = header.encode()?;
    output.write_all(&aad).map_err(SealError::Write)?;

    let sealing_key = aead_key(key)?;
    let cs = options.chunk_size as usize;
    // One buffer for the whole run: plaintext, sealed in place, followed by its tag.
    let mut buf = Zeroizing::new(vec![0u8; cs + TAG_LEN]);
    let mut carry: Option<u8> = None;
    let mut counter: u32 = 0;
    let mut total: u64 = 0;
    loop {
        let mut filled = 0;
        if let Some(b) = carry.take() {
            buf[0] = b;
            filled = 1;
        }
        filled += read_full(&mut input, &mut buf[filled..cs]).map_err(SealError::Read)?;
        // A full chunk is the last one only if the input ends right after it: look one byte ahead.
        let last = if filled < cs {
            true
        } else {
            carry = read_one(&mut input).map_err(SealError::Read)?;
            carry.is_none()
        };
        let (pt, tag_space) = buf.split_at_mut(filled);
        let tag = sealing_key
            .seal_in_place_separate_tag(
                chunk_nonce(&nonce_prefix, counter, last),
                Aad::from(aad.as_slice()),
                pt,
            )
            .map_err(|_| SealError::TooLarge)?;
        tag_space[..TAG_LEN].copy_from_slice(tag.as_ref());
        output
            .write_all(&buf[..filled + TAG_LEN])
            .map_err(SealError::Write)?;
        total += filled as u64;
        if last {
            break;
        }
        counter = counter.checked_add(1).ok_or(SealError::TooLarge)?;
    }
    output.flush().map_err(SealError::Write)?;
    Ok(StreamSummary {
        plaintext_bytes: total,
        chunks: u64::from(counter) + 1,
    })
}

/// Unseals `input` to `output` with `key`, authenticating chunk by chunk.
///
/// Plaintext is written as each chunk authenticates; if a later chunk is refused, what was already written
/// must be discarded by the caller (use [`unseal_to_path`] to get all-or-nothing output).
pub fn unseal_stream<R: Read, W: Write>(
    key: &Key256,
    mut input: R,
    mut output: W,
) -> Result<StreamSummary, SealError> {
    let (header, aad) = read_header(&mut input)?;
    let this_key = key.key_id();
    if header.key_id != this_key {
        return Err(SealError::WrongKey {
            sealed_for: header.key_id,
            this_key,
        });
    }
    let opening_key = aead_key(key)?;
    let full = header.chunk_size as usize + TAG_LEN;
    let mut buf = Zeroizing::new(vec![0u8; full]);
    let mut carry: Option<u8> = None;
    let mut counter: u32 = 0;
    let mut total: u64 = 0;
    loop {
        let mut filled = 0;
        if let Some(b) = carry.take() {
            buf[0] = b;
            filled = 1;
        }
        filled += read_full(&mut input, &mut buf[filled..]).map_err(SealError::Read)?;
        let last = if filled < full {
            true
        } else {
            carry = read_one(&mut input).map_err(SealError::Read)?;
            carry.is_none()
        };
        if filled < TAG_LEN {
            return Err(SealError::Truncated {
                chunk: u64::from(counter),
            });
        }
        let (ct, tag_bytes) = buf[..filled].split_at_mut(filled - TAG_LEN);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_bytes);
        let pt = opening_key
            .open_in_place_separate_tag(
                chunk_nonce(&header.nonce_prefix, counter, last),
                Aad::from(aad.as_slice()),
                Tag::from(tag),
                ct,
                0..,
            )
            .map_err(|_| SealError::Tampered {
                chunk: u64::from(counter),
            })?;
        output.write_all(pt).map_err(SealError::Write)?;
        total += pt.len() as u64;
        if last {
            break;
        }
        counter = counter.checked_add(1).ok_or(SealError::TooLarge)?;
    }
    output.flush().map_err(SealError::Write)?;
    Ok(StreamSummary {
        plaintext_bytes: total,
        chunks: u64::from(counter) + 1,
    })
}

/// Where streamed output goes when it targets a path.
fn write_atomically<F>(dest: &Path, overwrite: bool, body: F) -> Result<StreamSummary, SealError>
where
    F: FnOnce(&mut io::BufWriter<&mut std::fs::File>) -> Result<StreamSummary, SealError>,
{
    let mut tmp = AtomicFile::create(dest).map_err(SealError::Write)?;
    let summary = {
        let file = tmp.file().map_err(SealError::Write)?;
        let mut w = io::BufWriter::with_capacity(256 * 1024, file);
        let s = body(&mut w)?;
        w.flush().map_err(SealError::Write)?;
        s
    };
    tmp.commit(overwrite).map_err(SealError::Write)?;
    Ok(summary)
}

/// Seals `input` into a new file at `dest` (written to a temporary file in the same directory, fsynced, and
/// moved into place only on success). With `overwrite == false` an existing `dest` is never replaced.
pub fn seal_to_path<R: Read>(
    key: &Key256,
    input: R,
    dest: &Path,
    options: SealOptions,
    overwrite: bool,
) -> Result<StreamSummary, SealError> {
    write_atomically(dest, overwrite, |w| seal_stream(key, input, w, options))
}

/// Unseals `input` into `dest`: plaintext goes to a temporary file (mode 0600) in the same directory, which is
/// fsynced and renamed into place only after every chunk authenticated and the final chunk was seen. On any
/// refusal or error nothing is left behind. With `overwrite == false` an existing `dest` is never replaced.
pub fn unseal_to_path<R: Read>(
    key: &Key256,
    input: R,
    dest: &Path,
    overwrite: bool,
) -> Result<StreamSummary, SealError> {
    write_atomically(dest, overwrite, |w| unseal_stream(key, input, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key256 {
        Key256::from_bytes([9u8; 32])
    }

    fn seal_bytes(pt: &[u8], chunk_size: u32) -> Vec<u8> {
        let mut out = Vec::new();
        seal_stream(&key(), pt, &mut out, SealOptions { chunk_size }).unwrap();
        out
    }

    #[test]
    fn header_round_trips_and_every_prefix_of_it_is_refused() {
        let sealed = seal_bytes(b"hello", 64);
        let (h, used) = Header::parse(&sealed).unwrap();
        assert_eq!(h.chunk_size, 64);
        assert_eq!(h.key_id, key().key_id());
        assert_eq!(used, h.encode().unwrap().len());
        for n in 0..used {
            assert!(Header::parse(&sealed[..n]).is_err(), "prefix {n} accepted");
            assert!(
                read_header(&mut &sealed[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
    }

    #[test]
    fn refuses_chunk_sizes_out_of_range() {
        for cs in [0, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1] {
            let r = seal_stream(&key(), &b""[..], Vec::new(), SealOptions { chunk_size: cs });
            assert!(matches!(r, Err(SealError::InvalidOption(_))));
        }
    }

    #[test]
    fn round_trips_small_inputs() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let sealed = seal_bytes(&pt, 64);
            let mut out = Vec::new();
            let s = unseal_stream(&key(), sealed.as_slice(), &mut out).unwrap();
            assert_eq!(out, pt);
            assert_eq!(s.plaintext_bytes, len as u64);
        }
    }
}
