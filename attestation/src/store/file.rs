//! The `file` backend: the state directory. Records are `secrets/<name>.secret` and the manifest is
//! `secrets.manifest`, each replaced atomically and durably ([`super::atomic`]), mode 0600 in directories of
//! mode 0700.

use super::atomic;
use super::backend::{Backend, BackendError};
use crate::protocol::valid_resource_name;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Extension of record files.
const EXT: &str = "secret";
/// What stands for `/` in the record file of a KBS resource path (`default/key/db` is
/// `default+key+db.secret`); no single name contains it.
const SLASH: &str = "+";
/// The manifest's file name in the state directory.
const MANIFEST: &str = "secrets.manifest";

/// Records and manifest in a state directory.
#[derive(Debug)]
pub struct FileBackend {
    secrets: PathBuf,
    manifest: PathBuf,
}

fn error(path: &Path, source: std::io::Error) -> BackendError {
    BackendError {
        location: path.display().to_string(),
        source,
    }
}

/// Read `path` if it exists, refusing files longer than `max_len` (the directory is untrusted: a planted
/// huge file must not be read into memory).
fn read_capped(path: &Path, max_len: usize) -> Result<Option<Vec<u8>>, BackendError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(path, e)),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| error(path, e))?;
    if bytes.len() > max_len {
        return Err(error(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("longer than {max_len} bytes"),
            ),
        ));
    }
    Ok(Some(bytes))
}

impl FileBackend {
    /// The backend of `state_dir`, creating `state_dir/secrets` (mode 0700) if needed.
    pub fn open(state_dir: &Path) -> Result<Self, BackendError> {
        let secrets = state_dir.join("secrets");
        atomic::create_private_dir(&secrets).map_err(|e| error(&secrets, e))?;
        Ok(FileBackend {
            secrets,
            manifest: state_dir.join(MANIFEST),
        })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.secrets
            .join(format!("{}.{EXT}", name.replace('/', SLASH)))
    }
}

impl Backend for FileBackend {
    fn read_record(&self, name: &str, max_len: usize) -> Result<Option<Vec<u8>>, BackendError> {
        read_capped(&self.record_path(name), max_len)
    }

    fn record_names(&self) -> Result<Vec<String>, BackendError> {
        let rd = std::fs::read_dir(&self.secrets).map_err(|e| error(&self.secrets, e))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| error(&self.secrets, e))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(name) = file
                .strip_suffix(&format!(".{EXT}"))
                .map(|stem| stem.replace(SLASH, "/"))
                && valid_resource_name(&name)
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read_manifest(&self, max_len: usize) -> Result<Option<Vec<u8>>, BackendError> {
        read_capped(&self.manifest, max_len)
    }

    fn write_manifest(&self, manifest: &[u8]) -> Result<(), BackendError> {
        atomic::write_file(&self.manifest, manifest, 0o600).map_err(|e| error(&self.manifest, e))
    }

    fn write_record(&self, name: &str, record: Option<&[u8]>) -> Result<(), BackendError> {
        let path = self.record_path(name);
        match record {
            Some(bytes) => atomic::write_file(&path, bytes, 0o600),
            None => match atomic::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        }
        .map_err(|e| error(&path, e))
    }

    fn location(&self) -> String {
        self.secrets.display().to_string()
    }
}
