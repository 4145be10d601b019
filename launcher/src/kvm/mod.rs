//! The only place with `unsafe`: thin wrappers over the KVM and SEV ioctls the launcher needs,
//! one method per ioctl, each `unsafe` block with a `// SAFETY:` sentence (kvm-ioctls style).
//! Everything above this module is safe Rust.

pub mod confidential;
pub mod sev_dev;
pub mod system;
pub mod vm;
pub mod watchdog;
