//! configfs-tsm (`/sys/kernel/config/tsm/report`): the kernel's one interface to SNP reports and TDX quotes.
//!
//! One report: create an entry directory, write `privlevel` (SNP) and `inblob` (the 64 bytes of
//! REPORT_DATA), read `generation`, `outblob` (the report or quote) and `auxblob` (SNP: the certificate
//! table), check `generation` did not change meanwhile (another writer would have raced us), remove the entry.
//! The filesystem is behind [`TsmFs`] so that tests can run the same code against a fake tree.

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

/// The SNP certificate table GUID of the VCEK (63da758d-e664-4564-adc5-f4b93be8accd).
const VCEK_GUID: [u8; 16] = [
    0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];

/// The same GUID in the mixed-endian layout of an EFI GUID structure.
fn guid_le(g: &[u8; 16]) -> [u8; 16] {
    let mut o = *g;
    o[0..4].reverse();
    o[4..6].reverse();
    o[6..8].reverse();
    o
}

/// The ASK's GUID (4ab7b379-bbac-4fe4-a02f-05aef327c782).
const ASK_GUID: [u8; 16] = [
    0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4, 0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82,
];
/// The ARK's GUID (c0b406a4-a803-4952-9743-3fb6014cd0ae).
const ARK_GUID: [u8; 16] = [
    0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae,
];

/// The entry for `guid` in an SNP extended-report certificate table (entries of GUID, offset u32, length
/// u32, ended by an all-zero entry; offsets from the table start). Either GUID byte layout is accepted.
fn cert_in_table(table: &[u8], guid_be: &[u8; 16]) -> Option<Vec<u8>> {
    let le = guid_le(guid_be);
    let mut at = 0usize;
    while at + 24 <= table.len() {
        let entry = &table[at..at + 24];
        if entry.iter().all(|b| *b == 0) {
            return None;
        }
        let guid = &entry[..16];
        let off = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        if guid == guid_be || guid == le {
            return table.get(off..off.checked_add(len)?).map(<[u8]>::to_vec);
        }
        at += 24;
    }
    None
}

/// Finds the VCEK in an SNP extended-report certificate table. `None` when the table has no VCEK.
pub fn vcek_from_cert_table(table: &[u8]) -> Option<Vec<u8>> {
    cert_in_table(table, &VCEK_GUID)
}

/// The certificates to send with an SNP report: the VCEK first, then the ASK and the ARK when the table has
/// them; nothing when it has no VCEK (the service then uses the chain it holds).
pub fn certs_from_cert_table(table: &[u8]) -> Vec<Vec<u8>> {
    let Some(vcek) = vcek_from_cert_table(table) else {
        return Vec::new();
    };
    let mut out = vec![vcek];
    out.extend(cert_in_table(table, &ASK_GUID));
    out.extend(cert_in_table(table, &ARK_GUID));
    out
}

/// Encodes a certificate table with one VCEK entry (the layout [`vcek_from_cert_table`] reads).
pub fn cert_table_with_vcek(vcek: &[u8]) -> Vec<u8> {
    let header = 48u32;
    let mut t = Vec::with_capacity(48 + vcek.len());
    t.extend_from_slice(&VCEK_GUID);
    t.extend_from_slice(&header.to_le_bytes());
    t.extend_from_slice(&u32::try_from(vcek.len()).unwrap_or(0).to_le_bytes());
    t.extend_from_slice(&[0u8; 24]);
    t.extend_from_slice(vcek);
    t
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
            // auxblob is absent or empty when the host supplies no certificates; the service may hold them.
            let aux = self.fs.read(&e.path.join("auxblob")).unwrap_or_default();
            certs_from_cert_table(&aux)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cert_table_round_trip_both_guid_layouts() {
        let t = cert_table_with_vcek(b"vcek-der");
        assert_eq!(vcek_from_cert_table(&t).unwrap(), b"vcek-der");
        let mut le = t.clone();
        le[..16].copy_from_slice(&guid_le(&VCEK_GUID));
        assert_eq!(vcek_from_cert_table(&le).unwrap(), b"vcek-der");
        assert!(vcek_from_cert_table(&[0u8; 24]).is_none());
        assert!(vcek_from_cert_table(&[]).is_none());
        let mut bad = t;
        bad[16] = 0xff;
        assert!(vcek_from_cert_table(&bad).is_none());
        // VCEK, ASK and ARK: the VCEK goes first whatever the table order.
        let mut t = Vec::new();
        for (i, g) in [ARK_GUID, VCEK_GUID, ASK_GUID].iter().enumerate() {
            t.extend_from_slice(g);
            t.extend_from_slice(&(96 + 4 * i as u32).to_le_bytes());
            t.extend_from_slice(&4u32.to_le_bytes());
        }
        t.extend_from_slice(&[0u8; 24]);
        t.extend_from_slice(b"ark.vcekask.");
        assert_eq!(
            certs_from_cert_table(&t),
            vec![b"vcek".to_vec(), b"ask.".to_vec(), b"ark.".to_vec()]
        );
        assert!(certs_from_cert_table(&[0u8; 24]).is_empty());
    }
}
