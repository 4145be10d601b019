//! Arbitrary bytes as what the agent reads from the simulated PSP (the launcher's Unix socket, or the
//! virtio-serial port the host controls): a length-prefixed frame, then the response body. Must never
//! panic; evidence decoded from a body is never longer than the body.
#![no_main]

use cvm_agent::simsock::{MAX_RESPONSE, decode_response, read_frame};
use cvm_attest::protocol::TeeKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = decode_response(data, TeeKind::Snp) {
        assert!(ev.evidence.len() <= data.len());
    }
    let mut framed = data;
    if let Ok(body) = read_frame(&mut framed, MAX_RESPONSE) {
        assert!(body.len() + 4 <= data.len());
        let _ = decode_response(&body, TeeKind::Tdx);
    }
});
