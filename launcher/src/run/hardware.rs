//! `cvm-launch run --tee snp|tdx` on a host that offers the VM type: its arguments (flags of
//! another TEE refused), then the launch and run on [`crate::hardware`] with the console on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Boot, DEFAULT_HARDWARE_MIB, RunArgs, RunCliError, RunTee, finish, hex_or_zero, snp_boot,
};
use crate::cvm::exits::QuoteService;
use crate::cvm::quote::{NoQuoteService, SimQuoteSocket};
use crate::cvm::snp::{DEFAULT_POLICY, ID_AUTH_LEN, ID_BLOCK_LEN, IdBlock, SnpLaunchParams};
use crate::hardware::tdx::TdxRunParams;
use crate::hardware::{HwOutcome, HwRunConfig};
use crate::inputs::InputError;
use crate::measure::snp_digest;

/// `run --tee snp|tdx` on a host that offers the VM type: arguments (exit 2), launch and run
/// (exit 0 when the guest stops by itself, 1 when the VM fails, 2 when the host cannot).
pub fn command(args: RunArgs) -> ExitCode {
    let hw = match hardware_args(args) {
        Ok(h) => h,
        Err(e) => return finish(2, e),
    };
    match run_hardware(&hw) {
        Ok(out) => finish(
            0,
            format_args!(
                "{} (vCPU {}, {} exits, guest faults {:?})",
                out.stop, out.vcpu, out.exits, out.faults
            ),
        ),
        Err(e @ RunCliError::Inputs(_)) => finish(2, e),
        Err(RunCliError::Hardware(e)) if e.nothing_started() => {
            finish(2, format_args!("{e}; nothing was started"))
        }
        Err(e) => finish(1, e),
    }
}

/// SNP guest policy bit 17: reserved, must be one (SEV-SNP ABI §4.3).
const POLICY_RESERVED_ONE: u64 = 1 << 17;
/// SNP guest policy bit 19: DEBUG.
const POLICY_DEBUG: u64 = 1 << 19;

/// What `run --tee snp|tdx` launches.
#[derive(Clone, Debug)]
pub enum HwBoot {
    /// An SNP guest: the same plan as `measure --tee snp` / `run --tee sim`.
    Snp {
        /// What to boot.
        boot: Boot,
        /// Policy, HOST_DATA, ID block.
        launch: SnpLaunchParams,
    },
    /// A TD from a TDVF image.
    Tdx {
        /// The TDVF firmware image.
        firmware: PathBuf,
        /// vCPUs, MRCONFIGID, MROWNER.
        params: TdxRunParams,
        /// Where GetQuote goes.
        quote_socket: Option<PathBuf>,
    },
}

/// What `run --tee snp|tdx` takes.
#[derive(Clone, Debug)]
pub struct HwRunArgs {
    /// What to launch.
    pub boot: HwBoot,
    /// Memory and timeout.
    pub cfg: HwRunConfig,
}

