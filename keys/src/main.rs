//! The `cvm-keys` binary.

use clap::Parser;

/// cvm-keys: create keys, CAs and certificates; seal and inspect workload data.
#[derive(Parser)]
#[command(name = "cvm-keys", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
