//! HPKE (RFC 9180) on `ring`: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, and the AEADs AES-128-GCM,
//! AES-256-GCM and ChaCha20-Poly1305; modes base, psk, auth and auth_psk; sender and recipient contexts with
//! sequence numbers, and the secret-export interface.
//!
//! The protocol uses [`seal_base`] / [`open_base`] (suite X25519 / HKDF-SHA256 / AES-256-GCM) and
//! [`HpkeKeyPair::generate`].
//!
//! # X25519 with a stored private key on `ring`
//!
//! `ring::agreement` only offers *ephemeral* private keys, created from a `SecureRandom`. HPKE needs
//! DeriveKeyPair(ikm) (RFC 9180 §7.1.3) and decapsulation with a stored private key, so we build the
//! `EphemeralPrivateKey` from the stored 32 bytes through `ring::test::rand::FixedSliceRandom`, a public
//! (deprecated, doc-hidden) `SecureRandom` of ring 0.17 that returns the given bytes. For X25519, ring's key
//! generation is exactly "fill 32 bytes from the generator" (`ec/curve25519/x25519.rs`), and the scalar is
//! clamped inside the scalar multiplication, as RFC 7748 requires, so the resulting key *is* the stored key.
//! ring then performs the Diffie-Hellman (and its all-zero-output check, RFC 9180 §7.1.4) and the public-key
//! computation with its own constant-time code. We keep one construction point ([`x25519_private`]) so a
//! future ring with a real static-key API is a one-line change. No other crypto crate is needed. The copy of
//! the scalar that ring holds inside `EphemeralPrivateKey` is consumed by each single operation; ring does
//! not zeroize it, our own copies are.

use std::fmt;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

/// KEM id of DHKEM(X25519, HKDF-SHA256).
pub const KEM_X25519_HKDF_SHA256: u16 = 0x0020;
/// KDF id of HKDF-SHA256.
pub const KDF_HKDF_SHA256: u16 = 0x0001;
/// Length of an X25519 public key / `enc` (Npk, Nenc).
pub const NPK: usize = 32;
/// Length of an X25519 private key (Nsk).
pub const NSK: usize = 32;
/// Hash output length of HKDF-SHA256 (Nh), also Nsecret of the KEM.
const NH: usize = 32;
/// Nonce length of every supported AEAD (Nn).
const NN: usize = 12;

/// Errors from HPKE operations. Deliberately coarse where detail would help an attacker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpkeError {
    /// A public key or `enc` is not 32 bytes, or the Diffie-Hellman result is the all-zero value.
    #[error("invalid X25519 public key or encapsulation")]
    InvalidPublicKey,
    /// The ciphertext did not authenticate (wrong key, info, AAD, sequence number, or tampered).
    #[error("HPKE decryption failed")]
    OpenFailed,
    /// psk and psk_id must be both given and non-empty, or both absent (RFC 9180 §5.1).
    #[error("inconsistent PSK inputs")]
    InconsistentPsk,
    /// The sequence number would overflow (RFC 9180 §5.2).
    #[error("message limit reached for this context")]
    MessageLimitReached,
    /// An export length above 255 × Nh was requested.
    #[error("export length {0} is too large")]
    ExportTooLong(usize),
    /// The system random generator or a ring primitive failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// The AEAD of an HPKE suite (RFC 9180 §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aead {
    /// AES-128-GCM (id 0x0001).
    Aes128Gcm,
    /// AES-256-GCM (id 0x0002).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (id 0x0003).
    ChaCha20Poly1305,
}

impl Aead {
    /// The registry id.
    pub fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 0x0001,
            Aead::Aes256Gcm => 0x0002,
            Aead::ChaCha20Poly1305 => 0x0003,
        }
    }

    /// The AEAD with registry id `id`, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Aead::Aes128Gcm),
            0x0002 => Some(Aead::Aes256Gcm),
            0x0003 => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }

    fn ring(self) -> &'static aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &aead::AES_128_GCM,
            Aead::Aes256Gcm => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// Key length (Nk).
    fn nk(self) -> usize {
        self.ring().key_len()
    }
}

