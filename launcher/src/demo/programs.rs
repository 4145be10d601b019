//! The four cvm programs as files: the demo and the end-to-end tests run them as separate
//! processes, found in one build directory (`target/release`, `target/debug`), and built with cargo
//! first when that directory lacks some of them (a fresh clone where only `cvm-launch` was built).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Why the programs could not be found or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramsError {
    /// The running executable's path is unknown.
    #[error("cannot find the running executable: {0}")]
    CurrentExe(std::io::Error),
    /// Some programs are missing and there is no checkout to build them from.
    #[error(
        "{missing} not found in {dir}: build the workspace first (`cargo build --release` in the cvm checkout)"
    )]
    Missing {
        /// The missing programs, comma separated.
        missing: String,
        /// Where they were looked for.
        dir: PathBuf,
    },
    /// Cargo could not be started or failed.
    #[error("`{command}` failed: {message}")]
    Build {
        /// The command line.
        command: String,
        /// What went wrong.
        message: String,
    },
}

/// Paths of the four programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programs {
    /// `cvm-keys`.
    pub keys: PathBuf,
    /// `cvm-attest`.
    pub attest: PathBuf,
    /// `cvm-agent`.
    pub agent: PathBuf,
    /// `cvm-launch`.
    pub launch: PathBuf,
}

/// How a [`Programs::find`] went.
#[derive(Clone, Debug)]
pub struct Found {
    /// The programs.
    pub programs: Programs,
    /// How long building the missing ones took (`None`: nothing was built).
    pub built_in: Option<Duration>,
}

impl Programs {
    /// The programs in build directory `dir`, whether or not they exist.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            keys: dir.join("cvm-keys"),
            attest: dir.join("cvm-attest"),
            agent: dir.join("cvm-agent"),
            launch: dir.join("cvm-launch"),
        }
    }

    /// The build directory of the running executable: its own directory, or the parent of a
    /// `deps/` directory (where cargo puts test executables).
    pub fn dir_of_current_exe() -> Result<PathBuf, ProgramsError> {
        let exe = std::env::current_exe().map_err(ProgramsError::CurrentExe)?;
        let dir = exe.parent().unwrap_or(Path::new(".")).to_owned();
        Ok(match dir.file_name() {
            Some(n) if n == "deps" => dir.parent().unwrap_or(&dir).to_owned(),
            _ => dir,
        })
    }

    /// The programs in `dir`; missing ones are built with cargo from the checkout this crate was
    /// compiled in (`progress` is told before a build starts), or reported.
    pub fn find(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Found, ProgramsError> {
        let programs = Self::in_dir(dir);
        let missing = programs.missing();
        if missing.is_empty() {
            return Ok(Found {
                programs,
                built_in: None,
            });
        }
        Self::build(dir, &missing.join(", "), progress)
    }

    /// Builds the workspace's programs into `dir` with cargo (a no-op when they are up to date),
    /// from the checkout this crate was compiled in.
    pub fn build(
        dir: &Path,
        what: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Found, ProgramsError> {
        let programs = Self::in_dir(dir);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        if !manifest.is_file() {
            return Err(ProgramsError::Missing {
                missing: programs.missing().join(", "),
                dir: dir.to_owned(),
            });
        }
        let start = Instant::now();
        let mut cargo = build_command(dir, &manifest);
        let command = std::iter::once(cargo.get_program())
            .chain(cargo.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        progress(&format!("building {what}: {command}"));
        let status = cargo.status().map_err(|e| ProgramsError::Build {
            command: command.clone(),
            message: e.to_string(),
        })?;
        if !status.success() {
            return Err(ProgramsError::Build {
                command,
                message: format!("cargo exited with {status}"),
            });
        }
        let still = programs.missing();
        if !still.is_empty() {
            return Err(ProgramsError::Missing {
                missing: still.join(", "),
                dir: dir.to_owned(),
            });
        }
        Ok(Found {
            programs,
            built_in: Some(start.elapsed()),
        })
    }

    /// The names of the programs that do not exist.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (&self.keys, "cvm-keys"),
            (&self.attest, "cvm-attest"),
            (&self.agent, "cvm-agent"),
            (&self.launch, "cvm-launch"),
        ]
        .into_iter()
        .filter(|(p, _)| !p.is_file())
        .map(|(_, n)| n)
        .collect()
    }
}

/// `cargo build --bins` for the workspace, into the target directory `dir` belongs to, with the
/// profile its name says (`release`, `debug`, or a custom profile).
fn build_command(dir: &Path, manifest: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.arg("build")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(manifest);
    // What `cargo run`/`cargo test` set for the running program describes that program, not the
    // build: passed on, it changes build-script inputs (ring reruns when CARGO_MANIFEST_DIR
    // changes), and the outer and inner builds would keep rebuilding each other's dependencies.
    for (name, _) in std::env::vars_os() {
        if is_program_env(&name.to_string_lossy()) {
            c.env_remove(&name);
        }
    }
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            c.arg("--release");
        }
        Some(profile) => {
            c.arg("--profile").arg(profile);
        }
        None => {}
    }
    if let Some(target) = dir.parent() {
        c.arg("--target-dir").arg(target);
    }
    c
}

/// Whether `name` is one of the variables cargo sets for the program it runs.
fn is_program_env(name: &str) -> bool {
    const EXACT: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_command_matches_the_directory_it_fills() {
        let m = Path::new("/src/Cargo.toml");
        let args = |d: &str| {
            build_command(Path::new(d), m)
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            args("/t/release"),
            "build --bins --manifest-path /src/Cargo.toml --release --target-dir /t"
        );
        assert_eq!(
            args("/t/debug"),
            "build --bins --manifest-path /src/Cargo.toml --target-dir /t"
        );
        assert_eq!(
            args("/t/bench"),
            "build --bins --manifest-path /src/Cargo.toml --profile bench --target-dir /t"
        );
    }

    #[test]
    fn only_the_running_programs_variables_are_dropped() {
        assert!(is_program_env("CARGO_MANIFEST_DIR"));
        assert!(is_program_env("CARGO_PKG_VERSION"));
        assert!(is_program_env("CARGO_BIN_EXE_cvm-launch"));
        assert!(!is_program_env("CARGO_HOME"));
        assert!(!is_program_env("CARGO_TARGET_DIR"));
        assert!(!is_program_env("CARGO"));
    }

    #[test]
    fn lists_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = Programs::in_dir(dir.path());
        assert_eq!(p.missing().len(), 4);
        std::fs::write(&p.agent, b"").unwrap();
        assert_eq!(p.missing(), ["cvm-keys", "cvm-attest", "cvm-launch"]);
    }
}
