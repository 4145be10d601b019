//! The guest kit: what a Linux guest under QEMU needs from the host — QEMU, a static busybox, `cryptsetup`
//! (copied into images that open LUKS2 volumes, and used to make the demo's encrypted disk), `mke2fs` (the
//! disks' filesystems), `depmod` (a kernel's `modules.dep`) — and a guest kernel with its modules.
//!
//! The kernel is `CVM_GUEST_KERNEL` (a bzImage; its modules in `CVM_GUEST_MODULES`, a `lib/modules/<version>`
//! directory) or Debian's cloud kernel unpacked into the kit directory (`apt-get download` +
//! `dpkg-deb -x` + `depmod -b`, no root needed). `cvm-launch guest-kit --install` fetches what is missing:
//! Debian packages with `apt-get install` when run as root (otherwise it prints the one command to run),
//! the kernel without root. The demo and CI use it; the tests look for the same directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image::command::find_program;

/// The Debian package of the guest kernel.
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";
/// The environment variable naming another guest kernel (a bzImage).
pub const KERNEL_ENV: &str = "CVM_GUEST_KERNEL";
/// The environment variable naming that kernel's modules directory.
pub const MODULES_ENV: &str = "CVM_GUEST_MODULES";

/// A host program the kit needs, and the Debian package that has it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    /// The program's name.
    pub name: &'static str,
    /// Its Debian package.
    pub package: &'static str,
    /// Directories looked in besides `PATH`.
    pub dirs: &'static [&'static str],
}

/// The kit's host programs.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "qemu-system-x86_64",
        package: "qemu-system-x86",
        dirs: &["/usr/bin"],
    },
    Tool {
        name: "busybox",
        package: "busybox-static",
        dirs: &["/bin", "/usr/bin"],
    },
    Tool {
        name: "cryptsetup",
        package: "cryptsetup-bin",
        dirs: &["/usr/sbin", "/sbin"],
    },
    Tool {
        name: "mke2fs",
        package: "e2fsprogs",
        dirs: &["/usr/sbin", "/sbin"],
    },
    Tool {
        name: "depmod",
        package: "kmod",
        dirs: &["/usr/sbin", "/sbin"],
    },
];

/// A complete kit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kit {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// A static busybox.
    pub busybox: PathBuf,
    /// `cryptsetup`.
    pub cryptsetup: PathBuf,
    /// `mke2fs`.
    pub mke2fs: PathBuf,
    /// The guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Its `lib/modules/<version>` directory.
    pub modules: PathBuf,
}

/// What is missing from a kit, and how to get it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// Debian packages whose programs are missing.
    pub packages: Vec<&'static str>,
    /// Why there is no kernel (none when there is one).
    pub kernel: Option<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.packages.is_empty() {
            parts.push(format!(
                "programs of Debian's {} (as root: apt-get install -y {})",
                self.packages.join(", "),
                self.packages.join(" ")
            ));
        }
        if let Some(k) = &self.kernel {
            parts.push(format!("a guest kernel: {k}"));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// The kit's default directory beside a build directory (`target/release` → `target/ci-tools/linux`).
pub fn default_dir(build_dir: &Path) -> PathBuf {
    build_dir
        .parent()
        .unwrap_or(build_dir)
        .join("ci-tools")
        .join("linux")
}

/// A static program (no `PT_INTERP`): busybox must run in an initramfs without libraries.
fn is_static(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|d| crate::image::elf::needs(&d).ok())
        .is_some_and(|n| n.interpreter.is_none())
}

fn tool(t: &Tool) -> Option<PathBuf> {
    let found = find_program(&[t.name], t.dirs)?;
    (t.name != "busybox" || is_static(&found)).then_some(found)
}

/// The kernel and modules in `dir` (as `dpkg-deb -x` lays them out): `boot/vmlinuz-V` and
/// `lib/modules/V/modules.dep`.
pub fn kernel_in(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels.into_iter().rev().find_map(|k| {
        let version = k
            .file_name()?
            .to_string_lossy()
            .strip_prefix("vmlinuz-")?
            .to_owned();
        let modules = dir.join("lib/modules").join(version);
        modules
            .join("modules.dep")
            .is_file()
            .then_some((k, modules))
    })
}

/// The kernel named by the environment, else the one in `dir`.
fn kernel(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    if let Some(k) = std::env::var_os(KERNEL_ENV) {
        let k = PathBuf::from(k);
        let m = std::env::var_os(MODULES_ENV).map(PathBuf::from).ok_or_else(|| {
            format!("{KERNEL_ENV} is set but {MODULES_ENV} (its lib/modules/<version> directory) is not")
        })?;
        return Ok((k, m));
    }
    kernel_in(dir).ok_or_else(|| {
        format!(
            "none in {} (`cvm-launch guest-kit --install` unpacks Debian's {KERNEL_PACKAGE} there; or set {KERNEL_ENV} and {MODULES_ENV})",
            dir.display()
        )
    })
}

