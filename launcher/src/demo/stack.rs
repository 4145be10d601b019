//! The parts of a confidential launch, each one run as a process of the four programs in one
//! working directory: certificates, keys and the simulator (`cvm-keys`, `cvm-attest sim init`), the
//! attestation service (`cvm-attest serve`), reference values (`cvm-launch measure`), registration
//! (`cvm-attest admin`), guests (`cvm-launch run --tee sim`) and the agent (`cvm-agent unlock`).
//! The demo strings them together; the end-to-end tests reorder them.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::process::{Finished, ProcessError, Spawned, run_to_end};
use super::programs::Programs;
use crate::inputs::SnpInputs;
use crate::sim_socket::{self, SimSocket};

/// The guest CPU type of every demo launch (it enters the SNP digest through the VMSA).
pub const CPU_TYPE: &str = "EPYC-v4";
/// How long a service or a guest may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The console line the test guest prints its report on.
const REPORT_PREFIX: &str = "cvm-sim-guest report ";

/// Which evidence the simulated PSP signs for the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvidenceFormat {
    /// SNP attestation reports, appraised against the SNP launch digest.
    Snp,
    /// TDX quotes, appraised against MRTD.
    Tdx,
}

impl EvidenceFormat {
    /// "SNP" or "TDX".
    pub fn name(self) -> &'static str {
        match self {
            Self::Snp => "SNP",
            Self::Tdx => "TDX",
        }
    }
    /// The agent's `--tee` for this format.
    fn agent_tee(self) -> &'static str {
        match self {
            Self::Snp => "sim",
            Self::Tdx => "sim-tdx",
        }
    }
}

