//! `cvm-agent` runs inside the guest.
//!
//! Not implemented yet: this crate is built by issue # collects evidence, attests, receives the key and unlocks the workload data:7. The binary only explains that.

/// What the binary prints while the crate is not implemented.
pub const NOT_YET: &str = "cvm-agent is not implemented yet (tracked as issue # collects evidence, attests, receives the key and unlocks the workload data:7); nothing was done.";
