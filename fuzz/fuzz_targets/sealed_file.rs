//! Fuzz target for the sealed-file header parser and the unsealing stream.
//!
//! Input byte 0 picks the mode:
//! - even: the rest is an untrusted sealed file; parse its header and unseal it with a fixed key into a sink.
//!   Must never panic, whatever the bytes.
//! - odd: a property check. Bytes 1..5 pick a chunk size, a position and an XOR mask; the rest is plaintext.
//!   Seal it with the fixed key, then flip a byte (mask != 0) or truncate (bit 1 of byte 0): unsealing must
//!   then be refused; unchanged, it must round-trip exactly.
#![no_main]

use cvm_keys::Key256;
use cvm_keys::seal::{self, Header, SealOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key256::from_bytes([0x11; 32]);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = Header::parse(rest);
        let _ = seal::unseal_stream(&key, rest, std::io::sink());
        return;
    }
    let [cs, p0, p1, mask, plaintext @ ..] = rest else {
        return;
    };
    let chunk_size = seal::MIN_CHUNK_SIZE + u32::from(*cs);
    let mut sealed = Vec::new();
    seal::seal_stream(&key, plaintext, &mut sealed, SealOptions { chunk_size }).unwrap();
    let pos = usize::from(u16::from_le_bytes([*p0, *p1])) % sealed.len();
    let tampered = if mode & 2 != 0 {
        sealed.truncate(pos);
        true
    } else if *mask != 0 {
        sealed[pos] ^= *mask;
        true
    } else {
        false
    };
    let mut out = Vec::new();
    let result = seal::unseal_stream(&key, sealed.as_slice(), &mut out);
    if tampered {
        let err = result.expect_err("a tampered or truncated file was accepted");
        assert!(err.is_refusal(), "not reported as a refusal: {err}");
    } else {
        result.unwrap();
        assert_eq!(out, plaintext);
    }
});
