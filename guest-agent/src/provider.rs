//! Evidence providers: one trait, several TEEs, and the `--tee auto|snp|tdx|sim` selection.

use crate::configfs::{Configfs, State};
use crate::sevguest::SevGuest;
use crate::simsock::{self, SimSocket};
use crate::tdxguest::{TDX_GUEST_DEVICES, TdxGuest};
use crate::tdxioctl::TdxGuestFile;
use crate::tsm::{Tsm, TsmFs, TsmProvider};
use cvm_attest::client::{Evidence, EvidenceSource};
use cvm_attest::protocol::TeeKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default configfs-tsm report directory.
pub const DEFAULT_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";
/// The SEV-SNP guest device, used when configfs-tsm is missing.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// A file or socket operation failed.
    #[error("{provider}: {what}: {source}")]
    Io {
        /// Which provider.
        provider: String,
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The provider answered with something unusable.
    #[error("{provider}: {message}")]
    Bad {
        /// Which provider.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// Another writer changed the configfs-tsm entry between our first read of `generation` and the end.
    #[error(
        "{provider}: generation changed from {before} to {after} while reading (our writes make it {expected}): \
         another process wrote the entry; retry"
    )]
    Raced {
        /// `generation` before our writes.
        before: u64,
        /// What our writes alone make it.
        expected: u64,
        /// `generation` after reading the report.
        after: u64,
        /// Which provider.
        provider: String,
    },
    /// No provider fits the request.
    #[error("no evidence provider: {0}")]
    None(String),
}

/// Produces evidence whose REPORT_DATA is given.
pub trait Provider: Send + Sync {
    /// A name a person recognizes, e.g. `configfs-tsm (sev_guest) at /sys/kernel/config/tsm/report`.
    fn describe(&self) -> String;
    /// Evidence for `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError>;
    /// The TEE whose evidence this provider gives, when known before asking (the KBS protocol names it
    /// first).
    fn tee(&self) -> Option<TeeKind> {
        None
    }
}

/// Adapts a [`Provider`] to the protocol client's [`EvidenceSource`].
pub struct Source<'a> {
    /// The provider.
    pub provider: &'a dyn Provider,
    /// Send the provider's certificates along (off when the service holds the platform's chain).
    pub send_certs: bool,
}

impl EvidenceSource for Source<'_> {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String> {
        let mut ev = self
            .provider
            .evidence(report_data)
            .map_err(|e| e.to_string())?;
        if !self.send_certs {
            ev.certs.clear();
        }
        Ok(ev)
    }
}

/// The `--tee` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TeeChoice {
    /// Probe SNP (configfs-tsm, `/dev/sev-guest`), then TDX (configfs-tsm, `/dev/tdx_guest`), then the
    /// simulator.
    #[default]
    Auto,
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// The launcher's simulated PSP socket, SNP-format reports.
    Sim,
    /// The launcher's simulated PSP socket, TDX-format quotes.
    SimTdx,
}

impl std::str::FromStr for TeeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TeeChoice::Auto),
            "snp" => Ok(TeeChoice::Snp),
            "tdx" => Ok(TeeChoice::Tdx),
            "sim" => Ok(TeeChoice::Sim),
            "sim-tdx" => Ok(TeeChoice::SimTdx),
            other => Err(format!(
                "unknown TEE {other:?}: expected auto, snp, tdx, sim or sim-tdx"
            )),
        }
    }
}

/// Where providers are found.
#[derive(Clone, Default)]
pub struct ProviderOptions {
    /// The `--tee` choice.
    pub tee: TeeChoice,
    /// The launcher's simulated PSP socket (`--sim-socket`).
    pub sim_socket: Option<PathBuf>,
    /// The configfs-tsm report directory (`--tsm-root`); [`DEFAULT_TSM_ROOT`] when unset.
    pub tsm_root: Option<PathBuf>,
    /// The TDX guest device; the first of [`TDX_GUEST_DEVICES`] that exists when unset.
    pub tdx_guest: Option<PathBuf>,
    /// The SNP VMPL to request (`--vmpl`, 0..=3); unset: the lowest the guest may ask for
    /// (configfs-tsm's `privlevel_floor`, or the VMPL of the sev-guest driver's key).
    pub vmpl: Option<u8>,
    /// configfs, mounted when needed and possible (see [`crate::configfs`]).
    pub configfs: Configfs,
    /// The filesystem configfs-tsm is read through; the real one when unset (a fake tree in tests).
    pub tsm_fs: Option<Arc<dyn TsmFs>>,
    /// SNP: a report without a VCEK or VLEK from the host is not an error (`--omit-certs`: the service
    /// holds the platform's certificates).
    pub omit_certs: bool,
}

impl std::fmt::Debug for ProviderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderOptions")
            .field("tee", &self.tee)
            .field("sim_socket", &self.sim_socket)
            .field("tsm_root", &self.tsm_root)
            .field("tdx_guest", &self.tdx_guest)
            .field("vmpl", &self.vmpl)
            .field("configfs", &self.configfs)
            .field("omit_certs", &self.omit_certs)
            .finish_non_exhaustive()
    }
}

