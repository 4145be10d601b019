//! configfs, where configfs-tsm lives: whether it is mounted, and mounting it.
//!
//! The kernel creates the empty mount point `/sys/kernel/config` when configfs registers
//! (`configfs_init` → `sysfs_create_mount_point`) but mounts nothing there: userspace does (systemd's
//! `sys-kernel-config.mount`). A guest booted into an initramfs often has no one to do it, and a 6.7+ kernel
//! with configfs-tsm then looks like one without. Decision: when the configfs-tsm directory lies under the
//! configfs mount point and configfs is not mounted there, the agent mounts it itself if it runs as root
//! (it needs root for the reports anyway; mounting configfs at its standard place is what the booted system
//! would do) and says so on stderr; otherwise the error says how to mount it. A `--tsm-root` elsewhere is
//! used as it is.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where configfs is mounted.
pub const CONFIGFS_MOUNT_POINT: &str = "/sys/kernel/config";
/// The mount table read.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Mounting, behind a trait so that tests never mount anything.
pub trait Mounter: Send + Sync {
    /// Whether the process may mount (effective user id 0).
    fn is_root(&self) -> bool;
    /// `mount -t configfs configfs AT`.
    fn mount_configfs(&self, at: &Path) -> io::Result<()>;
}

/// The system's `mount(2)` (through `rustix`, no `unsafe` here).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn is_root(&self) -> bool {
        rustix::process::geteuid().is_root()
    }

    fn mount_configfs(&self, at: &Path) -> io::Result<()> {
        rustix::mount::mount(
            "configfs",
            at,
            "configfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(io::Error::from)
    }
}

/// What [`Configfs::ensure`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// configfs was mounted already.
    Mounted,
    /// The agent mounted it.
    MountedNow,
    /// It is not mounted and the agent did not mount it; what to do.
    NotMounted(String),
    /// The kernel has no configfs (no mount point).
    Absent(String),
}

/// configfs at a mount point, as the mount table says.
#[derive(Clone)]
pub struct Configfs {
    /// The mount point ([`CONFIGFS_MOUNT_POINT`]).
    pub mount_point: PathBuf,
    /// The mount table ([`MOUNTINFO`]).
    pub mountinfo: PathBuf,
    /// How to mount.
    pub mounter: Arc<dyn Mounter>,
}

impl std::fmt::Debug for Configfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configfs")
            .field("mount_point", &self.mount_point)
            .field("mountinfo", &self.mountinfo)
            .finish_non_exhaustive()
    }
}

impl Default for Configfs {
    fn default() -> Self {
        Configfs {
            mount_point: PathBuf::from(CONFIGFS_MOUNT_POINT),
            mountinfo: PathBuf::from(MOUNTINFO),
            mounter: Arc::new(SystemMounter),
        }
    }
}

/// Undoes the octal escapes (`\040` for a space) of a mountinfo field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| c == b'\\' && d.iter().all(|x| (b'0'..=b'7').contains(x)))
            .map(|d| d.iter().fold(0u32, |n, x| n * 8 + u32::from(x - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `/proc/self/mountinfo` text has a configfs mounted at `at` (field 5 the mount point, the field
/// after the `-` separator the filesystem type; `Documentation/filesystems/proc.rst`, 3.5).
pub fn mounted_at(mountinfo: &str, at: &Path) -> bool {
    mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|sep| fields.get(sep + 1));
        fstype == Some(&"configfs")
            && fields
                .get(4)
                .is_some_and(|mp| Path::new(&unescape(mp)) == at)
    })
}

impl Configfs {
    /// Mounts configfs when it is not mounted and the process is root; otherwise says what to do.
    pub fn ensure(&self) -> State {
        let at = &self.mount_point;
        let table = std::fs::read_to_string(&self.mountinfo).unwrap_or_default();
        if mounted_at(&table, at) {
            return State::Mounted;
        }
        if !at.is_dir() {
            return State::Absent(format!(
                "{} does not exist: this kernel has no configfs (CONFIG_CONFIGFS_FS), or sysfs is not \
                 mounted at /sys",
                at.display()
            ));
        }
        let how = format!(
            "mount it with `mount -t configfs configfs {}`",
            at.display()
        );
        if !self.mounter.is_root() {
            return State::NotMounted(format!(
                "configfs is not mounted at {}: {how}, or run cvm-agent as root (it then mounts it)",
                at.display()
            ));
        }
        match self.mounter.mount_configfs(at) {
            Ok(()) => {
                eprintln!(
                    "cvm-agent: mounted configfs at {} (it was not mounted)",
                    at.display()
                );
                State::MountedNow
            }
            Err(e) => State::NotMounted(format!(
                "configfs is not mounted at {} and mounting it failed ({e}): {how}",
                at.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "22 27 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n\
        38 22 0:34 / /sys/kernel/config rw,nosuid,nodev,noexec,relatime shared:18 - configfs configfs rw\n\
        40 27 0:36 / /mnt/with\\040space rw - configfs configfs rw\n";

    #[test]
    fn finds_configfs_in_the_mount_table() {
        assert!(mounted_at(TABLE, Path::new("/sys/kernel/config")));
        assert!(mounted_at(TABLE, Path::new("/mnt/with space")));
        assert!(!mounted_at(TABLE, Path::new("/sys")));
        assert!(!mounted_at(TABLE, Path::new("/sys/kernel")));
        assert!(!mounted_at("", Path::new("/sys/kernel/config")));
        // Optional fields before the separator do not confuse the columns.
        let sysfs_there = "38 22 0:34 / /sys/kernel/config rw master:1 shared:2 - sysfs x rw\n";
        assert!(!mounted_at(sysfs_there, Path::new("/sys/kernel/config")));
        assert_eq!(unescape("a\\040b\\134c\\9"), "a b\\c\\9");
    }
}
