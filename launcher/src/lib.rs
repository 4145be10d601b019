//! `cvm-launch`: starts KVM guests with encrypted memory (SEV-SNP, TDX, simulated) and computes
//! their launch measurements offline.
//!
//! - [`plan`]: the launch plan, one ordered list of what goes into guest memory; it drives both
//!   the offline digest and a launch.
//! - [`measure`]: the SNP launch digest of a plan and its printed forms.
//! - [`ovmf`]: the OVMF footer table and SEV metadata.
//! - [`snp`]: PAGE_INFO chain, VMSA pages, CPU types, kernel hashes page.
//! - [`probe`]: what the host supports (KVM, VM types, guest_memfd, SEV, TDX).
//! - [`kvm`]: the only module with `unsafe`: KVM and SEV ioctls.
//! - [`cvm`]: SNP and TDX launch ioctl sequences behind a trait (recorded in tests; bound to real
//!   fds by [`kvm::confidential`]).
//! - [`bench`]: `cvm-launch bench`, a Linux guest's boot with and without attestation and unlock.
//! - [`demo`]: `cvm-launch demo`, the whole simulated flow as processes of the four programs.
//! - [`image`]: `cvm-launch image`, the reproducible guest initramfs (agent, libraries, modules, init).
//! - [`kit`]: the guest kit (QEMU, busybox, cryptsetup, mke2fs, a guest kernel), found or installed.
//! - [`linux`]: Linux direct boot (bzImage, zero page, long-mode entry) as a launch plan.
//! - [`vmm`]: the `sim` backend: a plan on plain KVM, vCPU loop, exits.
//! - [`hardware`]: the `snp` and `tdx` backends: a plan on a confidential VM, vCPU threads, exits.
//! - [`devices`]: COM1 (8250) and the simulated PSP's I/O ports.
//! - [`qemu`]: the QEMU engine (`run --vmm qemu`): command line, QMP, console, the forwarded service.
//! - [`run`]: `cvm-launch run`: arguments, from inputs to a stopped guest, exit codes.
//! - [`sim_psp`]: the simulated AMD secure processor signing with the plan's digest.
//! - [`sim_socket`]: the simulated PSP for host processes (Unix socket, CBOR).
//! - [`tdx`]: TDVF metadata and MRTD.
//! - [`synthetic`]: OVMF-like images for tests and benchmarks.

pub mod bench;
pub mod cvm;
pub mod demo;
pub mod devices;
pub mod guid;
pub mod hardware;
pub mod image;
pub mod inputs;
pub mod kit;
#[allow(unsafe_code)]
pub mod kvm;
pub mod linux;
pub mod measure;
pub mod ovmf;
pub mod plan;
pub mod probe;
pub mod qemu;
pub mod run;
pub mod sim_psp;
pub mod sim_socket;
pub mod snp;
pub mod synthetic;
pub mod tdx;
pub mod vmm;
