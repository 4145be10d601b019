//! The `cvm-keys` binary: argument parsing and exit codes over the `cvm_keys` library.
//!
//! Exit codes: 0 success; 1 a refused input (tampered, truncated, wrong key, not a sealed file);
//! 2 usage or I/O error.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cvm_keys::seal::{self, SealError, SealOptions};
use cvm_keys::{Key256, bench, ca};

/// cvm-keys: create keys, CAs and certificates; seal, unseal and inspect workload data.
///
/// Sealed files are AES-256-GCM in fixed-size chunks (STREAM construction): any change, truncation,
/// reordering or mixing of files is refused. Exit status: 0 success, 1 refused input (tampered, truncated,
/// wrong key, not a sealed file), 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "cvm-keys", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new random 256-bit key file (mode 0600); never overwrites an existing file.
    Keygen {
        /// Where to write the key file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Seal a file (or stdin) with a key file.
    ///
    /// The output is written to a temporary file next to --out and moved into place only when complete.
    Seal(SealArgs),
    /// Unseal a sealed file (or stdin) with its key file.
    ///
    /// Every chunk is authenticated; a tampered, truncated, reordered or foreign file, or the wrong key,
    /// is refused with exit status 1. With --out FILE the plaintext goes to a temporary file (mode 0600) that
    /// is renamed into place only after the whole file authenticated, so on refusal no output file exists.
    /// With --out - the plaintext is streamed to stdout as chunks authenticate: if the command then fails,
    /// everything already written to stdout must be discarded.
    Unseal(UnsealArgs),
    /// Print the header of a sealed file (version, algorithm, chunk size, key id, nonce prefix).
    ///
    /// Nothing is decrypted and no key is needed; the header is only authenticated by unsealing.
    Inspect {
        /// The sealed file (`-` for stdin).
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Certificate authority for the attestation service.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Measure seal/unseal throughput against raw ring AES-256-GCM in the same run, and the peak RSS.
    ///
    /// Streams are generated on the fly and written to a sink, so memory stays constant. Build with
    /// --release for meaningful figures: `cargo run --release -p cvm-keys -- bench`.
    Bench {
        /// Bytes per measurement (units: KiB, MiB, GiB, KB, MB, GB).
        #[arg(long, default_value = "1GiB")]
        size: String,
        /// Chunk size of the sealed stream.
        #[arg(long, default_value = "64KiB")]
        chunk_size: String,
        /// Also seal to and unseal from a temporary file in this directory (removed afterwards).
        #[arg(long, value_name = "DIR")]
        temp_dir: Option<PathBuf>,
        /// Interleaved repetitions; the best of each measurement is reported.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

#[derive(Args)]
struct SealArgs {
    /// The key file (from `cvm-keys keygen`).
    #[arg(long, value_name = "K")]
    key_file: PathBuf,
    /// The plaintext (`-` for stdin).
    #[arg(long = "in", value_name = "F")]
    input: PathBuf,
    /// The sealed output (`-` for stdout).
    #[arg(long, value_name = "G")]
    out: PathBuf,
    /// Plaintext bytes per chunk (16 B to 4 MiB; units KiB, MiB).
    #[arg(long, default_value = "64KiB")]
    chunk_size: String,
    /// Replace --out if it exists (default: refuse).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct UnsealArgs {
    /// The key file the data was sealed with.
    #[arg(long, value_name = "K")]
    key_file: PathBuf,
    /// The sealed file (`-` for stdin).
    #[arg(long = "in", value_name = "G")]
    input: PathBuf,
    /// Where to write the plaintext (`-` for stdout; see above).
    #[arg(long, value_name = "F")]
    out: PathBuf,
    /// Replace --out if it exists (default: refuse).
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA, a server certificate and an admin client certificate in DIR.
    ///
    /// Writes ca.pem, ca.key, server.pem, server.key, admin.pem, admin.key (P-256; keys mode 0600).
    /// Refuses if any of them exists. Server names that parse as IP addresses become IP SANs.
    Init {
        /// The output directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "server-name", value_name = "NAME", required = true)]
        server_names: Vec<String>,
    },
}

/// A failure with its exit status.
enum Failure {
    /// The input was refused (exit 1).
    Refused(String),
    /// Usage or I/O error (exit 2).
    Error(String),
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

fn read_key(path: &Path) -> Result<Key256, Failure> {
    Key256::read_file(path).map_err(|e| Failure::Error(e.to_string()))
}

/// The input: a file or stdin (an unbuffered duplicate of fd 0, so large reads go straight to the kernel).
fn open_input(path: &Path) -> Result<File, Failure> {
    if is_dash(path) {
        io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|e| Failure::Error(format!("stdin: {e}")))
    } else {
        File::open(path).map_err(|e| Failure::Error(format!("{}: {e}", path.display())))
    }
}

fn stdout_file() -> Result<File, Failure> {
    io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| Failure::Error(format!("stdout: {e}")))
}

fn name(p: &Path, dash: &str) -> String {
    if is_dash(p) {
        dash.to_string()
    } else {
        p.display().to_string()
    }
}

/// Maps a sealing error to a message naming the file concerned, and to its exit status.
fn seal_failure(e: SealError, input: &Path, out: &Path) -> Failure {
    match &e {
        SealError::Write(_) => Failure::Error(format!("{}: {e}", name(out, "stdout"))),
        _ if e.is_refusal() => Failure::Refused(format!("{}: {e}", name(input, "stdin"))),
        _ => Failure::Error(format!("{}: {e}", name(input, "stdin"))),
    }
}

fn refuse_existing(out: &Path, force: bool) -> Result<(), Failure> {
    if !force && !is_dash(out) && out.symlink_metadata().is_ok() {
        return Err(Failure::Error(format!(
            "{}: already exists; refusing to overwrite it (use --force)",
            out.display()
        )));
    }
    Ok(())
}

fn parse_chunk_size(s: &str) -> Result<u32, Failure> {
    let n = bench::parse_size(s).map_err(|e| Failure::Error(format!("--chunk-size: {e}")))?;
    u32::try_from(n).map_err(|_| Failure::Error(format!("--chunk-size: {s} is too large")))
}

fn cmd_seal(a: SealArgs) -> Result<(), Failure> {
    let key = read_key(&a.key_file)?;
    let options = SealOptions {
        chunk_size: parse_chunk_size(&a.chunk_size)?,
    };
    refuse_existing(&a.out, a.force)?;
    let input = open_input(&a.input)?;
    let r = if is_dash(&a.out) {
        seal::seal_stream(&key, input, stdout_file()?, options)
    } else {
        seal::seal_to_path(&key, input, &a.out, options, a.force)
    };
    r.map(|_| ()).map_err(|e| seal_failure(e, &a.input, &a.out))
}

fn cmd_unseal(a: UnsealArgs) -> Result<(), Failure> {
    let key = read_key(&a.key_file)?;
    refuse_existing(&a.out, a.force)?;
    let input = open_input(&a.input)?;
    let r = if is_dash(&a.out) {
        seal::unseal_stream(&key, input, stdout_file()?)
    } else {
        seal::unseal_to_path(&key, input, &a.out, a.force)
    };
    r.map(|_| ()).map_err(|e| seal_failure(e, &a.input, &a.out))
}

fn cmd_inspect(file: &Path, json: bool) -> Result<(), Failure> {
    let mut input = open_input(file)?;
    let (header, prefix) = seal::read_header(&mut input).map_err(|e| {
        let msg = format!("{}: {e}", name(file, "stdin"));
        if e.is_refusal() {
            Failure::Refused(msg)
        } else {
            Failure::Error(msg)
        }
    })?;
    let text = if json {
        serde_json::json!({
            "format": "cvm-sealed",
            "version": header.version,
            "algorithm": header.algorithm,
            "chunk_size": header.chunk_size,
            "key_id": header.key_id.to_string(),
            "nonce_prefix": hex::encode(header.nonce_prefix),
            "header_bytes": prefix.len(),
        })
        .to_string()
    } else {
        format!("{header}\nheader bytes: {}", prefix.len())
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| Failure::Error(format!("stdout: {e}")))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Keygen { out } => {
            let key = Key256::generate().map_err(|e| Failure::Error(e.to_string()))?;
            key.write_new_file(&out)
                .map_err(|e| Failure::Error(e.to_string()))?;
            eprintln!("wrote {} (key id {})", out.display(), key.key_id());
            Ok(())
        }
        Command::Seal(a) => cmd_seal(a),
        Command::Unseal(a) => cmd_unseal(a),
        Command::Inspect { file, json } => cmd_inspect(&file, json),
        Command::Ca(CaCommand::Init { out, server_names }) => {
            let paths =
                ca::init_ca(&out, &server_names).map_err(|e| Failure::Error(e.to_string()))?;
            for p in paths.files {
                eprintln!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Bench {
            size,
            chunk_size,
            temp_dir,
            rounds,
        } => {
            let size =
                bench::parse_size(&size).map_err(|e| Failure::Error(format!("--size: {e}")))?;
            let chunk_size = parse_chunk_size(&chunk_size)?;
            let report = bench::run(&bench::BenchOptions {
                size,
                chunk_size,
                temp_dir,
                rounds,
            })
            .map_err(|e| Failure::Error(format!("bench: {e}")))?;
            println!("{report}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(msg)) => {
            eprintln!("cvm-keys: refused: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("cvm-keys: error: {msg}");
            ExitCode::from(2)
        }
    }
}
