//! The `cvm-attest` binary: argument parsing only; the work is in the library.

use clap::{Parser, Subcommand};
use cvm_attest::{InputError, Policy, Tee, VerifyInputs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// cvm-attest: verify SEV-SNP and TDX attestation evidence, and serve secrets to guests that prove what they run.
#[derive(Parser)]
#[command(name = "cvm-attest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify one SNP attestation report or TDX quote offline.
    ///
    /// Exit 0: accepted. Exit 1: rejected (the reason code says which check failed).
    /// Exit 2: usage or I/O error. Nothing is fetched from the network: certificates, CRLs and
    /// collateral come from files.
    Verify(VerifyArgs),
    /// Run the HTTPS attestation service (see README "cvm-attest serve" for the configuration file).
    ///
    /// Stops on SIGTERM or SIGINT after finishing in-flight requests.
    Serve(ServeArgs),
    /// Administer a running service over mutual TLS: secrets and the audit log.
    Admin(cvm_attest::admin::AdminArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The evidence: an SNP attestation report (1184 bytes, or an Azure HCL report) or a TDX quote.
    #[arg(long, value_name = "FILE")]
    evidence: PathBuf,
    /// The TEE that produced it; detected from the bytes when omitted.
    #[arg(long, value_name = "snp|tdx")]
    tee: Option<Tee>,
    /// A certificate file (DER or PEM; PEM may hold several): the VCEK/VLEK, ASK/ARK bundles.
    #[arg(long, value_name = "FILE")]
    cert: Vec<PathBuf>,
    /// TDX collateral: a directory (tcbinfo-<fmspc>.json, qe-identity.json, ...) or a QuoteCollateralV3 JSON file.
    #[arg(long, value_name = "DIR|FILE")]
    collateral: Option<PathBuf>,
    /// A CRL (DER or PEM) to check certificates against.
    #[arg(long, value_name = "FILE")]
    crl: Vec<PathBuf>,
    /// A trusted root certificate; replaces the built-in AMD ARKs and Intel SGX Root CA.
    #[arg(long, value_name = "FILE")]
    trust_root: Vec<PathBuf>,
    /// The appraisal policy (TOML). Default: no debug guests, TDX TCB status UpToDate only.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Verification time (RFC 3339, e.g. 2025-01-01T00:00:00Z); default now.
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => run_verify(args),
        Command::Serve(args) => match cvm_attest::server::serve_blocking(&args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cvm-attest serve: {e}");
                ExitCode::from(2)
            }
        },
        Command::Admin(args) => match cvm_attest::admin::run(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cvm-attest admin: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn read(path: &Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|e| InputError::File {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })
}

fn certs_in(path: &Path) -> Result<Vec<Vec<u8>>, InputError> {
    cvm_attest::pki::certs_from_bytes(&read(path)?).map_err(|e| InputError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn inputs(args: &VerifyArgs) -> Result<VerifyInputs, InputError> {
    let mut certs = Vec::new();
    for path in &args.cert {
        certs.extend(certs_in(path)?);
    }
    let mut crls = Vec::new();
    for path in &args.crl {
        let der =
            cvm_attest::pki::crl_der_from_bytes(&read(path)?).map_err(|e| InputError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        crls.push(der);
    }
    let trust_roots = if args.trust_root.is_empty() {
        None
    } else {
        let mut roots = Vec::new();
        for path in &args.trust_root {
            roots.extend(certs_in(path)?);
        }
        Some(roots)
    };
    let policy = match &args.policy {
        None => Policy::default(),
        Some(path) => {
            let text = String::from_utf8(read(path)?).map_err(|_| InputError::File {
                path: path.clone(),
                message: "not UTF-8 text".into(),
            })?;
            Policy::from_toml(&text).map_err(|e| InputError::File {
                path: path.clone(),
                message: e.to_string(),
            })?
        }
    };
    let at = match &args.at {
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
        Some(text) => cvm_attest::pki::parse_rfc3339(text).ok_or_else(|| {
            InputError::Usage(format!(
                "--at {text:?} is not an RFC 3339 time (e.g. 2025-01-01T00:00:00Z)"
            ))
        })?,
    };
    Ok(VerifyInputs {
        certs,
        crls,
        trust_roots,
        collateral: args.collateral.clone(),
        policy,
        at,
    })
}

fn run_verify(args: VerifyArgs) -> ExitCode {
    let result = read(&args.evidence).and_then(|evidence| {
        let inputs = inputs(&args)?;
        cvm_attest::verify(&evidence, args.tee, &inputs)
    });
    match result {
        Ok(verdict) => {
            if args.json {
                println!("{}", verdict.to_json());
            } else {
                print!("{}", verdict.human());
            }
            if verdict.accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("cvm-attest verify: {e}");
            ExitCode::from(2)
        }
    }
}
