//! `cvm-launch demo`: the whole confidential launch in simulated mode, one step after another,
//! each a real process of the four programs in a fresh temporary directory:
//!
//! 1. a CA with the service's and the admin's certificates, a KEK, a simulator;
//! 2. a workload file sealed with a workload key;
//! 3. `cvm-attest serve` in simulated mode on a free loopback port;
//! 4. the guest's reference value from its launch plan (`cvm-launch measure`);
//! 5. the workload key registered with that policy (`cvm-attest admin secret put`);
//! 6. the test guest launched on `/dev/kvm` (`cvm-launch run --tee sim`) with its PSP socket;
//! 7. `cvm-agent unlock` for that guest: the unsealed bytes must equal the original;
//! 8. the same with a guest image one byte different: refused with `POLICY_MEASUREMENT`.
//!
//! Without `/dev/kvm` step 6 serves the launch plan's simulated PSP from this process instead
//! (no guest code runs) and says so. Every process is stopped at the end; the directory is
//! removed unless `--keep` (or a failure, which keeps it for inspection).

pub mod guest;
pub mod process;
pub mod programs;
pub mod stack;

use std::io::Write;
use std::time::{Duration, Instant};

use programs::{Programs, ProgramsError};
use stack::{EvidenceFormat, Guest, Stack, StackError};

/// The test guest (`launcher/guest/sim-guest.bin`): asks its PSP for a report, prints it, halts.
pub const TEST_GUEST: &[u8] = include_bytes!("../../guest/sim-guest.bin");
/// The byte the tampered image changes: zero padding, so the guest still runs.
pub const TAMPERED_OFFSET: usize = 0x800;
/// The simulator's seed: public, so the demo's simulated roots are the same in every run (and
/// their RSA key generation takes the same time). Simulated roots never protect real secrets.
pub const DEMO_SEED: &[u8] = b"cvm-launch demo: simulated roots, public seed, reproducible runs\n";
/// Size of the sample workload.
const WORKLOAD_BYTES: usize = 4 << 20;

