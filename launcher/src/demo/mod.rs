//! `cvm-launch demo`: the whole confidential launch in simulated mode, one step after another,
//! each a real process of the four programs in a fresh temporary directory:
//!
//! 1. a CA with the service's and the admin's certificates, a KEK, a simulator;
//! 2. the guest kit (QEMU, busybox, cryptsetup, a Linux kernel), fetched on first use ([`crate::kit`]);
//! 3. the workload's data on a LUKS2 disk under a fresh disk key;
//! 4. `cvm-attest serve` in simulated mode on a free loopback port;
//! 5. the guest image (`cvm-launch image`) and its reference value (`cvm-launch measure`);
//! 6. the disk key registered with that policy (`cvm-attest admin secret put`);
//! 7. the Linux guest booted under QEMU (`cvm-launch run --vmm qemu --tee sim`): inside it `cvm-agent`
//!    attests through the forwarded port, opens the volume with dm-crypt and runs the workload, which
//!    prints the data's SHA-256; the console's lines are shown;
//! 8. the same guest with one byte of its image changed: refused with `POLICY_MEASUREMENT`, the disk
//!    stays locked.
//!
//! Without QEMU or a kernel (and with `--guest builtin`) the built-in test guest runs instead ([`builtin`]):
//! the agent runs on the host beside it, and without `/dev/kvm` the simulated PSP serves its launch plan
//! without a VM; the demo says so. Every process is stopped at the end; the directory is removed unless
//! `--keep` (or a failure, which keeps it for inspection).

pub mod builtin;
pub mod guest;
pub mod linux;
pub mod process;
pub mod programs;
pub mod stack;

use std::io::Write;
use std::time::{Duration, Instant};

use programs::{Programs, ProgramsError};
use stack::{EvidenceFormat, Stack, StackError};

/// The test guest (`launcher/guest/sim-guest.bin`): asks its PSP for a report, prints it, halts.
pub const TEST_GUEST: &[u8] = include_bytes!("../../guest/sim-guest.bin");
/// The byte the tampered image changes: zero padding, so the guest still runs.
pub const TAMPERED_OFFSET: usize = 0x800;
/// The simulator's seed: public, so the demo's simulated roots are the same in every run (and
/// their RSA key generation takes the same time). Simulated roots never protect real secrets.
pub const DEMO_SEED: &[u8] = b"cvm-launch demo: simulated roots, public seed, reproducible runs\n";
/// Size of the sample workload.
const WORKLOAD_BYTES: usize = 4 << 20;

/// Which guest the demo boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestChoice {
    /// A Linux guest under QEMU where the guest kit can be had, else the built-in guest.
    #[default]
    Auto,
    /// A Linux guest under QEMU (fails when the guest kit cannot be had).
    Linux,
    /// The repository's 4 KiB test guest on /dev/kvm, the agent on the host.
    Builtin,
}

/// What `cvm-launch demo` takes.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    /// Keep the working directory.
    pub keep: bool,
    /// Which evidence the guest's simulated PSP signs.
    pub format: EvidenceFormat,
    /// Do not use `/dev/kvm` even if it is there.
    pub no_kvm: bool,
    /// Which guest.
    pub guest: GuestChoice,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The programs.
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    /// The working directory.
    #[error("cannot create the working directory: {0}")]
    TempDir(std::io::Error),
    /// A step failed.
    #[error("step \"{step}\" failed: {source}")]
    Step {
        /// The step.
        step: &'static str,
        /// Why.
        source: Box<StackError>,
    },
    /// `--guest linux` without a guest kit.
    #[error("no Linux guest here: {0}")]
    NoLinuxGuest(String),
    /// A step's result was wrong.
    #[error("step \"{step}\": {message}")]
    Check {
        /// The step.
        step: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Prints one line per step: its duration and what it showed.
struct Steps<'w> {
    out: &'w mut dyn Write,
}

