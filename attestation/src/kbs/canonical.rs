//! REPORT_DATA as the guest side computes it (guest-components' `rcar_client::get_composite_evidence`):
//! the selected hash of the RFC 8785 (JCS) canonical JSON of
//! `{"additional-evidence": S, "nonce": S, "tee-pubkey": JWK}`, zero-padded to 64 bytes by the attester.
//! All members are strings, so canonical JSON here is: members sorted by name (all names are ASCII, where
//! UTF-16 order is byte order), no whitespace, and strings escaped as ECMAScript's `JSON.stringify` does
//! (RFC 8785 §3.2.2.2: `\"`, `\\`, `\b \t \n \f \r`, other controls as `\u00xx`, everything else as is).

use super::jwk::{ALG_ECDH_ES_A256KW, CRV_P256, EcPublicJwk};
use super::payload::HashAlgorithm;

/// Length of SNP and TDX REPORT_DATA.
pub const REPORT_DATA_LEN: usize = 64;

/// Append `s` as an RFC 8785 JSON string.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The canonical JSON the guest hashes.
pub fn runtime_data_json(
    nonce: &str,
    tee_pubkey: &EcPublicJwk,
    additional_evidence: &str,
) -> String {
    let mut out = String::with_capacity(256 + nonce.len() + additional_evidence.len());
    out.push_str("{\"additional-evidence\":");
    push_string(&mut out, additional_evidence);
    out.push_str(",\"nonce\":");
    push_string(&mut out, nonce);
    out.push_str(",\"tee-pubkey\":{\"alg\":");
    push_string(&mut out, ALG_ECDH_ES_A256KW);
    out.push_str(",\"crv\":");
    push_string(&mut out, CRV_P256);
    out.push_str(",\"kty\":\"EC\",\"x\":");
    push_string(&mut out, &tee_pubkey.x_b64());
    out.push_str(",\"y\":");
    push_string(&mut out, &tee_pubkey.y_b64());
    out.push_str("}}");
    out
}

/// REPORT_DATA: `hash(canonical JSON)` followed by zeros up to 64 bytes.
pub fn report_data(
    hash: HashAlgorithm,
    nonce: &str,
    tee_pubkey: &EcPublicJwk,
    additional_evidence: &str,
) -> [u8; REPORT_DATA_LEN] {
    let digest = hash.digest(runtime_data_json(nonce, tee_pubkey, additional_evidence).as_bytes());
    let mut out = [0u8; REPORT_DATA_LEN];
    for (o, d) in out.iter_mut().zip(digest) {
        *o = d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_rfc_8785_says() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\u{08}\t\n\u{0c}\r\u{01}\u{1f}\u{7f}é€😀/");
        assert_eq!(s, "\"a\\\"b\\\\c\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}é€😀/\"");
    }
}
