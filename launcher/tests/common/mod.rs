//! What the launcher's integration tests share: the KVM check with its skip line, a simulator
//! directory, the one-vCPU plan of a firmware image, and asking a running launcher's PSP socket.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cvm_launch::plan::{DEFAULT_GUEST_FEATURES, LaunchPlan, SnpPlanConfig};
use cvm_launch::snp::cpu::CpuType;
use cvm_launch::snp::vmsa::VmmType;

/// True when /dev/kvm cannot be used; then prints `skipped: …` (to stderr, which cargo test
/// shows) naming what needed it.
pub fn skip_without_kvm(what: &str) -> bool {
    let usable = cvm_launch::probe::kvm_usable().is_ok();
    if !usable {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: /dev/kvm is missing or not accessible; {what} needs KVM"
        );
    }
    !usable
}

/// A simulator directory under `tmp`, its keys derived from `seed`.
pub fn sim_dir(tmp: &Path, seed: &[u8]) -> PathBuf {
    let sim = tmp.join("sim");
    let opts = cvm_attest::sim::InitOptions {
        seed: Some(seed.to_vec()),
        ..cvm_attest::sim::InitOptions::default()
    };
    cvm_attest::sim::init(&sim, &opts).unwrap();
    sim
}

/// The SNP plan of `image` with one EPYC-v4 vCPU (what `run --tee sim` makes of a firmware).
pub fn one_vcpu_plan(image: Vec<u8>) -> LaunchPlan {
    LaunchPlan::snp(SnpPlanConfig {
        firmware: image,
        vcpus: 1,
        cpu: CpuType::by_name("EPYC-v4").unwrap(),
        vmm: VmmType::Qemu,
        guest_features: DEFAULT_GUEST_FEATURES,
        kernel_hashes: None,
    })
    .unwrap()
}

/// A `cvm-launch run … --sim-socket SOCK --linger` in the background, killed on drop.
pub struct Lingering {
    child: Child,
    sock: PathBuf,
}

impl Lingering {
    /// Starts `cvm-launch` with `args` (which must include `--sim-socket sock --linger`).
    pub fn start(args: &[&std::ffi::OsStr], sock: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            sock: sock.to_owned(),
        }
    }

    /// Asks the PSP socket for `tee` evidence over `report_data`, waiting up to a minute for it
    /// to come up; the raw CBOR response.
    pub fn request(&mut self, tee: &str, report_data: &[u8; 64]) -> Vec<u8> {
        let start = Instant::now();
        loop {
            match cvm_launch::sim_socket::request(&self.sock, tee, report_data) {
                Ok(b) => return b,
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    panic!("the PSP socket did not answer: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
