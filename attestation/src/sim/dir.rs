//! The sim directory: where `cvm-attest sim init` puts public certificates and collateral, and private keys.
//!
//! ```text
//! DIR/snp/ark.pem  ask.pem  cert_chain.pem (ASK then ARK)  vcek.der
//! DIR/tdx/root.pem  pck_chain.pem  collateral/{tcbinfo-<fmspc>.json, qe-identity.json, tcb-signing-chain.pem,
//!                                              root-ca-crl.der, pck-platform-crl.der, pck-crl-issuer-chain.pem}
//! DIR/private/ (0700)  seed  ark.key.der  ask.key.der  vcek.key.p8  intel-*.key.p8  (0600)
//! ```
//!
//! Loading never panics on bad files: every problem is a [`SimError`].

use super::error::SimError;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Most bytes read from one sim directory file (they are all small).
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// Paths inside a sim directory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_owned(),
        }
    }
    /// `DIR/snp`.
    pub fn snp(&self) -> PathBuf {
        self.root.join("snp")
    }
    /// `DIR/tdx`.
    pub fn tdx(&self) -> PathBuf {
        self.root.join("tdx")
    }
    /// `DIR/tdx/collateral`.
    pub fn collateral(&self) -> PathBuf {
        self.tdx().join("collateral")
    }
    /// `DIR/private`.
    pub fn private(&self) -> PathBuf {
        self.root.join("private")
    }
}

/// Read a sim directory file (at most [`MAX_FILE_LEN`] bytes).
pub fn read(path: &Path) -> Result<Vec<u8>, SimError> {
    let meta = fs::metadata(path).map_err(|e| SimError::io(path, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_LEN {
        return Err(SimError::io(
            path,
            format!("{} bytes is too large for a sim directory file", meta.len()),
        ));
    }
    fs::read(path).map_err(|e| SimError::io(path, format!("cannot read: {e}")))
}

/// The single DER certificate in a PEM or DER file.
pub fn read_cert(path: &Path) -> Result<Vec<u8>, SimError> {
    let mut certs =
        crate::pki::certs_from_bytes(&read(path)?).map_err(|e| SimError::io(path, e))?;
    match (certs.pop(), certs.is_empty()) {
        (Some(der), true) => Ok(der),
        _ => Err(SimError::io(path, "expected exactly one certificate")),
    }
}

/// Create a directory (and parents), with mode `mode` on Unix.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), SimError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    builder
        .create(path)
        .map_err(|e| SimError::io(path, format!("cannot create directory: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| SimError::io(path, format!("cannot set permissions: {e}")))?;
    }
    Ok(())
}

/// Write a new file with mode `mode` on Unix (refusing to replace an existing one).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SimError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| SimError::io(path, format!("cannot create: {e}")))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| SimError::io(path, format!("cannot write: {e}")))
}

/// Mode of public files.
pub const PUBLIC_FILE: u32 = 0o644;
/// Mode of private key files.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of public directories.
pub const PUBLIC_DIR: u32 = 0o755;
/// Mode of the private directory.
pub const PRIVATE_DIR: u32 = 0o700;

/// Make sure `dir` is absent or an empty directory, then create it.
pub fn prepare_empty(dir: &Path) -> Result<(), SimError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SimError::NotEmpty(dir.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_dir(dir, PUBLIC_DIR),
        Err(e) => Err(SimError::io(
            dir,
            format!("cannot use as output directory: {e}"),
        )),
    }
}
