//! The `cvm-attest` binary: argument parsing only; the work is in the library.

use clap::{Parser, Subcommand};
use cvm_attest::sim::{self, SimAmd, SimError, SimIntel, SnpRequest, TdxRequest};
use cvm_attest::snp::Product;
use cvm_attest::{InputError, Policy, Tee, VerifyInputs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: the service allocates and frees many small buffers per request on every worker thread; in
/// `bench serve` the allocator's share of the server's CPU samples fell from 2.3 % (glibc) to 1.2 %.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Benchmarks. `bench serve`: the service under load (build with --release).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A simulated TEE for CI, laptops and demos: a simulated AMD secure processor and TDX quoting enclave
    /// whose evidence is signed by simulated vendor chains (organization "cvm simulator", never AMD or
    /// Intel). `cvm-attest verify --trust-root` accepts it and says "simulated": true; the built-in roots
    /// refuse it.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Start a simulated-mode service and run N HTTPS clients doing the full flow with SNP and TDX evidence;
    /// report attestations/s, latency percentiles, errors and server CPU per attestation against one raw
    /// ring signature verification.
    Serve(cvm_attest::bench_serve::BenchArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Create a sim directory: keys, certificates and TDX collateral.
    ///
    /// Writes DIR/snp/{ark.pem, ask.pem, cert_chain.pem (ASK then ARK), vcek.der},
    /// DIR/tdx/{root.pem, pck_chain.pem, collateral/} (tcbinfo-<fmspc>.json, qe-identity.json,
    /// tcb-signing-chain.pem, root-ca-crl.der, pck-platform-crl.der, pck-crl-issuer-chain.pem) and
    /// DIR/private/ (seed and private keys; directory mode 0700, files 0600). Every key is derived from the
    /// seed, so the same seed file gives the same keys. Certificates are valid from now (ARK/ASK and Intel CAs
    /// for 25 years, VCEK and PCK for 7); the TCB info, QE identity and CRLs are issued now with nextUpdate in
    /// one year, so re-run init after that. DIR must not exist or be empty.
    Init(SimInitArgs),
    /// Write a signed SEV-SNP attestation report (1184 bytes) from the simulated secure processor.
    ///
    /// Verify it with: cvm-attest verify --evidence FILE --trust-root DIR/snp/ark.pem --cert DIR/snp/vcek.der
    SnpReport(SimSnpArgs),
    /// Write a signed TDX v4 quote from the simulated quoting enclave.
    ///
    /// Verify it with: cvm-attest verify --evidence FILE --trust-root DIR/tdx/root.pem
    /// --collateral DIR/tdx/collateral
    TdxQuote(SimTdxArgs),
}

#[derive(clap::Args)]
struct SimInitArgs {
    /// The sim directory to create (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A file whose bytes (at least 16) seed every key; default: 32 random bytes, saved in DIR/private/seed.
    #[arg(long, value_name = "FILE")]
    seed_file: Option<PathBuf>,
    /// The simulated AMD product: milan (default), genoa or turin.
    #[arg(long, value_name = "PRODUCT", default_value = "milan")]
    product: String,
}

#[derive(clap::Args)]
struct SimSnpArgs {
    /// The sim directory (from `cvm-attest sim init`).
    #[arg(long, value_name = "DIR")]
    sim_dir: PathBuf,
    /// REPORT_DATA: up to 64 bytes in hex (128 digits); shorter values are zero-padded on the right.
    #[arg(long, value_name = "HEX")]
    report_data: String,
    /// MEASUREMENT: exactly 48 bytes in hex (96 digits).
    #[arg(long, value_name = "HEX")]
    measurement: String,
    /// HOST_DATA: exactly 32 bytes in hex (64 digits); default zero.
    #[arg(long, value_name = "HEX")]
    host_data: Option<String>,
    /// The guest POLICY as hex (e.g. 30000); default 30100 (SMT allowed, ABI 1.0, no debug).
    #[arg(long, value_name = "HEX")]
    policy: Option<String>,
    /// The VMPL of the request, 0..=3.
    #[arg(long, value_name = "N", default_value_t = 0)]
    vmpl: u32,
    /// Set the policy's DEBUG bit (verifiers refuse it unless their policy allows debug).
    #[arg(long)]
    debug: bool,
    /// Report VERSION: 5 (default), 3 or 2.
    #[arg(long, value_name = "N", default_value_t = 5)]
    version: u32,
    /// Where to write the report.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct SimTdxArgs {
    /// The sim directory (from `cvm-attest sim init`).
    #[arg(long, value_name = "DIR")]
    sim_dir: PathBuf,
    /// REPORTDATA: up to 64 bytes in hex (128 digits); shorter values are zero-padded on the right.
    #[arg(long, value_name = "HEX")]
    report_data: String,
    /// MRTD: exactly 48 bytes in hex (96 digits).
    #[arg(long, value_name = "HEX")]
    mrtd: String,
    /// RTMR0: 48 bytes in hex; default zero.
    #[arg(long, value_name = "HEX")]
    rtmr0: Option<String>,
    /// RTMR1: 48 bytes in hex; default zero.
    #[arg(long, value_name = "HEX")]
    rtmr1: Option<String>,
    /// RTMR2: 48 bytes in hex; default zero.
    #[arg(long, value_name = "HEX")]
    rtmr2: Option<String>,
    /// RTMR3: 48 bytes in hex; default zero.
    #[arg(long, value_name = "HEX")]
    rtmr3: Option<String>,
    /// MRCONFIGID: 48 bytes in hex; default zero.
    #[arg(long, value_name = "HEX")]
    mrconfigid: Option<String>,
    /// Set TD_ATTRIBUTES.DEBUG (verifiers refuse it unless their policy allows debug).
    #[arg(long)]
    debug: bool,
    /// Where to write the quote.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
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
    /// A trusted root certificate; replaces the built-in AMD ARKs and Intel SGX Root CA. A simulated root
    /// (`cvm-attest sim`) is accepted only this way, and the verdict then says "simulated": true.
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
        Command::Bench(BenchCommand::Serve(args)) => match cvm_attest::bench_serve::run(&args) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cvm-attest bench serve: {e}");
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
        Command::Sim(command) => run_sim(command),
    }
}

