//! A deterministic random bit generator: HMAC_DRBG with HMAC-SHA256 (NIST SP 800-90A §10.1.2, without
//! reseeding), built on `ring::hmac`. Every simulated key comes from one of these, instantiated from the seed
//! file's bytes and a label naming the key, so the same seed gives the same keys whatever the order of
//! generation.

use ring::hmac;

/// HMAC_DRBG state (key and value).
pub struct Drbg {
    key: hmac::Key,
    v: [u8; 32],
}

impl std::fmt::Debug for Drbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Drbg { .. }")
    }
}

fn mac(key: &hmac::Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

impl Drbg {
    /// Instantiate from `seed` (the entropy input) and `label` (the personalization string).
    pub fn new(seed: &[u8], label: &str) -> Self {
        let mut d = Drbg {
            key: hmac::Key::new(hmac::HMAC_SHA256, &[0u8; 32]),
            v: [1u8; 32],
        };
        d.update(&[seed, b"\x00cvm-sim\x00", label.as_bytes()]);
        d
    }

    fn update(&mut self, provided: &[&[u8]]) {
        let empty = provided.iter().all(|p| p.is_empty());
        for round in [0u8, 1u8] {
            let mut parts: Vec<&[u8]> = vec![&self.v, std::slice::from_ref(&round)];
            parts.extend_from_slice(provided);
            let k = mac(&self.key, &parts);
            self.key = hmac::Key::new(hmac::HMAC_SHA256, &k);
            self.v = mac(&self.key, &[&self.v]);
            if empty {
                break;
            }
        }
    }

    /// Fill `out` with the next bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            self.v = mac(&self.key, &[&self.v]);
            chunk.copy_from_slice(self.v.get(..chunk.len()).unwrap_or(&self.v));
        }
        self.update(&[]);
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.fill(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_label_give_the_same_stream_and_labels_separate() {
        let a = Drbg::new(b"seed", "ark").bytes(100);
        assert_eq!(a, Drbg::new(b"seed", "ark").bytes(100));
        assert_ne!(a, Drbg::new(b"seed", "ask").bytes(100));
        assert_ne!(a, Drbg::new(b"seed2", "ark").bytes(100));
        let mut d = Drbg::new(b"seed", "ark");
        assert_ne!(d.bytes(32), d.bytes(32));
    }
}
