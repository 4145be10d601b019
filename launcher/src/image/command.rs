//! `cvm-launch image`: its arguments, the defaults found on this host, and what it prints (the image's
//! SHA-256 on stderr; with `--kernel`, the reference value to register on stdout).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::init::{Mount, Network};
use super::{AgentSpec, ImageError, ImageSpec, Unlock};
use crate::demo::stack::EvidenceFormat;
use crate::measure::{Format, render_snp, render_tdx, snp_digest};
use crate::run::linux_inputs;

/// The arguments of `cvm-launch image`.
#[derive(Clone, Debug, clap::Args)]
pub struct ImageArgs {
    /// Where to write the image (gzipped newc cpio); never overwritten unless --force.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// The attestation service as the guest reaches it [default: https://10.0.2.100:443, which
    /// `cvm-launch run --vmm qemu --attest-forward PORT` forwards to 127.0.0.1:PORT].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The service's CA certificate (PEM); copied into the image as the agent's only trust anchor.
    #[arg(long, value_name = "CA.pem", required_unless_present = "no_agent")]
    pub ca: Option<PathBuf>,
    /// The secret's name on the service.
    #[arg(long, value_name = "NAME", required_unless_present = "no_agent")]
    pub resource: Option<String>,
    /// The agent's evidence provider in the guest (auto, snp, tdx, sim, sim-tdx).
    #[arg(long, value_name = "TEE", default_value = "auto")]
    pub tee: String,
    /// Open this LUKS2 device with the released key as /dev/mapper/NAME, and mount it on DIR if given:
    /// DEVICE:NAME[:DIR] (e.g. /dev/vda:data:/mnt/data).
    #[arg(long, value_name = "DEVICE:NAME[:DIR]", conflicts_with = "unseal")]
    pub luks: Option<String>,
    /// Unseal this sealed file with the released key to OUT: IN:OUT (IN usually on a --mount'ed disk).
    #[arg(long, value_name = "IN:OUT")]
    pub unseal: Option<String>,
    /// Mount a plain filesystem read-only before the agent runs: DEVICE:DIR (repeatable).
    #[arg(long = "mount", value_name = "DEVICE:DIR")]
    pub mounts: Vec<String>,
    /// Add a file: SRC on this host, DEST in the image (repeatable). ELF programs also bring their shared
    /// libraries (and lose their debug sections unless --no-strip).
    #[arg(long = "add", value_name = "SRC:DEST")]
    pub adds: Vec<String>,
    /// The kernel's modules directory (lib/modules/<version>, with modules.dep), whose virtio, dm-crypt
    /// and cipher modules the guest loads; without it the kernel must have them built in.
    #[arg(long, value_name = "DIR")]
    pub kernel_modules: Option<PathBuf>,
    /// Another kernel module to load (repeatable; its dependencies come along).
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// The cvm-agent program [default: the one beside this program].
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// A static busybox for the init and the workload's tools [default: busybox on PATH, /bin/busybox].
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,
    /// The cryptsetup program, with --luks [default: cryptsetup on PATH, /usr/sbin, /sbin].
    #[arg(long, value_name = "PATH")]
    pub cryptsetup: Option<PathBuf>,
    /// The guest's static address on the first network interface.
    #[arg(long, value_name = "CIDR", default_value = super::DEFAULT_ADDRESS)]
    pub address: String,
    /// The guest's default gateway.
    #[arg(long, value_name = "IP", default_value = super::DEFAULT_GATEWAY)]
    pub gateway: String,
    /// No network configuration (the guest has no network device; an agent then cannot reach a service).
    #[arg(long, conflicts_with_all = ["address", "gateway"])]
    pub no_network: bool,
    /// No agent: the init runs the workload directly (a guest without attestation, e.g. a baseline).
    #[arg(long, conflicts_with_all = ["luks", "unseal"])]
    pub no_agent: bool,
    /// Keep the debug sections of the ELF programs.
    #[arg(long)]
    pub no_strip: bool,
    /// Print the reference value of a `run --vmm qemu --tee sim` boot of this kernel with the image.
    #[arg(long, value_name = "bzImage")]
    pub kernel: Option<PathBuf>,
    /// With --kernel: the kernel command line the guest will be run with [default: run's].
    #[arg(long, requires = "kernel")]
    pub append: Option<String>,
    /// With --kernel: the guest RAM in MiB the guest will be run with [default: run's, 512].
    #[arg(long, requires = "kernel")]
    pub memory: Option<u32>,
    /// The workload: `-- PROGRAM ARGS...` (run by the agent once it unlocked).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The first of `names` found as an executable file in `PATH` or `extra` directories.
pub fn find_program(names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .collect();
    names
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()))
}

/// `A:B` split at its first `:`, both non-empty.
fn pair<'a>(flag: &str, value: &'a str, shape: &str) -> Result<(&'a str, &'a str), ImageError> {
    match value.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => Err(ImageError::Usage(format!(
            "{flag} {value:?}: expected {shape}"
        ))),
    }
}

