//! Kernel modules for the guest, with their dependencies, from a kernel's `lib/modules/<version>` tree:
//! `modules.dep` (written by `depmod`) says which module file each module needs, `modules.builtin` which
//! modules are compiled into the kernel (nothing to load). Module names treat `-` and `_` alike, as the
//! kernel does (`dm_crypt` is `kernel/drivers/md/dm-crypt.ko`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the modules could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// `modules.dep` could not be read.
    #[error(
        "cannot read {path}: {source} (is {dir} a lib/modules/<version> tree? if it came from \
         `dpkg-deb -x`, create the file with `depmod -b ROOT VERSION`, ROOT being the directory that holds lib/)"
    )]
    Dep {
        /// The modules directory.
        dir: PathBuf,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A module is neither a file nor built in.
    #[error(
        "kernel module {name:?} is not in {dir} (neither in modules.dep nor in modules.builtin)"
    )]
    Unknown {
        /// The module's name.
        name: String,
        /// The modules directory.
        dir: PathBuf,
    },
    /// Compressed modules are not loaded by the initramfs' `insmod`.
    #[error(
        "module {path} is compressed: decompress the tree first (e.g. `find DIR -name '*.ko.xz' -exec xz -d {{}} +` \
         and run depmod again)"
    )]
    Compressed {
        /// The module file, relative to the tree.
        path: String,
    },
}

/// A module file to load, relative to the modules directory (`kernel/drivers/md/dm-crypt.ko`).
pub type ModuleFile = String;

/// A kernel's modules directory, read.
#[derive(Clone, Debug)]
pub struct ModuleTree {
    dir: PathBuf,
    /// Module name (with `_`) → its file and the files it needs.
    deps: BTreeMap<String, (ModuleFile, Vec<ModuleFile>)>,
    /// Names of built-in modules (with `_`).
    builtin: std::collections::BTreeSet<String>,
}

/// `dm-crypt.ko` and `dm_crypt` both name `dm_crypt`.
pub fn module_name(file_or_name: &str) -> String {
    let base = file_or_name.rsplit('/').next().unwrap_or(file_or_name);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleTree {
    /// Reads `dir/modules.dep` and `dir/modules.builtin` (the latter may be absent).
    pub fn read(dir: &Path) -> Result<Self, ModuleError> {
        let dep_path = dir.join("modules.dep");
        let text = std::fs::read_to_string(&dep_path).map_err(|source| ModuleError::Dep {
            dir: dir.to_owned(),
            path: dep_path.clone(),
            source,
        })?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(Self::parse(dir, &text, &builtin))
    }

    /// Builds the tree from the two files' texts.
    pub fn parse(dir: &Path, modules_dep: &str, modules_builtin: &str) -> Self {
        let deps = modules_dep
            .lines()
            .filter_map(|line| {
                let (file, needs) = line.split_once(':')?;
                let needs = needs.split_whitespace().map(str::to_owned).collect();
                Some((module_name(file), (file.trim().to_owned(), needs)))
            })
            .collect();
        let builtin = modules_builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(module_name)
            .collect();
        Self {
            dir: dir.to_owned(),
            deps,
            builtin,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the module is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// The files to load for `names`, each after the files it needs, each once; built-in modules need
    /// nothing. `modules.dep` lists a module's needs so that loading them from last to first works.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<ModuleFile>, ModuleError> {
        let mut order: Vec<ModuleFile> = Vec::new();
        for name in names {
            let key = module_name(name);
            if self.builtin.contains(&key) {
                continue;
            }
            let Some((file, needs)) = self.deps.get(&key) else {
                return Err(ModuleError::Unknown {
                    name: name.clone(),
                    dir: self.dir.clone(),
                });
            };
            for f in needs.iter().rev().chain(std::iter::once(file)) {
                if f.ends_with(".xz") || f.ends_with(".zst") || f.ends_with(".gz") {
                    return Err(ModuleError::Compressed { path: f.clone() });
                }
                if !order.contains(f) {
                    order.push(f.clone());
                }
            }
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/crypto/xts.ko.xz:
";

    fn tree() -> ModuleTree {
        ModuleTree::parse(Path::new("/m"), DEP, "kernel/crypto/sha256_generic.ko\n")
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let order = tree()
            .load_order(&["virtio_pci".into(), "virtio-blk".into(), "dm_crypt".into()])
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/md/dm-mod.ko",
                "kernel/drivers/md/dm-crypt.ko",
            ]
        );
    }

    #[test]
    fn built_in_modules_need_nothing_and_unknown_ones_are_named() {
        assert_eq!(
            tree().load_order(&["sha256-generic".into()]).unwrap(),
            Vec::<String>::new()
        );
        let e = tree().load_order(&["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let e = tree().load_order(&["xts".into()]).unwrap_err();
        assert!(e.to_string().contains("compressed"), "{e}");
    }

    #[test]
    fn a_tree_without_modules_dep_says_how_to_make_one() {
        let e = ModuleTree::read(Path::new("/nonexistent/lib/modules/6.1")).unwrap_err();
        assert!(e.to_string().contains("depmod -b"), "{e}");
    }
}
