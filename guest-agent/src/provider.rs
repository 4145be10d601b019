//! Evidence providers: one trait, several TEEs, and the `--tee auto|snp|tdx|sim` selection.

use crate::sevguest::SevGuest;
use crate::simsock::{self, SimSocket};
use crate::tdxguest::{TDX_GUEST_DEVICE, TdxGuest};
use crate::tdxioctl::TdxGuestFile;
use crate::tsm::{Tsm, TsmProvider};
use cvm_attest::client::{Evidence, EvidenceSource};
use cvm_attest::protocol::TeeKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default configfs-tsm report directory.
pub const DEFAULT_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";
/// The SEV-SNP guest device (the `sev` crate's guest API), used when configfs-tsm is missing.
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
    /// Another writer changed the configfs-tsm entry while the report was read.
    #[error(
        "{provider}: generation changed from {before} to {after} while reading: another process wrote the \
         entry; retry"
    )]
    Raced {
        /// Which provider.
        provider: String,
        /// `generation` after our write.
        before: u64,
        /// `generation` after our read.
        after: u64,
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
#[derive(Clone, Debug, Default)]
pub struct ProviderOptions {
    /// The `--tee` choice.
    pub tee: TeeChoice,
    /// The launcher's simulated PSP socket (`--sim-socket`).
    pub sim_socket: Option<PathBuf>,
    /// The configfs-tsm report directory (`--tsm-root`); [`DEFAULT_TSM_ROOT`] when unset.
    pub tsm_root: Option<PathBuf>,
    /// The TDX guest device; [`TDX_GUEST_DEVICE`] when unset.
    pub tdx_guest: Option<PathBuf>,
    /// The SNP VMPL to request (`--vmpl`, 0..=3).
    pub vmpl: u8,
    /// SNP: a report without a VCEK or VLEK from the host is not an error (`--omit-certs`: the service
    /// holds the platform's certificates).
    pub omit_certs: bool,
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
    let tsm = tsm_for(opts, TsmProvider::SevGuest);
    match tsm {
        Ok(p) => Ok(p),
        Err(_) if Path::new(SEV_GUEST_DEVICE).exists() => Ok(Box::new(
            SevGuest::new()
                .with_vmpl(u32::from(opts.vmpl))
                .with_certs_required(!opts.omit_certs),
        )),
        Err(e) => Err(ProviderError::None(format!(
            "{e}; no {SEV_GUEST_DEVICE} either"
        ))),
    }
}

/// TDX: configfs-tsm, else `/dev/tdx_guest` (where the kernel offers quotes there; the first quote tells).
fn tdx(opts: &ProviderOptions) -> Result<Box<dyn Provider>, ProviderError> {
    let device = opts
        .tdx_guest
        .clone()
        .unwrap_or_else(|| PathBuf::from(TDX_GUEST_DEVICE));
    match tsm_for(opts, TsmProvider::TdxGuest) {
        Ok(p) => Ok(p),
        Err(_) if device.exists() => Ok(Box::new(TdxGuest::with_device(Arc::new(
            TdxGuestFile::new(&device),
        )))),
        Err(e) => Err(ProviderError::None(format!(
            "{e}; no {} either",
            device.display()
        ))),
    }
}

fn tsm_for(opts: &ProviderOptions, want: TsmProvider) -> Result<Box<dyn Provider>, ProviderError> {
    let root = tsm_root(opts);
    let tsm = Tsm::new(&root)
        .with_privlevel(opts.vmpl)
        .with_certs_required(!opts.omit_certs);
    match tsm.probe() {
        Ok(found) if found == want => Ok(Box::new(tsm.with_provider(found))),
        Ok(found) => Err(ProviderError::None(format!(
            "{}: configfs-tsm at {} is served by {} (not {})",
            want.tee_name(),
            root.display(),
            found.name(),
            want.name()
        ))),
        Err(e) => Err(ProviderError::None(format!("{}: {e}", want.tee_name()))),
    }
}
