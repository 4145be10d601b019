//! The ELF programs of the image: which shared libraries they need (their `PT_INTERP` and `DT_NEEDED`
//! entries, followed through each library in turn), found on this host the way its dynamic loader would,
//! and copies without debug sections (a debug `cvm-agent` is over 100 MB, almost all DWARF).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::Endianness;
use object::elf::{DT_NEEDED, FileHeader64};
use object::read::elf::{FileHeader, ProgramHeader};

/// Where this host's shared libraries are looked for, in order (Debian's multiarch directories first).
pub const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Why a program's libraries could not be collected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// A file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a 64-bit ELF file this module can read.
    #[error("{path} is not a usable 64-bit ELF file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A needed library is in none of the library directories.
    #[error(
        "{program} needs {library}, which is in none of {dirs}: install it, or give a static build"
    )]
    Missing {
        /// The program or library that needs it.
        program: PathBuf,
        /// The library's name.
        library: String,
        /// Where it was looked for.
        dirs: String,
    },
}

/// What a dynamically linked file asks the loader for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `PT_INTERP`: the dynamic loader's path (none for static programs and for libraries).
    pub interpreter: Option<String>,
    /// `DT_NEEDED`: library names, in the file's order.
    pub libraries: Vec<String>,
}

/// Reads the `PT_INTERP` and `DT_NEEDED` entries of a 64-bit ELF file.
pub fn needs(data: &[u8]) -> Result<Needs, String> {
    let header = FileHeader64::<Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let mut interpreter = None;
    for ph in header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?
    {
        if let Some(path) = ph.interpreter(endian, data).map_err(|e| e.to_string())? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let sections = header.sections(endian, data).map_err(|e| e.to_string())?;
    let table = sections
        .dynamic_table(endian, data)
        .map_err(|e| e.to_string())?;
    let mut libraries = Vec::new();
    for d in &table {
        if d.tag == DT_NEEDED {
            let name = table.string(d).map_err(|e| e.to_string())?;
            libraries.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Needs {
        interpreter,
        libraries,
    })
}

/// A copy of an ELF file without its `.debug*` sections (what `strip --strip-debug` removes); the loaded
/// segments are unchanged.
pub fn strip_debug(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut builder = object::build::elf::Builder::read(data).map_err(|e| e.to_string())?;
    for section in builder.sections.iter_mut() {
        if section.name.starts_with(b".debug") {
            section.delete = true;
        }
    }
    let mut out = Vec::new();
    builder.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The shared objects that `programs` load, transitively: guest path → host file. A library keeps the
/// directory it was found in on this host (`/lib/x86_64-linux-gnu/libc.so.6`), where the same
/// distribution's loader looks for it; the loader keeps its `PT_INTERP` path. A static program needs
/// nothing.
pub fn closure(
    programs: &[PathBuf],
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, ElfError> {
    let mut found = BTreeMap::new();
    let mut queue: Vec<PathBuf> = programs.to_vec();
    let mut seen_names = std::collections::BTreeSet::new();
    while let Some(file) = queue.pop() {
        let data = std::fs::read(&file).map_err(|source| ElfError::Read {
            path: file.clone(),
            source,
        })?;
        let n = needs(&data).map_err(|message| ElfError::Parse {
            path: file.clone(),
            message,
        })?;
        if let Some(interp) = n.interpreter
            && let std::collections::btree_map::Entry::Vacant(slot) = found.entry(interp)
        {
            let host = PathBuf::from(slot.key());
            slot.insert(host.clone());
            queue.push(host);
        }
        for library in n.libraries {
            if !seen_names.insert(library.clone()) {
                continue;
            }
            let Some(dir) = dirs.iter().find(|d| d.join(&library).is_file()) else {
                return Err(ElfError::Missing {
                    program: file.clone(),
                    library,
                    dirs: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let host = dir.join(&library);
            found.insert(host.display().to_string(), host.clone());
            queue.push(host);
        }
    }
    Ok(found)
}

/// [`LIBRARY_DIRS`] as paths, after any given first.
pub fn library_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    extra
        .iter()
        .cloned()
        .chain(LIBRARY_DIRS.iter().map(PathBuf::from))
        .collect()
}

/// Whether `path` is an ELF file (its first four bytes).
pub fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_test_binary() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn a_rust_program_needs_the_loader_and_libc() {
        let data = std::fs::read(this_test_binary()).unwrap();
        let n = needs(&data).unwrap();
        assert!(
            n.interpreter.as_deref().unwrap_or("").contains("ld-linux"),
            "{n:?}"
        );
        assert!(
            n.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{n:?}"
        );
        let libs = closure(&[this_test_binary()], &library_dirs(&[])).unwrap();
        assert!(libs.keys().any(|k| k.ends_with("/libc.so.6")), "{libs:?}");
        assert!(libs.keys().any(|k| k.contains("ld-linux")), "{libs:?}");
    }

    #[test]
    fn stripping_removes_the_debug_sections_and_the_program_still_runs() {
        let data = std::fs::read(this_test_binary()).unwrap();
        let stripped = strip_debug(&data).unwrap();
        assert!(
            stripped.len() < data.len(),
            "{} !< {}",
            stripped.len(),
            data.len()
        );
        let file = object::File::parse(&*stripped).unwrap();
        use object::{Object, ObjectSection};
        assert!(
            !file
                .sections()
                .any(|s| s.name().unwrap_or("").starts_with(".debug"))
        );
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("stripped");
        std::fs::write(&exe, &stripped).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The test harness lists its tests and exits 0: the stripped copy loads and runs.
        let out = std::process::Command::new(&exe)
            .arg("--list")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("stripping_removes"));
    }

    #[test]
    fn a_missing_library_is_named_with_the_places_searched() {
        let e = closure(&[this_test_binary()], &[PathBuf::from("/nonexistent")]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("needs lib") && m.contains("/nonexistent"), "{m}");
        let e = needs(b"not an elf").unwrap_err();
        assert!(!e.is_empty());
    }
}