/// Turns the command's arguments into a hardware run; flags of another TEE are refused.
pub fn hardware_args(a: RunArgs) -> Result<HwRunArgs, RunCliError> {
    let tee = if a.tee == RunTee::Tdx { "tdx" } else { "snp" };
    let sim_only = [
        (a.sim_dir.is_some(), "--sim-dir"),
        (a.sim_socket.is_some(), "--sim-socket"),
        (a.linger, "--linger"),
    ];
    let other = if a.tee == RunTee::Tdx {
        vec![
            (a.kernel.is_some(), "--kernel"),
            (a.cpu_type.is_some(), "--cpu-type"),
            (a.vmm_type.is_some(), "--vmm-type"),
            (a.guest_features.is_some(), "--guest-features"),
            (a.host_data.is_some(), "--host-data"),
            (a.policy.is_some(), "--policy"),
            (a.id_block.is_some(), "--id-block"),
        ]
    } else {
        vec![
            (a.mrconfigid.is_some(), "--mrconfigid"),
            (a.mrowner.is_some(), "--mrowner"),
            (a.quote_socket.is_some(), "--quote-socket"),
        ]
    };
    if let Some((_, flag)) = sim_only.into_iter().chain(other).find(|(given, _)| *given) {
        return Err(RunCliError::NotFor { flag, tee });
    }
    let memory_mib = a.memory.unwrap_or(DEFAULT_HARDWARE_MIB);
    let cfg = HwRunConfig {
        low_ram_bytes: (memory_mib as usize) << 20,
        timeout: a.timeout.map(Duration::from_secs),
    };
    let boot = if a.tee == RunTee::Tdx {
        HwBoot::Tdx {
            firmware: a.firmware.ok_or(RunCliError::NothingToBoot)?,
            params: TdxRunParams {
                vcpus: a.vcpus,
                mrconfigid: hex_or_zero(
                    a.mrconfigid.as_deref(),
                    RunCliError::Hex48("--mrconfigid"),
                )?,
                mrowner: hex_or_zero(a.mrowner.as_deref(), RunCliError::Hex48("--mrowner"))?,
            },
            quote_socket: a.quote_socket,
        }
    } else {
        let boot = snp_boot(&a, Some(memory_mib))?;
        let id = match (a.id_block, a.id_auth) {
            (Some(b), Some(auth)) => Some(IdBlock {
                block: Box::new(read_exact::<ID_BLOCK_LEN>("--id-block", &b)?),
                auth: Box::new(read_exact::<ID_AUTH_LEN>("--id-auth", &auth)?),
            }),
            _ => None,
        };
        let launch = SnpLaunchParams {
            policy: parse_policy(a.policy.as_deref())?,
            host_data: hex_or_zero(a.host_data.as_deref(), RunCliError::HostData)?,
            id,
        };
        HwBoot::Snp { boot, launch }
    };
    Ok(HwRunArgs { boot, cfg })
}

/// Launches and runs `hw` with its console on stdout.
pub fn run_hardware(hw: &HwRunArgs) -> Result<HwOutcome, RunCliError> {
    match &hw.boot {
        HwBoot::Snp { boot, launch } => {
            if launch.policy & POLICY_DEBUG != 0 {
                eprintln!(
                    "cvm-launch: warning: --policy {:#x} allows debugging: the host can read and change the guest's memory, and attestation services refuse such guests by default",
                    launch.policy
                );
            }
            let plan = boot.plan()?;
            for w in plan.warnings() {
                eprintln!("cvm-launch: warning: {w}");
            }
            eprintln!(
                "cvm-launch: SNP launch, expected measurement {}",
                hex::encode(snp_digest(&plan))
            );
            Ok(crate::hardware::snp::run(
                &plan,
                launch.clone(),
                &hw.cfg,
                std::io::stdout(),
            )?)
        }
        HwBoot::Tdx {
            firmware,
            params,
            quote_socket,
        } => {
            let image = std::fs::read(firmware).map_err(|source| {
                RunCliError::Inputs(InputError::Read {
                    what: "firmware",
                    path: firmware.clone(),
                    source,
                })
            })?;
            let quote: Arc<dyn QuoteService + Send + Sync> = match quote_socket {
                Some(path) => Arc::new(SimQuoteSocket { path: path.clone() }),
                None => Arc::new(NoQuoteService),
            };
            Ok(crate::hardware::tdx::run(
                &image,
                params,
                quote,
                &hw.cfg,
                std::io::stdout(),
            )?)
        }
    }
}

/// `--policy`: the SNP guest policy in hex (`0x` optional), [`DEFAULT_POLICY`] when absent; bit 17
/// is reserved and must be one (the PSP refuses the launch otherwise).
pub(super) fn parse_policy(h: Option<&str>) -> Result<u64, RunCliError> {
    let Some(h) = h else {
        return Ok(DEFAULT_POLICY);
    };
    match u64::from_str_radix(h.trim_start_matches("0x"), 16) {
        Ok(p) if p & POLICY_RESERVED_ONE != 0 => Ok(p),
        _ => Err(RunCliError::Policy(h.to_owned())),
    }
}

/// A file of exactly `N` bytes.
pub(super) fn read_exact<const N: usize>(
    flag: &'static str,
    path: &Path,
) -> Result<[u8; N], RunCliError> {
    let bad = |reason: String| RunCliError::IdFile {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let b = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let len = b.len();
    b.try_into()
        .map_err(|_| bad(format!("{len} bytes, expected {N}")))
}
