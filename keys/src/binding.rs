//! The key binding of DESIGN.md: the 64 bytes a guest puts in its evidence's `report_data`, tying its
//! ephemeral HPKE public key and the requested resource to the service's fresh nonce:
//! `report_data = SHA-512("cvm-attest/v1" ‖ 0x00 ‖ nonce ‖ hpke_public_key ‖ resource)`.

use ring::digest;

/// The domain-separation label (followed by one 0x00 byte).
pub const LABEL: &[u8] = b"cvm-attest/v1";

/// Length of `report_data` (SNP and TDX both carry 64 bytes).
pub const REPORT_DATA_LEN: usize = 64;

/// Computes `report_data` for a nonce, an HPKE public key and a resource name.
///
/// The nonce and the public key have fixed lengths in the protocol (the nonce is at least 32 bytes and
/// chosen by the service, the X25519 key is 32 bytes), so the concatenation is unambiguous for a given nonce.
pub fn report_data(nonce: &[u8], hpke_public_key: &[u8], resource: &[u8]) -> [u8; REPORT_DATA_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA512);
    ctx.update(LABEL);
    ctx.update(&[0u8]);
    ctx.update(nonce);
    ctx.update(hpke_public_key);
    ctx.update(resource);
    let mut out = [0u8; REPORT_DATA_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The prefix of the HPKE `info` under which the service seals a released secret.
pub const SECRET_INFO_PREFIX: &[u8] = b"cvm-attest/v1 secret";

/// The HPKE `info` for a secret released for `resource`: `"cvm-attest/v1 secret" ‖ resource`.
pub fn secret_info(resource: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(SECRET_INFO_PREFIX.len() + resource.len());
    info.extend_from_slice(SECRET_INFO_PREFIX);
    info.extend_from_slice(resource);
    info
}

/// Checks `report_data` against the expected binding in constant time.
pub fn verify(
    report_data_field: &[u8],
    nonce: &[u8],
    hpke_public_key: &[u8],
    resource: &[u8],
) -> bool {
    let expected = report_data(nonce, hpke_public_key, resource);
    report_data_field.len() == REPORT_DATA_LEN
        && expected
            .iter()
            .zip(report_data_field)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected value computed independently with Python:
    /// `hashlib.sha512(b"cvm-attest/v1" + b"\0" + bytes(range(32)) + bytes([0x42]*32) + b"db-password")`.
    const KAT: &str = "f0dcdc5918259dc4261235e49813c86fb670a470e7cf967cad2888758c54dc3e050b198a125af8e55efaee2338e6341ae8d63b93d5c398b38994de13d71ef08d";

    #[test]
    fn matches_the_known_answer() {
        let nonce: Vec<u8> = (0u8..32).collect();
        let pk = [0x42u8; 32];
        let rd = report_data(&nonce, &pk, b"db-password");
        assert_eq!(hex::encode(rd), KAT);
        assert!(verify(&rd, &nonce, &pk, b"db-password"));
    }

    #[test]
    fn builds_the_secret_info() {
        assert_eq!(secret_info(b"db"), b"cvm-attest/v1 secretdb".to_vec());
    }

    #[test]
    fn changes_with_every_input() {
        let nonce = [1u8; 32];
        let pk = [2u8; 32];
        let base = report_data(&nonce, &pk, b"r");
        assert_ne!(base, report_data(&[3u8; 32], &pk, b"r"));
        assert_ne!(base, report_data(&nonce, &[3u8; 32], b"r"));
        assert_ne!(base, report_data(&nonce, &pk, b"s"));
        assert!(!verify(&base, &nonce, &pk, b"s"));
        assert!(!verify(&base[..63], &nonce, &pk, b"r"));
    }
}