/// Why a part failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// A process could not run or did not come up.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A program ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        output: String,
    },
    /// A file of the working directory.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The in-process simulated PSP (no-KVM mode).
    #[error("the simulated PSP without a VM: {0}")]
    NoVm(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// The working directory and the programs that act in it.
#[derive(Debug)]
pub struct Stack {
    programs: Programs,
    dir: PathBuf,
}

/// A running `cvm-attest serve`.
#[derive(Debug)]
pub struct Service {
    process: Spawned,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
}

impl Service {
    /// The service's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the service (its state directory stays).
    pub fn stop(mut self) {
        self.process.stop();
    }
}

/// A guest whose simulated PSP answers on a socket.
#[derive(Debug)]
pub enum Guest {
    /// `cvm-launch run --tee sim --linger`: the test guest ran in a KVM VM and printed `report`.
    Vm {
        /// The launcher process (serving the socket after the guest halted).
        process: Spawned,
        /// The report the guest printed on its serial console.
        report: Vec<u8>,
    },
    /// No KVM: the launch plan's simulated PSP, served from this process.
    NoVm(SimSocket),
}

impl Stack {
    /// The parts in `dir`, done by `programs`.
    pub fn new(programs: Programs, dir: &Path) -> Self {
        Self {
            programs,
            dir: dir.to_owned(),
        }
    }

    /// `dir/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The programs.
    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// Runs a program to completion in the working directory; a non-zero exit is an error.
    pub(super) fn checked(
        &self,
        program: &Path,
        args: &[&str],
        log: &str,
    ) -> Result<Finished, StackError> {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&self.dir);
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = run_to_end(&name, &mut cmd, &self.path(log))?;
        if !done.status.success() {
            return Err(StackError::Failed {
                command: format!("{name} {}", args.join(" ")),
                status: done.status,
                output: done.output,
            });
        }
        Ok(done)
    }

    /// `cvm-keys ca init --out pki`: the CA, the service's certificate for 127.0.0.1 (host processes)
    /// and for 10.0.2.100 (the address Linux guests reach it at), and the admin client certificate.
    pub fn create_pki(&self) -> Result<(), StackError> {
        let keys = self.programs.keys.clone();
        let args = [
            "ca",
            "init",
            "--out",
            "pki",
            "--server-name",
            "127.0.0.1",
            "--server-name",
            crate::image::GUEST_SERVICE_ADDR,
        ];
        self.checked(&keys, &args, "ca-init.log").map(drop)
    }

    /// `cvm-keys keygen --out FILE`.
    pub fn keygen(&self, file: &str) -> Result<(), StackError> {
        let keys = self.programs.keys.clone();
        self.checked(&keys, &["keygen", "--out", file], "keygen.log")
            .map(drop)
    }

    /// `cvm-attest sim init --out sim`: the simulated AMD and Intel roots, keys and collateral;
    /// derived from `seed` (written to `sim-seed`) when given, else from fresh random bytes.
    pub fn create_sim(&self, seed: Option<&[u8]>) -> Result<(), StackError> {
        let attest = self.programs.attest.clone();
        let mut args = vec!["sim", "init", "--out", "sim"];
        if let Some(seed) = seed {
            std::fs::write(self.path("sim-seed"), seed).map_err(io("write sim-seed"))?;
            args.extend(["--seed-file", "sim-seed"]);
        }
        self.checked(&attest, &args, "sim-init.log").map(drop)
    }

    /// `cvm-keys seal --key-file KEY --in INPUT --out OUTPUT`.
    pub fn seal(&self, key: &str, input: &str, output: &str) -> Result<(), StackError> {
        let keys = self.programs.keys.clone();
        let args = ["seal", "--key-file", key, "--in", input, "--out", output];
        self.checked(&keys, &args, "seal.log").map(drop)
    }

    /// Starts `cvm-attest serve` in simulated mode on a free loopback port, with its state in
    /// `state/` (kept across restarts), and waits until it accepts connections.
    pub fn start_service(&self) -> Result<Service, StackError> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(io("find a free loopback port"))?
            .port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nmode = \"simulated\"\nsim_dir = \"sim\"\n\
             [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nadmin_client_ca = \"pki/ca.pem\"\n\
             [store]\ndir = \"state\"\nkek_file = \"kek\"\n"
        );
        std::fs::write(self.path("serve.toml"), config).map_err(io("write serve.toml"))?;
        let mut cmd = Command::new(&self.programs.attest);
        cmd.args(["serve", "--config", "serve.toml"])
            .current_dir(&self.dir);
        let mut process = Spawned::start("cvm-attest serve", &mut cmd, &self.path("serve.log"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        process.wait_until("listening socket", READY_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })?;
        Ok(Service {
            process,
            url: format!("https://127.0.0.1:{port}"),
            port,
        })
    }

    /// `cvm-launch measure` for `image`: the policy fragment (`[snp] measurements` or `[tdx] mrtd`).
    pub fn measure(&self, image: &str, format: EvidenceFormat) -> Result<String, StackError> {
        let launch = self.programs.launch.clone();
        let done = match format {
            EvidenceFormat::Snp => self.checked(
                &launch,
                &[
                    "measure",
                    "--tee",
                    "snp",
                    "--firmware",
                    image,
                    "--vcpus",
                    "1",
                    "--cpu-type",
                    CPU_TYPE,
                ],
                "measure.log",
            )?,
            EvidenceFormat::Tdx => self.checked(
                &launch,
                &["measure", "--tee", "tdx", "--firmware", image],
                "measure.log",
            )?,
        };
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
    }

    /// `cvm-attest admin … secret put NAME --value-file VALUE --policy POLICY`.
    pub fn register(
        &self,
        service: &Service,
        name: &str,
        value: &str,
        policy: &str,
    ) -> Result<(), StackError> {
        let args = [
            "secret",
            "put",
            name,
            "--value-file",
            value,
            "--policy",
            policy,
        ];
        self.admin(service, &args).map(drop)
    }

    /// Writes `policy` (TOML) to `policy.toml` and registers the secret `name` from the file `value` with
    /// it (as [`Stack::register`]).
    pub fn register_with_policy(
        &self,
        service: &Service,
        name: &str,
        value: &str,
        policy: &str,
    ) -> Result<(), StackError> {
        std::fs::write(self.path("policy.toml"), policy).map_err(|source| StackError::Io {
            what: "write policy.toml".into(),
            source,
        })?;
        self.register(service, name, value, "policy.toml")
    }

    /// `cvm-attest admin … audit`: the audit log's JSON lines.
    pub fn audit(&self, service: &Service) -> Result<String, StackError> {
        let done = self.admin(service, &["audit"])?;
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
    }

    /// `cvm-attest admin` with the admin certificate against `service`, then `args`.
    fn admin(&self, service: &Service, args: &[&str]) -> Result<Finished, StackError> {
        let attest = self.programs.attest.clone();
        let mut all = vec![
            "admin",
            "--server",
            &service.url,
            "--ca",
            "pki/ca.pem",
            "--cert",
            "pki/admin.pem",
            "--key",
            "pki/admin.key",
        ];
        all.extend_from_slice(args);
        self.checked(&attest, &all, "admin.log")
    }

    /// Boots `image` with `cvm-launch run --tee sim --linger` and its PSP socket at `socket`;
    /// returns once the guest printed its report and the socket answers.
    pub fn launch(&self, image: &str, socket: &str) -> Result<Guest, StackError> {
        let log = self.path(&format!("{socket}.console.log"));
        let mut cmd = Command::new(&self.programs.launch);
        cmd.args([
            "run",
            "--tee",
            "sim",
            "--firmware",
            image,
            "--cpu-type",
            CPU_TYPE,
            "--sim-dir",
            "sim",
            "--sim-socket",
            socket,
            "--linger",
        ])
        .current_dir(&self.dir);
        let mut process = Spawned::start("cvm-launch run", &mut cmd, &log)?;
        let sock = self.path(socket);
        let mut report = None;
        process.wait_until("guest report and PSP socket", READY_TIMEOUT, || {
            if report.is_none() {
                report = console_report(&log);
            }
            report.is_some() && UnixStream::connect(&sock).is_ok()
        })?;
        Ok(Guest::Vm {
            process,
            report: report.unwrap_or_default(),
        })
    }

    /// Without KVM: computes `image`'s launch plan and serves its simulated PSP at `socket` from
    /// this process (no guest code runs).
    pub fn launch_without_vm(&self, image: &str, socket: &str) -> Result<Guest, StackError> {
        let inputs = SnpInputs {
            firmware: self.path(image),
            vcpus: 1,
            cpu_type: CPU_TYPE.into(),
            vmm_type: None,
            guest_features: None,
            kernel: None,
            initrd: None,
            append: None,
        };
        let no_vm = |e: &dyn std::fmt::Display| StackError::NoVm(e.to_string());
        let plan = inputs.plan().map_err(|e| no_vm(&e))?;
        let psp = crate::run::plan_psp(plan, &self.path("sim"), [0; 32]).map_err(|e| no_vm(&e))?;
        let sock =
            sim_socket::serve(&self.path(socket), Arc::new(psp.signer)).map_err(|e| no_vm(&e))?;
        Ok(Guest::NoVm(sock))
    }

    /// `cvm-agent unlock --tee sim|sim-tdx` against `service` for `resource`, unsealing
    /// `sealed` to `out`. A refusal is not an error here: the caller reads the exit status.
    pub fn unlock(
        &self,
        service: &Service,
        resource: &str,
        socket: &str,
        format: EvidenceFormat,
        sealed: &str,
        out: &str,
    ) -> Result<Finished, StackError> {
        let mut cmd = Command::new(&self.programs.agent);
        cmd.args([
            "unlock",
            "--server",
            &service.url,
            "--ca",
            "pki/ca.pem",
            "--resource",
            resource,
            "--tee",
            format.agent_tee(),
            "--sim-socket",
            socket,
            "--sealed",
            sealed,
            "--out",
            out,
            "--attempts",
            "3",
            "--backoff-ms",
            "100",
        ])
        .current_dir(&self.dir);
        Ok(run_to_end(
            "cvm-agent",
            &mut cmd,
            &self.path(&format!("agent-{resource}-{out}.log")),
        )?)
    }
}

/// The report on the console log, once the guest printed the whole line.
fn console_report(log: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.split_inclusive('\n').find_map(|l| {
        l.strip_prefix(REPORT_PREFIX)
            .and_then(|rest| rest.strip_suffix('\n'))
    })?;
    hex::decode(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_read_only_from_a_complete_console_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        std::fs::write(&log, "boot\ncvm-sim-guest report 0a0b").unwrap();
        assert_eq!(console_report(&log), None);
        std::fs::write(&log, "boot\ncvm-sim-guest report 0a0b\n").unwrap();
        assert_eq!(console_report(&log), Some(vec![10, 11]));
    }
}
