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

use std::io::{self, Read, Write};
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::fsutil::AtomicFile;
use crate::keyfile::{Key256, KeyId};

mod header;

use header::check_chunk_size;
pub use header::{Header, read_header};

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

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
pub(super) fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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
