//! `cvm-launch run`: the command's arguments, then plan → digest → simulated PSP → VM for
//! `--tee sim` (firmware or a direct Linux boot), optionally serving the PSP socket afterwards;
//! `--tee snp|tdx` first checks that this host's KVM can create such VMs, then launches the plan
//! (SNP) or the TDVF image (TDX) on one ([`hardware`]: its arguments; [`crate::hardware`]: the backends).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::hardware::HwError;

use crate::devices::psp::ReportSigner;
use crate::inputs::{InputError, LinuxInputs, SnpInputs};
use crate::measure::snp_digest;
use crate::plan::{LaunchPlan, LaunchUpdate};
use crate::probe::ProbeReport;
use crate::sim_psp::{LaunchMeasurements, SimPsp, direct_boot_mrtd};
use crate::sim_socket::{self, SocketError};
use crate::tdx::mrtd::mrtd_of_firmware;
use crate::vmm::{RunError, RunOutcome, SimRunConfig, run_sim};

pub mod hardware;
pub mod qemu;

/// The kernel command line of a direct boot without `--append`: the console on COM1 from the
/// first message on, and a reboot (which ends the run) instead of a hang after a panic.
pub const DEFAULT_APPEND: &str = "console=ttyS0 earlyprintk=serial panic=-1 reboot=k";
/// Guest RAM of a firmware run without `--memory`.
pub const DEFAULT_FIRMWARE_MIB: u32 = 16;
/// Guest RAM of a direct boot without `--memory`.
pub const DEFAULT_KERNEL_MIB: u32 = 512;
/// How long a firmware run may take without `--timeout`.
pub const DEFAULT_FIRMWARE_TIMEOUT_SECS: u64 = 120;
/// Guest RAM of an SNP or TDX run without `--memory`.
pub const DEFAULT_HARDWARE_MIB: u32 = 512;
/// CPU type of a direct boot without `--cpu-type` (a long-mode VMSA carries no CPU signature).
pub const DEFAULT_KERNEL_CPU: &str = "EPYC-v4";

/// Which TEE `run` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunTee {
    /// AMD SEV-SNP (needs an SNP host).
    Snp,
    /// Intel TDX (needs a TDX host).
    Tdx,
    /// Plain KVM with a simulated PSP.
    Sim,
}

/// Which VMM `run` uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Vmm {
    /// The launcher's own VMM on /dev/kvm (the repository's test guest; SNP and TDX launches on such
    /// hosts).
    #[default]
    Kvm,
    /// QEMU: Linux guests with virtio disks, a network to the attestation service and the console.
    Qemu,
}

