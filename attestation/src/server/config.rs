//! The service configuration file (a contract, see README "cvm-attest serve"). Relative paths are relative
//! to the configuration file's directory.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Which roots the verifiers trust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real AMD and Intel roots only; simulated evidence is refused (`SIMULATED_NOT_ALLOWED`).
    #[default]
    Production,
    /// Only the simulator's roots from `sim_dir`; every token says `simulated: true`.
    Simulated,
}

/// The `[tls]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server private key (PEM, PKCS#8 or SEC1).
    pub key: PathBuf,
    /// The CA (PEM) whose client certificates may use the admin endpoints.
    pub admin_client_ca: PathBuf,
}

/// The `[store]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The state directory (secrets, audit log, token key).
    pub dir: PathBuf,
    /// The key-encryption key file (`cvm-keys keygen`).
    pub kek_file: PathBuf,
}

/// The `[collateral]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollateralConfig {
    /// Offline VCEKs (`*.der`/`*.pem` in `dir/snp` or `dir`) and TDX collateral (`dir/tdx` or `dir`).
    pub dir: Option<PathBuf>,
}

/// The `[limits]` table (optional; defaults shown).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most connections served at once (more wait in the listen backlog): 1024.
    pub max_connections: usize,
    /// Seconds to complete the TLS handshake and to send each request's headers: 10.
    pub header_timeout_secs: u64,
    /// Seconds to send a request body: 10.
    pub body_timeout_secs: u64,
    /// Seconds a nonce stays valid: 60.
    pub nonce_ttl_secs: i64,
    /// Seconds a token stays valid: 300.
    pub token_ttl_secs: i64,
    /// Seconds to let in-flight requests finish after SIGTERM: 30.
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            nonce_ttl_secs: crate::nonce::DEFAULT_TTL_SECS,
            token_ttl_secs: 300,
            shutdown_grace_secs: 30,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (port 0: any free port; the chosen address is logged).
    pub listen: SocketAddr,
    /// Production (default) or simulated.
    #[serde(default)]
    pub mode: Mode,
    /// Simulated mode: the directory `cvm-attest sim init` wrote.
    pub sim_dir: Option<PathBuf>,
    /// TLS files.
    pub tls: TlsConfig,
    /// State.
    pub store: StoreConfig,
    /// Offline collateral.
    #[serde(default)]
    pub collateral: CollateralConfig,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML is not a valid configuration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Read and check a configuration file; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parse configuration text, resolving relative paths against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut c.tls.cert);
        fix(&mut c.tls.key);
        fix(&mut c.tls.admin_client_ca);
        fix(&mut c.store.dir);
        fix(&mut c.store.kek_file);
        if let Some(d) = c.sim_dir.as_mut() {
            fix(d);
        }
        if let Some(d) = c.collateral.dir.as_mut() {
            fix(d);
        }
        match (c.mode, &c.sim_dir) {
            (Mode::Simulated, None) => return Err("mode = \"simulated\" needs sim_dir".into()),
            (Mode::Production, Some(_)) => {
                return Err("sim_dir is only allowed with mode = \"simulated\"".into());
            }
            _ => {}
        }
        if c.limits.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_paths_and_defaults_to_production() {
        let c = Config::from_toml(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"s.pem\"\nkey = \"/k\"\nadmin_client_ca = \"ca.pem\"\n\
             [store]\ndir = \"state\"\nkek_file = \"kek\"\n",
            Path::new("/etc/cvm"),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.tls.cert, Path::new("/etc/cvm/s.pem"));
        assert_eq!(c.tls.key, Path::new("/k"));
        assert_eq!(c.store.dir, Path::new("/etc/cvm/state"));
        assert!(
            Config::from_toml(
                "listen = \"127.0.0.1:0\"\nmode = \"simulated\"\n",
                Path::new("/")
            )
            .is_err()
        );
    }
}
