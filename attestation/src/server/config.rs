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

/// Where the state is kept (`[store] backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The state directory `dir`, for one process (default).
    #[default]
    File,
    /// A PostgreSQL database (`[store.postgres]`), shared by any number of replicas.
    Postgres,
}

/// The `[store]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `"file"` (default) or `"postgres"`.
    #[serde(default)]
    pub backend: BackendKind,
    /// The state directory (secrets, their manifest, audit log, token key): required with `backend = "file"`.
    pub dir: Option<PathBuf>,
    /// The key-encryption key file (`cvm-keys keygen`); refused when group or others may read it. Every
    /// replica of a PostgreSQL store needs the same one.
    pub kek_file: PathBuf,
    /// Bind the secret files found in a state directory that has no manifest yet (one written before
    /// rollback protection) into a new manifest at start. Default false: such a directory is refused, because
    /// a deleted manifest would otherwise let files put back from an older copy be trusted. File store only.
    #[serde(default)]
    pub allow_adopt_existing: bool,
    /// The database of `backend = "postgres"`.
    pub postgres: Option<crate::store::postgres::PostgresConfig>,
}

impl StoreConfig {
    /// Resolve relative paths against `base` and check that the keys fit the backend.
    fn resolve_and_check(&mut self, base: &Path) -> Result<(), String> {
        for p in [Some(&mut self.kek_file), self.dir.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        match (self.backend, &mut self.postgres) {
            (BackendKind::File, None) => {
                if self.dir.is_none() {
                    return Err("[store] needs dir (the state directory) with backend = \"file\"".into());
                }
                Ok(())
            }
            (BackendKind::File, Some(_)) => Err(
                "[store.postgres] is set but [store] backend is \"file\": set backend = \"postgres\" to use \
                 the database, or remove [store.postgres]"
                    .into(),
            ),
            (BackendKind::Postgres, None) => Err(
                "[store] backend = \"postgres\" needs a [store.postgres] table with at least url".into(),
            ),
            (BackendKind::Postgres, Some(pg)) => {
                if self.allow_adopt_existing {
                    return Err(
                        "[store] allow_adopt_existing is for the file store only: remove it with backend = \
                         \"postgres\""
                            .into(),
                    );
                }
                if self.dir.is_some() {
                    return Err(
                        "[store] dir is for the file store only: with backend = \"postgres\" the state is in \
                         the database; remove dir"
                            .into(),
                    );
                }
                pg.resolve(base);
                pg.check()
            }
        }
    }
}

/// The `[collateral]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollateralConfig {
    /// Offline VCEKs (`*.der`/`*.pem` in `dir/snp` or `dir`) and TDX collateral (`dir/tdx` or `dir`).
    pub dir: Option<PathBuf>,
}

/// The `[kbs]` table: Trustee's KBS attestation protocol next to `/v1` (README "Using cvm-attest as a
/// KBS").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KbsConfig {
    /// Serve `/kbs/v0/*`. Default false.
    pub enabled: bool,
    /// Accept guest-components' unsigned `sample` evidence. Only with `mode = "simulated"` (production
    /// refuses to start with it); tokens then say `simulated: true`. Default false.
    pub allow_sample: bool,
    /// Most KBS sessions held at once (each holds one guest's evidence until it expires): 1024.
    pub max_sessions: usize,
}

impl Default for KbsConfig {
    fn default() -> Self {
        KbsConfig {
            enabled: false,
            allow_sample: false,
            max_sessions: 1024,
        }
    }
}

/// The `[limits]` table (optional; defaults shown). Every value has a range ([`Limits::check`]): zero and
/// overflowing timeouts are refused at start with the key's name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most connections served at once (more wait in the listen backlog): 1024.
    pub max_connections: usize,
    /// Most connections served at once from one client address (IPv6: one /64): 64. More are closed at once.
    pub max_connections_per_address: usize,
    /// New connections per second one client address (IPv6: one /64) may open, on average: 50. More are
    /// closed at once, before any TLS work.
    pub connection_rate_per_address: u32,
    /// New connections one client address may open at once above that rate (the bucket's size): 100.
    pub connection_burst_per_address: u32,
    /// Seconds to complete the TLS handshake, and to send each request's headers (also the idle time allowed
    /// between requests on a kept-alive connection): 10.
    pub header_timeout_secs: u64,
    /// Seconds to send a request body: 10.
    pub body_timeout_secs: u64,
    /// Seconds to take each answer once the connection stops accepting it (a client that does not read is
    /// cut off): 10.
    pub write_timeout_secs: u64,
    /// Largest request head (request line and headers; larger: 431). It is also the connection's read buffer:
    /// requests a client sends ahead of reading the answers (pipelined) wait in at most this many bytes: 16384.
    pub max_header_bytes: usize,
    /// Requests answered on one connection before the service closes it (the client reconnects): 1000.
    pub max_requests_per_connection: u32,
    /// Seconds a nonce stays valid: 60.
    pub nonce_ttl_secs: i64,
    /// Seconds a token stays valid: 300.
    pub token_ttl_secs: i64,
    /// Seconds to let in-flight requests finish after SIGTERM (0: none): 30.
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_address: 64,
            connection_rate_per_address: 50,
            connection_burst_per_address: 100,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            write_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            max_requests_per_connection: 1000,
            nonce_ttl_secs: crate::nonce::DEFAULT_TTL_SECS,
            token_ttl_secs: 300,
            shutdown_grace_secs: 30,
        }
    }
}

