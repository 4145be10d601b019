//! Library-level sealing tests: round trips at every size that matters, and refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cvm_keys::Key256;
use cvm_keys::seal::{self, DEFAULT_CHUNK_SIZE, Header, SealError, SealOptions, TAG_LEN};

fn key() -> Key256 {
    Key256::from_bytes([0x42; 32])
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn seal_with(key: &Key256, pt: &[u8], chunk_size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    seal::seal_stream(key, pt, &mut out, SealOptions { chunk_size }).unwrap();
    out
}

fn unseal(key: &Key256, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::new();
    seal::unseal_stream(key, sealed, &mut out).map(|_| out)
}

/// Offsets of the chunks of a sealed file: (start, end) of each chunk's ciphertext ‖ tag.
fn chunks(sealed: &[u8]) -> Vec<(usize, usize)> {
    let (h, mut pos) = Header::parse(sealed).unwrap();
    let full = h.chunk_size as usize + TAG_LEN;
    let mut v = Vec::new();
    while pos < sealed.len() {
        let end = (pos + full).min(sealed.len());
        v.push((pos, end));
        pos = end;
    }
    v
}

#[test]
fn round_trips_sizes_around_the_chunk_size() {
    let cs = DEFAULT_CHUNK_SIZE as usize;
    for len in [0, 1, cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 7] {
        let pt = pattern(len);
        let sealed = seal_with(&key(), &pt, DEFAULT_CHUNK_SIZE);
        let expected_chunks = len.div_ceil(cs).max(1);
        assert_eq!(chunks(&sealed).len(), expected_chunks, "len {len}");
        assert_eq!(unseal(&key(), &sealed).unwrap(), pt, "len {len}");
    }
}

#[test]
fn round_trips_several_mebibytes() {
    let pt = pattern(5 * 1024 * 1024 + 12345);
    let sealed = seal_with(&key(), &pt, DEFAULT_CHUNK_SIZE);
    let out = unseal(&key(), &sealed).unwrap();
    assert!(out == pt);
}

#[test]
fn round_trips_with_the_smallest_chunk_size() {
    for len in [0, 15, 16, 17, 100] {
        let pt = pattern(len);
        assert_eq!(unseal(&key(), &seal_with(&key(), &pt, 16)).unwrap(), pt);
    }
}

#[test]
fn rejects_any_flipped_bit_in_header_body_or_tag() {
    let sealed = seal_with(&key(), &pattern(70), 16);
    for pos in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = sealed.clone();
            t[pos] ^= bit;
            let err = unseal(&key(), &t).unwrap_err();
            assert!(err.is_refusal(), "byte {pos}: {err}");
        }
    }
}

#[test]
fn rejects_truncation_at_and_between_chunk_boundaries() {
    let sealed = seal_with(&key(), &pattern(70), 16);
    for len in 0..sealed.len() {
        let err = unseal(&key(), &sealed[..len]).unwrap_err();
        assert!(err.is_refusal(), "length {len}: {err}");
    }
}

#[test]
fn rejects_truncation_at_a_chunk_boundary_of_an_exact_multiple() {
    // 64 bytes in 16-byte chunks: four full chunks, the last one flagged final.
    let sealed = seal_with(&key(), &pattern(64), 16);
    let c = chunks(&sealed);
    assert_eq!(c.len(), 4);
    for &(_, end) in &c[..3] {
        assert!(matches!(
            unseal(&key(), &sealed[..end]),
            Err(SealError::Tampered { .. })
        ));
    }
    let (_, header_end) = Header::parse(&sealed).unwrap();
    assert!(matches!(
        unseal(&key(), &sealed[..header_end]),
        Err(SealError::Truncated { chunk: 0 })
    ));
}

#[test]
fn rejects_two_chunks_swapped() {
    let sealed = seal_with(&key(), &pattern(64), 16);
    let c = chunks(&sealed);
    let mut t = sealed.clone();
    t[c[0].0..c[0].1].copy_from_slice(&sealed[c[1].0..c[1].1]);
    t[c[1].0..c[1].1].copy_from_slice(&sealed[c[0].0..c[0].1]);
    assert!(matches!(
        unseal(&key(), &t),
        Err(SealError::Tampered { chunk: 0 })
    ));
}

#[test]
fn rejects_a_chunk_taken_from_another_file_with_the_same_key() {
    let pt = pattern(64);
    let a = seal_with(&key(), &pt, 16);
    let b = seal_with(&key(), &pt, 16);
    let (ca, cb) = (chunks(&a), chunks(&b));
    let mut t = a.clone();
    t[ca[1].0..ca[1].1].copy_from_slice(&b[cb[1].0..cb[1].1]);
    assert!(matches!(
        unseal(&key(), &t),
        Err(SealError::Tampered { chunk: 1 })
    ));
    // The other file's header with this file's chunks fails too.
    let mut t = b[..cb[0].0].to_vec();
    t.extend_from_slice(&a[ca[0].0..]);
    assert!(matches!(
        unseal(&key(), &t),
        Err(SealError::Tampered { chunk: 0 })
    ));
}

#[test]
fn rejects_the_wrong_key_naming_both_key_ids() {
    let sealed = seal_with(&key(), b"secret", 16);
    let other = Key256::from_bytes([0x43; 32]);
    let err = unseal(&other, &sealed).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&key().key_id().to_string()), "{msg}");
    assert!(msg.contains(&other.key_id().to_string()), "{msg}");
}

#[test]
fn rejects_data_that_is_not_sealed() {
    for data in [&b""[..], b"hello world, not sealed", &[0u8; 4096]] {
        assert!(matches!(unseal(&key(), data), Err(SealError::NotSealed)));
    }
}

#[test]
fn rejects_a_header_with_an_oversized_chunk_size() {
    // Re-encode a valid header with chunk_size above the cap: refused before any allocation of that size.
    let sealed = seal_with(&key(), b"x", 16);
    let (mut h, _) = Header::parse(&sealed).unwrap();
    h.chunk_size = seal::MAX_CHUNK_SIZE + 1;
    let bytes = h.encode().unwrap();
    assert!(matches!(
        Header::parse(&bytes),
        Err(SealError::MalformedHeader(_))
    ));
}

#[test]
fn unseal_to_path_leaves_nothing_behind_on_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut sealed = seal_with(&key(), &pattern(100), 16);
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    let out = dir.path().join("out");
    assert!(seal::unseal_to_path(&key(), sealed.as_slice(), &out, false).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unseal_to_path_writes_mode_0600_and_refuses_to_replace_without_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with(&key(), b"payload", 16);
    let out = dir.path().join("out");
    seal::unseal_to_path(&key(), sealed.as_slice(), &out, false).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"payload");
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(seal::unseal_to_path(&key(), sealed.as_slice(), &out, false).is_err());
    seal::unseal_to_path(&key(), sealed.as_slice(), &out, true).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
