//! `cvm-launch image`: a guest initramfs (gzipped newc cpio) built reproducibly, so that its measurement
//! is stable: `cvm-agent` and the shared libraries it needs, busybox for the init and the workload's shell
//! tools, `cryptsetup` and its libraries when a LUKS2 volume is to be opened, the kernel modules the guest
//! needs (resolved through the kernel's `modules.dep`), the agent's configuration with the service's CA,
//! the workload's files, and `/init` ([`init`]).
//!
//! Everything the guest trusts (the CA, the service's address, the resource, the workload) is inside the
//! image, so inside its measurement: nothing the host could swap unmeasured.
//!
//! - [`command`]: the command's arguments and output.
//! - [`cpio`]: the file tree and its reproducible archive.
//! - [`elf`]: shared-library closure of the programs; debug sections stripped.
//! - [`modules`]: kernel modules and their dependencies.
//! - [`init`]: the `/init` script.

pub mod command;
pub mod cpio;
pub mod elf;
pub mod init;
pub mod modules;

use std::path::{Path, PathBuf};

use cpio::{Node, Tree};
use init::{InitPlan, Mount, Network};
use modules::ModuleTree;
use serde::Serialize;

/// The service's address inside the guest: QEMU user-mode networking forwards it to the host loopback
/// port given to `cvm-launch run --attest-forward`.
pub const GUEST_SERVICE_ADDR: &str = "10.0.2.100";
/// The service's port inside the guest.
pub const GUEST_SERVICE_PORT: u16 = 443;
/// The agent's default `--server`: the forwarded address.
pub const DEFAULT_SERVER: &str = "https://10.0.2.100:443";
/// The guest's address on QEMU user-mode networking.
pub const DEFAULT_ADDRESS: &str = "10.0.2.15/24";
/// QEMU user-mode networking's gateway.
pub const DEFAULT_GATEWAY: &str = "10.0.2.2";
/// Where the CA certificate goes in the image.
pub const GUEST_CA: &str = "/etc/cvm/ca.pem";
/// Where `cryptsetup` goes in the image.
pub const GUEST_CRYPTSETUP: &str = "/usr/sbin/cryptsetup";
/// Where busybox goes in the image (every applet links to it).
pub const GUEST_BUSYBOX: &str = "/bin/busybox";
/// The modules every guest of `run --vmm qemu` needs: virtio PCI, its network, console and disks.
pub const BASE_MODULES: &[&str] = &["virtio_pci", "virtio_net", "virtio_console", "virtio_blk"];
/// The modules `cryptsetup open` needs for LUKS2 with the default cipher (aes-xts-plain64): dm-crypt, the
/// XTS and ECB templates, and the kernel crypto API's user interface for the keyslots.
pub const LUKS_MODULES: &[&str] = &["dm_crypt", "xts", "ecb", "algif_skcipher"];
/// Modules loaded for LUKS2 where the kernel has them and the CPU can use them: AES-NI (the kernel's
/// generic AES serves otherwise, slower).
pub const OPTIONAL_LUKS_MODULES: &[&str] = &["aesni_intel"];

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// An input file.
    #[error("read {what} {path}: {source}")]
    Read {
        /// Which input.
        what: String,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The image could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The image's path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A program or its libraries.
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    /// A program could not be stripped.
    #[error("cannot strip the debug sections of {path}: {message} (use --no-strip)")]
    Strip {
        /// The program.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The kernel modules.
    #[error(transparent)]
    Modules(#[from] modules::ModuleError),
    /// Two inputs for one path.
    #[error(transparent)]
    Conflict(#[from] cpio::Conflict),
    /// The busybox applet list.
    #[error("cannot list the applets of {path}: {message}")]
    Busybox {
        /// The busybox binary.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The agent's configuration.
    #[error("cannot write the agent's configuration: {0}")]
    Config(String),
    /// An unusable option.
    #[error("{0}")]
    Usage(String),
}

/// What the agent does with the released secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unlock {
    /// Only attest (the workload gets nothing).
    Nothing,
    /// Open a LUKS2 device as `/dev/mapper/NAME`, optionally mounting it.
    Luks {
        /// The device in the guest, `/dev/vda`.
        device: String,
        /// The mapping's name.
        name: String,
        /// Where to mount the opened volume.
        mount: Option<String>,
    },
    /// Unseal a sealed file (the secret is its key) to a path in the guest.
    Unseal {
        /// The sealed file in the guest (on a disk mounted with [`ImageSpec::mounts`]).
        input: String,
        /// Where the plaintext goes.
        output: String,
    },
}

/// The agent's part of the image.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// The `cvm-agent` program on this host.
    pub program: PathBuf,
    /// The service URL as the guest reaches it.
    pub server: String,
    /// The service's CA certificate (PEM) on this host.
    pub ca: PathBuf,
    /// The secret's name.
    pub resource: String,
    /// The agent's `--tee`.
    pub tee: String,
    /// What to unlock.
    pub unlock: Unlock,
    /// The `cryptsetup` program on this host (needed for [`Unlock::Luks`]).
    pub cryptsetup: Option<PathBuf>,
}

/// Everything that goes into an image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The agent (`None`: a guest that runs its workload without attesting).
    pub agent: Option<AgentSpec>,
    /// The busybox program (static, e.g. Debian's `busybox-static`).
    pub busybox: PathBuf,
    /// The kernel's `lib/modules/<version>` directory (`None`: the kernel has what it needs built in).
    pub kernel_modules: Option<PathBuf>,
    /// Modules to load besides [`BASE_MODULES`] (and [`LUKS_MODULES`] for LUKS).
    pub extra_modules: Vec<String>,
    /// Plain filesystems mounted read-only before the agent runs.
    pub mounts: Vec<Mount>,
    /// Files to add: host path → image path.
    pub adds: Vec<(PathBuf, String)>,
    /// The guest network (`None`: none, and no service to reach).
    pub network: Option<Network>,
    /// The workload: program and arguments.
    pub command: Vec<String>,
    /// Strip debug sections from the ELF programs added (the agent, cryptsetup, `--add`ed ones).
    pub strip: bool,
    /// Library directories searched before [`elf::LIBRARY_DIRS`].
    pub library_dirs: Vec<PathBuf>,
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    /// The file tree.
    pub tree: Tree,
    /// The gzipped archive.
    pub bytes: Vec<u8>,
    /// The module files loaded at boot, in order (optional ones last).
    pub modules: Vec<String>,
}

impl Image {
    /// SHA-256 of [`Image::bytes`], lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.bytes))
    }
}

