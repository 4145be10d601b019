//! The `cvm-agent` binary.

use clap::Parser;

/// cvm-agent: runs inside the guest.
///
/// Not implemented yet: this program only prints its help.
#[derive(Parser)]
#[command(name = "cvm-agent", version)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    eprintln!("{}", cvm_agent::NOT_YET);
    std::process::ExitCode::from(2)
}
