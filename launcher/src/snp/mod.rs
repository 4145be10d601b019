//! AMD SEV-SNP launch pieces: the launch digest, VMSA pages, CPU types and the kernel hashes page.

pub mod cpu;
pub mod digest;
pub mod kernel_hashes;
pub mod vmsa;