/// HPKE mode (RFC 9180 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Base = 0,
    Psk = 1,
    Auth = 2,
    AuthPsk = 3,
}

impl Mode {
    fn of(psk: bool, auth: bool) -> Self {
        match (psk, auth) {
            (false, false) => Mode::Base,
            (true, false) => Mode::Psk,
            (false, true) => Mode::Auth,
            (true, true) => Mode::AuthPsk,
        }
    }
}

/// A pre-shared key and its id, for the psk and auth_psk modes.
#[derive(Clone, Copy)]
pub struct Psk<'a> {
    /// The key (at least 32 bytes of entropy, RFC 9180 §9.5).
    pub psk: &'a [u8],
    /// Its identifier.
    pub psk_id: &'a [u8],
}

// ---------------------------------------------------------------------------------------------------------
// Labeled HKDF (RFC 9180 §4)

/// `suite_id` of the KEM: "KEM" ‖ I2OSP(kem_id, 2).
fn kem_suite_id() -> [u8; 5] {
    let id = KEM_X25519_HKDF_SHA256.to_be_bytes();
    [b'K', b'E', b'M', id[0], id[1]]
}

/// `suite_id` of the full suite: "HPKE" ‖ kem_id ‖ kdf_id ‖ aead_id.
fn hpke_suite_id(aead: Aead) -> [u8; 10] {
    let k = KEM_X25519_HKDF_SHA256.to_be_bytes();
    let f = KDF_HKDF_SHA256.to_be_bytes();
    let a = aead.id().to_be_bytes();
    [b'H', b'P', b'K', b'E', k[0], k[1], f[0], f[1], a[0], a[1]]
}

/// LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" ‖ suite_id ‖ label ‖ ikm).
/// HKDF-Extract is HMAC(salt, ikm); an empty salt is the same as Nh zero bytes for HMAC (RFC 5869 §2.2).
fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; NH]> {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
    ctx.update(b"HPKE-v1");
    ctx.update(suite_id);
    ctx.update(label);
    ctx.update(ikm);
    let mut out = Zeroizing::new([0u8; NH]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// An output length for ring's HKDF-Expand.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite_id ‖ label ‖ info, L).
fn labeled_expand(
    suite_id: &[u8],
    prk: &[u8],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), HpkeError> {
    let l = u16::try_from(out.len()).map_err(|_| HpkeError::ExportTooLong(out.len()))?;
    if out.len() > 255 * NH {
        return Err(HpkeError::ExportTooLong(out.len()));
    }
    let l = l.to_be_bytes();
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk);
    let parts: [&[u8]; 5] = [&l, b"HPKE-v1", suite_id, label, info];
    prk.expand(&parts, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| HpkeError::Crypto("HKDF-Expand"))
}

// ---------------------------------------------------------------------------------------------------------
// X25519 and DHKEM (RFC 9180 §4.1, §7.1)

/// Builds a ring X25519 private key holding exactly `sk` (see the module documentation for why this is
/// sound). This is the only place that does so.
#[allow(deprecated)]
fn x25519_private(sk: &[u8; NSK]) -> Result<EphemeralPrivateKey, HpkeError> {
    let fixed = ring::test::rand::FixedSliceRandom { bytes: &sk[..] };
    EphemeralPrivateKey::generate(&X25519, &fixed).map_err(|_| HpkeError::Crypto("X25519 key"))
}

/// X25519(sk, pk) with ring's validation (wrong length or all-zero result → error).
fn dh(sk: &[u8; NSK], pk: &[u8]) -> Result<Zeroizing<[u8; 32]>, HpkeError> {
    let private = x25519_private(sk)?;
    let mut out = Zeroizing::new([0u8; 32]);
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, pk), |ss| {
        out.copy_from_slice(ss)
    })
    .map_err(|_| HpkeError::InvalidPublicKey)?;
    Ok(out)
}

/// An X25519 key pair for HPKE. The private key is zeroized on drop and never printed.
#[derive(Clone)]
pub struct HpkeKeyPair {
    sk: Zeroizing<[u8; NSK]>,
    pk: [u8; NPK],
}

impl fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HpkeKeyPair(public {})", hex::encode(self.pk))
    }
}

