//! configfs-tsm (`/sys/kernel/config/tsm/report`): the kernel's one interface to SNP reports and TDX quotes.
//!
//! One report (`Documentation/ABI/testing/configfs-tsm-report`; the kernel side is
//! `drivers/virt/coco/guest/report.c`, formerly `drivers/virt/coco/tsm.c`): create an entry directory, read
//! `generation`, write `privlevel` (SNP; the level asked for, else the entry's `privlevel_floor`, the lowest
//! the kernel accepts) and `inblob` (the 64 bytes of REPORT_DATA), read `outblob` (the report or quote) and
//! `auxblob` (SNP: the certificate table), then check that `generation` went up by exactly the number of our
//! writes (another writer would have changed what was reported), remove the entry. The kernel counts every
//! accepted attribute write in `generation` and regenerates the report on the next read after one.
//!
//! TDX quotes that the kernel could not get yet (`EBUSY`, `EAGAIN`, `EINTR`, `ETIMEDOUT` from `outblob`) are
//! read again with [`crate::retry`]'s backoff; no write is repeated, so the generation count still holds.
//! The filesystem is behind [`TsmFs`] so that tests can run the same code against a fake tree.

use crate::certtable;
use crate::provider::{Provider, ProviderError};
use crate::retry::{self, Backoff};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which kernel driver serves the reports (the entry's `provider` file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsmProvider {
    /// `sev_guest`: SEV-SNP attestation reports.
    SevGuest,
    /// `tdx_guest`: TDX quotes.
    TdxGuest,
}

impl TsmProvider {
    /// The name in the `provider` file.
    pub fn name(self) -> &'static str {
        match self {
            TsmProvider::SevGuest => "sev_guest",
            TsmProvider::TdxGuest => "tdx_guest",
        }
    }

    /// `snp` or `tdx`.
    pub fn tee_name(self) -> &'static str {
        match self {
            TsmProvider::SevGuest => "snp",
            TsmProvider::TdxGuest => "tdx",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "sev_guest" => Some(TsmProvider::SevGuest),
            "tdx_guest" => Some(TsmProvider::TdxGuest),
            _ => None,
        }
    }
}

/// The filesystem operations the provider needs (configfs in production, a fake tree in tests).
pub trait TsmFs: Send + Sync {
    /// Creates an entry directory.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Writes an attribute.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Reads an attribute.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Removes an entry directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
}

/// configfs through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl TsmFs for RealFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}

/// The configfs-tsm provider.
#[derive(Clone)]
pub struct Tsm {
    root: PathBuf,
    fs: Arc<dyn TsmFs>,
    provider: Option<TsmProvider>,
    privlevel: Option<u8>,
    certs_required: bool,
    backoff: Backoff,
}

impl std::fmt::Debug for Tsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsm")
            .field("root", &self.root)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// Removes the entry directory when dropped.
struct Entry<'a> {
    fs: &'a dyn TsmFs,
    path: PathBuf,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let _ = self.fs.remove_dir(&self.path);
    }
}

impl Tsm {
    /// The provider at `root` on the real filesystem.
    pub fn new(root: &Path) -> Self {
        Self::with_fs(root, Arc::new(RealFs))
    }

    /// The provider at `root` on `fs`.
    pub fn with_fs(root: &Path, fs: Arc<dyn TsmFs>) -> Self {
        Tsm {
            root: root.to_owned(),
            fs,
            provider: None,
            privlevel: None,
            certs_required: true,
            backoff: Backoff::TDX_QUOTE,
        }
    }

    /// Fixes the kernel provider (skips probing on each report).
    pub fn with_provider(mut self, p: TsmProvider) -> Self {
        self.provider = Some(p);
        self
    }

    /// The SNP VMPL to request (`privlevel`); without it the entry's `privlevel_floor` is requested.
    pub fn with_privlevel(mut self, level: u8) -> Self {
        self.privlevel = Some(level);
        self
    }

    /// How transient TDX `outblob` errors are retried (default [`Backoff::TDX_QUOTE`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether an SNP report without a VCEK or VLEK in `auxblob` is an error (the default) or goes out
    /// without certificates (`--omit-certs`: the service holds them).
    pub fn with_certs_required(mut self, required: bool) -> Self {
        self.certs_required = required;
        self
    }

    fn err(&self, what: String) -> impl FnOnce(io::Error) -> ProviderError {
        let provider = format!("configfs-tsm at {}", self.root.display());
        move |source| ProviderError::Io {
            provider,
            what,
            source,
        }
    }

    fn entry(&self) -> Result<Entry<'_>, ProviderError> {
        let name = format!(
            "cvm-agent-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let path = self.root.join(name);
        self.fs.create_dir(&path).map_err(self.err(format!(
            "create {} (is configfs mounted and CONFIG_TSM_REPORTS enabled? are we root?)",
            path.display()
        )))?;
        Ok(Entry {
            fs: self.fs.as_ref(),
            path,
        })
    }

    fn read_provider(&self, entry: &Path) -> Result<TsmProvider, ProviderError> {
        let raw = self
            .fs
            .read(&entry.join("provider"))
            .map_err(self.err("read provider".into()))?;
        let s = String::from_utf8_lossy(&raw);
        TsmProvider::parse(&s).ok_or_else(|| ProviderError::Bad {
            provider: format!("configfs-tsm at {}", self.root.display()),
            message: format!("unknown provider {:?}", s.trim()),
        })
    }

