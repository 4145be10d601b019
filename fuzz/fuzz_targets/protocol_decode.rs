//! CBOR request bodies → the strict form check and the protocol's request types (and the COSE token /
//! COSE_Key decoders): decoding must never panic; whatever decodes passed the strict check, and re-encodes
//! to a body the strict decoder accepts, of the same length (only the order of map keys may differ: every
//! length is in its shortest form, there are no tags and nothing trails), that decodes to the same value.
#![no_main]

use cvm_attest::protocol::{
    self, AttestRequest, ChallengeRequest, PutSecretRequest, decode, encode, strict,
};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode::<T>(data) {
        assert!(
            strict::check_body(data).is_ok(),
            "decoded a non-strict body"
        );
        let again = encode(&value).expect("a decoded value encodes");
        assert_eq!(
            again.len(),
            data.len(),
            "a strict body re-encodes to another length"
        );
        assert_eq!(
            decode::<T>(&again).expect("re-encoded value decodes"),
            value
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = strict::check_body(data);
    round_trip::<ChallengeRequest>(data);
    round_trip::<AttestRequest>(data);
    round_trip::<PutSecretRequest>(data);
    round_trip::<protocol::ErrorBody>(data);
    let _ = cvm_attest::token::CoseKey::from_cbor(data);
    let _ = cvm_attest::token::verify(data, &[4; 65]);
});
