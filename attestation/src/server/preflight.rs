//! Checks of the files a configuration names, run before the service opens anything: the key-encryption key
//! and the private keys must not be readable by group or others (refused), a state directory that group or
//! others may enter gets a warning, and `admin_client_ca` must hold CA certificates only (a leaf there would
//! lock every admin out).

use super::config::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file the service must not start with.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A secret key file that group or others may read.
    #[error(
        "{key} = {path}: the file is readable by group or others (mode {mode:04o}); it holds a secret key: \
         run `chmod 600 {path}` (and check who may have read it)"
    )]
    Exposed {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file could not be examined.
    #[error("{key} = {path}: {source}")]
    Io {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A certificate of `admin_client_ca` is not a CA certificate.
    #[error(
        "tls.admin_client_ca = {path}: certificate {index} ({subject}) is not a CA certificate ({why}); give the \
         CA that issues the admin client certificates (pki/ca.pem of `cvm-keys ca init`), not a leaf"
    )]
    NotCa {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// Its subject.
        subject: String,
        /// What is missing.
        why: &'static str,
    },
    /// `admin_client_ca` holds no certificate that parses.
    #[error("tls.admin_client_ca = {path}: {message}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Permission bits that let group or others read, write or enter.
const GROUP_OTHER: u32 = 0o077;

/// Refuse to start when a secret key file is open to group or others; return warnings to log.
pub fn check(config: &Config) -> Result<Vec<String>, PreflightError> {
    private_file("store.kek_file", &config.store.kek_file)?;
    private_file("tls.key", &config.tls.key)?;
    if let Some(pg) = &config.store.postgres
        && let Some(password) = &pg.password_file
    {
        private_file("store.postgres.password_file", password)?;
    }
    admin_ca(&config.tls.admin_client_ca)?;
    let mut warnings = Vec::new();
    if let Some(dir) = &config.store.dir {
        let token_key = dir.join(super::service::TOKEN_KEY_FILE);
        if token_key.exists() {
            private_file("store.dir (its token key)", &token_key)?;
        }
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & GROUP_OTHER != 0 {
                warnings.push(format!(
                    "WARNING: store.dir = {}: group or others may enter the state directory (mode {mode:04o}); \
                     its files are encrypted and bound to their manifest, but run `chmod 700 {}`",
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    Ok(warnings)
}

/// `path` must not be readable (or writable) by group or others.
fn private_file(key: &'static str, path: &Path) -> Result<(), PreflightError> {
    let meta = std::fs::metadata(path).map_err(|source| PreflightError::Io {
        key,
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER != 0 {
        return Err(PreflightError::Exposed {
            key,
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Every certificate of the admin CA file must be a CA: basicConstraints CA:TRUE and, when keyUsage is
/// present, keyCertSign (RFC 5280 §4.2.1.3, §4.2.1.9).
fn admin_ca(path: &Path) -> Result<(), PreflightError> {
    let bad = |message: String| PreflightError::BadCa {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let ders = crate::pki::certs_from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    for (i, der) in ders.iter().enumerate() {
        let cert = crate::pki::parse_cert(der).map_err(|e| bad(e.to_string()))?;
        let not_ca = |why| PreflightError::NotCa {
            path: path.to_owned(),
            index: i + 1,
            subject: cert.subject().to_string(),
            why,
        };
        if !crate::pki::is_ca(&cert) {
            return Err(not_ca("no basicConstraints CA:TRUE"));
        }
        let signs_certs = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !signs_certs {
            return Err(not_ca("its keyUsage lacks keyCertSign"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_certificate_is_not_an_admin_ca() {
        let dir = tempfile::tempdir().unwrap();
        cvm_keys::ca::init_ca(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        admin_ca(&dir.path().join("ca.pem")).unwrap();
        for leaf in ["admin.pem", "server.pem"] {
            let e = admin_ca(&dir.path().join(leaf)).unwrap_err();
            assert!(matches!(e, PreflightError::NotCa { index: 1, .. }), "{e}");
            assert!(e.to_string().contains("tls.admin_client_ca"), "{e}");
        }
    }

    #[test]
    fn refuses_key_files_readable_by_group_or_others() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("kek");
        std::fs::write(&key, "x").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = private_file("store.kek_file", &key);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().starts_with("store.kek_file = "), "{e}");
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
        }
    }
}
