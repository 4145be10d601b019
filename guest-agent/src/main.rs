//! The `cvm-agent` binary: `unlock`, `run -- CMD…` and `evidence`.

use clap::{Args, Parser, Subcommand};
use cvm_agent::provider::{self, Provider, ProviderOptions, TeeChoice};
use cvm_agent::unlock::{self, AgentError, ServerOptions, Unlocker};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// cvm-agent: runs inside the guest. Collects evidence from the TEE, attests to the cvm-attest service,
/// receives the released key and unlocks the workload's data.
///
/// Exit codes: 0 success, 1 error, 2 usage, 3 refused by the server (or its certificate not trusted),
/// 4 server unreachable after retries, 5 evidence provider failed.
#[derive(Parser)]
#[command(name = "cvm-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attest, receive the secret and unlock (a sealed file, or the secret written to a file).
    Unlock(UnlockArgs),
    /// Unlock like `unlock`, then replace this process with the workload: `run [OPTIONS] -- CMD ARGS…`.
    Run {
        #[command(flatten)]
        unlock: UnlockArgs,
        /// The workload command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Produce evidence over the given REPORT_DATA and write it (the raw report or quote) to a file.
    Evidence {
        #[command(flatten)]
        tee: TeeArgs,
        /// REPORT_DATA, 64 bytes in hex (shorter values are zero-padded).
        #[arg(long, value_name = "HEX")]
        report_data: String,
        /// Where to write the evidence.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Where to write the certificates the provider returned (SNP: the VCEK DER), if any.
        #[arg(long, value_name = "FILE")]
        certs_out: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct TeeArgs {
    /// Evidence provider: auto probes SNP (configfs-tsm), TDX (configfs-tsm), then sim (--sim-socket).
    #[arg(long, value_name = "auto|snp|tdx|sim", default_value = "auto")]
    tee: TeeChoice,
    /// The launcher's simulated PSP socket (for --tee sim).
    #[arg(long, value_name = "PATH")]
    sim_socket: Option<PathBuf>,
    /// The configfs-tsm report directory.
    #[arg(long, value_name = "DIR", default_value = provider::DEFAULT_TSM_ROOT)]
    tsm_root: PathBuf,
}

#[derive(Args, Clone)]
struct UnlockArgs {
    /// The attestation service, https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The service's CA certificate (PEM); the only certificate trusted.
    #[arg(long, value_name = "CA.pem")]
    ca: PathBuf,
    /// The secret's name on the service.
    #[arg(long, value_name = "NAME")]
    resource: String,
    #[command(flatten)]
    tee: TeeArgs,
    /// A sealed file to unlock with the released key (needs --out).
    #[arg(
        long,
        value_name = "IN",
        requires = "out",
        conflicts_with = "secret_out"
    )]
    sealed: Option<PathBuf>,
    /// Where the unsealed plaintext goes (mode 0600, only on success); `-` for stdout.
    #[arg(long, value_name = "OUT", requires = "sealed")]
    out: Option<String>,
    /// Write the released secret itself to this file (mode 0600).
    #[arg(long, value_name = "FILE")]
    secret_out: Option<PathBuf>,
    /// A LUKS2 device to open with the released key (key on cryptsetup's stdin; needs --name or --luks-check).
    #[arg(long, value_name = "DEVICE", conflicts_with_all = ["sealed", "secret_out"])]
    luks: Option<PathBuf>,
    /// The device-mapper name for --luks.
    #[arg(long, value_name = "NAME", requires = "luks")]
    name: Option<String>,
    /// With --luks: only check that the key opens the device (cryptsetup --test-passphrase).
    #[arg(long, requires = "luks")]
    luks_check: bool,
    /// The cryptsetup program.
    #[arg(long, value_name = "PATH", default_value = "cryptsetup")]
    cryptsetup: PathBuf,
    /// Attempts in all; connection errors, timeouts, 5xx and 429 are retried, refusals never.
    #[arg(long, value_name = "N", default_value_t = 8)]
    attempts: u32,
    /// First backoff delay in milliseconds (doubled per retry, with jitter, up to 30 s).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    backoff_ms: u64,
    /// Time limit of one attempt, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout_secs: u64,
    /// Do not send the provider's certificates (SNP VCEK…): the service holds the platform's chain.
    #[arg(long)]
    omit_certs: bool,
}

