//! `cvm-attest admin`: the admin client (a contract):
//!
//! ```text
//! cvm-attest admin --server URL --ca CA.pem --cert admin.pem --key admin.key \
//!     secret put NAME --value-file F --policy P.toml | secret list | secret rm NAME | audit [--verify]
//! ```
//!
//! `audit --verify` has the service check the audit log's hash chain and exits 1 when it is broken.

use crate::client::{Client, ClientError, tls_config};
use std::path::PathBuf;

/// Global options of `cvm-attest admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The service, `https://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The CA certificate (PEM) that issued the server's certificate.
    #[arg(long, value_name = "CA.pem")]
    pub ca: PathBuf,
    /// The admin client certificate (PEM), issued by the service's `admin_client_ca`.
    #[arg(long, value_name = "admin.pem")]
    pub cert: PathBuf,
    /// The admin client key (PEM).
    #[arg(long, value_name = "admin.key")]
    pub key: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Admin operations.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Manage secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the audit log (JSON lines), or check its hash chain.
    Audit {
        /// Check the whole log's hash chain instead (a record deleted, edited, reordered or inserted):
        /// print what was found and the newest record (note it: a later check must reach at least it);
        /// exit 1 when the chain is broken.
        #[arg(long)]
        verify: bool,
    },
}

/// `admin secret ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Store or replace a secret with its appraisal policy.
    Put {
        /// The secret (resource) name: 1-128 of A-Z a-z 0-9 . _ -.
        name: String,
        /// File holding the secret value.
        #[arg(long, value_name = "F")]
        value_file: PathBuf,
        /// The appraisal policy (TOML, DESIGN.md "Appraisal policy").
        #[arg(long, value_name = "P.toml")]
        policy: PathBuf,
    },
    /// List secret names.
    List,
    /// Delete a secret.
    Rm {
        /// The secret name.
        name: String,
    },
}

/// Errors of the admin client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A local file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// `audit --verify` found the chain broken.
    #[error("{0}")]
    AuditBroken(String),
}

/// Run an admin command and return what to print.
pub fn run(args: &AdminArgs) -> Result<String, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Runtime)?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &AdminArgs) -> Result<String, AdminError> {
    let config = tls_config(&args.ca, Some((&args.cert, &args.key)))?;
    let mut client = Client::new(&args.server, config)?;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| AdminError::File {
            path: path.clone(),
            source,
        })
    };
    match &args.command {
        AdminCommand::Secret(SecretCommand::Put {
            name,
            value_file,
            policy,
        }) => {
            let value = zeroize::Zeroizing::new(read(value_file)?);
            let policy = String::from_utf8(read(policy)?).map_err(|_| AdminError::File {
                path: policy.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
            })?;
            let info = client.put_secret(name, &value, &policy).await?;
            Ok(format!(
                "stored {} ({} bytes, policy {})\n",
                info.name, info.value_len, info.policy_id
            ))
        }
        AdminCommand::Secret(SecretCommand::List) => {
            let names = client.list_secrets().await?;
            Ok(names.iter().map(|n| format!("{n}\n")).collect())
        }
        AdminCommand::Secret(SecretCommand::Rm { name }) => {
            client.delete_secret(name).await?;
            Ok(format!("deleted {name}\n"))
        }
        AdminCommand::Audit { verify: false } => {
            let records = client.audit().await?;
            Ok(records.iter().map(|r| format!("{r}\n")).collect())
        }
        AdminCommand::Audit { verify: true } => {
            let v = client.audit_verify().await?;
            let summary = format!(
                "{} chained record(s){}; newest: record {} tag {}\n",
                v.records,
                if v.unchained > 0 {
                    format!(" after {} line(s) written before the chain", v.unchained)
                } else {
                    String::new()
                },
                v.head_seq,
                v.head_tag
            );
            if v.ok {
                Ok(format!("audit chain OK: {summary}"))
            } else {
                let mut text = format!(
                    "audit chain BROKEN: {} problem(s) in {summary}",
                    v.problem_count
                );
                for p in &v.problems {
                    text.push_str(&format!("  {p}\n"));
                }
                Err(AdminError::AuditBroken(text.trim_end().to_owned()))
            }
        }
    }
}