/// The arguments of `cvm-launch run`.
#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("boot").required(true).multiple(true).args(["firmware", "kernel"])))]
pub struct RunArgs {
    /// Which TEE.
    #[arg(long, value_enum)]
    pub tee: RunTee,
    /// Which VMM: kvm (the launcher's own) or qemu (Linux guests with disks and network; see
    /// --disk, --attest-forward, --accel, --qemu, --console). With qemu the exit code is 0 when the
    /// guest powered off, 3 when it reset or panicked, 4 at --timeout, 1 when QEMU failed.
    #[arg(long, value_enum, default_value = "kvm")]
    pub vmm: Vmm,
    /// --vmm qemu: a raw disk image as the next virtio-blk disk (/dev/vda, /dev/vdb, …); FILE,ro
    /// attaches it read-only. Repeatable.
    #[arg(long = "disk", value_name = "FILE[,ro]")]
    pub disks: Vec<String>,
    /// --vmm qemu: the attestation service's port on 127.0.0.1, which the guest reaches as
    /// https://10.0.2.100:443 (QEMU user-mode networking with restrict=on: nothing else is reachable).
    #[arg(long, value_name = "PORT")]
    pub attest_forward: Option<u16>,
    /// --vmm qemu: the accelerator [default: auto, KVM where the CPU shows VMX/SVM, else TCG].
    #[arg(long, value_enum)]
    pub accel: Option<qemu::AccelChoice>,
    /// --vmm qemu: the QEMU program [default: qemu-system-x86_64 on PATH].
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// --vmm qemu: write the guest's console to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub console: Option<PathBuf>,
    /// Firmware image (for the repository's test guest: launcher/guest/sim-guest.bin).
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// Linux bzImage for a direct boot without firmware (boot protocol 2.06+, 64-bit entry).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initrd for --kernel.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for --kernel [default: "console=ttyS0 earlyprintk=serial panic=-1
    /// reboot=k"].
    #[arg(long, requires = "kernel")]
    pub append: Option<String>,
    /// Number of vCPUs (the sim backend runs 1).
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Guest CPU type (QEMU name), as for `measure`; required with --firmware (it is measured
    /// into the VMSA), EPYC-v4 with --kernel.
    #[arg(long)]
    pub cpu_type: Option<String>,
    /// VMM type for the VMSA reset state: qemu (default), ec2, gce.
    #[arg(long)]
    pub vmm_type: Option<String>,
    /// SEV_FEATURES in hex (default 0x1).
    #[arg(long)]
    pub guest_features: Option<String>,
    /// Simulator directory made by `cvm-attest sim init --out DIR` (required for --tee sim).
    #[arg(long)]
    pub sim_dir: Option<PathBuf>,
    /// Also serve the simulated PSP to host processes on this Unix socket (length-prefixed
    /// CBOR {tee, report_data} -> {evidence, certs}).
    #[arg(long)]
    pub sim_socket: Option<PathBuf>,
    /// With --sim-socket: keep serving after the guest stops, until killed.
    #[arg(long)]
    pub linger: bool,
    /// Guest RAM in MiB [default: 16 below the firmware; 512 for --kernel].
    #[arg(long, visible_alias = "memory-mib")]
    pub memory: Option<u32>,
    /// Stop the guest after this many seconds [default: 120 with --firmware; none with --kernel].
    #[arg(long)]
    pub timeout: Option<u64>,
    /// HOST_DATA for the reports, 64 hex digits (default zero).
    #[arg(long)]
    pub host_data: Option<String>,
    /// SNP: the guest policy in hex (SEV-SNP ABI §4.3; bit 17 must be set) [default: 0x30000:
    /// SMT allowed, no debug, no migration agent, ABI 0.0].
    #[arg(long)]
    pub policy: Option<String>,
    /// SNP: the 96-byte ID block given to SNP_LAUNCH_FINISH (SEV-SNP ABI §8.18).
    #[arg(long, requires = "id_auth")]
    pub id_block: Option<PathBuf>,
    /// SNP: the 4096-byte ID authentication information for --id-block (AUTH_KEY_EN is set when
    /// it names an author key algorithm).
    #[arg(long, requires = "id_block")]
    pub id_auth: Option<PathBuf>,
    /// TDX: MRCONFIGID, 96 hex digits (default zero).
    #[arg(long)]
    pub mrconfigid: Option<String>,
    /// TDX: MROWNER, 96 hex digits (default zero).
    #[arg(long)]
    pub mrowner: Option<String>,
    /// TDX: answer the guest's GetQuote through this Unix socket, which speaks the simulated PSP
    /// socket's wire format (e.g. another `cvm-launch run --tee sim --sim-socket PATH`); without
    /// it GetQuote reports the service unavailable.
    #[arg(long)]
    pub quote_socket: Option<PathBuf>,
}

/// Runs `cvm-launch run`. Exit codes: 0 the guest stopped by itself (halt, reset, shutdown);
/// 1 the VM failed while running; 2 bad arguments, missing inputs, or a host that cannot run
/// the requested TEE (nothing was started).
pub fn command(args: RunArgs) -> ExitCode {
    if args.vmm == Vmm::Qemu {
        return qemu::command(args);
    }
    if let Some(flag) = qemu::qemu_only_flags(&args) {
        return finish(2, format_args!("{flag} needs --vmm qemu"));
    }
    if args.firmware.is_some() && args.kernel.is_some() {
        return finish(
            2,
            "give --firmware or --kernel (a kernel measured through firmware is booted with --vmm qemu)",
        );
    }
    match args.tee {
        RunTee::Sim => {}
        tee => {
            if let Some(e) = hardware_refusal(tee, &crate::probe::probe()) {
                return finish(2, e);
            }
            return hardware::command(args);
        }
    }
    let sim = match sim_args(args) {
        Ok(s) => s,
        Err(e) => return finish(2, e),
    };
    match run(&sim) {
        Ok((out, measurement)) => finish(
            0,
            format_args!(
                "{}: measurement {}, {} exits, {} reports signed, setup {} us, run {} us, guest faults {:?}",
                out.stop,
                hex::encode(measurement),
                out.exits,
                out.psp_requests,
                out.setup_micros,
                out.run_micros,
                out.faults
            ),
        ),
        Err(e @ (RunCliError::Inputs(_) | RunCliError::Sim { .. } | RunCliError::Socket(_))) => {
            finish(2, e)
        }
        Err(e) => finish(1, e),
    }
}

/// Prints `cvm-launch: {message}` on stderr and exits with `code` (see [`command`]).
pub(crate) fn finish(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("cvm-launch: {message}");
    ExitCode::from(code)
}

/// Why `run --tee snp|tdx` does not start on this host, from the probe: the first missing
/// piece, with what to do instead; `None` when KVM offers the VM type.
pub fn hardware_refusal(tee: RunTee, probe: &ProbeReport) -> Option<String> {
    let (name, a_name, vm_type, present) = match tee {
        RunTee::Snp => ("SNP", "an SNP", "KVM_X86_SNP_VM=4", probe.snp_vm),
        RunTee::Tdx => ("TDX", "a TDX", "KVM_X86_TDX_VM=5", probe.tdx_vm),
        RunTee::Sim => return None,
    };
    let flag = name.to_ascii_lowercase();
    if let Some(e) = &probe.kvm_error {
        return Some(format!("run --tee {flag}: {e}; nothing was started"));
    }
    (!present).then(|| format!(
        "this host's KVM offers no {name} VMs (KVM_CAP_VM_TYPES {} lacks {vm_type}); nothing was started: use --tee sim, or run on {a_name} host: see README, \"Running on real SEV-SNP / TDX hardware\" (`cvm-launch probe` shows what this host has)",
        probe.vm_types_mask.as_deref().unwrap_or("unknown"),
    ))
}

/// `N` bytes given in hex (zero when the flag is absent), or `bad`.
fn hex_or_zero<const N: usize>(h: Option<&str>, bad: RunCliError) -> Result<[u8; N], RunCliError> {
    match h {
        None => Ok([0u8; N]),
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(bad),
    }
}

/// What a run of an SNP plan (`sim` or `snp`) boots: Linux directly with `--kernel` (in
/// `memory_mib` of guest RAM, the default when `None`), else `--firmware`.
fn snp_boot(a: &RunArgs, memory_mib: Option<u32>) -> Result<Boot, RunCliError> {
    match (&a.firmware, &a.kernel) {
        (_, Some(kernel)) => Ok(Boot::Linux(linux_inputs(
            kernel.clone(),
            a.initrd.clone(),
            a.append.clone(),
            memory_mib,
            a.cpu_type.clone(),
            a.vmm_type.clone(),
            a.guest_features.clone(),
        ))),
        (Some(firmware), None) => Ok(Boot::Firmware(SnpInputs {
            firmware: firmware.clone(),
            vcpus: a.vcpus,
            cpu_type: a.cpu_type.clone().ok_or(RunCliError::NeedsCpuType)?,
            vmm_type: a.vmm_type.clone(),
            guest_features: a.guest_features.clone(),
            kernel: None,
            initrd: None,
            append: None,
        })),
        (None, None) => Err(RunCliError::NothingToBoot),
    }
}

/// Turns the command's arguments into a simulated run.
fn sim_args(a: RunArgs) -> Result<SimRunArgs, RunCliError> {
    let hardware_only = [
        (a.policy.is_some(), "--policy"),
        (a.id_block.is_some(), "--id-block"),
        (a.mrconfigid.is_some(), "--mrconfigid"),
        (a.mrowner.is_some(), "--mrowner"),
        (a.quote_socket.is_some(), "--quote-socket"),
    ];
    if let Some((_, flag)) = hardware_only.into_iter().find(|(given, _)| *given) {
        return Err(RunCliError::NotFor { flag, tee: "sim" });
    }
    let sim_dir = a.sim_dir.clone().ok_or(RunCliError::NeedsSimDir)?;
    let host_data = hex_or_zero(a.host_data.as_deref(), RunCliError::HostData)?;
    let boot = snp_boot(&a, a.memory)?;
    let (memory_mib, timeout) = match boot {
        Boot::Linux(_) => (a.memory.unwrap_or(DEFAULT_KERNEL_MIB), a.timeout),
        Boot::Firmware(_) => (
            a.memory.unwrap_or(DEFAULT_FIRMWARE_MIB),
            Some(a.timeout.unwrap_or(DEFAULT_FIRMWARE_TIMEOUT_SECS)),
        ),
    };
    Ok(SimRunArgs {
        boot,
        sim_dir,
        sim_socket: a.sim_socket,
        linger: a.linger,
        memory_mib,
        timeout_secs: timeout,
        host_data,
    })
}

/// The direct-boot inputs of `run --tee sim --kernel` (and of `measure --tee sim --kernel`, so
/// both plan the same boot), with this module's defaults for what was not given.
pub fn linux_inputs(
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    append: Option<String>,
    memory_mib: Option<u32>,
    cpu_type: Option<String>,
    vmm_type: Option<String>,
    guest_features: Option<String>,
) -> LinuxInputs {
    LinuxInputs {
        kernel,
        initrd,
        append: append.unwrap_or_else(|| DEFAULT_APPEND.to_owned()),
        memory_mib: memory_mib.unwrap_or(DEFAULT_KERNEL_MIB),
        cpu_type: cpu_type.unwrap_or_else(|| DEFAULT_KERNEL_CPU.to_owned()),
        vmm_type,
        guest_features,
    }
}

/// What a simulated or SNP run boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// A firmware image from its reset vector.
    Firmware(SnpInputs),
    /// A Linux kernel directly, in long mode.
    Linux(LinuxInputs),
}