fn run_sim(command: SimCommand) -> ExitCode {
    let (name, result) = match command {
        SimCommand::Init(args) => ("init", sim_init(&args)),
        SimCommand::SnpReport(args) => ("snp-report", sim_snp(&args)),
        SimCommand::TdxQuote(args) => ("tdx-quote", sim_tdx(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvm-attest sim {name}: {e}");
            ExitCode::from(2)
        }
    }
}

fn sim_init(args: &SimInitArgs) -> Result<(), SimError> {
    let product = match args.product.to_ascii_lowercase().as_str() {
        "milan" => Product::Milan,
        "genoa" => Product::Genoa,
        "turin" => Product::Turin,
        other => {
            return Err(SimError::Request(format!(
                "--product {other:?} is not milan, genoa or turin"
            )));
        }
    };
    let seed = match &args.seed_file {
        None => None,
        Some(path) => Some(sim::dir::read(path)?),
    };
    sim::init(
        &args.out,
        &sim::InitOptions {
            seed,
            product,
            ..Default::default()
        },
    )?;
    println!("simulated TEE created in {}", args.out.display());
    Ok(())
}

fn opt_hex<const N: usize>(text: &Option<String>, what: &str) -> Result<[u8; N], SimError> {
    match text {
        None => Ok([0; N]),
        Some(t) => sim::hexarg::parse(t, what, false),
    }
}

fn write_out(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    std::fs::write(path, bytes).map_err(|e| SimError::io(path, format!("cannot write: {e}")))
}

fn sim_snp(args: &SimSnpArgs) -> Result<(), SimError> {
    let policy = match &args.policy {
        None => sim::snp::DEFAULT_POLICY,
        Some(text) => {
            u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).map_err(|e| {
                SimError::Request(format!("--policy {text:?} is not a 64-bit hex number: {e}"))
            })?
        }
    };
    let request = SnpRequest {
        report_data: sim::hexarg::parse(&args.report_data, "--report-data", true)?,
        measurement: sim::hexarg::parse(&args.measurement, "--measurement", false)?,
        host_data: opt_hex(&args.host_data, "--host-data")?,
        policy,
        vmpl: args.vmpl,
        debug: args.debug,
        version: args.version,
    };
    let report = SimAmd::load(&args.sim_dir)?.snp_report(&request)?;
    write_out(&args.out, &report)
}

fn sim_tdx(args: &SimTdxArgs) -> Result<(), SimError> {
    let request = TdxRequest {
        report_data: sim::hexarg::parse(&args.report_data, "--report-data", true)?,
        mrtd: sim::hexarg::parse(&args.mrtd, "--mrtd", false)?,
        rtmr0: opt_hex(&args.rtmr0, "--rtmr0")?,
        rtmr1: opt_hex(&args.rtmr1, "--rtmr1")?,
        rtmr2: opt_hex(&args.rtmr2, "--rtmr2")?,
        rtmr3: opt_hex(&args.rtmr3, "--rtmr3")?,
        mrconfigid: opt_hex(&args.mrconfigid, "--mrconfigid")?,
        debug: args.debug,
    };
    let quote = SimIntel::load(&args.sim_dir)?.tdx_quote(&request)?;
    write_out(&args.out, &quote)
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
    // A simulated root named explicitly with --trust-root is the one way offline verification accepts
    // simulated evidence (DESIGN.md "Simulated TEE").
    let allow_simulated = trust_roots.is_some();
    Ok(VerifyInputs {
        allow_simulated,
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