impl HpkeKeyPair {
    /// A fresh random key pair (GenerateKeyPair).
    pub fn generate() -> Result<Self, HpkeError> {
        let mut sk = Zeroizing::new([0u8; NSK]);
        SystemRandom::new()
            .fill(&mut sk[..])
            .map_err(|_| HpkeError::Crypto("random"))?;
        Self::from_private_bytes(&sk)
    }

    /// DeriveKeyPair(ikm) for DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1.3): deterministic from `ikm`.
    pub fn derive(ikm: &[u8]) -> Result<Self, HpkeError> {
        let suite = kem_suite_id();
        let dkp_prk = labeled_extract(&suite, b"", b"dkp_prk", ikm);
        let mut sk = Zeroizing::new([0u8; NSK]);
        labeled_expand(&suite, &dkp_prk[..], b"sk", b"", &mut sk[..])?;
        Self::from_private_bytes(&sk)
    }

    /// The key pair of a stored private key (DeserializePrivateKey).
    pub fn from_private_bytes(sk: &[u8; NSK]) -> Result<Self, HpkeError> {
        let public = x25519_private(sk)?
            .compute_public_key()
            .map_err(|_| HpkeError::Crypto("X25519 public key"))?;
        let mut pk = [0u8; NPK];
        pk.copy_from_slice(public.as_ref());
        Ok(Self {
            sk: Zeroizing::new(*sk),
            pk,
        })
    }

    /// The public key (SerializePublicKey), 32 bytes.
    pub fn public_key(&self) -> &[u8; NPK] {
        &self.pk
    }

    /// The private key bytes (SerializePrivateKey); keep them secret.
    pub fn private_bytes(&self) -> &[u8; NSK] {
        &self.sk
    }
}

/// ExtractAndExpand(dh, kem_context) (RFC 9180 §4.1).
fn extract_and_expand(dh: &[u8], kem_context: &[u8]) -> Result<Zeroizing<[u8; NH]>, HpkeError> {
    let suite = kem_suite_id();
    let eae_prk = labeled_extract(&suite, b"", b"eae_prk", dh);
    let mut shared = Zeroizing::new([0u8; NH]);
    labeled_expand(
        &suite,
        &eae_prk[..],
        b"shared_secret",
        kem_context,
        &mut shared[..],
    )?;
    Ok(shared)
}

/// Encap / AuthEncap with a given ephemeral key pair. Returns (shared_secret, enc).
fn encap(
    ephemeral: &HpkeKeyPair,
    pk_r: &[u8],
    sender: Option<&HpkeKeyPair>,
) -> Result<(Zeroizing<[u8; NH]>, [u8; NPK]), HpkeError> {
    if pk_r.len() != NPK {
        return Err(HpkeError::InvalidPublicKey);
    }
    let enc = ephemeral.pk;
    let mut dh_all = Zeroizing::new(Vec::with_capacity(64));
    dh_all.extend_from_slice(&dh(&ephemeral.sk, pk_r)?[..]);
    let mut kem_context = Vec::with_capacity(3 * NPK);
    kem_context.extend_from_slice(&enc);
    kem_context.extend_from_slice(pk_r);
    if let Some(s) = sender {
        dh_all.extend_from_slice(&dh(&s.sk, pk_r)?[..]);
        kem_context.extend_from_slice(&s.pk);
    }
    Ok((extract_and_expand(&dh_all, &kem_context)?, enc))
}

/// Decap / AuthDecap.
fn decap(
    enc: &[u8],
    recipient: &HpkeKeyPair,
    pk_s: Option<&[u8]>,
) -> Result<Zeroizing<[u8; NH]>, HpkeError> {
    if enc.len() != NPK {
        return Err(HpkeError::InvalidPublicKey);
    }
    let mut dh_all = Zeroizing::new(Vec::with_capacity(64));
    dh_all.extend_from_slice(&dh(&recipient.sk, enc)?[..]);
    let mut kem_context = Vec::with_capacity(3 * NPK);
    kem_context.extend_from_slice(enc);
    kem_context.extend_from_slice(&recipient.pk);
    if let Some(pk_s) = pk_s {
        if pk_s.len() != NPK {
            return Err(HpkeError::InvalidPublicKey);
        }
        dh_all.extend_from_slice(&dh(&recipient.sk, pk_s)?[..]);
        kem_context.extend_from_slice(pk_s);
    }
    extract_and_expand(&dh_all, &kem_context)
}

