//! configfs-tsm (`/sys/kernel/config/tsm/report`): the kernel's one interface to SNP reports and TDX quotes.
//!
//! One report: create an entry directory, write `privlevel` (SNP) and `inblob` (the 64 bytes of
//! REPORT_DATA), read `generation`, `outblob` (the report or quote) and `auxblob` (SNP: the certificate
//! table), check `generation` did not change meanwhile (another writer would have raced us), remove the entry.
//! The filesystem is behind [`TsmFs`] so that tests can run the same code against a fake tree.

use crate::certtable;
use crate::provider::{Provider, ProviderError};
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
    privlevel: u8,
    certs_required: bool,
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
            privlevel: 0,
            certs_required: true,
        }
    }

    /// Fixes the kernel provider (skips probing on each report).
    pub fn with_provider(mut self, p: TsmProvider) -> Self {
        self.provider = Some(p);
        self
    }

    /// The SNP VMPL to request (`privlevel`, default 0).
    pub fn with_privlevel(mut self, level: u8) -> Self {
        self.privlevel = level;
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

    fn generation(&self, entry: &Path) -> Result<u64, ProviderError> {
        let raw = self
            .fs
            .read(&entry.join("generation"))
            .map_err(self.err("read generation".into()))?;
        String::from_utf8_lossy(&raw)
            .trim()
            .parse()
            .map_err(|_| ProviderError::Bad {
                provider: format!("configfs-tsm at {}", self.root.display()),
                message: "generation is not a number".into(),
            })
    }
}

impl Provider for Tsm {
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
        if provider == TsmProvider::SevGuest {
            self.fs
                .write(
                    &e.path.join("privlevel"),
                    self.privlevel.to_string().as_bytes(),
                )
                .map_err(self.err("write privlevel".into()))?;
        }
        self.fs
            .write(&e.path.join("inblob"), report_data)
            .map_err(self.err("write inblob".into()))?;
        let before = self.generation(&e.path)?;
        let out = self
            .fs
            .read(&e.path.join("outblob"))
            .map_err(self.err("read outblob".into()))?;
        let certs = if provider == TsmProvider::SevGuest {
            // auxblob is absent or empty when the host supplies no certificates: an error unless they are
            // optional (the service holds them).
            let aux = self.fs.read(&e.path.join("auxblob")).unwrap_or_default();
            let bad = |message: String| ProviderError::Bad {
                provider: self.describe(),
                message,
            };
            let table = certtable::parse(&aux).map_err(|e| bad(format!("auxblob: {e}")))?;
            certtable::evidence_certs(&table, self.certs_required)
                .map_err(|e| bad(e.to_string()))?
        } else {
            Vec::new()
        };
        let after = self.generation(&e.path)?;
        if before != after {
            return Err(ProviderError::Raced {
                provider: self.describe(),
                before,
                after,
            });
        }
        if out.is_empty() {
            return Err(ProviderError::Bad {
                provider: self.describe(),
                message: "empty outblob".into(),
            });
        }
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