impl Steps<'_> {
    /// Runs `f` as step `name`; prints `name` and the detail `f` returns, with the time taken.
    fn run<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String), StackError>,
    ) -> Result<T, DemoError> {
        let t = Instant::now();
        let (value, detail) = f().map_err(|source| DemoError::Step {
            step: name,
            source: Box::new(source),
        })?;
        let _ = writeln!(
            self.out,
            "  {:>7}  {name}{}{detail}",
            millis(t.elapsed()),
            if detail.is_empty() { "" } else { ": " }
        );
        Ok(value)
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "  {:>7}  {text}", "");
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs the demo, printing to `out`; the last line is `demo: OK <total time>` (or
/// `demo: OK (no KVM) <total time>`).
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> Result<(), DemoError> {
    let bin_dir = Programs::dir_of_current_exe()?;
    let found = Programs::find(&bin_dir, &mut |m| {
        let _ = writeln!(out, "cvm-launch demo: {m} (first run only)");
    })?;
    if let Some(t) = found.built_in {
        let _ = writeln!(out, "cvm-launch demo: built in {}", seconds(t));
    }
    let dir = tempfile::Builder::new()
        .prefix("cvm-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let _ = writeln!(
        out,
        "cvm-launch demo: a confidential launch in simulated mode ({}-format evidence), in {}",
        opts.format.name(),
        dir.path().display()
    );
    let start = Instant::now();
    let stack = Stack::new(found.programs, dir.path());
    let mut steps = Steps { out };
    let result = common_setup(&stack, &mut steps).and_then(|()| {
        match linux_kit(opts, &bin_dir, &mut steps)? {
            Some(kit) => linux::flow(&stack, &kit, opts, &mut steps).map(|()| Ending::Vm),
            None => builtin::run(&stack, opts, &mut steps),
        }
    });
    let out = steps.out;
    match result {
        Ok(ending) => {
            let total = seconds(start.elapsed());
            if opts.keep {
                let kept = dir.keep();
                let _ = writeln!(out, "cvm-launch demo: kept {}", kept.display());
            }
            match ending {
                Ending::Vm => {
                    let _ = writeln!(out, "demo: OK {total}");
                }
                Ending::NoKvm => {
                    let _ = writeln!(out, "demo: OK (no KVM) {total}");
                }
            }
            Ok(())
        }
        Err(e) => {
            let kept = dir.keep();
            let _ = writeln!(
                out,
                "cvm-launch demo: kept {} for inspection (logs: *.log)",
                kept.display()
            );
            Err(e)
        }
    }
}

/// How a successful demo ended: with guest code run in a VM, or (built-in guest without KVM) without.
enum Ending {
    Vm,
    NoKvm,
}

/// The guest kit for a Linux guest, installed if needed; `None` (after saying why) when the built-in
/// guest runs instead.
fn linux_kit(
    opts: &DemoOptions,
    bin_dir: &std::path::Path,
    steps: &mut Steps,
) -> Result<Option<crate::kit::Kit>, DemoError> {
    if opts.guest == GuestChoice::Builtin {
        return Ok(None);
    }
    let dir = crate::kit::default_dir(bin_dir);
    let found = steps.run(
        "guest kit: QEMU, busybox, cryptsetup, a Linux kernel (cvm-launch guest-kit)",
        || {
            let mut said = Vec::new();
            let kit = crate::kit::install(&dir, &mut |m| said.push(m.to_owned()));
            let detail = match &kit {
                Ok(k) => format!(
                    "{}{}",
                    k.kernel.display(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", said.join("; "))
                    }
                ),
                Err(_) => "not available".into(),
            };
            Ok((kit, detail))
        },
    )?;
    match (found, opts.guest) {
        (Ok(kit), _) => Ok(Some(kit)),
        (Err(why), GuestChoice::Linux) => Err(DemoError::NoLinuxGuest(why)),
        (Err(why), _) => {
            steps.note(&format!(
                "no Linux guest here ({why}): the built-in test guest runs instead, with the agent on the host"
            ));
            Ok(None)
        }
    }
}

/// The attestation service, started as a step.
fn service_step(stack: &Stack, steps: &mut Steps) -> Result<stack::Service, DemoError> {
    steps.run(
        "attestation service (cvm-attest serve, simulated mode)",
        || {
            let s = stack.start_service()?;
            let url = s.url.clone();
            Ok((s, url))
        },
    )
}

/// Steps 1: the CA, the KEK, the simulator.
fn common_setup(stack: &Stack, steps: &mut Steps) -> Result<(), DemoError> {
    steps.run(
        "CA, service and admin certificates (cvm-keys ca init)",
        || {
            stack.create_pki()?;
            Ok(((), "pki/".into()))
        },
    )?;
    steps.run(
        "key-encryption key of the secret store (cvm-keys keygen)",
        || {
            stack.keygen("kek")?;
            Ok(((), "kek".into()))
        },
    )?;
    steps.run(
        "simulated AMD and Intel roots (cvm-attest sim init)",
        || {
            stack.create_sim(Some(DEMO_SEED))?;
            Ok((
                (),
                "sim/ (from a fixed public seed, so every run has the same roots)".into(),
            ))
        },
    )
}

/// The test guest with one byte of padding changed: it runs the same, but measures differently.
pub fn tampered() -> Vec<u8> {
    let mut image = TEST_GUEST.to_vec();
    if let Some(b) = image.get_mut(TAMPERED_OFFSET) {
        *b ^= 0x01;
    }
    image
}

/// A recognisable text workload of 4 MiB: the demo's (and the guest benchmark's) data.
pub fn sample_workload() -> Vec<u8> {
    let line =
        b"cvm demo workload: readable only inside a guest whose measurement the policy allows\n";
    line.iter().copied().cycle().take(WORKLOAD_BYTES).collect()
}
