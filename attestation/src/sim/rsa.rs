//! RSA key generation for the simulated AMD ARK and ASK (ring verifies and signs RSA but cannot generate
//! keys): probable primes from the [`Drbg`] (small-prime sieve, then Miller–Rabin), the CRT parameters, and
//! the PKCS#1 `RSAPrivateKey` DER that ring's [`RsaKeyPair::from_der`] loads. `num-bigint` is used for
//! arithmetic only; signing is ring's RSASSA-PSS.

use super::der;
use super::drbg::Drbg;
use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::One;
use ring::signature::{RSA_PSS_SHA384, RsaKeyPair};

/// The public exponent, 65537 (the only one ring accepts for private keys).
const E: u32 = 65537;

/// Miller–Rabin rounds per candidate (FIPS 186-5 Table B.1 asks for 4 for 2048-bit primes of a 4096-bit key;
/// one more for margin).
const MR_ROUNDS: usize = 5;

/// How many consecutive candidates are sieved from one random start.
const SEARCH_WINDOW: usize = 1 << 16;

/// How many small primes the sieve divides by before Miller–Rabin.
const SIEVE_LIMIT: u32 = 8192;

/// Why an RSA key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    /// ring refused the key (cannot happen for keys made here; kept so nothing panics).
    #[error("ring refused the generated RSA key: {0}")]
    Rejected(String),
    /// ring could not sign.
    #[error("RSA-PSS signing failed")]
    Sign,
}

fn small_primes() -> Vec<u32> {
    let limit = SIEVE_LIMIT as usize;
    let mut composite = vec![false; limit];
    let mut out = Vec::new();
    for i in 3..limit {
        if composite.get(i).copied().unwrap_or(true) {
            continue;
        }
        out.push(i as u32);
        let mut j = i * i;
        while j < limit {
            if let Some(c) = composite.get_mut(j) {
                *c = true;
            }
            j += i;
        }
    }
    out
}

fn miller_rabin(n: &BigUint, rounds: usize, drbg: &mut Drbg) -> bool {
    let one = BigUint::one();
    let two = &one + &one;
    let n_minus_1 = n - &one;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let len = n.to_bytes_be().len();
    'rounds: for _ in 0..rounds {
        // A base in [2, n-2].
        let a = BigUint::from_bytes_be(&drbg.bytes(len + 8)) % (n - 3u32) + &two;
        let mut x = a.modpow(&d, n);
        if x == one || x == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&two, n);
            if x == n_minus_1 {
                continue 'rounds;
            }
        }
        return false;
    }
    true
}

/// A probable prime of exactly `bits` bits (top two bits set, so a product of two has `2 * bits` bits) with
/// `gcd(p - 1, e) = 1`.
fn prime(bits: usize, drbg: &mut Drbg, sieve: &[u32]) -> BigUint {
    loop {
        let mut bytes = drbg.bytes(bits / 8);
        if let Some(top) = bytes.first_mut() {
            *top |= 0xc0;
        }
        if let Some(low) = bytes.last_mut() {
            *low |= 1;
        }
        let base = BigUint::from_bytes_be(&bytes);
        // Mark the offsets in the window whose candidate a small prime divides.
        let mut composite = vec![false; SEARCH_WINDOW];
        for &p in sieve {
            let r: u32 = (&base % p).try_into().unwrap_or(0);
            let p = p as usize;
            let mut offset = (p - r as usize) % p;
            while offset < SEARCH_WINDOW {
                if let Some(c) = composite.get_mut(offset) {
                    *c = true;
                }
                offset += p;
            }
        }
        // Search odd offsets (the base is odd); give up on this base well before the top bits could change.
        for (delta, _) in composite
            .iter()
            .enumerate()
            .step_by(2)
            .filter(|(_, composite)| !**composite)
        {
            let candidate = &base + delta;
            if (&candidate - 1u32).gcd(&BigUint::from(E)) != BigUint::one() {
                continue;
            }
            if miller_rabin(&candidate, MR_ROUNDS, drbg) {
                return candidate;
            }
        }
    }
}