    /// Which kernel provider serves reports (creates and removes one entry).
    pub fn probe(&self) -> Result<TsmProvider, ProviderError> {
        let e = self.entry()?;
        self.read_provider(&e.path)
    }

    /// A decimal attribute (`generation`, `privlevel_floor`); `None` when the entry has no such file.
    fn number(&self, entry: &Path, name: &str) -> Result<Option<u64>, ProviderError> {
        let raw = match self.fs.read(&entry.join(name)) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("read {name}"))(e)),
        };
        String::from_utf8_lossy(&raw)
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ProviderError::Bad {
                provider: format!("configfs-tsm at {}", self.root.display()),
                message: format!("{name} is not a number"),
            })
    }

    fn generation(&self, entry: &Path) -> Result<u64, ProviderError> {
        self.number(entry, "generation")?
            .ok_or_else(|| ProviderError::Bad {
                provider: format!("configfs-tsm at {}", self.root.display()),
                message: "the entry has no generation attribute".into(),
            })
    }

    fn bad(&self, message: String) -> ProviderError {
        ProviderError::Bad {
            provider: self.describe(),
            message,
        }
    }

    /// Writes `privlevel`: the level asked for (refused here, naming the floor, when below it), else the
    /// entry's `privlevel_floor` (`tsm_report_privlevel_store` refuses values below it with `EINVAL`).
    fn write_privlevel(&self, entry: &Path) -> Result<(), ProviderError> {
        let floor = self.number(entry, "privlevel_floor")?;
        let level = match (self.privlevel, floor) {
            (Some(level), Some(floor)) if u64::from(level) < floor => {
                return Err(self.bad(format!(
                    "VMPL {level} is below this guest's privlevel_floor {floor} (the lowest VMPL the kernel \
                     asks the firmware for): pass --vmpl {floor} or higher, or leave --vmpl out"
                )));
            }
            (Some(level), _) => u64::from(level),
            (None, floor) => floor.unwrap_or(0),
        };
        self.fs
            .write(&entry.join("privlevel"), level.to_string().as_bytes())
            .map_err(|e| {
                let floor = floor.map_or("unknown".to_string(), |f| f.to_string());
                self.bad(format!(
                    "write privlevel {level}: {e} (privlevel_floor {floor}; privlevel goes up to 3)"
                ))
            })
    }

    /// `auxblob`: absent or empty means the host supplied no certificates; any other read error is one.
    fn read_auxblob(&self, entry: &Path) -> Result<Vec<u8>, ProviderError> {
        match self.fs.read(&entry.join("auxblob")) {
            Ok(aux) => Ok(aux),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self
                .err("read auxblob (the host's certificate table)".into())(
                e
            )),
        }
    }
}

impl Provider for Tsm {
    fn tee(&self) -> Option<TeeKind> {
        self.provider.map(|p| match p {
            TsmProvider::SevGuest => TeeKind::Snp,
            TsmProvider::TdxGuest => TeeKind::Tdx,
        })
    }

    fn describe(&self) -> String {
        match self.provider {
            Some(p) => format!(
                "{} via configfs-tsm ({}) at {}",
                p.tee_name(),
                p.name(),
                self.root.display()
            ),
            None => format!("configfs-tsm at {}", self.root.display()),
        }
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        // A racing writer is transient: try a fresh entry a few times.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.evidence_entry(report_data) {
                Err(ProviderError::Raced { .. }) if tries < RACE_ATTEMPTS => continue,
                other => return other,
            }
        }
    }
}

/// How many fresh entries are tried when another writer changes `generation` meanwhile.
pub const RACE_ATTEMPTS: usize = 3;

impl Tsm {
    fn evidence_entry(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let e = self.entry()?;
        let provider = match self.provider {
            Some(p) => p,
            None => self.read_provider(&e.path)?,
        };
        // The ABI document: read generation before writing, count the writes, compare after outblob.
        let before = self.generation(&e.path)?;
        let mut writes = 0;
        if provider == TsmProvider::SevGuest {
            self.write_privlevel(&e.path)?;
            writes += 1;
        }
        self.fs
            .write(&e.path.join("inblob"), report_data)
            .map_err(self.err("write inblob".into()))?;
        writes += 1;
        let outblob = e.path.join("outblob");
        let read = || self.fs.read(&outblob);
        let out = match provider {
            TsmProvider::TdxGuest => retry::retry(&self.backoff, retry::is_transient, read),
            TsmProvider::SevGuest => read(),
        }
        .map_err(self.err("read outblob".into()))?;
        let aux = match provider {
            TsmProvider::SevGuest => Some(self.read_auxblob(&e.path)?),
            TsmProvider::TdxGuest => None,
        };
        let after = self.generation(&e.path)?;
        let expected = before.saturating_add(writes);
        if after != expected {
            return Err(ProviderError::Raced {
                provider: self.describe(),
                before,
                expected,
                after,
            });
        }
        if out.is_empty() {
            return Err(self.bad("empty outblob".into()));
        }
        let certs = match aux {
            Some(aux) => {
                let table =
                    certtable::parse(&aux).map_err(|e| self.bad(format!("auxblob: {e}")))?;
                certtable::evidence_certs(
                    &table,
                    &certtable::report_signer(&out),
                    self.certs_required,
                )
                .map_err(|e| self.bad(e.to_string()))?
            }
            None => Vec::new(),
        };
        Ok(Evidence {
            tee: match provider {
                TsmProvider::SevGuest => TeeKind::Snp,
                TsmProvider::TdxGuest => TeeKind::Tdx,
            },
            evidence: out,
            certs,
        })
    }
}
