//! `cvm-keys`: the cryptography and file formats every cvm program shares (HPKE, the evidence key binding,
//! sealed files, key files, the CA for the attestation service). No servers, no KVM.
//!
//! Modules, one job each:
//! - [`hpke`]: HPKE (RFC 9180) on `ring`, and the `seal_base` / `open_base` pair the protocol uses.
//! - [`binding`]: the `report_data` that binds an HPKE public key to a challenge nonce.
//! - [`cbor`]: the only door to the CBOR codec (size-capped, trailing bytes rejected).
//! - [`seal`]: sealed files (chunked AES-256-GCM STREAM), streaming in constant memory.
//! - [`keyfile`]: 256-bit key files.
//! - [`ca`]: a P-256 CA with server and admin client certificates for mutual TLS.
//! - [`fsutil`]: owner-only files and atomic, durable replacement.
//! - [`bench`](mod@bench): the throughput benchmark behind `cvm-keys bench`.

#![forbid(unsafe_code)]
#![deny(unused_must_use)]

pub mod bench;
pub mod binding;
pub mod ca;
pub mod cbor;
pub mod fsutil;
pub mod hpke;
pub mod keyfile;
pub mod seal;

pub use keyfile::{Key256, KeyId};