// ---------------------------------------------------------------------------------------------------------
// Key schedule and contexts (RFC 9180 §5.1 – §5.3)

/// The secrets of a context, exposed for test vectors and debugging; zeroized on drop.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct KeySchedule {
    /// The KEM shared secret.
    pub shared_secret: Vec<u8>,
    /// The AEAD key.
    pub key: Vec<u8>,
    /// The base nonce.
    pub base_nonce: Vec<u8>,
    /// The exporter secret.
    pub exporter_secret: Vec<u8>,
}

/// State shared by sender and recipient contexts.
struct Context {
    aead_key: LessSafeKey,
    aead: Aead,
    base_nonce: [u8; NN],
    seq: u64,
    exporter_secret: Zeroizing<[u8; NH]>,
    schedule: KeySchedule,
}

fn key_schedule(
    aead: Aead,
    mode: Mode,
    shared_secret: &[u8; NH],
    info: &[u8],
    psk: Option<Psk<'_>>,
) -> Result<Context, HpkeError> {
    // VerifyPSKInputs
    let (psk_bytes, psk_id) = match psk {
        Some(p) if !p.psk.is_empty() && !p.psk_id.is_empty() => (p.psk, p.psk_id),
        Some(_) => return Err(HpkeError::InconsistentPsk),
        None => (&b""[..], &b""[..]),
    };
    let suite = hpke_suite_id(aead);
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", psk_id);
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let mut ksc = Vec::with_capacity(1 + 2 * NH);
    ksc.push(mode as u8);
    ksc.extend_from_slice(&psk_id_hash[..]);
    ksc.extend_from_slice(&info_hash[..]);
    let secret = labeled_extract(&suite, &shared_secret[..], b"secret", psk_bytes);

    let mut key = Zeroizing::new(vec![0u8; aead.nk()]);
    labeled_expand(&suite, &secret[..], b"key", &ksc, &mut key)?;
    let mut base_nonce = [0u8; NN];
    labeled_expand(&suite, &secret[..], b"base_nonce", &ksc, &mut base_nonce)?;
    let mut exporter_secret = Zeroizing::new([0u8; NH]);
    labeled_expand(&suite, &secret[..], b"exp", &ksc, &mut exporter_secret[..])?;

    let aead_key = UnboundKey::new(aead.ring(), &key)
        .map(LessSafeKey::new)
        .map_err(|_| HpkeError::Crypto("AEAD key"))?;
    Ok(Context {
        aead_key,
        aead,
        base_nonce,
        seq: 0,
        schedule: KeySchedule {
            shared_secret: shared_secret.to_vec(),
            key: key.to_vec(),
            base_nonce: base_nonce.to_vec(),
            exporter_secret: exporter_secret.to_vec(),
        },
        exporter_secret,
    })
}

