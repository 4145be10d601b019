//! JSON Web Keys (RFC 7517/7518): the guest's `tee-pubkey` (an EC P-256 key for `ECDH-ES+A256KW`, the
//! guest side's default) and the ES256 key that verifies the service's tokens. Coordinates are base64url
//! without padding, exactly 32 bytes; anything else (RSA keys, other curves, extra members) is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The key-management algorithm of the guest's key.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// The one curve supported.
pub const CRV_P256: &str = "P-256";
/// Length of a P-256 coordinate.
pub const COORD_LEN: usize = 32;

/// Why a JWK is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    /// Not an EC P-256 `ECDH-ES+A256KW` key.
    #[error(
        "tee-pubkey must be an EC key on P-256 for ECDH-ES+A256KW (kty \"EC\", crv \"P-256\", alg \
         \"ECDH-ES+A256KW\"): {0}"
    )]
    Unsupported(String),
    /// A coordinate is not 32 bytes of base64url without padding.
    #[error("tee-pubkey {0}: not {COORD_LEN} bytes of base64url without padding")]
    Coordinate(&'static str),
    /// The coordinates are not a point on P-256.
    #[error("tee-pubkey is not a point on P-256")]
    NotOnCurve,
}

/// The JSON members of an EC JWK, as guest-components serializes them (kbs-types' `TeePubKey::EC`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EcMembers {
    kty: String,
    crv: String,
    alg: String,
    x: String,
    y: String,
}

/// An EC P-256 public key for `ECDH-ES+A256KW`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcPublicJwk {
    /// The x coordinate.
    pub x: [u8; COORD_LEN],
    /// The y coordinate.
    pub y: [u8; COORD_LEN],
}

fn coordinate(name: &'static str, text: &str) -> Result<[u8; COORD_LEN], JwkError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwkError::Coordinate(name))?;
    bytes.try_into().map_err(|_| JwkError::Coordinate(name))
}

impl EcPublicJwk {
    /// From a SEC1 uncompressed point (65 bytes).
    pub fn from_uncompressed(point: &[u8]) -> Result<Self, JwkError> {
        match point {
            [0x04, rest @ ..] if rest.len() == 2 * COORD_LEN => {
                let (x, y) = rest.split_at(COORD_LEN);
                Ok(EcPublicJwk {
                    x: x.try_into().map_err(|_| JwkError::NotOnCurve)?,
                    y: y.try_into().map_err(|_| JwkError::NotOnCurve)?,
                })
            }
            _ => Err(JwkError::NotOnCurve),
        }
    }

    /// The SEC1 uncompressed point.
    pub fn uncompressed(&self) -> [u8; 1 + 2 * COORD_LEN] {
        let mut p = [0x04; 1 + 2 * COORD_LEN];
        p[1..=COORD_LEN].copy_from_slice(&self.x);
        p[1 + COORD_LEN..].copy_from_slice(&self.y);
        p
    }

    /// `x` in base64url without padding.
    pub fn x_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.x)
    }

    /// `y` in base64url without padding.
    pub fn y_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.y)
    }

    /// Check that the point is on P-256 (ring validates the peer point of a key agreement; one with a
    /// throw-away key says whether this key could ever be used).
    pub fn check_on_curve(&self) -> Result<(), JwkError> {
        let rng = ring::rand::SystemRandom::new();
        let ours =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .map_err(|_| JwkError::NotOnCurve)?;
        let point = self.uncompressed();
        let peer = ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, &point);
        ring::agreement::agree_ephemeral(ours, &peer, |_| ()).map_err(|_| JwkError::NotOnCurve)
    }

    /// Parse from a JSON value (strictly: exactly `kty`, `crv`, `alg`, `x`, `y`).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, JwkError> {
        let m: EcMembers = serde_json::from_value(value.clone())
            .map_err(|e| JwkError::Unsupported(crate::excerpt::truncate(e.to_string())))?;
        Self::from_members(&m)
    }

    fn from_members(m: &EcMembers) -> Result<Self, JwkError> {
        if m.kty != "EC" || m.crv != CRV_P256 || m.alg != ALG_ECDH_ES_A256KW {
            return Err(JwkError::Unsupported(format!(
                "got kty {}, crv {}, alg {}",
                crate::excerpt::quote(&m.kty),
                crate::excerpt::quote(&m.crv),
                crate::excerpt::quote(&m.alg)
            )));
        }
        Ok(EcPublicJwk {
            x: coordinate("x", &m.x)?,
            y: coordinate("y", &m.y)?,
        })
    }
}

impl Serialize for EcPublicJwk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EcMembers {
            kty: "EC".into(),
            crv: CRV_P256.into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x: self.x_b64(),
            y: self.y_b64(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EcPublicJwk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = EcMembers::deserialize(d)?;
        EcPublicJwk::from_members(&m).map_err(serde::de::Error::custom)
    }
}

/// The JWK Set (RFC 7517 §5) with the service's token verification key (ES256), as
/// `GET /kbs/v0/token-key` publishes it; `kid` is the base64url SHA-256 of the SEC1 point.
pub fn token_key_set(uncompressed: &[u8]) -> Result<serde_json::Value, JwkError> {
    let k = EcPublicJwk::from_uncompressed(uncompressed)?;
    Ok(serde_json::json!({
        "keys": [{
            "kty": "EC",
            "crv": CRV_P256,
            "alg": "ES256",
            "use": "sig",
            "kid": token_key_id(uncompressed),
            "x": k.x_b64(),
            "y": k.y_b64(),
        }]
    }))
}

/// The `kid` of the token key: base64url SHA-256 of its SEC1 point.
pub fn token_key_id(uncompressed: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, uncompressed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7517 Appendix A.1's P-256 key.
    fn rfc_key() -> serde_json::Value {
        json!({"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW",
               "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"})
    }

    #[test]
    fn the_rfc_key_round_trips_and_is_on_the_curve() {
        let k = EcPublicJwk::from_value(&rfc_key()).unwrap();
        k.check_on_curve().unwrap();
        assert_eq!(serde_json::to_value(&k).unwrap(), rfc_key());
    }

    #[test]
    fn refuses_other_keys_padding_extra_members_and_points_off_the_curve() {
        let with = |k: &str, v: serde_json::Value| {
            let mut j = rfc_key();
            j[k] = v;
            EcPublicJwk::from_value(&j)
        };
        assert!(matches!(
            with("kty", json!("RSA")),
            Err(JwkError::Unsupported(_))
        ));
        assert!(matches!(
            with("crv", json!("P-384")),
            Err(JwkError::Unsupported(_))
        ));
        assert!(matches!(
            with("alg", json!("ECDH-ES")),
            Err(JwkError::Unsupported(_))
        ));
        assert!(matches!(
            with("use", json!("enc")),
            Err(JwkError::Unsupported(_))
        ));
        assert_eq!(
            with("x", json!("MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4=")),
            Err(JwkError::Coordinate("x"))
        );
        assert_eq!(
            with("y", json!("4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IF")),
            Err(JwkError::Coordinate("y"))
        );
        let off = with("y", json!("4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyQ")).unwrap();
        assert_eq!(off.check_on_curve(), Err(JwkError::NotOnCurve));
    }
}
