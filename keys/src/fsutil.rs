//! File-system helpers: owner-only files that are never overwritten by accident, and atomic replacement
//! (write to a temporary file in the same directory, fsync, rename, fsync the directory). Other crates use
//! [`write_private_atomically`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates `path` for writing with mode 0600; fails with `AlreadyExists` if anything is there.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes `data` to a new owner-only file at `path` (refusing to overwrite) and fsyncs it.
pub(crate) fn write_new_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = create_new_private(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Writes `data` to a new file at `path` with mode 0644 (public material), refusing to overwrite.
pub(crate) fn write_new_public(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The directory that holds `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A file being written under a temporary name next to its final path. It only appears at the final path
/// when [`AtomicFile::commit`] succeeds; dropped uncommitted, the temporary file is removed.
pub(crate) struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file (mode 0600) in the directory of `dest`.
    pub(crate) fn create(dest: &Path) -> io::Result<Self> {
        let dir = parent_dir(dest);
        let name = dest.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name")
        })?;
        let rng = ring::rand::SystemRandom::new();
        // A few attempts in case a stale temporary file with the same random name exists.
        for _ in 0..8 {
            let suffix: [u8; 8] = ring::rand::generate(&rng)
                .map_err(|_| io::Error::other("the system random generator failed"))?
                .expose();
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
            let tmp = dir.join(tmp_name);
            match create_new_private(&tmp) {
                Ok(file) => {
                    return Ok(Self {
                        file: Some(file),
                        tmp,
                        dest: dest.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not create a unique temporary file",
        ))
    }

    /// The open temporary file.
    pub(crate) fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the temporary file is already closed"))
    }

    /// Fsyncs the data, moves it to the final path and fsyncs the directory. With `overwrite == false` an
    /// existing final path is never replaced (the move is a hard link, which fails if the name exists).
    pub(crate) fn commit(mut self, overwrite: bool) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        if overwrite {
            fs::rename(&self.tmp, &self.dest)?;
        } else {
            fs::hard_link(&self.tmp, &self.dest)?;
            fs::remove_file(&self.tmp)?;
        }
        // The temporary name is gone now; make Drop a no-op.
        self.tmp = PathBuf::new();
        File::open(parent_dir(&self.dest))?.sync_all()
    }
}

/// Writes `data` to `dest` with mode 0600, atomically and durably: a temporary file with an unpredictable
/// name next to `dest`, fsynced, moved into place, the directory fsynced. On any failure the temporary file
/// is removed and `dest` is as it was. With `overwrite == false` an existing `dest` is never replaced (the
/// error is `AlreadyExists`).
pub fn write_private_atomically(dest: &Path, data: &[u8], overwrite: bool) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = AtomicFile::create(dest)?;
    tmp.file()?.write_all(data)?;
    tmp.commit(overwrite)
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_private_writes_replace_only_when_asked_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_private_atomically(&p, b"one", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write_private_atomically(&p, b"two", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_private_atomically(&p, b"two", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // A destination that cannot be replaced (a non-empty directory): the temporary file goes away.
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("x"), b"").unwrap();
        assert!(write_private_atomically(&d, b"three", true).is_err());
        assert_eq!(names(dir.path()), ["d", "secret"]);
    }
}