impl Context {
    /// ComputeNonce(seq) = base_nonce XOR I2OSP(seq, Nn).
    fn nonce(&self) -> Nonce {
        let mut n = self.base_nonce;
        for (b, s) in n[NN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// IncrementSeq; the counter is 64 bits, far below the 2^96 limit, and stops at u64::MAX.
    fn advance(&mut self) -> Result<(), HpkeError> {
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(HpkeError::MessageLimitReached)?;
        Ok(())
    }

    fn check_limit(&self) -> Result<(), HpkeError> {
        if self.seq == u64::MAX {
            return Err(HpkeError::MessageLimitReached);
        }
        Ok(())
    }

    fn export(&self, exporter_context: &[u8], out: &mut [u8]) -> Result<(), HpkeError> {
        labeled_expand(
            &hpke_suite_id(self.aead),
            &self.exporter_secret[..],
            b"sec",
            exporter_context,
            out,
        )
    }
}

/// The sender's context: encrypts messages in order and exports secrets.
pub struct SenderContext(Context);

/// The recipient's context: decrypts messages in order and exports secrets.
pub struct RecipientContext(Context);

impl SenderContext {
    /// Seal(aad, pt): encrypts the next message (sequence number advances on success).
    pub fn seal(&mut self, aad: &[u8], pt: &[u8]) -> Result<Vec<u8>, HpkeError> {
        self.0.check_limit()?;
        let mut buf = Vec::with_capacity(pt.len() + self.0.aead.ring().tag_len());
        buf.extend_from_slice(pt);
        self.0
            .aead_key
            .seal_in_place_append_tag(self.0.nonce(), Aad::from(aad), &mut buf)
            .map_err(|_| HpkeError::Crypto("AEAD seal"))?;
        self.0.advance()?;
        Ok(buf)
    }

    /// Export(exporter_context, L): fills `out` (L = `out.len()` ≤ 255 × 32).
    pub fn export(&self, exporter_context: &[u8], out: &mut [u8]) -> Result<(), HpkeError> {
        self.0.export(exporter_context, out)
    }

    /// The current sequence number.
    pub fn sequence(&self) -> u64 {
        self.0.seq
    }

    /// The context's secrets (for test vectors).
    pub fn key_schedule(&self) -> &KeySchedule {
        &self.0.schedule
    }
}

impl RecipientContext {
    /// Open(aad, ct): decrypts the next message (sequence number advances on success only).
    pub fn open(&mut self, aad: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
        self.0.check_limit()?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .0
            .aead_key
            .open_in_place(self.0.nonce(), Aad::from(aad), &mut buf)
            .map_err(|_| HpkeError::OpenFailed)?
            .len();
        buf.truncate(len);
        self.0.advance()?;
        Ok(buf)
    }

    /// Export(exporter_context, L): fills `out` (L = `out.len()` ≤ 255 × 32).
    pub fn export(&self, exporter_context: &[u8], out: &mut [u8]) -> Result<(), HpkeError> {
        self.0.export(exporter_context, out)
    }

    /// The current sequence number.
    pub fn sequence(&self) -> u64 {
        self.0.seq
    }

    /// The context's secrets (for test vectors).
    pub fn key_schedule(&self) -> &KeySchedule {
        &self.0.schedule
    }
}

/// An HPKE suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and the given AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    /// The AEAD.
    pub aead: Aead,
}

impl Suite {
    /// The suite the cvm protocol uses: X25519 / HKDF-SHA256 / AES-256-GCM.
    pub const PROTOCOL: Suite = Suite {
        aead: Aead::Aes256Gcm,
    };

    /// SetupS for any mode: base (no `psk`, no `sender`), psk, auth (`sender` = the sender's static key
    /// pair) or auth_psk. Returns `enc` and the sender context. The ephemeral key is fresh and random.
    pub fn setup_sender(
        &self,
        pk_r: &[u8],
        info: &[u8],
        psk: Option<Psk<'_>>,
        sender: Option<&HpkeKeyPair>,
    ) -> Result<([u8; NPK], SenderContext), HpkeError> {
        let ephemeral = HpkeKeyPair::generate()?;
        self.setup_sender_with_ephemeral(&ephemeral, pk_r, info, psk, sender)
    }

    /// Like [`Suite::setup_sender`] with a caller-chosen ephemeral key pair. Only for deterministic tests
    /// (test vectors): reusing an ephemeral key breaks HPKE's security.
    pub fn setup_sender_with_ephemeral(
        &self,
        ephemeral: &HpkeKeyPair,
        pk_r: &[u8],
        info: &[u8],
        psk: Option<Psk<'_>>,
        sender: Option<&HpkeKeyPair>,
    ) -> Result<([u8; NPK], SenderContext), HpkeError> {
        let mode = Mode::of(psk.is_some(), sender.is_some());
        let (shared, enc) = encap(ephemeral, pk_r, sender)?;
        let ctx = key_schedule(self.aead, mode, &shared, info, psk)?;
        Ok((enc, SenderContext(ctx)))
    }