/// Longest timeout, nonce lifetime and shutdown grace accepted (an hour): anything longer is a mistake, and
/// huge values would overflow the time arithmetic of the HTTP stack.
const MAX_SECS: u64 = 3600;
/// Longest nonce lifetime accepted (an hour).
const MAX_NONCE_TTL_SECS: i64 = 3600;
/// Longest token lifetime accepted (a day).
const MAX_TOKEN_TTL_SECS: i64 = 86_400;
/// Smallest request head buffer the HTTP stack supports (hyper's minimum read buffer).
const MIN_HEADER_BYTES: usize = 8192;
/// Largest request head accepted (1 MiB).
const MAX_HEADER_BYTES: usize = 1 << 20;
/// Most connections accepted as a limit.
const MAX_CONNECTIONS: usize = 1 << 20;

/// `limits.KEY = value` must lie in `min..=max`.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!(
            "limits.{key} = {value} is out of range: use {min} to {max} {unit}"
        ));
    }
    Ok(())
}

impl Limits {
    /// Check every value against its range; the error names the key and the range.
    pub fn check(&self) -> Result<(), String> {
        let secs = |key: &str, v: u64| in_range(key, v, 1, MAX_SECS, "seconds");
        in_range(
            "max_connections",
            self.max_connections,
            1,
            MAX_CONNECTIONS,
            "connections",
        )?;
        in_range(
            "max_connections_per_address",
            self.max_connections_per_address,
            1,
            MAX_CONNECTIONS,
            "connections",
        )?;
        in_range(
            "connection_rate_per_address",
            self.connection_rate_per_address,
            1,
            1_000_000,
            "connections per second",
        )?;
        in_range(
            "connection_burst_per_address",
            self.connection_burst_per_address,
            1,
            1_000_000,
            "connections",
        )?;
        secs("header_timeout_secs", self.header_timeout_secs)?;
        secs("body_timeout_secs", self.body_timeout_secs)?;
        secs("write_timeout_secs", self.write_timeout_secs)?;
        in_range(
            "max_header_bytes",
            self.max_header_bytes,
            MIN_HEADER_BYTES,
            MAX_HEADER_BYTES,
            "bytes",
        )?;
        in_range(
            "max_requests_per_connection",
            self.max_requests_per_connection,
            1,
            u32::MAX,
            "requests",
        )?;
        in_range(
            "nonce_ttl_secs",
            self.nonce_ttl_secs,
            1,
            MAX_NONCE_TTL_SECS,
            "seconds",
        )?;
        in_range(
            "token_ttl_secs",
            self.token_ttl_secs,
            1,
            MAX_TOKEN_TTL_SECS,
            "seconds",
        )?;
        in_range(
            "shutdown_grace_secs",
            self.shutdown_grace_secs,
            0,
            MAX_SECS,
            "seconds",
        )
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
    /// The KBS protocol.
    #[serde(default)]
    pub kbs: KbsConfig,
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
        c.store.resolve_and_check(base)?;
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
        c.limits.check()?;
        if c.kbs.allow_sample && c.mode != Mode::Simulated {
            return Err(
                "[kbs] allow_sample = true is only allowed with mode = \"simulated\": sample evidence is \
                 unsigned, anyone could send it"
                    .into(),
            );
        }
        in_range(
            "kbs.max_sessions",
            c.kbs.max_sessions,
            1,
            MAX_CONNECTIONS,
            "sessions",
        )
        .map_err(|e| e.replacen("limits.kbs.", "kbs.", 1))?;
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
        assert_eq!(c.store.dir.as_deref(), Some(Path::new("/etc/cvm/state")));
        assert_eq!(c.store.backend, BackendKind::File);
        assert!(
            Config::from_toml(
                "listen = \"127.0.0.1:0\"\nmode = \"simulated\"\n",
                Path::new("/")
            )
            .is_err()
        );
    }

    const BASE: &str = "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"s.pem\"\nkey = \"k\"\nadmin_client_ca = \"ca.pem\"\n\
                        [store]\ndir = \"state\"\nkek_file = \"kek\"\n[limits]\n";

    fn limits(line: &str) -> Result<Config, String> {
        Config::from_toml(&format!("{BASE}{line}\n"), Path::new("/etc/cvm"))
    }