/// Selects a provider. `auto` probes, in order: SNP (configfs-tsm with the `sev_guest` provider, else
/// `/dev/sev-guest`), TDX (configfs-tsm with `tdx_guest`, else `/dev/tdx_guest`), then the simulated PSP:
/// the socket `--sim-socket` names, else the launcher's virtio-serial port `cvm-psp`. The error says what
/// each probe found.
pub fn select(opts: &ProviderOptions) -> Result<Box<dyn Provider>, ProviderError> {
    let sim_path = || {
        opts.sim_socket
            .clone()
            .or_else(|| simsock::find_port(Path::new(simsock::PORTS_SYSFS), Path::new("/dev")))
    };
    let sim = |format| -> Result<Box<dyn Provider>, ProviderError> {
        match sim_path() {
            Some(p) => Ok(Box::new(SimSocket::new(&p, format))),
            None => Err(ProviderError::None(format!(
                "--tee sim needs --sim-socket PATH (the socket `cvm-launch run --tee sim --sim-socket` serves) \
                 or, in a guest of `cvm-launch run --vmm qemu --tee sim`, the virtio-serial port named {:?} \
                 (none in {})",
                simsock::PORT_NAME,
                simsock::PORTS_SYSFS
            ))),
        }
    };
    match opts.tee {
        TeeChoice::Sim => sim(TeeKind::Snp),
        TeeChoice::SimTdx => sim(TeeKind::Tdx),
        TeeChoice::Snp => snp(opts),
        TeeChoice::Tdx => tdx(opts),
        TeeChoice::Auto => {
            let mut tried = Vec::new();
            match snp(opts) {
                Ok(p) => return Ok(p),
                Err(e) => tried.push(e.to_string()),
            }
            match tdx(opts) {
                Ok(p) => return Ok(p),
                Err(e) => tried.push(e.to_string()),
            }
            if sim_path().is_some() {
                return sim(TeeKind::Snp);
            }
            tried.push(format!(
                "sim: no --sim-socket given and no virtio-serial port named {:?}",
                simsock::PORT_NAME
            ));
            Err(ProviderError::None(format!(
                "auto found no TEE ({}); on a host without a TEE pass --tee sim --sim-socket PATH",
                tried.join("; ")
            )))
        }
    }
}

fn tsm_root(opts: &ProviderOptions) -> PathBuf {
    opts.tsm_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TSM_ROOT))
}

/// SNP: configfs-tsm, else `/dev/sev-guest`.
fn snp(opts: &ProviderOptions) -> Result<Box<dyn Provider>, ProviderError> {
    match tsm_for(opts, TsmProvider::SevGuest) {
        Ok(p) => Ok(p),
        Err(_) if Path::new(SEV_GUEST_DEVICE).exists() => {
            let p = SevGuest::new().with_certs_required(!opts.omit_certs);
            Ok(Box::new(match opts.vmpl {
                Some(v) => p.with_vmpl(u32::from(v)),
                None => p,
            }))
        }
        Err(e) => Err(ProviderError::None(format!(
            "{e}; no {SEV_GUEST_DEVICE} either"
        ))),
    }
}

/// TDX: configfs-tsm, else `/dev/tdx_guest` or `/dev/tdx-guest` (where the kernel offers quotes there; the
/// first quote tells).
fn tdx(opts: &ProviderOptions) -> Result<Box<dyn Provider>, ProviderError> {
    let devices: Vec<PathBuf> = match &opts.tdx_guest {
        Some(d) => vec![d.clone()],
        None => TDX_GUEST_DEVICES.iter().map(PathBuf::from).collect(),
    };
    match tsm_for(opts, TsmProvider::TdxGuest) {
        Ok(p) => Ok(p),
        Err(e) => match devices.iter().find(|d| d.exists()) {
            Some(device) => {
                let why = match &e {
                    ProviderError::None(why) => why.clone(),
                    other => other.to_string(),
                };
                Ok(Box::new(
                    TdxGuest::with_device(Arc::new(TdxGuestFile::new(device)))
                        .with_note(&format!("configfs-tsm was not used: {why}")),
                ))
            }
            None => Err(ProviderError::None(format!(
                "{e}; no {} either",
                devices
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
        },
    }
}

fn tsm_for(opts: &ProviderOptions, want: TsmProvider) -> Result<Box<dyn Provider>, ProviderError> {
    let root = tsm_root(opts);
    let unusable = |why: String| ProviderError::None(format!("{}: {why}", want.tee_name()));
    if root.starts_with(&opts.configfs.mount_point) {
        match opts.configfs.ensure() {
            State::Mounted | State::MountedNow => {}
            State::NotMounted(why) | State::Absent(why) => return Err(unusable(why)),
        }
    }
    let tsm = match &opts.tsm_fs {
        Some(fs) => Tsm::with_fs(&root, fs.clone()),
        None => Tsm::new(&root),
    };
    let mut tsm = tsm.with_certs_required(!opts.omit_certs);
    if let Some(v) = opts.vmpl {
        tsm = tsm.with_privlevel(v);
    }
    match tsm.probe() {
        Ok(found) if found == want => Ok(Box::new(tsm.with_provider(found))),
        Ok(found) => Err(unusable(format!(
            "configfs-tsm at {} is served by {} (not {})",
            root.display(),
            found.name(),
            want.name()
        ))),
        Err(e) => Err(unusable(e.to_string())),
    }
}