/// The agent's configuration file, with the keys of `cvm-agent --config`.
#[derive(Serialize)]
struct AgentConfigFile<'a> {
    server: &'a str,
    ca: &'a str,
    resource: &'a str,
    tee: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    luks: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mount: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cryptsetup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<&'a str>,
    command: &'a [String],
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        what: what.into(),
        path: path.to_owned(),
        source,
    })
}

/// Builds the image of `spec`.
pub fn build(spec: &ImageSpec) -> Result<Image, ImageError> {
    if spec.command.is_empty() {
        return Err(ImageError::Usage(
            "the image needs a workload: `cvm-launch image ... -- PROGRAM ARGS...`".into(),
        ));
    }
    let mut tree = Tree::default();
    let mut programs: Vec<(PathBuf, String)> = Vec::new();
    add_busybox(&mut tree, &spec.busybox)?;
    let mut wanted: Vec<String> = BASE_MODULES.iter().map(|m| (*m).to_owned()).collect();
    let mut optional: Vec<String> = Vec::new();
    let mut wait_for = Vec::new();
    if let Some(agent) = &spec.agent {
        programs.push((agent.program.clone(), init::AGENT.to_owned()));
        let ca = read("CA certificate", &agent.ca)?;
        tree.insert(
            GUEST_CA,
            Node::File {
                data: ca,
                executable: false,
            },
        )?;
        if let Unlock::Luks { device, .. } = &agent.unlock {
            let cryptsetup = agent.cryptsetup.clone().ok_or_else(|| {
                ImageError::Usage(
                    "opening a LUKS2 volume needs cryptsetup in the image: install cryptsetup-bin or give --cryptsetup PATH"
                        .into(),
                )
            })?;
            programs.push((cryptsetup, GUEST_CRYPTSETUP.to_owned()));
            wanted.extend(LUKS_MODULES.iter().map(|m| (*m).to_owned()));
            optional.extend(OPTIONAL_LUKS_MODULES.iter().map(|m| (*m).to_owned()));
            wait_for.push(device.clone());
        }
        let config = agent_config(agent, &spec.command)?;
        tree.insert(
            init::AGENT_CONFIG,
            Node::File {
                data: config.into_bytes(),
                executable: false,
            },
        )?;
    }
    for (host, guest) in &spec.adds {
        if elf::is_elf(host) {
            programs.push((host.clone(), guest.clone()));
        } else {
            let data = read("--add file", host)?;
            let executable = std::fs::metadata(host)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                .unwrap_or(false);
            tree.insert(guest, Node::File { data, executable })?;
        }
    }
    add_programs(&mut tree, &programs, spec)?;
    wanted.extend(spec.extra_modules.iter().cloned());
    let (modules, optional_modules) = match &spec.kernel_modules {
        Some(dir) => add_modules(&mut tree, dir, &wanted, &optional)?,
        None => (Vec::new(), Vec::new()),
    };
    wait_for.extend(spec.mounts.iter().map(|m| m.device.clone()));
    let plan = InitPlan {
        modules: modules.clone(),
        optional_modules: optional_modules.clone(),
        network: spec.network.clone(),
        wait_for,
        mounts: spec.mounts.clone(),
        direct_command: spec.agent.is_none().then(|| spec.command.clone()),
    };
    tree.insert(
        "init",
        Node::File {
            data: init::script(&plan).into_bytes(),
            executable: true,
        },
    )?;
    for dir in ["proc", "sys", "dev", "run", "tmp", "mnt"] {
        tree.insert(dir, Node::Dir)?;
    }
    let bytes = tree.to_gzip();
    Ok(Image {
        tree,
        bytes,
        modules: modules.into_iter().chain(optional_modules).collect(),
    })
}

