//! The HPKE key schedule and the sender / recipient contexts (RFC 9180 §5.1 – §5.3).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use super::labeled::{hpke_suite_id, labeled_expand, labeled_extract};
use super::{Aead, HpkeError, Mode, NH, NN, Psk};

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
pub(super) struct Context {
    aead_key: LessSafeKey,
    aead: Aead,
    base_nonce: [u8; NN],
    seq: u64,
    exporter_secret: Zeroizing<[u8; NH]>,
    schedule: KeySchedule,
}

pub(super) fn key_schedule(
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
pub struct SenderContext(pub(super) Context);

/// The recipient's context: decrypts messages in order and exports secrets.
pub struct RecipientContext(pub(super) Context);

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
