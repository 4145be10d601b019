//! `cvm-launch` starts KVM guests with encrypted memory (SEV-SNP, TDX, simulated) and computes launch measurements.
//!
//! Not implemented yet: this crate is built by issue #8. The binary only explains that.

/// What the binary prints while the crate is not implemented.
pub const NOT_YET: &str =
    "cvm-launch is not implemented yet (tracked as issue #8); nothing was done.";
