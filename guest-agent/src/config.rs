//! `--config FILE`: the `unlock`/`run` options in TOML, under the long option names with `_` for `-`
//! (`server`, `ca`, `resource`, `tee`, `vmpl`, `sim_socket`, `tsm_root`, `sealed`, `out`, `secret_out`,
//! `force`, `luks`, `name`, `luks_check`, `mount`, `cryptsetup`, `attempts`, `backoff_ms`, `timeout_secs`,
//! `evidence_timeout_secs`, `omit_certs`, `protocol`), and for `run` the workload as `command = ["PROGRAM", "ARG", …]`
//! (used when none follows `--`).
//! Options given on the command line win over the file. Relative paths are taken as they are (relative to
//! the working directory), as on the command line.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The configuration file's contents; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `--server`.
    pub server: Option<String>,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--resource`.
    pub resource: Option<String>,
    /// `--tee` (`auto`, `snp`, `tdx`, `sim`).
    pub tee: Option<String>,
    /// `--vmpl`.
    pub vmpl: Option<u8>,
    /// `--sim-socket`.
    pub sim_socket: Option<PathBuf>,
    /// `--tsm-root`.
    pub tsm_root: Option<PathBuf>,
    /// `--sealed`.
    pub sealed: Option<PathBuf>,
    /// `--out`.
    pub out: Option<String>,
    /// `--secret-out`.
    pub secret_out: Option<PathBuf>,
    /// `--force`.
    pub force: Option<bool>,
    /// `--luks`.
    pub luks: Option<PathBuf>,
    /// `--name`.
    pub name: Option<String>,
    /// `--luks-check`.
    pub luks_check: Option<bool>,
    /// `--mount`.
    pub mount: Option<PathBuf>,
    /// `--cryptsetup`.
    pub cryptsetup: Option<PathBuf>,
    /// `--attempts`.
    pub attempts: Option<u32>,
    /// `--backoff-ms`.
    pub backoff_ms: Option<u64>,
    /// `--timeout-secs`.
    pub timeout_secs: Option<u64>,
    /// `--evidence-timeout-secs`.
    pub evidence_timeout_secs: Option<u64>,
    /// `--omit-certs`.
    pub omit_certs: Option<bool>,
    /// `--protocol` (`cvm`, `kbs`).
    pub protocol: Option<String>,
    /// `run`'s workload: the program and its arguments.
    pub command: Option<Vec<String>>,
}

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl AgentConfig {
    /// Parses TOML text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_known_keys_and_refuses_unknown_ones() {
        let c = AgentConfig::parse(
            "server = \"https://a:1\"\nresource = \"db\"\nattempts = 3\nomit_certs = true\nvmpl = 2\n\
             command = [\"/bin/app\", \"--serve\"]\nmount = \"/mnt/data\"\n\
             force = true\nevidence_timeout_secs = 90\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.server.as_deref(), Some("https://a:1"));
        assert_eq!(c.attempts, Some(3));
        assert_eq!(c.omit_certs, Some(true));
        assert_eq!(c.vmpl, Some(2));
        assert_eq!(
            c.command,
            Some(vec!["/bin/app".to_owned(), "--serve".to_owned()])
        );
        assert_eq!(c.mount, Some(PathBuf::from("/mnt/data")));
        assert_eq!(c.force, Some(true));
        assert_eq!(c.evidence_timeout_secs, Some(90));
        let e = AgentConfig::parse("sever = \"x\"\n", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("sever"), "{e}");
    }
}
