//! Arbitrary bytes as a QGS answer relayed by the host into the GetQuote buffer: a length-prefixed frame
//! (`qgs_quote`) and a bare GET_QUOTE_RESP (`qgs_response`). Must never panic; a quote found is non-empty
//! and ends the message (the selected id, if any, comes before it).
#![no_main]

use cvm_agent::tdxguest::{QGS_BODY_OFFSET, QGS_LEN_PREFIX, qgs_quote, qgs_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = qgs_response(data) {
        assert!(!quote.is_empty());
        assert!(QGS_BODY_OFFSET + quote.len() <= data.len());
        assert_eq!(quote, &data[data.len() - quote.len()..]);
    }
    if let Some(Ok(quote)) = qgs_quote(data) {
        assert!(!quote.is_empty());
        assert!(QGS_LEN_PREFIX + QGS_BODY_OFFSET + quote.len() <= data.len());
        assert_eq!(quote, &data[data.len() - quote.len()..]);
    }
});
