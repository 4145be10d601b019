//! `cvm-agent` runs inside the guest: it collects evidence from the TEE, attests to the `cvm-attest`
//! service, receives the released key and unlocks the workload's data, then runs the workload.
//!
//! Modules, one job each:
//! - [`config`]: `--config FILE` (TOML with the command-line options).
//! - [`provider`]: the evidence providers behind one trait ([`provider::Provider`]) and `--tee` selection.
//! - [`configfs`]: whether configfs is mounted, and mounting it where configfs-tsm needs it.
//! - [`tsm`]: configfs-tsm (`/sys/kernel/config/tsm/report`) for SNP and TDX guests.
//! - [`sevguest`]: SEV-SNP through `/dev/sev-guest` (SNP_GET_EXT_REPORT), when configfs-tsm is missing.
//! - [`sevioctl`]: the `/dev/sev-guest` ioctl (with [`tdxioctl`], the crate's only `unsafe` code).
//! - [`certtable`]: the SNP extended report's certificate table (host bytes, parsed bounded).
//! - [`tdxguest`]: TDX quotes through `/dev/tdx_guest` (GetQuote, both framings), when configfs-tsm is
//!   missing.
//! - [`tdxioctl`]: the `/dev/tdx_guest` ioctls.
//! - [`retry`]: bounded retries of the TDX quote path's transient errors.
//! - [`simsock`]: the launcher's simulated PSP socket (`--tee sim`).
//! - [`unlock`]: the client flow (retries, timeouts, refusals explained) and the unlockers.
//! - [`kbs`]: the KBS protocol's client flow (`--protocol kbs`).
//!
//! Footprint, measured 2026-11-22 on the 2-core CI box (Rust 1.95, x86_64, other builds running):
//! `cargo build --release` binary 48.0 MB (47,994,832 bytes, with the profile's line tables), 4.3 MB
//! stripped (4,337,728 bytes). Start-up to the first network request (`unlock --tee sim`, spawn to the TCP
//! connect; `tests/startup.rs`, 20 runs a round, 3 rounds): median 3.5–3.6 ms, p90 5.4–6.6 ms; the
//! stripped binary 1.2–2.2 ms median.

#![deny(unsafe_code)]

pub mod certtable;
pub mod config;
pub mod configfs;
pub mod kbs;
pub mod provider;
pub mod retry;
pub mod sevguest;
#[allow(unsafe_code)]
pub mod sevioctl;
pub mod simsock;
pub mod tdxguest;
#[allow(unsafe_code)]
pub mod tdxioctl;
pub mod tsm;
pub mod unlock;
