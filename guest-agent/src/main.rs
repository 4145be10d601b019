//! The `cvm-agent` binary: `unlock`, `run -- CMD…` and `evidence`.

use clap::{Args, Parser, Subcommand};
use cvm_agent::config::AgentConfig;
use cvm_agent::configfs::Configfs;
use cvm_agent::provider::{self, Provider, ProviderOptions, TeeChoice};
use cvm_agent::sevguest::MAX_VMPL;
use cvm_agent::unlock::{self, AgentError, Protocol, ServerOptions, Unlocker};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
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
    /// Unlock like `unlock`, then replace this process with the workload: `run [OPTIONS] -- CMD ARGS…` (or
    /// `command = [...]` in --config).
    Run {
        #[command(flatten)]
        unlock: UnlockArgs,
        /// The workload command and its arguments (default: `command` in --config).
        #[arg(last = true, value_name = "CMD")]
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
    /// Evidence provider. auto probes, in order: SNP (configfs-tsm, else /dev/sev-guest), TDX (configfs-tsm,
    /// else /dev/tdx_guest or /dev/tdx-guest where the kernel offers quotes there), then sim (--sim-socket,
    /// else the launcher's virtio-serial port cvm-psp); snp and tdx use the same fallbacks; sim-tdx asks the
    /// simulated PSP for a TDX-format quote instead of an SNP report. Running as root, the agent mounts
    /// configfs at /sys/kernel/config when it is not.
    #[arg(long, value_name = "auto|snp|tdx|sim|sim-tdx", default_value = "auto")]
    tee: TeeChoice,
    /// The SNP VMPL to request the report at (configfs-tsm privlevel, /dev/sev-guest) [default: the
    /// guest's own: configfs-tsm's privlevel_floor, or the VMPL of the sev-guest driver's key].
    #[arg(long, value_name = "0-3", value_parser = vmpl_range())]
    vmpl: Option<u8>,
    /// The launcher's simulated PSP (for --tee sim): a Unix socket or a character device; default: the
    /// virtio-serial port named cvm-psp (/dev/virtio-ports/cvm-psp, or found in /sys/class/virtio-ports).
    #[arg(long, value_name = "PATH")]
    sim_socket: Option<PathBuf>,
    /// The configfs-tsm report directory.
    #[arg(long, value_name = "DIR", default_value = provider::DEFAULT_TSM_ROOT)]
    tsm_root: PathBuf,
}

#[derive(Args, Clone)]
struct UnlockArgs {
    /// A TOML file with any of these options (keys are the long names with `_`); the command line wins.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The attestation service, https://HOST:PORT (required, here or in --config).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The service's CA certificate (PEM); the only certificate trusted (required).
    #[arg(long, value_name = "CA.pem")]
    ca: Option<PathBuf>,
    /// The secret's name on the service (required).
    #[arg(long, value_name = "NAME")]
    resource: Option<String>,
    /// Evidence provider [default: auto]. auto probes, in order: SNP (configfs-tsm, else /dev/sev-guest),
    /// TDX (configfs-tsm, else /dev/tdx_guest or /dev/tdx-guest where the kernel offers quotes there), then
    /// sim; snp and tdx use the same fallbacks; sim-tdx asks the simulated PSP for a TDX-format quote
    /// instead of an SNP report. Running as root, the agent mounts configfs at /sys/kernel/config when it
    /// is not.
    #[arg(long, value_name = "auto|snp|tdx|sim|sim-tdx")]
    tee: Option<TeeChoice>,
    /// The SNP VMPL to request the report at (configfs-tsm privlevel, /dev/sev-guest) [default: the
    /// guest's own: configfs-tsm's privlevel_floor, or the VMPL of the sev-guest driver's key].
    #[arg(long, value_name = "0-3", value_parser = vmpl_range())]
    vmpl: Option<u8>,
    /// The launcher's simulated PSP (for --tee sim): a Unix socket or a character device; default: the
    /// virtio-serial port named cvm-psp (/dev/virtio-ports/cvm-psp, or found in /sys/class/virtio-ports).
    #[arg(long, value_name = "PATH")]
    sim_socket: Option<PathBuf>,
    /// The configfs-tsm report directory [default: /sys/kernel/config/tsm/report].
    #[arg(long, value_name = "DIR")]
    tsm_root: Option<PathBuf>,
    /// A sealed file to unlock with the released key (needs --out).
    #[arg(long, value_name = "IN", conflicts_with = "secret_out")]
    sealed: Option<PathBuf>,
    /// Where the unsealed plaintext goes (mode 0600, only on success; an existing file only with --force);
    /// `-` for stdout (streamed: a refused chunk stops the output and the exit code is non-zero, but what
    /// came before was already written).
    #[arg(long, value_name = "OUT")]
    out: Option<String>,
    /// Write the released secret itself to this file (mode 0600, atomically; an existing file only with
    /// --force).
    #[arg(long, value_name = "FILE")]
    secret_out: Option<PathBuf>,
    /// Replace an existing --out or --secret-out file.
    #[arg(long)]
    force: bool,
    /// A LUKS2 device to open with the released key (key on cryptsetup's stdin; needs --name or --luks-check).
    #[arg(long, value_name = "DEVICE", conflicts_with_all = ["sealed", "secret_out"])]
    luks: Option<PathBuf>,
    /// The device-mapper name for --luks.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// With --luks: only check that the key opens the device (cryptsetup --test-passphrase).
    #[arg(long)]
    luks_check: bool,
    /// With --luks --name: mount /dev/mapper/NAME on this directory (created if missing) with `mount`.
    #[arg(
        long,
        value_name = "DIR",
        requires = "luks",
        conflicts_with = "luks_check"
    )]
    mount: Option<PathBuf>,
    /// The cryptsetup program [default: cryptsetup].
    #[arg(long, value_name = "PATH")]
    cryptsetup: Option<PathBuf>,
    /// Attempts in all [default: 8]; connection errors, timeouts, 5xx and 429 are retried, refusals never.
    #[arg(long, value_name = "N")]
    attempts: Option<u32>,
    /// First backoff delay in milliseconds [default: 500] (doubled per retry, with jitter, up to 30 s).
    #[arg(long, value_name = "MS")]
    backoff_ms: Option<u64>,
    /// Time limit of each network exchange of an attempt (connect and challenge; attest), in seconds
    /// [default: 30].
    #[arg(long, value_name = "SECS")]
    timeout_secs: Option<u64>,
    /// Time limit of collecting evidence from the TEE, in seconds [default: 120] (a TDX quote may take the
    /// kernel 30 s, an SNP report up to 60 s while the host throttles).
    #[arg(long, value_name = "SECS")]
    evidence_timeout_secs: Option<u64>,
    /// Do not send the provider's certificates (SNP VCEK…): the service holds the platform's chain.
    #[arg(long)]
    omit_certs: bool,
    /// The attestation protocol [default: cvm]: cvm (cvm-attest's /v1) or kbs (the KBS protocol of
    /// Confidential Containers: cvm-attest serve with [kbs] enabled = true, or Trustee's KBS); with kbs,
    /// --resource is the resource path <repository>/<type>/<tag>.
    #[arg(long, value_name = "cvm|kbs")]
    protocol: Option<Protocol>,
}

