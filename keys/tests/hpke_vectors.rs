//! RFC 9180 test vectors (Appendix A), read at test time from the shared vectors directory
//! (`$CVM_VECTORS/hpke/rfc9180-test-vectors.json`, else the nearest `shared/vectors` above this crate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use cvm_keys::hpke::{Aead, HpkeKeyPair, KEM_X25519_HKDF_SHA256, Psk, Suite};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CVM_VECTORS") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/vectors"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| manifest.join("../../shared/vectors"))
}

fn load() -> Vec<Value> {
    let path = vectors_dir().join("hpke/rfc9180-test-vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {} (set CVM_VECTORS): {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hx(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}")),
    )
    .unwrap()
}

fn key_pair(v: &Value, who: &str) -> HpkeKeyPair {
    let kp = HpkeKeyPair::derive(&hx(v, &format!("ikm{who}"))).unwrap();
    assert_eq!(
        kp.private_bytes().to_vec(),
        hx(v, &format!("sk{who}m")),
        "DeriveKeyPair sk{who}"
    );
    assert_eq!(
        kp.public_key().to_vec(),
        hx(v, &format!("pk{who}m")),
        "DeriveKeyPair pk{who}"
    );
    let stored: [u8; 32] = hx(v, &format!("sk{who}m")).try_into().unwrap();
    assert_eq!(
        HpkeKeyPair::from_private_bytes(&stored)
            .unwrap()
            .public_key(),
        kp.public_key(),
        "public key from a stored private key"
    );
    kp
}

#[test]
fn reproduces_every_rfc9180_x25519_vector() {
    let mut checked = 0;
    let mut encryptions = 0;
    let mut exports = 0;
    for v in load() {
        if v["kem_id"].as_u64() != Some(u64::from(KEM_X25519_HKDF_SHA256)) || v["kdf_id"] != 1 {
            continue;
        }
        let mode = v["mode"].as_u64().unwrap();
        let aead = Aead::from_id(v["aead_id"].as_u64().unwrap() as u16).expect("aead");
        let suite = Suite { aead };
        let name = format!("mode {mode} aead {}", aead.id());

        let recipient = key_pair(&v, "R");
        let ephemeral = key_pair(&v, "E");
        let sender = (mode >= 2).then(|| key_pair(&v, "S"));
        let (psk_bytes, psk_id) = if mode == 1 || mode == 3 {
            (hx(&v, "psk"), hx(&v, "psk_id"))
        } else {
            (Vec::new(), Vec::new())
        };
        let psk = (mode == 1 || mode == 3).then(|| Psk {
            psk: &psk_bytes,
            psk_id: &psk_id,
        });
        let info = hx(&v, "info");

        let (enc, mut s) = suite
            .setup_sender_with_ephemeral(
                &ephemeral,
                recipient.public_key(),
                &info,
                psk,
                sender.as_ref(),
            )
            .unwrap();
        assert_eq!(enc.to_vec(), hx(&v, "enc"), "{name}: enc");
        let mut r = suite
            .setup_recipient(
                &recipient,
                &enc,
                &info,
                psk,
                sender.as_ref().map(|k| &k.public_key()[..]),
            )
            .unwrap();
        for ks in [s.key_schedule(), r.key_schedule()] {
            assert_eq!(
                ks.shared_secret,
                hx(&v, "shared_secret"),
                "{name}: shared_secret"
            );
            assert_eq!(ks.key, hx(&v, "key"), "{name}: key");
            assert_eq!(ks.base_nonce, hx(&v, "base_nonce"), "{name}: base_nonce");
            assert_eq!(
                ks.exporter_secret,
                hx(&v, "exporter_secret"),
                "{name}: exporter_secret"
            );
        }

        for (i, e) in v["encryptions"].as_array().unwrap().iter().enumerate() {
            let (aad, pt, ct) = (hx(e, "aad"), hx(e, "pt"), hx(e, "ct"));
            assert_eq!(s.sequence(), i as u64);
            assert_eq!(s.seal(&aad, &pt).unwrap(), ct, "{name}: encryption {i}");
            assert_eq!(
                &r.open(&aad, &ct).unwrap()[..],
                &pt[..],
                "{name}: decryption {i}"
            );
            encryptions += 1;
        }
        for (i, x) in v["exports"].as_array().unwrap().iter().enumerate() {
            let len = x["L"].as_u64().unwrap() as usize;
            let ctx = hx(x, "exporter_context");
            let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
            s.export(&ctx, &mut a).unwrap();
            r.export(&ctx, &mut b).unwrap();
            assert_eq!(a, hx(x, "exported_value"), "{name}: sender export {i}");
            assert_eq!(b, hx(x, "exported_value"), "{name}: recipient export {i}");
            exports += 1;
        }
        checked += 1;
    }
    // 4 modes × 3 AEADs for DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256.
    assert_eq!(checked, 12, "expected 12 applicable vectors");
    assert!(
        encryptions >= 12 * 16 && exports >= 12 * 3,
        "{encryptions} {exports}"
    );
}

#[test]
fn opening_out_of_order_fails_and_does_not_advance() {
    let kp = HpkeKeyPair::generate().unwrap();
    let (enc, mut s) = Suite::PROTOCOL
        .setup_sender(kp.public_key(), b"i", None, None)
        .unwrap();
    let c0 = s.seal(b"", b"zero").unwrap();
    let c1 = s.seal(b"", b"one").unwrap();
    let mut r = Suite::PROTOCOL
        .setup_recipient(&kp, &enc, b"i", None, None)
        .unwrap();
    assert!(r.open(b"", &c1).is_err());
    assert_eq!(r.sequence(), 0);
    assert_eq!(&r.open(b"", &c0).unwrap()[..], b"zero");
    assert_eq!(&r.open(b"", &c1).unwrap()[..], b"one");
}