impl Boot {
    fn plan(&self) -> Result<LaunchPlan, InputError> {
        match self {
            Self::Firmware(i) => i.plan(),
            Self::Linux(i) => i.plan(),
        }
    }
}

/// What `run --tee sim` takes.
#[derive(Clone, Debug)]
pub struct SimRunArgs {
    /// What to boot.
    pub boot: Boot,
    /// Simulator directory (`cvm-attest sim init --out DIR`).
    pub sim_dir: PathBuf,
    /// Serve the simulated PSP to host processes on this Unix socket.
    pub sim_socket: Option<PathBuf>,
    /// After the guest halts, keep serving the socket until the process is killed.
    pub linger: bool,
    /// Guest RAM from GPA 0, MiB.
    pub memory_mib: u32,
    /// Stop the guest after this many seconds (`None`: let it run).
    pub timeout_secs: Option<u64>,
    /// HOST_DATA for every report.
    pub host_data: [u8; 32],
}

/// Why `run --tee sim` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunCliError {
    /// The plan's inputs.
    #[error(transparent)]
    Inputs(#[from] InputError),
    /// The simulator directory.
    #[error(
        "cannot load the simulated PSP from {dir}: {message} (create it with `cvm-attest sim init --out {dir}`)"
    )]
    Sim {
        /// The directory.
        dir: String,
        /// What failed.
        message: String,
    },
    /// The socket.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The VM.
    #[error(transparent)]
    Run(#[from] RunError),
    /// No simulator directory.
    #[error("run --tee sim needs --sim-dir DIR (create one with `cvm-attest sim init --out DIR`)")]
    NeedsSimDir,
    /// No CPU type for a firmware boot.
    #[error("run --firmware needs --cpu-type TYPE (it is measured into the VMSA), e.g. EPYC-v4")]
    NeedsCpuType,
    /// Neither firmware nor kernel.
    #[error("run needs --firmware FILE or --kernel bzImage")]
    NothingToBoot,
    /// HOST_DATA malformed.
    #[error("--host-data must be 64 hex digits (32 bytes)")]
    HostData,
    /// `--policy` malformed.
    #[error(
        "--policy {0}: expected the SNP guest policy in hex with bit 17 set (SEV-SNP ABI §4.3), e.g. 0x30000"
    )]
    Policy(String),
    /// MRCONFIGID / MROWNER malformed.
    #[error("{0} must be 96 hex digits (48 bytes)")]
    Hex48(&'static str),
    /// An ID block or ID authentication file.
    #[error("{flag} {path}: {reason}")]
    IdFile {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A flag of another TEE.
    #[error("{flag} does not apply to run --tee {tee}")]
    NotFor {
        /// The flag.
        flag: &'static str,
        /// The TEE.
        tee: &'static str,
    },
    /// The SNP or TDX run.
    #[error(transparent)]
    Hardware(#[from] HwError),
}

/// The simulated PSP of one launch: its plan, the measurements the plan gives, and the signer
/// that puts them in reports and quotes.
#[derive(Debug)]
pub struct LaunchPsp {
    /// The launch plan.
    pub plan: LaunchPlan,
    /// Its SNP digest and (with TDVF metadata) MRTD.
    pub measurements: LaunchMeasurements,
    /// The simulated secure processor.
    pub signer: SimPsp,
}

/// Loads the simulated PSP of `sim_dir` for `plan`: it signs with the plan's SNP digest (and
/// MRTD, for firmware with TDVF metadata).
pub fn plan_psp(
    plan: LaunchPlan,
    sim_dir: &Path,
    host_data: [u8; 32],
) -> Result<LaunchPsp, RunCliError> {
    let measurements = LaunchMeasurements {
        snp: snp_digest(&plan),
        mrtd: loaded_firmware(&plan)
            .and_then(|fw| mrtd_of_firmware(fw).ok())
            .or_else(|| direct_boot_mrtd(&plan)),
    };
    let signer = SimPsp::load(sim_dir, measurements, host_data).map_err(|e| RunCliError::Sim {
        dir: sim_dir.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(LaunchPsp {
        plan,
        measurements,
        signer,
    })
}

/// Runs the guest of `args` with its console on stdout; returns how the run ended and the
/// measurement the reports carry: the SNP digest of the plan that was loaded.
pub fn run(args: &SimRunArgs) -> Result<(RunOutcome, [u8; 48]), RunCliError> {
    let LaunchPsp {
        plan,
        measurements,
        signer: psp,
    } = plan_psp(args.boot.plan()?, &args.sim_dir, args.host_data)?;
    let measurement = measurements.snp;
    let signer: Arc<dyn ReportSigner> = Arc::new(psp);
    let socket = match &args.sim_socket {
        Some(p) => Some(sim_socket::serve(p, Arc::clone(&signer))?),
        None => None,
    };
    let cfg = SimRunConfig {
        low_ram_bytes: (args.memory_mib as usize) << 20,
        timeout: args
            .timeout_secs
            .map_or(std::time::Duration::MAX, std::time::Duration::from_secs),
        max_exits: match args.timeout_secs {
            Some(_) => SimRunConfig::default().max_exits,
            None => u64::MAX,
        },
        stdin_console: matches!(args.boot, Boot::Linux(_)),
    };
    let outcome = run_sim(&plan, signer, std::io::stdout(), &cfg)?;
    if args.linger && socket.is_some() {
        eprintln!("cvm-launch: guest stopped; serving the simulated PSP socket until killed");
        loop {
            std::thread::park();
        }
    }
    drop(socket);
    Ok((outcome, measurement))
}

/// The firmware bytes the plan loads (the TDX MRTD is computed over exactly these).
fn loaded_firmware(plan: &LaunchPlan) -> Option<&[u8]> {
    plan.updates.iter().find_map(|u| match u {
        LaunchUpdate::Data { gpa, data, .. } if *gpa == plan.firmware_gpa => Some(data.as_slice()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::hardware::{HwBoot, hardware_args};
    use super::*;
    use crate::cvm::snp::DEFAULT_POLICY;

    fn probe(snp: bool, tdx: bool, kvm_error: Option<&str>) -> ProbeReport {
        let mut p = crate::probe::probe();
        p.snp_vm = snp;
        p.tdx_vm = tdx;
        p.vm_types_mask = Some("0x1".into());
        p.kvm_error = kvm_error.map(str::to_owned);
        p
    }

    #[test]
    fn refusal_names_the_missing_vm_type_and_what_to_do() {
        assert_eq!(
            hardware_refusal(RunTee::Snp, &probe(true, false, None)),
            None
        );
        assert_eq!(
            hardware_refusal(RunTee::Tdx, &probe(false, true, None)),
            None
        );
        let m = hardware_refusal(RunTee::Snp, &probe(false, true, None)).unwrap();
        assert!(m.contains("offers no SNP VMs"), "{m}");
        assert!(m.contains("KVM_X86_SNP_VM=4"), "{m}");
        assert!(m.contains("use --tee sim"), "{m}");
        assert!(m.contains("README"), "{m}");
        let m = hardware_refusal(RunTee::Tdx, &probe(true, false, None)).unwrap();
        assert!(
            m.contains("offers no TDX VMs") && m.contains("KVM_X86_TDX_VM=5"),
            "{m}"
        );
        let m = hardware_refusal(
            RunTee::Snp,
            &probe(false, false, Some("cannot open /dev/kvm")),
        )
        .unwrap();
        assert!(m.contains("cannot open /dev/kvm"), "{m}");
    }

    fn args(tee: RunTee) -> RunArgs {
        RunArgs {
            tee,
            firmware: None,
            kernel: Some("bzImage".into()),
            initrd: None,
            append: None,
            vcpus: 1,
            cpu_type: None,
            vmm_type: None,
            guest_features: None,
            sim_dir: Some("sim".into()),
            sim_socket: None,
            linger: false,
            memory: None,
            timeout: None,
            host_data: None,
            policy: None,
            id_block: None,
            id_auth: None,
            mrconfigid: None,
            mrowner: None,
            quote_socket: None,
            vmm: Vmm::Kvm,
            disks: vec![],
            attest_forward: None,
            accel: None,
            qemu: None,
            console: None,
        }
    }

    fn hw(tee: RunTee) -> RunArgs {
        RunArgs {
            sim_dir: None,
            firmware: Some("fw".into()),
            kernel: None,
            cpu_type: Some("EPYC-v4".into()),
            ..args(tee)
        }
    }

    #[test]
    fn hardware_runs_refuse_flags_of_another_tee() {
        let mut a = hw(RunTee::Snp);
        a.quote_socket = Some("q".into());
        assert!(matches!(
            hardware_args(a),
            Err(RunCliError::NotFor {
                flag: "--quote-socket",
                tee: "snp"
            })
        ));
        let mut a = hw(RunTee::Tdx);
        a.cpu_type = None;
        a.id_block = Some("id".into());
        assert!(matches!(
            hardware_args(a),
            Err(RunCliError::NotFor {
                flag: "--id-block",
                tee: "tdx"
            })
        ));
        let mut a = hw(RunTee::Snp);
        a.sim_dir = Some("sim".into());
        assert!(matches!(
            hardware_args(a),
            Err(RunCliError::NotFor {
                flag: "--sim-dir",
                ..
            })
        ));
        let mut a = args(RunTee::Sim);
        a.mrowner = Some("00".into());
        assert!(matches!(
            sim_args(a),
            Err(RunCliError::NotFor {
                flag: "--mrowner",
                tee: "sim"
            })
        ));
    }

    #[test]
    fn tdx_measurement_registers_are_48_bytes_of_hex() {
        let mut a = hw(RunTee::Tdx);
        a.cpu_type = None;
        a.mrconfigid = Some("ab".repeat(48));
        a.quote_socket = Some("q.sock".into());
        let HwBoot::Tdx {
            params,
            quote_socket,
            ..
        } = hardware_args(a).unwrap().boot
        else {
            panic!("not a TDX run")
        };
        assert_eq!(params.mrconfigid, [0xab; 48]);
        assert_eq!(params.mrowner, [0; 48]);
        assert_eq!(quote_socket, Some("q.sock".into()));
        let mut a = hw(RunTee::Tdx);
        a.cpu_type = None;
        a.mrowner = Some("ab".repeat(47));
        assert!(matches!(
            hardware_args(a),
            Err(RunCliError::Hex48("--mrowner"))
        ));
    }

    #[test]
    fn the_id_block_files_must_have_their_abi_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (block, auth) = (dir.path().join("id"), dir.path().join("auth"));
        std::fs::write(&block, [7u8; 96]).unwrap();
        std::fs::write(&auth, [0u8; 4095]).unwrap();
        let mut a = hw(RunTee::Snp);
        (a.id_block, a.id_auth) = (Some(block.clone()), Some(auth.clone()));
        let e = hardware_args(a.clone()).unwrap_err().to_string();
        assert!(
            e.contains("--id-auth") && e.contains("4095 bytes, expected 4096"),
            "{e}"
        );
        std::fs::write(&auth, [0u8; 4096]).unwrap();
        let HwBoot::Snp { launch, .. } = hardware_args(a).unwrap().boot else {
            panic!("not an SNP run")
        };
        let id = launch.id.unwrap();
        assert_eq!(*id.block, [7u8; 96]);
        assert_eq!(launch.policy, DEFAULT_POLICY);
    }

    #[test]
    fn the_snp_policy_is_hex_with_its_reserved_bit_set() {
        let HwBoot::Snp { launch, .. } = hardware_args(hw(RunTee::Snp)).unwrap().boot else {
            panic!("not an SNP run")
        };
        assert_eq!(launch.policy, DEFAULT_POLICY);
        let mut a = hw(RunTee::Snp);
        a.policy = Some("0x70000".into());
        let HwBoot::Snp { launch, .. } = hardware_args(a).unwrap().boot else {
            panic!("not an SNP run")
        };
        assert_eq!(launch.policy, 0x7_0000);
        for bad in ["0x10000", "0xzz", ""] {
            let mut a = hw(RunTee::Snp);
            a.policy = Some(bad.into());
            let e = hardware_args(a).unwrap_err();
            assert!(matches!(e, RunCliError::Policy(_)), "{bad}: {e}");
        }
        let mut a = hw(RunTee::Tdx);
        a.cpu_type = None;
        a.policy = Some("0x30000".into());
        assert!(matches!(
            hardware_args(a),
            Err(RunCliError::NotFor {
                flag: "--policy",
                tee: "tdx"
            })
        ));
    }

    #[test]
    fn a_kernel_run_defaults_to_a_console_on_com1_and_no_timeout() {
        let s = sim_args(args(RunTee::Sim)).unwrap();
        let Boot::Linux(l) = &s.boot else {
            panic!("not a Linux boot")
        };
        assert_eq!(l.append, DEFAULT_APPEND);
        assert_eq!((l.memory_mib, s.memory_mib), (512, 512));
        assert_eq!(s.timeout_secs, None);
        let mut a = args(RunTee::Sim);
        a.host_data = Some("ab".into());
        assert!(matches!(sim_args(a), Err(RunCliError::HostData)));
        let mut a = args(RunTee::Sim);
        a.sim_dir = None;
        assert!(matches!(sim_args(a), Err(RunCliError::NeedsSimDir)));
        let mut a = args(RunTee::Sim);
        (a.kernel, a.firmware) = (None, Some("fw".into()));
        assert!(matches!(sim_args(a), Err(RunCliError::NeedsCpuType)));
    }
}