/// `--vmpl`: an SNP guest has VMPLs 0 to 3.
fn vmpl_range() -> clap::builder::RangedI64ValueParser<u8> {
    clap::value_parser!(u8).range(0..=i64::from(MAX_VMPL))
}

fn select(opts: &ProviderOptions) -> Result<Box<dyn Provider>, AgentError> {
    provider::select(opts).map_err(|e| AgentError::Evidence {
        provider: format!("--tee {:?}", opts.tee).to_lowercase(),
        message: e.to_string(),
    })
}

/// The unlock options after merging --config.
struct Resolved {
    server: ServerOptions,
    provider: ProviderOptions,
    unlocker: Unlocker,
    /// `command` from --config (`run` uses it when no command follows `--`).
    command: Vec<String>,
}

impl UnlockArgs {
    /// Fills what the command line left unset from --config, then checks the combination.
    fn resolve(&self) -> Result<Resolved, AgentError> {
        let c = match &self.config {
            Some(p) => AgentConfig::load(p).map_err(|e| AgentError::Usage(e.to_string()))?,
            None => AgentConfig::default(),
        };
        let missing = |what: &str| {
            AgentError::Usage(format!(
                "--{what} is required (on the command line or in --config)"
            ))
        };
        let server = self
            .server
            .clone()
            .or(c.server)
            .ok_or_else(|| missing("server"))?;
        let ca = self.ca.clone().or(c.ca).ok_or_else(|| missing("ca"))?;
        let resource = self
            .resource
            .clone()
            .or(c.resource)
            .ok_or_else(|| missing("resource"))?;
        let tee = match (self.tee, c.tee) {
            (Some(t), _) => t,
            (None, Some(t)) => t.parse().map_err(AgentError::Usage)?,
            (None, None) => TeeChoice::Auto,
        };
        let mut o = ServerOptions::new(&server, &ca, &resource);
        o.attempts = self.attempts.or(c.attempts).unwrap_or(o.attempts).max(1);
        if let Some(ms) = self.backoff_ms.or(c.backoff_ms) {
            o.backoff = Duration::from_millis(ms);
        }
        if let Some(s) = self.timeout_secs.or(c.timeout_secs) {
            o.timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = self.evidence_timeout_secs.or(c.evidence_timeout_secs) {
            o.evidence_timeout = Duration::from_secs(s.max(1));
        }
        o.protocol = match (self.protocol, &c.protocol) {
            (Some(p), _) => p,
            (None, Some(p)) => p.parse().map_err(AgentError::Usage)?,
            (None, None) => Protocol::Cvm,
        };
        if o.protocol == Protocol::Kbs && !cvm_agent::kbs::valid_resource(&o.resource) {
            return Err(AgentError::Usage(format!(
                "--protocol kbs needs --resource <repository>/<type>/<tag> (three components of A-Z a-z 0-9 \
                 . _ -), not {:?}",
                o.resource
            )));
        }
        let force = self.force || c.force.unwrap_or(false);
        o.send_certs = !(self.omit_certs || c.omit_certs.unwrap_or(false));
        let sealed = self.sealed.clone().or(c.sealed);
        let out = self.out.clone().or(c.out);
        let secret_out = self.secret_out.clone().or(c.secret_out);
        let luks = self.luks.clone().or(c.luks);
        let name = self.name.clone().or(c.name);
        let luks_check = self.luks_check || c.luks_check.unwrap_or(false);
        let chosen = [sealed.is_some(), secret_out.is_some(), luks.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if chosen > 1 {
            return Err(AgentError::Usage(
                "choose one of --sealed/--out, --secret-out and --luks".into(),
            ));
        }
        let unlocker = match (sealed, out, secret_out, luks) {
            (Some(input), Some(output), _, _) => Unlocker::Sealed {
                input,
                output,
                force,
            },
            (Some(_), None, _, _) => {
                return Err(AgentError::Usage(
                    "--sealed needs --out OUT (or `-`)".into(),
                ));
            }
            (None, Some(_), _, _) => {
                return Err(AgentError::Usage("--out needs --sealed IN".into()));
            }
            (None, None, Some(path), _) => Unlocker::SecretFile { path, force },
            (None, None, None, Some(device)) => {
                let name = match (name, luks_check) {
                    (Some(n), _) => n,
                    (None, true) => String::new(),
                    (None, false) => {
                        return Err(AgentError::Usage(
                            "--luks needs --name NAME (or --luks-check)".into(),
                        ));
                    }
                };
                let mount = self.mount.clone().or(c.mount);
                if mount.is_some() && luks_check {
                    return Err(AgentError::Usage(
                        "mount and --luks-check exclude each other (a check maps nothing)".into(),
                    ));
                }
                Unlocker::Luks {
                    device,
                    name,
                    check: luks_check,
                    mount,
                    cryptsetup: self
                        .cryptsetup
                        .clone()
                        .or(c.cryptsetup)
                        .unwrap_or_else(|| PathBuf::from("cryptsetup")),
                }
            }
            (None, None, None, None) => {
                if name.is_some() || luks_check || c.mount.is_some() {
                    return Err(AgentError::Usage(
                        "--name, --luks-check and mount go with --luks".into(),
                    ));
                }
                Unlocker::Nothing
            }
        };
        if force
            && !matches!(
                unlocker,
                Unlocker::Sealed { .. } | Unlocker::SecretFile { .. }
            )
        {
            return Err(AgentError::Usage(
                "--force goes with --sealed/--out or --secret-out".into(),
            ));
        }
        let vmpl = match self.vmpl.or(c.vmpl) {
            Some(v) if u32::from(v) > MAX_VMPL => {
                return Err(AgentError::Usage(format!(
                    "vmpl = {v} in --config: an SNP guest has VMPLs 0 to {MAX_VMPL}"
                )));
            }
            v => v,
        };
        let provider = ProviderOptions {
            tee,
            sim_socket: self.sim_socket.clone().or(c.sim_socket),
            tsm_root: self.tsm_root.clone().or(c.tsm_root),
            tdx_guest: None,
            vmpl,
            configfs: Configfs::default(),
            tsm_fs: None,
            omit_certs: !o.send_certs,
        };
        Ok(Resolved {
            server: o,
            provider,
            unlocker,
            command: c.command.unwrap_or_default(),
        })
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
    unlock_resolved(&args.resolve()?)
}

fn unlock_resolved(r: &Resolved) -> Result<(), AgentError> {
    r.unlocker.preflight()?;
    let provider: Arc<dyn Provider> = Arc::from(select(&r.provider)?);
    eprintln!(
        "cvm-agent: evidence from {}; attesting to {} for {:?}",
        provider.describe(),
        r.server.server,
        r.server.resource
    );
    let secret = runtime()?.block_on(unlock::fetch(&r.server, provider))?;
    eprintln!(
        "cvm-agent: attested; secret {:?} released ({} bytes)",
        r.server.resource,
        secret.len()
    );
    let done = r.unlocker.apply(&r.server.resource, &secret)?;
    eprintln!("cvm-agent: {done}");
    Ok(())
}

fn do_run(args: &UnlockArgs, command: &[String]) -> Result<(), AgentError> {
    use std::os::unix::process::CommandExt;
    let r = args.resolve()?;
    let command = if command.is_empty() {
        &r.command
    } else {
        command
    };
    let (prog, rest) = command.split_first().ok_or_else(|| {
        AgentError::Usage("run needs a command after -- (or command = [...] in --config)".into())
    })?;
    unlock_resolved(&r)?;
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
    let provider = select(&ProviderOptions {
        tee: tee.tee,
        sim_socket: tee.sim_socket.clone(),
        tsm_root: Some(tee.tsm_root.clone()),
        tdx_guest: None,
        vmpl: tee.vmpl,
        configfs: Configfs::default(),
        tsm_fs: None,
        // The certificates are needed only when asked for.
        omit_certs: certs_out.is_none(),
    })?;
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
