//! ECDSA keys derived from the seed: ring's `EcdsaKeyPair::generate_pkcs8` fed from the [`Drbg`] through
//! ring's (doc-hidden) `FixedSliceRandom`, so the same seed gives the same key. Scalars out of range are
//! redrawn.

use super::drbg::Drbg;
use super::error::SimError;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, EcdsaSigningAlgorithm};

/// How many candidate scalars to try before giving up (each fails with probability < 2^-32).
const MAX_DRAWS: usize = 64;

/// A PKCS#8 ECDSA private key for `alg` (P-256 or P-384, per its curve) drawn from `drbg`.
pub fn generate_pkcs8(
    alg: &'static EcdsaSigningAlgorithm,
    scalar_len: usize,
    drbg: &mut Drbg,
) -> Result<Vec<u8>, SimError> {
    let rng = SystemRandom::new();
    for _ in 0..MAX_DRAWS {
        let scalar = drbg.bytes(scalar_len);
        #[allow(deprecated)]
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &scalar };
        if let Ok(doc) = EcdsaKeyPair::generate_pkcs8(alg, &fixed) {
            // Loading proves the document is usable.
            EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng)
                .map_err(|e| SimError::Crypto(format!("generated ECDSA key: {e}")))?;
            return Ok(doc.as_ref().to_vec());
        }
    }
    Err(SimError::Crypto(
        "could not draw an ECDSA private key".into(),
    ))
}

/// Load a PKCS#8 ECDSA key written by [`generate_pkcs8`].
pub fn load(
    alg: &'static EcdsaSigningAlgorithm,
    pkcs8: &[u8],
    what: &str,
) -> Result<EcdsaKeyPair, SimError> {
    EcdsaKeyPair::from_pkcs8(alg, pkcs8, &SystemRandom::new())
        .map_err(|e| SimError::Invalid(format!("{what}: not a usable ECDSA key: {e}")))
}