/// An RSA private key: ring's signer plus the public key's DER.
pub struct RsaKey {
    pair: RsaKeyPair,
    pkcs1: Vec<u8>,
    spki: Vec<u8>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaKey").finish_non_exhaustive()
    }
}

impl RsaKey {
    /// Generate a `bits`-bit key (e.g. 4096) from `drbg`.
    pub fn generate(bits: usize, drbg: &mut Drbg) -> Result<Self, RsaError> {
        let sieve = small_primes();
        let e = BigUint::from(E);
        loop {
            let a = prime(bits / 2, drbg, &sieve);
            let b = prime(bits / 2, drbg, &sieve);
            // ring wants q < p.
            let (p, q) = match a.cmp(&b) {
                std::cmp::Ordering::Greater => (a, b),
                std::cmp::Ordering::Less => (b, a),
                std::cmp::Ordering::Equal => continue,
            };
            let n = &p * &q;
            let p1 = &p - 1u32;
            let q1 = &q - 1u32;
            let lambda = p1.lcm(&q1);
            let (Some(d), Some(q_inv)) = (e.modinv(&lambda), q.modinv(&p)) else {
                continue;
            };
            let d_p = &d % &p1;
            let d_q = &d % &q1;
            let pkcs1 = der::seq(&[
                &der::u64_int(0),
                &der::uint(&n.to_bytes_be()),
                &der::uint(&e.to_bytes_be()),
                &der::uint(&d.to_bytes_be()),
                &der::uint(&p.to_bytes_be()),
                &der::uint(&q.to_bytes_be()),
                &der::uint(&d_p.to_bytes_be()),
                &der::uint(&d_q.to_bytes_be()),
                &der::uint(&q_inv.to_bytes_be()),
            ]);
            return Self::from_pkcs1(&pkcs1);
        }
    }

    /// Load a PKCS#1 `RSAPrivateKey` DER (as written by [`RsaKey::pkcs1_der`]).
    pub fn from_pkcs1(pkcs1: &[u8]) -> Result<Self, RsaError> {
        let pair = RsaKeyPair::from_der(pkcs1).map_err(|e| RsaError::Rejected(e.to_string()))?;
        let public = pair.public().as_ref().to_vec(); // RSAPublicKey DER
        let spki = der::seq(&[
            &der::seq(&[&der::oid(&[1, 2, 840, 113549, 1, 1, 1]), &der::null()]),
            &der::bit_string(&public),
        ]);
        Ok(RsaKey {
            pair,
            pkcs1: pkcs1.to_vec(),
            spki,
        })
    }

    /// The PKCS#1 `RSAPrivateKey` DER.
    pub fn pkcs1_der(&self) -> &[u8] {
        &self.pkcs1
    }

    /// The `SubjectPublicKeyInfo` DER (rsaEncryption, as AMD's certificates carry it).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt (taken from `salt`, so the signature is
    /// reproducible from the seed).
    pub fn sign_pss_sha384(&self, message: &[u8], salt: &[u8; 48]) -> Result<Vec<u8>, RsaError> {
        #[allow(deprecated)]
        let rng = ring::test::rand::FixedSliceRandom { bytes: salt };
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PSS_SHA384, &rng, message, &mut sig)
            .map_err(|_| RsaError::Sign)?;
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PSS_2048_8192_SHA384, UnparsedPublicKey};

    #[test]
    fn generates_a_2048_bit_key_ring_loads_and_whose_signatures_verify() {
        let mut d = Drbg::new(b"test", "rsa");
        let key = RsaKey::generate(2048, &mut d).unwrap();
        let sig = key.sign_pss_sha384(b"hello", &[7; 48]).unwrap();
        assert_eq!(sig.len(), 256);
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key.pair.public().as_ref())
            .verify(b"hello", &sig)
            .unwrap();
        let again = RsaKey::from_pkcs1(key.pkcs1_der()).unwrap();
        assert_eq!(again.spki_der(), key.spki_der());
        assert!(miller_rabin(&BigUint::from(65537u32), 10, &mut d));
        assert!(!miller_rabin(&BigUint::from(65537u64 * 65539), 10, &mut d));
    }
}
