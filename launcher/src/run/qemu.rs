//! `cvm-launch run --vmm qemu`: a Linux guest under QEMU with disks, a network to the attestation service
//! only, and (`--tee sim`) the simulated PSP on a virtio-serial port; the arguments, then the launch on
//! [`crate::qemu`]. The kernel, initrd and firmware are read once; the launcher measures those bytes and
//! hands QEMU private copies of them, so a file changed after measuring cannot slip in.
//!
//! Exit codes: 0 the guest powered off; 3 it reset or panicked; 4 the launcher stopped it at `--timeout`;
//! 1 QEMU failed or ended otherwise; 2 unusable arguments, inputs or host (nothing was started).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{DEFAULT_HARDWARE_MIB, RunArgs, RunCliError, RunTee, finish, hex_or_zero, plan_psp};
use crate::devices::psp::ReportSigner;
use crate::inputs::{InputError, SnpInputs};
use crate::measure::snp_digest;
use crate::qemu::args::{Accel, Disk, Forward, QemuConfig, SnpGuest, TdxGuest, Tee};
use crate::qemu::{Console, Launch, Stop, private_copy, private_dir, version};

/// The QEMU program looked for on `PATH` without `--qemu`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";
/// The C-bit position of AMD EPYC Milan, Genoa and Turin (CPUID 0x8000001F EBX[5:0]).
pub const SNP_CBITPOS: u8 = 51;

/// `--accel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM where the CPU has hardware virtualization, else TCG.
    Auto,
    /// QEMU's software emulation.
    Tcg,
    /// KVM.
    Kvm,
}

/// Why a QEMU run could not start (exit 2) or failed (exit 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuRunError {
    /// Arguments, inputs, the simulator.
    #[error(transparent)]
    Cli(#[from] RunCliError),
    /// The QEMU version, or a flag that does not fit.
    #[error("{0}")]
    Refused(String),
    /// The private directory or a copy in it.
    #[error("cannot prepare the private copies for QEMU: {0}")]
    Private(std::io::Error),
    /// QEMU itself.
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
}

/// Runs `cvm-launch run --vmm qemu` (exit codes in the module's documentation).
pub fn command(args: RunArgs) -> ExitCode {
    let dir = match private_dir() {
        Ok(d) => d,
        Err(e) => return finish(2, QemuRunError::Private(e)),
    };
    let prepared = match prepare(&args, dir.path()) {
        Ok(p) => p,
        Err(e) => return finish(2, e),
    };
    let _socket = prepared.psp_socket;
    match crate::qemu::run(&prepared.launch) {
        Ok(out) => {
            let code = match out.stop {
                Stop::PowerOff => 0,
                Stop::Reset | Stop::Panic => 3,
                Stop::TimedOut(_) => 4,
                Stop::Ended(_) => 1,
            };
            finish(
                code,
                format_args!(
                    "{} after {:.2} s (QEMU {}, {})",
                    out.stop,
                    out.elapsed.as_secs_f64(),
                    prepared.version,
                    prepared.launch.config.accel.name()
                ),
            )
        }
        Err(e) => finish(1, e),
    }
}

/// A launch ready to start.
struct Prepared {
    launch: Launch,
    version: version::Version,
    /// The simulated PSP's socket for QEMU (and `--sim-socket` for host processes), served until dropped.
    psp_socket: Vec<crate::sim_socket::SimSocket>,
}