    #[test]
    fn refuses_zero_and_overflowing_timeouts_naming_the_key() {
        for key in [
            "header_timeout_secs",
            "body_timeout_secs",
            "write_timeout_secs",
            "nonce_ttl_secs",
            "token_ttl_secs",
        ] {
            for value in ["0", "-1", "18446744073709551", "9223372036854775807"] {
                let e = limits(&format!("{key} = {value}")).unwrap_err();
                // Range errors say `limits.KEY = …`; TOML type errors quote the line, which names the key.
                assert!(e.contains(key), "{key} = {value}: {e}");
            }
            limits(&format!("{key} = 30")).unwrap();
        }
        let e = limits("header_timeout_secs = 0").unwrap_err();
        assert_eq!(
            e,
            "limits.header_timeout_secs = 0 is out of range: use 1 to 3600 seconds"
        );
        let e = limits("shutdown_grace_secs = 86400").unwrap_err();
        assert!(e.contains("limits.shutdown_grace_secs = 86400 is out of range: use 0 to 3600"));
        limits("shutdown_grace_secs = 0").unwrap();
        for line in [
            "max_connections = 0",
            "max_connections_per_address = 0",
            "connection_rate_per_address = 0",
            "connection_burst_per_address = 0",
            "max_header_bytes = 100",
            "max_header_bytes = 100000000",
            "max_requests_per_connection = 0",
        ] {
            let key = line.split(' ').next().unwrap();
            let e = limits(line).unwrap_err();
            assert!(e.contains(&format!("limits.{key}")), "{line}: {e}");
        }
        let d = limits("").unwrap().limits;
        assert!(!limits("").unwrap().kbs.enabled);
        assert_eq!(
            (
                d.max_connections_per_address,
                d.write_timeout_secs,
                d.max_header_bytes
            ),
            (64, 10, 16384)
        );
    }

    #[test]
    fn sample_evidence_is_refused_in_production_at_start() {
        let kbs = "[kbs]\nenabled = true\nallow_sample = true\n";
        let e = Config::from_toml(
            &format!("{}{kbs}", BASE.trim_end_matches("[limits]\n")),
            Path::new("/etc/cvm"),
        )
        .unwrap_err();
        assert!(e.contains("allow_sample") && e.contains("simulated"), "{e}");
        let sim = format!(
            "mode = \"simulated\"\nsim_dir = \"sim\"\n{}{kbs}",
            BASE.trim_end_matches("[limits]\n")
        );
        let c = Config::from_toml(&sim, Path::new("/etc/cvm")).unwrap();
        assert!(c.kbs.enabled && c.kbs.allow_sample && c.kbs.max_sessions == 1024);
        let zero = format!(
            "{}[kbs]\nmax_sessions = 0\n",
            BASE.trim_end_matches("[limits]\n")
        );
        let e = Config::from_toml(&zero, Path::new("/etc/cvm")).unwrap_err();
        assert!(e.starts_with("kbs.max_sessions = 0"), "{e}");
    }

    #[test]
    fn the_postgres_store_needs_its_table_and_refuses_file_only_keys() {
        let top = "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"s.pem\"\nkey = \"k\"\nadmin_client_ca = \"ca.pem\"\n";
        let load = |store: &str| Config::from_toml(&format!("{top}{store}"), Path::new("/etc/cvm"));
        let c = load(
            "[store]\nbackend = \"postgres\"\nkek_file = \"kek\"\n[store.postgres]\n\
             url = \"postgres://cvm@db.example.com:5432/cvm\"\npassword_file = \"db-password\"\nca = \"db-ca.pem\"\n\
             pool_size = 4\nconnect_timeout_secs = 3\nstatement_timeout_secs = 2\n",
        )
        .unwrap();
        let pg = c.store.postgres.unwrap();
        assert_eq!(c.store.backend, BackendKind::Postgres);
        assert_eq!(pg.ca.as_deref(), Some(Path::new("/etc/cvm/db-ca.pem")));
        assert_eq!(
            pg.password_file.as_deref(),
            Some(Path::new("/etc/cvm/db-password"))
        );
        assert_eq!(
            (
                pg.pool_size,
                pg.connect_timeout_secs,
                pg.statement_timeout_secs
            ),
            (4, 3, 2)
        );
        for (store, needle) in [
            (
                "[store]\nbackend = \"postgres\"\nkek_file = \"kek\"\n",
                "[store.postgres]",
            ),
            (
                "[store]\nkek_file = \"kek\"\ndir = \"s\"\n[store.postgres]\nurl = \"postgres://cvm@127.0.0.1/cvm\"\n",
                "backend is \"file\"",
            ),
            ("[store]\nkek_file = \"kek\"\n", "needs dir"),
            (
                "[store]\nbackend = \"postgres\"\nkek_file = \"kek\"\ndir = \"s\"\n[store.postgres]\n\
                 url = \"postgres://cvm@127.0.0.1/cvm\"\n",
                "remove dir",
            ),
            (
                "[store]\nbackend = \"postgres\"\nkek_file = \"kek\"\n[store.postgres]\nurl = \"postgres://cvm@127.0.0.1/cvm\"\n\
                 passwd = \"x\"\n",
                "unknown field",
            ),
            (
                "[store]\nbackend = \"mysql\"\nkek_file = \"kek\"\n",
                "unknown variant",
            ),
        ] {
            let e = load(store).unwrap_err();
            assert!(e.contains(needle), "{store}: {e}");
        }
    }
}