    /// SetupR for any mode: `psk` for psk/auth_psk, `pk_s` (the sender's public key) for auth/auth_psk.
    pub fn setup_recipient(
        &self,
        recipient: &HpkeKeyPair,
        enc: &[u8],
        info: &[u8],
        psk: Option<Psk<'_>>,
        pk_s: Option<&[u8]>,
    ) -> Result<RecipientContext, HpkeError> {
        let mode = Mode::of(psk.is_some(), pk_s.is_some());
        let shared = decap(enc, recipient, pk_s)?;
        Ok(RecipientContext(key_schedule(
            self.aead, mode, &shared, info, psk,
        )?))
    }
}

/// Single-shot base-mode encryption for the protocol suite (X25519 / HKDF-SHA256 / AES-256-GCM):
/// returns `(enc, ciphertext)`.
pub fn seal_base(
    pk_r: &[u8],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; NPK], Vec<u8>), HpkeError> {
    let (enc, mut ctx) = Suite::PROTOCOL.setup_sender(pk_r, info, None, None)?;
    Ok((enc, ctx.seal(aad, pt)?))
}

/// Single-shot base-mode decryption for the protocol suite; the plaintext is zeroized on drop.
pub fn open_base(
    recipient: &HpkeKeyPair,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    Suite::PROTOCOL
        .setup_recipient(recipient, enc, info, None, None)?
        .open(aad, ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_base_round_trips_and_refuses_a_wrong_key_or_info() {
        let kp = HpkeKeyPair::generate().unwrap();
        let (enc, ct) = seal_base(kp.public_key(), b"info", b"", b"secret").unwrap();
        assert_eq!(
            &open_base(&kp, &enc, b"info", b"", &ct).unwrap()[..],
            b"secret"
        );
        assert_eq!(
            open_base(&kp, &enc, b"other", b"", &ct).unwrap_err(),
            HpkeError::OpenFailed
        );
        let other = HpkeKeyPair::generate().unwrap();
        assert!(open_base(&other, &enc, b"info", b"", &ct).is_err());
    }

    #[test]
    fn refuses_a_small_order_public_key() {
        // The all-zero point has small order: the DH output is zero and must be refused (RFC 9180 §7.1.4).
        assert_eq!(
            seal_base(&[0u8; 32], b"", b"", b"x").unwrap_err(),
            HpkeError::InvalidPublicKey
        );
        assert_eq!(
            seal_base(&[1u8; 31], b"", b"", b"x").unwrap_err(),
            HpkeError::InvalidPublicKey
        );
    }

    #[test]
    fn open_base_refuses_a_tampered_ciphertext_or_enc() {
        let kp = HpkeKeyPair::generate().unwrap();
        let (enc, ct) = seal_base(kp.public_key(), b"i", b"a", b"secret").unwrap();
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 1;
            assert!(open_base(&kp, &enc, b"i", b"a", &t).is_err(), "byte {i}");
        }
        let mut e = enc;
        e[0] ^= 1;
        assert!(open_base(&kp, &e, b"i", b"a", &ct).is_err());
        assert!(open_base(&kp, &enc, b"i", b"b", &ct).is_err());
        assert!(open_base(&kp, &enc[..31], b"i", b"a", &ct).is_err());
    }

    #[test]
    fn rejects_an_export_longer_than_255_hashes() {
        let kp = HpkeKeyPair::generate().unwrap();
        let (_, ctx) = Suite::PROTOCOL
            .setup_sender(kp.public_key(), b"", None, None)
            .unwrap();
        let mut ok = vec![0u8; 255 * 32];
        ctx.export(b"c", &mut ok).unwrap();
        let mut too_long = vec![0u8; 255 * 32 + 1];
        assert_eq!(
            ctx.export(b"c", &mut too_long),
            Err(HpkeError::ExportTooLong(255 * 32 + 1))
        );
    }

    #[test]
    fn refuses_half_given_psk_inputs() {
        let kp = HpkeKeyPair::generate().unwrap();
        let psk = Psk {
            psk: b"",
            psk_id: b"id",
        };
        assert!(matches!(
            Suite::PROTOCOL.setup_sender(kp.public_key(), b"", Some(psk), None),
            Err(HpkeError::InconsistentPsk)
        ));
    }
}