impl TeeArgs {
    fn provider(&self) -> Result<Box<dyn Provider>, AgentError> {
        provider::select(&ProviderOptions {
            tee: self.tee,
            sim_socket: self.sim_socket.clone(),
            tsm_root: Some(self.tsm_root.clone()),
        })
        .map_err(|e| AgentError::Evidence {
            provider: format!("--tee {:?}", self.tee).to_lowercase(),
            message: e.to_string(),
        })
    }
}

impl UnlockArgs {
    fn unlocker(&self) -> Result<Unlocker, AgentError> {
        if let Some(device) = &self.luks {
            let name = match (&self.name, self.luks_check) {
                (Some(n), _) => n.clone(),
                (None, true) => String::new(),
                (None, false) => {
                    return Err(AgentError::Usage(
                        "--luks needs --name NAME (or --luks-check)".into(),
                    ));
                }
            };
            return Ok(Unlocker::Luks {
                device: device.clone(),
                name,
                check: self.luks_check,
                cryptsetup: self.cryptsetup.clone(),
            });
        }
        Ok(match (&self.sealed, &self.out, &self.secret_out) {
            (Some(input), Some(output), _) => Unlocker::Sealed {
                input: input.clone(),
                output: output.clone(),
            },
            (_, _, Some(p)) => Unlocker::SecretFile(p.clone()),
            _ => Unlocker::Nothing,
        })
    }

    fn server(&self) -> ServerOptions {
        let mut o = ServerOptions::new(&self.server, &self.ca, &self.resource);
        o.attempts = self.attempts.max(1);
        o.backoff = Duration::from_millis(self.backoff_ms);
        o.timeout = Duration::from_secs(self.timeout_secs.max(1));
        o.send_certs = !self.omit_certs;
        o
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AgentError::Io {
            what: "start the async runtime".into(),
            source,
        })
}

fn do_unlock(args: &UnlockArgs) -> Result<(), AgentError> {
    let unlocker = args.unlocker()?;
    unlocker.preflight()?;
    let provider = args.tee.provider()?;
    eprintln!(
        "cvm-agent: evidence from {}; attesting to {} for {:?}",
        provider.describe(),
        args.server,
        args.resource
    );
    let secret = runtime()?.block_on(unlock::fetch(&args.server(), provider.as_ref()))?;
    let done = unlocker.apply(&args.resource, &secret)?;
    eprintln!("cvm-agent: {done}");
    Ok(())
}

fn do_run(args: &UnlockArgs, command: &[String]) -> Result<(), AgentError> {
    use std::os::unix::process::CommandExt;
    do_unlock(args)?;
    let (prog, rest) = command
        .split_first()
        .ok_or_else(|| AgentError::Usage("run needs a command after --".into()))?;
    eprintln!("cvm-agent: running {prog}");
    let source = std::process::Command::new(prog).args(rest).exec();
    Err(AgentError::Io {
        what: format!("run {prog}"),
        source,
    })
}

fn do_evidence(
    tee: &TeeArgs,
    report_data: &str,
    out: &PathBuf,
    certs_out: Option<&PathBuf>,
) -> Result<(), AgentError> {
    let raw = hex::decode(report_data.trim())
        .map_err(|e| AgentError::Usage(format!("--report-data is not hex: {e}")))?;
    if raw.len() > 64 {
        return Err(AgentError::Usage(format!(
            "--report-data is {} bytes; at most 64",
            raw.len()
        )));
    }
    let mut rd = [0u8; 64];
    rd[..raw.len()].copy_from_slice(&raw);
    let provider = tee.provider()?;
    let ev = provider.evidence(&rd).map_err(|e| AgentError::Evidence {
        provider: provider.describe(),
        message: e.to_string(),
    })?;
    std::fs::write(out, &ev.evidence).map_err(|source| AgentError::Io {
        what: format!("write {}", out.display()),
        source,
    })?;
    if let (Some(p), Some(cert)) = (certs_out, ev.certs.first()) {
        std::fs::write(p, cert).map_err(|source| AgentError::Io {
            what: format!("write {}", p.display()),
            source,
        })?;
    }
    eprintln!(
        "cvm-agent: {:?} evidence ({} bytes, {} certificate(s)) from {} written to {}",
        ev.tee,
        ev.evidence.len(),
        ev.certs.len(),
        provider.describe(),
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Unlock(a) => do_unlock(a),
        Command::Run { unlock, command } => do_run(unlock, command),
        Command::Evidence {
            tee,
            report_data,
            out,
            certs_out,
        } => do_evidence(tee, report_data, out, certs_out.as_ref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvm-agent: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