/// The kit, or what is missing from it.
pub fn find(dir: &Path) -> Result<Kit, Missing> {
    let found: Vec<Option<PathBuf>> = TOOLS.iter().map(tool).collect();
    let packages: Vec<&'static str> = TOOLS
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(t, _)| t.package)
        .collect();
    let kernel = kernel(dir);
    match (found.as_slice(), kernel) {
        (
            [
                Some(qemu),
                Some(busybox),
                Some(cryptsetup),
                Some(mke2fs),
                Some(_depmod),
            ],
            Ok((kernel, modules)),
        ) => Ok(Kit {
            qemu: qemu.clone(),
            busybox: busybox.clone(),
            cryptsetup: cryptsetup.clone(),
            mke2fs: mke2fs.clone(),
            kernel,
            modules,
        }),
        (_, kernel) => Err(Missing {
            packages,
            kernel: kernel.err(),
        }),
    }
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a command quietly; its output becomes the error.
fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Installs what is missing: Debian packages (as root; otherwise the error is the command to run) and
/// the kernel into `dir`. `progress` hears each step.
pub fn install(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Kit, String> {
    let missing = match find(dir) {
        Ok(kit) => return Ok(kit),
        Err(m) => m,
    };
    if !missing.packages.is_empty() {
        let list = missing.packages.join(" ");
        if !is_root() {
            return Err(format!(
                "missing {}: run `sudo apt-get install -y --no-install-recommends {list}`, then this again",
                missing.packages.join(", ")
            ));
        }
        progress(&format!("installing Debian packages: {list}"));
        let install = || {
            run(Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing.packages)
                .env("DEBIAN_FRONTEND", "noninteractive"))
        };
        if install().is_err() {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            install()?;
        }
    }
    if missing.kernel.is_some() && std::env::var_os(KERNEL_ENV).is_none() {
        progress(&format!(
            "unpacking Debian's {KERNEL_PACKAGE} into {}",
            dir.display()
        ));
        unpack_kernel(dir)?;
    }
    find(dir).map_err(|m| format!("still missing after the installation: {m}"))
}

/// `apt-get download` of the cloud kernel's metapackage and the image it depends on, `dpkg-deb -x` into
/// `dir`, `depmod -b dir VERSION`.
fn unpack_kernel(dir: &Path) -> Result<(), String> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("create {}: {e}", debs.display()))?;
    let download = |package: &str| -> Result<PathBuf, String> {
        let get = || {
            run(Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(&debs))
        };
        if get().is_err() {
            if is_root() {
                run(Command::new("apt-get").args(["update", "-q"]))?;
            }
            get()?;
        }
        newest_deb(&debs, package)
    };
    let meta = download(KERNEL_PACKAGE)?;
    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&meta).arg("Depends"))?;
    let image = depends
        .split([',', ' ', '|'])
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| format!("{KERNEL_PACKAGE} depends on no linux-image package: {depends:?}"))?
        .to_owned();
    let deb = download(&image)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir))?;
    let version = image
        .strip_prefix("linux-image-")
        .unwrap_or(&image)
        .to_owned();
    let depmod = find_program(&["depmod"], &["/usr/sbin", "/sbin"])
        .ok_or("no depmod: install Debian's kmod")?;
    run(Command::new(depmod).arg("-b").arg(dir).arg(&version))?;
    Ok(())
}

/// The newest `PACKAGE_*.deb` in `dir`.
fn newest_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .collect();
    debs.sort();
    debs.pop().ok_or_else(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_counts_only_with_its_modules_dep() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(dir.path().join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"k").unwrap();
        assert_eq!(kernel_in(dir.path()), None);
        let m = dir.path().join("lib/modules/6.1.0-9-cloud-amd64");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("modules.dep"), b"").unwrap();
        assert_eq!(
            kernel_in(dir.path()),
            Some((dir.path().join("boot/vmlinuz-6.1.0-9-cloud-amd64"), m))
        );
    }

    #[test]
    fn what_is_missing_says_how_to_get_it() {
        let m = Missing {
            packages: vec!["qemu-system-x86", "kmod"],
            kernel: Some("none in /x".into()),
        };
        let s = m.to_string();
        assert!(s.contains("apt-get install -y qemu-system-x86 kmod"), "{s}");
        assert!(s.contains("a guest kernel: none in /x"), "{s}");
    }
}
