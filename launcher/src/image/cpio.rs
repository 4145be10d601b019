//! The initramfs as a tree of files, written as a reproducible newc cpio archive and gzipped.
//!
//! Reproducible means the same tree gives the same bytes: entries in byte order of their paths (a
//! directory before what it holds), modification times 0, owner and group 0, inode numbers counted from 1
//! in that order, one link each, modes from the entry's kind (directories and executables 0755, other files
//! 0644, symbolic links 0777), and a gzip header without a time or file name. The format is the kernel's
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`): a 110-byte ASCII header of thirteen
//! 8-digit hex fields, the NUL-terminated name and the data, each padded to 4 bytes; `TRAILER!!!` ends it.

use std::collections::BTreeMap;
use std::io::Write;

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Its contents.
        data: Vec<u8>,
        /// Mode 0755 rather than 0644.
        executable: bool,
    },
    /// A symbolic link to this target.
    Symlink(String),
}

/// Two different entries were given the same path.
#[derive(Debug, thiserror::Error)]
#[error("{path} is given twice with different contents (or as a file and a directory)")]
pub struct Conflict {
    /// The path inside the image.
    pub path: String,
}

/// The files of an initramfs, keyed by their path without the leading `/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

impl Tree {
    /// Adds `node` at `path` (absolute or relative to the root; `.` and empty components are dropped) and
    /// the directories above it. The same node twice is fine; a different one is a [`Conflict`].
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), Conflict> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        for depth in 1..parts.len() {
            self.put(parts[..depth].join("/"), Node::Dir)?;
        }
        self.put(parts.join("/"), node)
    }

    fn put(&mut self, path: String, node: Node) -> Result<(), Conflict> {
        match self.entries.get(&path) {
            Some(existing) if *existing == node => Ok(()),
            Some(_) => Err(Conflict {
                path: format!("/{path}"),
            }),
            None => {
                self.entries.insert(path, node);
                Ok(())
            }
        }
    }

    /// The entry at `path` (without the leading `/`), if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// The paths of the tree, in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The uncompressed newc archive.
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in (1u32..).zip(&self.entries) {
            let (mode, data): (u32, &[u8]) = match node {
                Node::Dir => (0o040_755, &[]),
                Node::File { data, executable } => {
                    (if *executable { 0o100_755 } else { 0o100_644 }, data)
                }
                Node::Symlink(target) => (0o120_777, target.as_bytes()),
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            entry(&mut out, ino, mode, nlink, path, data);
        }
        entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
        out
    }

    /// The gzipped newc archive: what `cvm-launch image` writes.
    pub fn to_gzip(&self) -> Vec<u8> {
        gzip(&self.to_newc())
    }
}

/// Appends one newc entry (header, name, data, each padded to 4 bytes).
fn entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).unwrap_or(u32::MAX),
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Gzip at level 6 with a fixed header (no time, no name, OS "unknown"), so equal inputs give equal bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Reads a newc archive back: (name, mode, ino, data) per entry, up to the trailer.
    fn entries(mut a: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&a[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (ino, mode, mtime, size, namesize) =
                (field(0), field(1), field(5), field(6), field(11));
            assert_eq!((field(2), field(3), mtime), (0, 0, 0), "owner and time");
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&a[110..name_end - 1])
                .unwrap()
                .to_owned();
            let data_start = name_end.next_multiple_of(4);
            let data_end = data_start + size as usize;
            let data = a[data_start..data_end].to_vec();
            let next = data_end.next_multiple_of(4);
            offset += next;
            assert_eq!(offset % 4, 0);
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty());
                return out;
            }
            out.push((name, mode, ino, data));
        }
    }

    fn sample() -> Tree {
        let mut t = Tree::default();
        t.insert(
            "/usr/bin/tool",
            Node::File {
                data: b"#!/bin/sh\n".to_vec(),
                executable: true,
            },
        )
        .unwrap();
        t.insert(
            "etc/cvm/agent.toml",
            Node::File {
                data: b"x = 1\n".to_vec(),
                executable: false,
            },
        )
        .unwrap();
        t.insert("bin/sh", Node::Symlink("busybox".into())).unwrap();
        t
    }

    #[test]
    fn parents_come_first_and_every_field_is_fixed() {
        let e = entries(&sample().to_newc());
        let names: Vec<_> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "etc",
                "etc/cvm",
                "etc/cvm/agent.toml",
                "usr",
                "usr/bin",
                "usr/bin/tool"
            ]
        );
        let inos: Vec<_> = e.iter().map(|x| x.2).collect();
        assert_eq!(inos, (1..=8).collect::<Vec<_>>());
        assert_eq!(e[1].1, 0o120_777);
        assert_eq!(e[1].3, b"busybox");
        assert_eq!(e[4].1, 0o100_644);
        assert_eq!(e[7].1, 0o100_755);
        assert_eq!(e[0].1, 0o040_755);
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_whatever_the_order_of_insertion() {
        let mut other = Tree::default();
        other
            .insert("bin/sh", Node::Symlink("busybox".into()))
            .unwrap();
        other
            .insert(
                "/etc/cvm/agent.toml",
                Node::File {
                    data: b"x = 1\n".to_vec(),
                    executable: false,
                },
            )
            .unwrap();
        other
            .insert(
                "usr/bin/tool",
                Node::File {
                    data: b"#!/bin/sh\n".to_vec(),
                    executable: true,
                },
            )
            .unwrap();
        assert_eq!(sample().to_gzip(), other.to_gzip());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&sample().to_gzip()[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, sample().to_newc());
        // The gzip header carries no time: bytes 4..8 are zero.
        assert_eq!(&sample().to_gzip()[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn a_path_given_twice_with_other_contents_is_refused() {
        let mut t = sample();
        t.insert("bin/sh", Node::Symlink("busybox".into())).unwrap();
        let e = t
            .insert("bin/sh", Node::Symlink("dash".into()))
            .unwrap_err();
        assert_eq!(e.path, "/bin/sh");
        assert!(t.insert("bin", Node::Symlink("x".into())).is_err());
    }
}
