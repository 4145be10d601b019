//! Arbitrary bytes as the GetQuote buffer the VMM answers through `/dev/tdx_guest`: header read, status
//! checked, answer bounds-checked, a QGS frame in it unwrapped. Must never panic; a quote found lies inside
//! the `out_len` bytes after the header (at their start for a bare quote, at their end for a QGS answer).
#![no_main]

use cvm_agent::tdxguest::{HEADER_LEN, quote_from_buffer, quote_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quote_header(data);
    if let Ok(quote) = quote_from_buffer(data) {
        assert!(!quote.is_empty());
        let out_len = quote_header(data).map(|h| h.out_len as usize).unwrap_or(0);
        let answer = &data[HEADER_LEN..HEADER_LEN + out_len];
        assert!(quote.len() <= answer.len());
        assert!(
            quote == &answer[..quote.len()] || quote == &answer[answer.len() - quote.len()..],
            "the quote is not where a bare or a QGS answer puts it"
        );
    }
});
