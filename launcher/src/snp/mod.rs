//! AMD SEV-SNP launch pieces: the launch digest, VMSA pages, CPU types, the kernel hashes page and
//! the CPUID page.

pub mod cpu;
pub mod cpuid_page;
pub mod digest;
pub mod kernel_hashes;
pub mod vmsa;
