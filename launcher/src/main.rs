//! The `cvm-launch` binary.

use clap::Parser;

/// cvm-launch: starts KVM guests with encrypted memory (SEV-SNP, TDX, simulated) and computes launch measurements.
///
/// Not implemented yet: this program only prints its help.
#[derive(Parser)]
#[command(name = "cvm-launch", version)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    eprintln!("{}", cvm_launch::NOT_YET);
    std::process::ExitCode::from(2)
}
