//! CBOR request bodies → the protocol's request types (and the COSE token / COSE_Key decoders): decoding
//! must never panic, and whatever decodes must re-encode and decode to the same value.
#![no_main]

use cvm_attest::protocol::{
    self, AttestRequest, ChallengeRequest, PutSecretRequest, decode, encode,
};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = decode::<T>(data) {
        let again = encode(&value).expect("a decoded value encodes");
        assert_eq!(
            decode::<T>(&again).expect("re-encoded value decodes"),
            value
        );
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ChallengeRequest>(data);
    round_trip::<AttestRequest>(data);
    round_trip::<PutSecretRequest>(data);
    round_trip::<protocol::ErrorBody>(data);
    let _ = cvm_attest::token::CoseKey::from_cbor(data);
    let _ = cvm_attest::token::verify(data, &[4; 65]);
});
