//! The `cvm-attest` binary.

use clap::Parser;

/// cvm-attest: verify attestation evidence and serve secrets to guests that prove what they run.
#[derive(Parser)]
#[command(name = "cvm-attest", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
