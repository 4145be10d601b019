//! Shared helpers for the simulator tests: one sim directory per test binary, made from a fixed seed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use cvm_attest::sim::{self, InitOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The seed of the shared sim directory.
pub const SEED: &[u8] = b"cvm simulator test seed, 32 byte";

/// The shared sim directory, created once per test binary in a temporary directory.
pub fn sim_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sim = dir.path().join("sim");
        sim::init(
            &sim,
            &InitOptions {
                seed: Some(SEED.to_vec()),
                ..Default::default()
            },
        )
        .unwrap();
        (dir, sim)
    })
    .1
}

/// The `cvm-attest` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
}

/// Run `cvm-attest` with `args`: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path inside the shared sim directory, as a string.
pub fn p(rel: &str) -> String {
    sim_dir().join(rel).to_str().unwrap().to_owned()
}

/// A fresh temporary file path.
pub fn temp_file(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .join(name)
}
