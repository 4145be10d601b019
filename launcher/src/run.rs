//! `cvm-launch run --tee sim`: plan → digest → simulated PSP → VM, then optionally keep serving
//! the PSP socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::devices::psp::ReportSigner;
use crate::inputs::{InputError, SnpInputs};
use crate::measure::snp_digest;
use crate::plan::{LaunchPlan, LaunchUpdate};
use crate::sim_psp::{LaunchMeasurements, SimPsp};
use crate::sim_socket::{self, SocketError};
use crate::tdx::mrtd::mrtd_of_firmware;
use crate::vmm::{RunError, RunOutcome, SimRunConfig, run_sim};

/// What `run --tee sim` takes.
#[derive(Clone, Debug)]
pub struct SimRunArgs {
    /// The plan's inputs (firmware, vCPUs, CPU type, …).
    pub inputs: SnpInputs,
    /// Simulator directory (`cvm-attest sim init --out DIR`).
    pub sim_dir: PathBuf,
    /// Serve the simulated PSP to host processes on this Unix socket.
    pub sim_socket: Option<PathBuf>,
    /// After the guest halts, keep serving the socket until the process is killed.
    pub linger: bool,
    /// Guest RAM below the firmware, MiB.
    pub memory_mib: u32,
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

/// Plans the launch of `inputs` and loads the simulated PSP of `sim_dir` for it.
pub fn sim_psp(
    inputs: &SnpInputs,
    sim_dir: &Path,
    host_data: [u8; 32],
) -> Result<LaunchPsp, RunCliError> {
    let plan = inputs.plan()?;
    let measurements = LaunchMeasurements {
        snp: snp_digest(&plan),
        mrtd: loaded_firmware(&plan).and_then(|fw| mrtd_of_firmware(fw).ok()),
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
/// measurement the reports carry.
pub fn run(args: &SimRunArgs) -> Result<(RunOutcome, [u8; 48]), RunCliError> {
    let LaunchPsp {
        plan,
        measurements,
        signer: psp,
    } = sim_psp(&args.inputs, &args.sim_dir, args.host_data)?;
    let measurement = measurements.snp;
    let signer: Arc<dyn ReportSigner> = Arc::new(psp);
    let socket = match &args.sim_socket {
        Some(p) => Some(sim_socket::serve(p, Arc::clone(&signer))?),
        None => None,
    };
    let cfg = SimRunConfig {
        low_ram_bytes: (args.memory_mib as usize) << 20,
        ..SimRunConfig::default()
    };
    let outcome = run_sim(&plan, signer, std::io::stdout(), &cfg)?;
    if args.linger && socket.is_some() {
        eprintln!("cvm-launch: guest halted; serving the simulated PSP socket until killed");
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
