//! Arbitrary bytes as the GetQuote buffer the VMM answers through `/dev/tdx_guest`: header read, status
//! checked, quote bounds-checked. Must never panic; a quote found lies inside the buffer after the header.
#![no_main]

use cvm_agent::tdxguest::{HEADER_LEN, quote_from_buffer, quote_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quote_header(data);
    if let Ok(quote) = quote_from_buffer(data) {
        assert!(!quote.is_empty());
        assert!(HEADER_LEN + quote.len() <= data.len());
        assert_eq!(quote, &data[HEADER_LEN..HEADER_LEN + quote.len()]);
    }
});
