//! `[store.postgres]`: where the database is and how to reach it (the key names are a contract, DESIGN.md).
//! The password is read from `password_file` and never printed: a password in `url` is refused, so the URL
//! can be logged as it is.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};

/// Default connections per replica.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default seconds to connect (and to wait for a free connection).
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Default seconds a statement may run (the server cancels it; the service gives up a little later).
pub const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 5;

/// The `[store.postgres]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://USER@HOST:PORT/DB` (a Unix-socket directory as host: percent-encoded,
    /// `postgres://cvm@%2Frun%2Fpostgresql/cvm`); no password here (`password_file`).
    pub url: String,
    /// A file holding the role's password (first line; refused when group or others may read it).
    pub password_file: Option<PathBuf>,
    /// The CA (PEM) that issued the database server's certificate: TLS is then required and the server's
    /// name checked against the URL's host (verify-full). Without it the connection is not encrypted: only
    /// for a Unix socket or a loopback address.
    pub ca: Option<PathBuf>,
    /// Connections per replica: 8.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Seconds to connect, and to wait for a free connection: 5.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds a statement may run before the server cancels it: 5.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_secs: u64,
}

fn default_pool_size() -> usize {
    DEFAULT_POOL_SIZE
}
fn default_connect_timeout() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}
fn default_statement_timeout() -> u64 {
    DEFAULT_STATEMENT_TIMEOUT_SECS
}

/// Whether every host of `config` is local: a Unix socket or a loopback address.
fn all_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

impl PostgresConfig {
    /// Resolve relative paths against `base`.
    pub fn resolve(&mut self, base: &Path) {
        for p in [self.password_file.as_mut(), self.ca.as_mut()]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Check the values; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        let c = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            format!("store.postgres.url: {e} (expected postgres://USER@HOST:PORT/DB)")
        })?;
        if c.get_password().is_some() {
            return Err(
                "store.postgres.url holds a password: put it in a file named by store.postgres.password_file \
                 (mode 0600) instead, so it is never logged"
                    .into(),
            );
        }
        if c.get_user().is_none() {
            return Err("store.postgres.url names no user: postgres://USER@HOST:PORT/DB".into());
        }
        if c.get_hosts().is_empty() {
            return Err(
                "store.postgres.url names no host: postgres://USER@HOST:PORT/DB (a Unix-socket \
                        directory percent-encoded: postgres://USER@%2Frun%2Fpostgresql/DB)"
                    .into(),
            );
        }
        if c.get_ssl_mode() != SslMode::Prefer {
            return Err(
                "store.postgres.url sets sslmode: leave it out; TLS is on (verify-full) exactly when \
                 store.postgres.ca is set"
                    .into(),
            );
        }
        let unix = c.get_hosts().iter().any(|h| matches!(h, Host::Unix(_)));
        match (&self.ca, unix) {
            (Some(_), true) => {
                return Err(
                    "store.postgres.ca is set but the url's host is a Unix socket, which PostgreSQL does \
                     not encrypt: remove ca, or connect over TCP"
                        .into(),
                );
            }
            (None, false) if !all_local(&c) => {
                return Err(
                    "store.postgres.url is a remote host but store.postgres.ca is not set: the connection \
                     would not be encrypted; give the CA of the database server's certificate (TLS, \
                     verify-full)"
                        .into(),
                );
            }
            _ => {}
        }
        let range = |key: &str, v: u64, max: u64| {
            if v == 0 || v > max {
                Err(format!(
                    "store.postgres.{key} = {v} is out of range: use 1 to {max}"
                ))
            } else {
                Ok(())
            }
        };
        range("pool_size", self.pool_size as u64, 1024)?;
        range("connect_timeout_secs", self.connect_timeout_secs, 3600)?;
        range("statement_timeout_secs", self.statement_timeout_secs, 3600)
    }

    /// The URL without secrets (a password is refused in it), for messages.
    pub fn location(&self) -> String {
        format!("postgres {}", self.url)
    }

    /// The client configuration: the URL, the password from its file, the timeouts and the application
    /// name.
    pub fn client_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut c = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| format!("store.postgres.url: {e}"))?;
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("store.postgres.password_file = {}: {e}", path.display()))?;
            let password = text.lines().next().unwrap_or_default();
            if password.is_empty() {
                return Err(format!(
                    "store.postgres.password_file = {}: the file is empty",
                    path.display()
                ));
            }
            c.password(password);
        }
        c.application_name("cvm-attest")
            .connect_timeout(self.connect_timeout())
            .keepalives_idle(Duration::from_secs(30))
            .options(format!(
                "-c statement_timeout={}",
                self.statement_timeout().as_millis()
            ))
            .ssl_mode(if self.ca.is_some() {
                SslMode::Require
            } else {
                SslMode::Disable
            });
        Ok(c)
    }

    /// TLS with the CA's certificates as the only roots (rustls, ring; the host name is verified).
    pub fn tls(&self) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let fail = |e: String| format!("store.postgres.ca = {}: {e}", ca.display());
        let roots = crate::server::tls::root_store(ca).map_err(|e| fail(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(crate::server::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(Arc::new(roots))
            .with_no_client_auth();
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }

    /// Seconds to connect and to wait for a connection.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Seconds a statement may run.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs(self.statement_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, ca: bool) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            password_file: None,
            ca: ca.then(|| PathBuf::from("/ca.pem")),
            pool_size: 8,
            connect_timeout_secs: 5,
            statement_timeout_secs: 5,
        }
    }

    #[test]
    fn refuses_passwords_in_the_url_and_unencrypted_remote_hosts() {
        config("postgres://cvm@%2Frun%2Fpostgresql/cvm", false)
            .check()
            .unwrap();
        config("postgres://cvm@127.0.0.1:5432/cvm", false)
            .check()
            .unwrap();
        config("postgres://cvm@db.example.com/cvm", true)
            .check()
            .unwrap();
        let e = config("postgres://cvm:hunter2@127.0.0.1/cvm", false)
            .check()
            .unwrap_err();
        assert!(e.contains("password_file") && !e.contains("hunter2"), "{e}");
        let e = config("postgres://cvm@db.example.com/cvm", false)
            .check()
            .unwrap_err();
        assert!(e.contains("store.postgres.ca"), "{e}");
        let e = config("postgres://cvm@%2Frun%2Fpostgresql/cvm", true)
            .check()
            .unwrap_err();
        assert!(e.contains("Unix socket"), "{e}");
        let e = config("postgres://cvm@db.example.com/cvm?sslmode=disable", true)
            .check()
            .unwrap_err();
        assert!(e.contains("sslmode"), "{e}");
        assert!(config("postgres:///cvm", false).check().is_err());
        let mut c = config("postgres://cvm@127.0.0.1/cvm", false);
        c.pool_size = 0;
        assert!(c.check().unwrap_err().contains("store.postgres.pool_size"));
    }
}
