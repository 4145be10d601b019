//! The attestation token of `/kbs/v0/attest`: a JWT (RFC 7519) signed ES256 (RFC 7518 §3.4: ECDSA P-256
//! SHA-256, signature `r ‖ s`) by the service's token key, the same key as the `/v1` COSE tokens. The header
//! is `{"alg":"ES256","typ":"JWT","kid":…}`; `kid` names the key of `GET /kbs/v0/token-key`.

use crate::token::{TokenError, TokenSigner};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde_json::Value;

/// Largest token [`verify`] looks at.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a token is refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with an ES256 header and a JSON object of claims.
    #[error("not an ES256 JWT: {0}")]
    Format(&'static str),
    /// The signature does not verify with the service's key.
    #[error("the token's signature does not verify with this service's key")]
    Signature,
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] TokenError),
}

/// Sign `claims` (a JSON object) into a compact JWT.
pub fn sign(signer: &TokenSigner, claims: &Value) -> Result<String, JwtError> {
    let header = serde_json::json!({
        "alg": "ES256",
        "typ": "JWT",
        "kid": super::jwk::token_key_id(signer.public_key()),
    });
    let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = signer.sign_bytes(input.as_bytes())?;
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(input)
}

/// Verify a compact JWT with a SEC1 P-256 public key and return its claims (`exp` is the caller's
/// decision).
pub fn verify(token: &str, public_key: &[u8]) -> Result<Value, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Format("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Format("expected three parts"));
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| JwtError::Format("bad base64url"))
    };
    let header: Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Format("header is not JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(JwtError::Format("alg must be ES256"));
    }
    let signed_len = h.len() + 1 + c.len();
    let signed = token
        .get(..signed_len)
        .ok_or(JwtError::Format("bad parts"))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(signed.as_bytes(), &decode(s)?)
        .map_err(|_| JwtError::Signature)?;
    let claims: Value =
        serde_json::from_slice(&decode(c)?).map_err(|_| JwtError::Format("claims are not JSON"))?;
    if !claims.is_object() {
        return Err(JwtError::Format("claims are not an object"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_the_service_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let signer = TokenSigner::load_or_create(&dir.path().join("k")).unwrap();
        let claims = serde_json::json!({"iss": "cvm-attest", "exp": 20});
        let token = sign(&signer, &claims).unwrap();
        assert_eq!(verify(&token, signer.public_key()).unwrap(), claims);
        let other = TokenSigner::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(matches!(
            verify(&token, other.public_key()),
            Err(JwtError::Signature)
        ));
        for i in 0..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            if t != token {
                assert!(verify(&t, signer.public_key()).is_err(), "byte {i}");
            }
        }
    }
}