/// What `cvm-launch demo` takes.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    /// Keep the working directory.
    pub keep: bool,
    /// Which evidence the guest's simulated PSP signs.
    pub format: EvidenceFormat,
    /// Do not use `/dev/kvm` even if it is there.
    pub no_kvm: bool,
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
    let kvm = if opts.no_kvm {
        Err("--no-kvm given".to_owned())
    } else {
        crate::probe::kvm_usable()
    };
    let _ = writeln!(
        out,
        "cvm-launch demo: a confidential launch in simulated mode ({}-format evidence), in {}",
        opts.format.name(),
        dir.path().display()
    );
    if let Err(why) = &kvm {
        let _ = writeln!(
            out,
            "cvm-launch demo: no KVM ({why}): the simulated PSP runs without a VM; the guest's \
             measurement still comes from its launch plan, but no guest code runs"
        );
    }
    let start = Instant::now();
    let stack = Stack::new(found.programs, dir.path());
    let result = flow(&stack, opts, kvm.is_ok(), &mut Steps { out });
    match result {
        Ok(()) => {
            let total = seconds(start.elapsed());
            if opts.keep {
                let kept = dir.keep();
                let _ = writeln!(out, "cvm-launch demo: kept {}", kept.display());
            }
            if kvm.is_ok() {
                let _ = writeln!(out, "demo: OK {total}");
            } else {
                let _ = writeln!(out, "demo: OK (no KVM) {total}");
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

/// The steps. Processes stop when their guards drop, in reverse order of starting.
fn flow(stack: &Stack, opts: &DemoOptions, kvm: bool, steps: &mut Steps) -> Result<(), DemoError> {
    let format = opts.format;
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
    )?;
    let workload = sample_workload();
    steps.run(
        "sample workload sealed with a workload key (cvm-keys seal)",
        || {
            std::fs::write(stack.path("workload.txt"), &workload).map_err(|source| {
                StackError::Io {
                    what: "write workload.txt".into(),
                    source,
                }
            })?;
            stack.keygen("workload.key")?;
            stack.seal("workload.key", "workload.txt", "workload.sealed")?;
            Ok(((), format!("workload.sealed ({} bytes)", workload.len())))
        },
    )?;
    let service = steps.run(
        "attestation service (cvm-attest serve, simulated mode)",
        || {
            let s = stack.start_service()?;
            let url = s.url.clone();
            Ok((s, url))
        },
    )?;
    for (name, bytes) in [
        ("guest.bin", TEST_GUEST.to_vec()),
        ("tampered.bin", tampered()),
    ] {
        std::fs::write(stack.path(name), bytes).map_err(|source| DemoError::Step {
            step: "write the guest images",
            source: Box::new(StackError::Io {
                what: format!("write {name}"),
                source,
            }),
        })?;
    }
    let policy = steps.run(
        "reference value from the launch plan (cvm-launch measure)",
        || {
            let p = stack.measure("guest.bin", format)?;
            let value = p.lines().last().unwrap_or_default().trim().to_owned();
            Ok((p, value))
        },
    )?;
    steps.run(
        "workload key registered with that policy (cvm-attest admin)",
        || {
            std::fs::write(stack.path("policy.toml"), &policy).map_err(|source| {
                StackError::Io {
                    what: "write policy.toml".into(),
                    source,
                }
            })?;
            stack.register(&service, "workload", "workload.key", "policy.toml")?;
            Ok(((), "secret \"workload\"".into()))
        },
    )?;
    let launch = |image: &str, socket: &str| {
        if kvm {
            stack.launch(image, socket)
        } else {
            stack.launch_without_vm(image, socket)
        }
    };
    let guest = steps.run("guest launched (cvm-launch run --tee sim)", || {
        let g = launch("guest.bin", "psp.sock")?;
        let detail = match &g {
            Guest::Vm { report, .. } => format!(
                "the guest asked its PSP for a report and printed it ({} bytes) on COM1",
                report.len()
            ),
            Guest::NoVm(_) => "no VM: the launch plan's simulated PSP serves psp.sock".into(),
        };
        Ok((g, detail))
    })?;
    let agent = steps.run("agent attests and unlocks (cvm-agent unlock)", || {
        let done = stack.unlock(
            &service,
            "workload",
            "psp.sock",
            format,
            "workload.sealed",
            "workload.out",
        )?;
        Ok((done, String::new()))
    })?;
    if !agent.status.success() {
        return Err(DemoError::Check {
            step: "agent attests and unlocks",
            message: format!("cvm-agent failed ({}):\n{}", agent.status, agent.output),
        });
    }
    let unlocked = std::fs::read(stack.path("workload.out")).unwrap_or_default();
    if unlocked != workload {
        return Err(DemoError::Check {
            step: "agent attests and unlocks",
            message: "the unlocked bytes differ from the original workload".into(),
        });
    }
    steps.note(&format!(
        "unlocked workload.out equals the original ({} bytes)",
        unlocked.len()
    ));
    drop(guest);
    let tampered_guest = steps.run("tampered guest launched (one byte changed)", || {
        let g = launch("tampered.bin", "tampered.sock")?;
        Ok((
            g,
            format!("tampered.bin differs at offset {TAMPERED_OFFSET:#x}"),
        ))
    })?;
    let refused = steps.run("agent in the tampered guest", || {
        let done = stack.unlock(
            &service,
            "workload",
            "tampered.sock",
            format,
            "workload.sealed",
            "tampered.out",
        )?;
        Ok((done, String::new()))
    })?;
    drop(tampered_guest);
    let refused_ok = !refused.status.success()
        && refused.output.contains("POLICY_MEASUREMENT")
        && !stack.path("tampered.out").exists();
    if !refused_ok {
        return Err(DemoError::Check {
            step: "agent in the tampered guest",
            message: format!(
                "expected a POLICY_MEASUREMENT refusal and no output file; the agent said ({}):\n{}",
                refused.status, refused.output
            ),
        });
    }
    if let Some(line) = refused
        .output
        .lines()
        .find(|l| l.contains("POLICY_MEASUREMENT"))
    {
        steps.note(line.trim_start_matches("cvm-agent: error: "));
    }
    steps.note("refused with POLICY_MEASUREMENT, as expected: no secret, no output file");
    service.stop();
    Ok(())
}

/// The test guest with one byte of padding changed: it runs the same, but measures differently.
pub fn tampered() -> Vec<u8> {
    let mut image = TEST_GUEST.to_vec();
    if let Some(b) = image.get_mut(TAMPERED_OFFSET) {
        *b ^= 0x01;
    }
    image
}

/// A recognisable text workload of [`WORKLOAD_BYTES`].
fn sample_workload() -> Vec<u8> {
    let line =
        b"cvm demo workload: readable only inside a guest whose measurement the policy allows\n";
    line.iter().copied().cycle().take(WORKLOAD_BYTES).collect()
}