/// The agent's TOML configuration.
fn agent_config(agent: &AgentSpec, command: &[String]) -> Result<String, ImageError> {
    let (mut luks, mut name, mut mount, mut cryptsetup, mut sealed, mut out) =
        (None, None, None, None, None, None);
    match &agent.unlock {
        Unlock::Nothing => {}
        Unlock::Luks {
            device,
            name: n,
            mount: m,
        } => {
            luks = Some(device.as_str());
            name = Some(n.as_str());
            mount = m.as_deref();
            cryptsetup = Some(GUEST_CRYPTSETUP);
        }
        Unlock::Unseal { input, output } => {
            sealed = Some(input.as_str());
            out = Some(output.as_str());
        }
    }
    let file = AgentConfigFile {
        server: &agent.server,
        ca: GUEST_CA,
        resource: &agent.resource,
        tee: &agent.tee,
        luks,
        name,
        mount,
        cryptsetup,
        sealed,
        out,
        command,
    };
    let body = toml::to_string(&file).map_err(|e| ImageError::Config(e.to_string()))?;
    Ok(format!(
        "# cvm-agent's configuration, written by `cvm-launch image`; measured with the rest of the initrd.\n{body}"
    ))
}

/// Busybox at [`GUEST_BUSYBOX`] and a link to it for each of its applets (`busybox --list-full`).
fn add_busybox(tree: &mut Tree, busybox: &Path) -> Result<(), ImageError> {
    let data = read("busybox", busybox)?;
    let needs = elf::needs(&data).unwrap_or_default();
    if needs.interpreter.is_some() {
        return Err(ImageError::Usage(format!(
            "{} is dynamically linked: give a static busybox (Debian: busybox-static, /bin/busybox)",
            busybox.display()
        )));
    }
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| ImageError::Busybox {
            path: busybox.to_owned(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ImageError::Busybox {
            path: busybox.to_owned(),
            message: format!("`--list-full` exited with {}", out.status),
        });
    }
    tree.insert(
        GUEST_BUSYBOX,
        Node::File {
            data,
            executable: true,
        },
    )?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        tree.insert(applet, Node::Symlink(GUEST_BUSYBOX.into()))?;
    }
    tree.insert("bin/sh", Node::Symlink(GUEST_BUSYBOX.into()))?;
    Ok(())
}

/// The ELF programs (stripped when asked) and every shared object they load.
fn add_programs(
    tree: &mut Tree,
    programs: &[(PathBuf, String)],
    spec: &ImageSpec,
) -> Result<(), ImageError> {
    for (host, guest) in programs {
        let data = read("program", host)?;
        let data = if spec.strip {
            elf::strip_debug(&data).map_err(|message| ImageError::Strip {
                path: host.clone(),
                message,
            })?
        } else {
            data
        };
        tree.insert(
            guest,
            Node::File {
                data,
                executable: true,
            },
        )?;
    }
    let hosts: Vec<PathBuf> = programs.iter().map(|(h, _)| h.clone()).collect();
    // One copy per host file: a second name for it (the loader as PT_INTERP and as a DT_NEEDED entry)
    // becomes a link to the first.
    let mut copied: std::collections::BTreeMap<PathBuf, String> = std::collections::BTreeMap::new();
    for (guest, host) in elf::closure(&hosts, &elf::library_dirs(&spec.library_dirs))? {
        let canonical = std::fs::canonicalize(&host).unwrap_or_else(|_| host.clone());
        if let Some(first) = copied.get(&canonical) {
            tree.insert(&guest, Node::Symlink(first.clone()))?;
            continue;
        }
        let data = read("shared library", &host)?;
        tree.insert(
            &guest,
            Node::File {
                data,
                executable: true,
            },
        )?;
        copied.insert(canonical, guest);
    }
    Ok(())
}

/// The module files for `wanted` and, where the kernel has them as modules, `optional` (each with its
/// dependencies) under `/lib/modules/<version>/`; returns their image paths in load order, the required
/// ones and then the optional ones not already loaded.
fn add_modules(
    tree: &mut Tree,
    dir: &Path,
    wanted: &[String],
    optional: &[String],
) -> Result<(Vec<String>, Vec<String>), ImageError> {
    let modules = ModuleTree::read(dir)?;
    let version = dir
        .file_name()
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    let required = modules.load_order(wanted)?;
    let mut extra = Vec::new();
    for name in optional {
        // Absent (or compressed) optional modules are left out: the kernel copes without them.
        for file in modules
            .load_order(std::slice::from_ref(name))
            .unwrap_or_default()
        {
            if !required.contains(&file) && !extra.contains(&file) {
                extra.push(file);
            }
        }
    }
    let mut add = |files: &[String]| -> Result<Vec<String>, ImageError> {
        let mut paths = Vec::new();
        for file in files {
            let data = read("kernel module", &dir.join(file))?;
            let guest = format!("/lib/modules/{version}/{file}");
            tree.insert(
                &guest,
                Node::File {
                    data,
                    executable: false,
                },
            )?;
            paths.push(guest);
        }
        Ok(paths)
    };
    Ok((add(&required)?, add(&extra)?))
}