impl ImageArgs {
    /// The image's contents, with this host's defaults for what was not given.
    pub fn spec(&self) -> Result<ImageSpec, ImageError> {
        let unlock = match (&self.luks, &self.unseal) {
            (Some(l), _) => {
                let (device, rest) = pair("--luks", l, "DEVICE:NAME[:DIR]")?;
                let (name, mount) = match rest.split_once(':') {
                    Some((n, d)) => (n, Some(d.to_owned())),
                    None => (rest, None),
                };
                Unlock::Luks {
                    device: device.into(),
                    name: name.into(),
                    mount,
                }
            }
            (None, Some(u)) => {
                let (input, output) = pair("--unseal", u, "IN:OUT")?;
                Unlock::Unseal {
                    input: input.into(),
                    output: output.into(),
                }
            }
            (None, None) => Unlock::Nothing,
        };
        let agent = if self.no_agent {
            None
        } else {
            let program = match &self.agent {
                Some(p) => p.clone(),
                None => crate::demo::programs::Programs::dir_of_current_exe()
                    .map(|d| d.join("cvm-agent"))
                    .map_err(|e| ImageError::Usage(e.to_string()))?,
            };
            if !program.is_file() {
                return Err(ImageError::Usage(format!(
                    "no cvm-agent at {}: build it (`cargo build --release -p cvm-agent`) or give --agent PATH",
                    program.display()
                )));
            }
            let cryptsetup = match (&unlock, &self.cryptsetup) {
                (_, Some(c)) => Some(c.clone()),
                (Unlock::Luks { .. }, None) => {
                    find_program(&["cryptsetup"], &["/usr/sbin", "/sbin"])
                }
                _ => None,
            };
            Some(AgentSpec {
                program,
                server: self
                    .server
                    .clone()
                    .unwrap_or_else(|| super::DEFAULT_SERVER.into()),
                ca: self.ca.clone().unwrap_or_default(),
                resource: self.resource.clone().unwrap_or_default(),
                tee: self.tee.clone(),
                unlock,
                cryptsetup,
            })
        };
        let busybox = match &self.busybox {
            Some(b) => b.clone(),
            None => find_program(&["busybox"], &["/bin", "/usr/bin"]).ok_or_else(|| {
                ImageError::Usage(
                    "no busybox found: install Debian's busybox-static or give --busybox PATH"
                        .into(),
                )
            })?,
        };
        let mounts = self
            .mounts
            .iter()
            .map(|m| {
                pair("--mount", m, "DEVICE:DIR").map(|(device, dir)| Mount {
                    device: device.into(),
                    dir: dir.into(),
                })
            })
            .collect::<Result<_, _>>()?;
        let adds = self
            .adds
            .iter()
            .map(|a| pair("--add", a, "SRC:DEST").map(|(s, d)| (PathBuf::from(s), d.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(ImageSpec {
            agent,
            busybox,
            kernel_modules: self.kernel_modules.clone(),
            extra_modules: self.modules.clone(),
            mounts,
            adds,
            network: (!self.no_network).then(|| Network {
                interface: "eth0".into(),
                address: self.address.clone(),
                gateway: self.gateway.clone(),
            }),
            command: self.command.clone(),
            strip: !self.no_strip,
            library_dirs: Vec::new(),
        })
    }
}

/// Runs `cvm-launch image`: exit 0 written, 2 unusable inputs or I/O errors.
pub fn command(args: &ImageArgs) -> ExitCode {
    match write_image(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvm-launch image: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_image(args: &ImageArgs) -> Result<(), ImageError> {
    if args.out.exists() && !args.force {
        return Err(ImageError::Usage(format!(
            "{} exists: give --force to replace it",
            args.out.display()
        )));
    }
    let spec = args.spec()?;
    if spec.kernel_modules.is_none() {
        eprintln!(
            "cvm-launch image: no --kernel-modules: the guest kernel must have virtio-pci, virtio-net, \
             virtio-console, virtio-blk{} built in",
            if args.luks.is_some() {
                ", dm-crypt, xts, ecb and algif_skcipher"
            } else {
                ""
            }
        );
    }
    let image = super::build(&spec)?;
    write_atomically(&args.out, &image.bytes)?;
    eprintln!(
        "cvm-launch image: wrote {} ({} bytes, {} files, {} kernel modules), sha256 {}",
        args.out.display(),
        image.bytes.len(),
        image.tree.paths().count(),
        image.modules.len(),
        image.sha256_hex()
    );
    if let Some(kernel) = &args.kernel {
        let inputs = linux_inputs(
            kernel.clone(),
            Some(args.out.clone()),
            args.append.clone(),
            args.memory,
            None,
            None,
            None,
        );
        let plan = inputs
            .plan()
            .map_err(|e| ImageError::Usage(format!("the reference value: {e}")))?;
        let format = if args.tee == "sim-tdx" {
            EvidenceFormat::Tdx
        } else {
            EvidenceFormat::Snp
        };
        eprintln!(
            "cvm-launch image: the reference value of `cvm-launch run --vmm qemu --tee sim --kernel {} --initrd {}{}{}` \
             ({} evidence), to register as the secret's policy:",
            kernel.display(),
            args.out.display(),
            args.append
                .as_deref()
                .map(|a| format!(" --append {a:?}"))
                .unwrap_or_default(),
            args.memory
                .map(|m| format!(" --memory {m}"))
                .unwrap_or_default(),
            format.name()
        );
        match format {
            EvidenceFormat::Snp => {
                print!("{}", render_snp(&plan, &snp_digest(&plan), Format::Toml))
            }
            EvidenceFormat::Tdx => {
                if let Some(m) = crate::sim_psp::direct_boot_mrtd(&plan) {
                    print!("{}", render_tdx(&m, Format::Toml));
                }
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it and renames it into place (mode 0644: an
/// image holds no secret).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |source| ImageError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