/// Flags that only `--vmm qemu` takes, for the in-process VMM's refusal.
pub fn qemu_only_flags(a: &RunArgs) -> Option<&'static str> {
    [
        (!a.disks.is_empty(), "--disk"),
        (a.attest_forward.is_some(), "--attest-forward"),
        (a.accel.is_some(), "--accel"),
        (a.qemu.is_some(), "--qemu"),
        (a.console.is_some(), "--console"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, RunCliError> {
    std::fs::read(path).map_err(|source| {
        RunCliError::Inputs(InputError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    })
}

/// `FILE` or `FILE,ro`.
fn disk(spec: &str) -> Disk {
    match spec.strip_suffix(",ro") {
        Some(path) => Disk {
            path: path.into(),
            read_only: true,
        },
        None => Disk {
            path: spec.into(),
            read_only: false,
        },
    }
}

/// Checks the arguments, reads and measures the inputs, writes the private copies, starts the PSP.
fn prepare(a: &RunArgs, dir: &Path) -> Result<Prepared, QemuRunError> {
    let refuse = |m: String| QemuRunError::Refused(m);
    let qemu = a
        .qemu
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_QEMU));
    let tee_name = match a.tee {
        RunTee::Sim => "sim",
        RunTee::Snp => "snp",
        RunTee::Tdx => "tdx",
    };
    let version = version::of_program(&qemu).map_err(refuse)?;
    if let Some(why) = version::refusal(tee_name, version) {
        return Err(refuse(why));
    }
    let accel = match (a.accel.unwrap_or(AccelChoice::Auto), a.tee) {
        (AccelChoice::Tcg, RunTee::Snp | RunTee::Tdx) => {
            return Err(refuse(format!(
                "--tee {tee_name} needs --accel kvm: memory encryption is the CPU's"
            )));
        }
        (AccelChoice::Tcg, _) => Accel::Tcg,
        (AccelChoice::Kvm, _) | (_, RunTee::Snp | RunTee::Tdx) => Accel::Kvm,
        (AccelChoice::Auto, RunTee::Sim) => crate::qemu::auto_accel(),
    };
    let kernel_path = a.kernel.clone().ok_or_else(|| {
        refuse("run --vmm qemu boots Linux: give --kernel bzImage (and --initrd, --append)".into())
    })?;
    let kernel = read("kernel", &kernel_path)?;
    let initrd = a.initrd.as_deref().map(|p| read("initrd", p)).transpose()?;
    let append = a
        .append
        .clone()
        .unwrap_or_else(|| super::DEFAULT_APPEND.to_owned());
    let io = QemuRunError::Private;
    let kernel_copy = private_copy(dir, "kernel", &kernel).map_err(io)?;
    let initrd_copy = initrd
        .as_deref()
        .map(|i| private_copy(dir, "initrd", i))
        .transpose()
        .map_err(io)?;
    let mut sockets = Vec::new();
    let (tee, memory_mib) = match a.tee {
        RunTee::Sim => {
            let memory_mib = a.memory.unwrap_or(super::DEFAULT_KERNEL_MIB);
            let inputs = super::linux_inputs(
                kernel_path.clone(),
                a.initrd.clone(),
                Some(append.clone()),
                Some(memory_mib),
                a.cpu_type.clone(),
                a.vmm_type.clone(),
                a.guest_features.clone(),
            );
            let plan = inputs
                .plan_with(kernel.clone(), initrd.clone())
                .map_err(RunCliError::Inputs)?;
            let sim_dir = a.sim_dir.clone().ok_or(RunCliError::NeedsSimDir)?;
            let host_data = hex_or_zero(a.host_data.as_deref(), RunCliError::HostData)?;
            let psp = plan_psp(plan, &sim_dir, host_data)?;
            eprintln!(
                "cvm-launch: simulated launch, measurement {} (SNP-format reports){}",
                hex::encode(psp.measurements.snp),
                psp.measurements
                    .mrtd
                    .map(|m| format!(", MRTD {} (TDX-format quotes)", hex::encode(m)))
                    .unwrap_or_default()
            );
            let signer: Arc<dyn ReportSigner> = Arc::new(psp.signer);
            let psp_path = dir.join("psp.sock");
            sockets.push(
                crate::sim_socket::serve_with(&psp_path, Arc::clone(&signer), None)
                    .map_err(RunCliError::Socket)?,
            );
            if let Some(host) = &a.sim_socket {
                sockets.push(crate::sim_socket::serve(host, signer).map_err(RunCliError::Socket)?);
            }
            (
                Tee::Sim {
                    psp_socket: psp_path,
                },
                memory_mib,
            )
        }
        RunTee::Snp => {
            let firmware_path = a.firmware.clone().ok_or_else(|| {
                refuse("run --vmm qemu --tee snp needs --firmware OVMF.fd (built with SNP kernel hashes)".into())
            })?;
            let firmware = read("firmware", &firmware_path)?;
            let cpu_type = a.cpu_type.clone().ok_or(RunCliError::NeedsCpuType)?;
            if a.vmm_type.as_deref().is_some_and(|v| v != "qemu") {
                return Err(refuse(
                    "--vmm qemu builds QEMU's VMSAs: its measurement is --vmm-type qemu's (leave --vmm-type out)"
                        .into(),
                ));
            }
            let inputs = SnpInputs {
                firmware: firmware_path,
                vcpus: a.vcpus,
                cpu_type: cpu_type.clone(),
                vmm_type: a.vmm_type.clone(),
                guest_features: a.guest_features.clone(),
                kernel: Some(kernel_path.clone()),
                initrd: a.initrd.clone(),
                append: Some(append.clone()),
            };
            let plan = inputs
                .plan_with(firmware.clone(), kernel.clone(), initrd.clone())
                .map_err(RunCliError::Inputs)?;
            for w in plan.warnings() {
                eprintln!("cvm-launch: warning: {w}");
            }
            eprintln!(
                "cvm-launch: SNP launch under QEMU, expected measurement {}",
                hex::encode(snp_digest(&plan))
            );
            let id = match (&a.id_block, &a.id_auth) {
                (Some(b), Some(auth)) => Some((
                    super::hardware::read_exact::<{ crate::cvm::snp::ID_BLOCK_LEN }>(
                        "--id-block",
                        b,
                    )?
                    .to_vec(),
                    super::hardware::read_exact::<{ crate::cvm::snp::ID_AUTH_LEN }>(
                        "--id-auth",
                        auth,
                    )?
                    .to_vec(),
                )),
                _ => None,
            };
            (
                Tee::Snp(SnpGuest {
                    firmware: private_copy(dir, "firmware", &firmware).map_err(io)?,
                    cpu_type,
                    policy: super::hardware::parse_policy(a.policy.as_deref())?,
                    host_data: hex_or_zero(a.host_data.as_deref(), RunCliError::HostData)?,
                    id,
                    cbitpos: SNP_CBITPOS,
                    reduced_phys_bits: 1,
                }),
                a.memory.unwrap_or(DEFAULT_HARDWARE_MIB),
            )
        }
        RunTee::Tdx => {
            let firmware_path = a.firmware.clone().ok_or_else(|| {
                refuse("run --vmm qemu --tee tdx needs --firmware TDVF.fd".into())
            })?;
            let firmware = read("firmware", &firmware_path)?;
            (
                Tee::Tdx(TdxGuest {
                    firmware: private_copy(dir, "firmware", &firmware).map_err(io)?,
                    mrconfigid: hex_or_zero(
                        a.mrconfigid.as_deref(),
                        RunCliError::Hex48("--mrconfigid"),
                    )?,
                    mrowner: hex_or_zero(a.mrowner.as_deref(), RunCliError::Hex48("--mrowner"))?,
                    quote_socket: a.quote_socket.clone(),
                }),
                a.memory.unwrap_or(DEFAULT_HARDWARE_MIB),
            )
        }
    };
    let forward = match a.attest_forward {
        None => None,
        Some(port) => {
            let me = std::env::current_exe().map_err(io)?;
            Some(Forward {
                host_port: port,
                relay: vec![me.display().to_string(), "relay".into()],
            })
        }
    };
    let config = QemuConfig {
        accel,
        memory_mib,
        vcpus: a.vcpus,
        kernel: kernel_copy,
        initrd: initrd_copy,
        append,
        disks: a.disks.iter().map(|d| disk(d)).collect(),
        forward,
        qmp_socket: dir.join("qmp.sock"),
        tee,
    };
    Ok(Prepared {
        launch: Launch {
            qemu,
            config,
            timeout: a.timeout.map(Duration::from_secs),
            console: a.console.clone().map_or(Console::Stdout, Console::File),
        },
        version,
        psp_socket: sockets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_read_only_with_its_suffix() {
        assert_eq!(
            disk("/d/a.img,ro"),
            Disk {
                path: "/d/a.img".into(),
                read_only: true
            }
        );
        assert!(!disk("/d/a.img").read_only);
    }
}
