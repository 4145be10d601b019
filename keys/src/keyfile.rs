//! 256-bit secret keys and their file format.
//!
//! A key file is one line of text: `cvm-key-v1:` followed by the 32 key bytes in lowercase hex and a newline
//! (76 bytes). Files are created with mode 0600 and never overwritten. The same format holds the sealing keys
//! of `cvm-keys seal` and the attestation server's key-encryption key.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::fsutil;

/// The prefix of a key file's single line.
pub const KEY_FILE_PREFIX: &str = "cvm-key-v1:";

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// Longest key file we read at all (the format is 76 bytes; a little slack for `\r\n`).
const MAX_KEY_FILE_LEN: u64 = 128;

/// The label hashed into a key id.
const KEY_ID_LABEL: &[u8] = b"cvm-keys key id";

/// A 256-bit secret key, zeroized on drop. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key256(Zeroizing<[u8; KEY_LEN]>);

/// A public, one-way identifier of a [`Key256`]: HMAC-SHA256(key, "cvm-keys key id") truncated to 16 bytes.
/// It tells which key sealed a file without revealing anything usable about the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Errors reading or writing a key file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Refusing to overwrite an existing file.
    #[error("{path}: already exists; refusing to overwrite it")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The file is not a cvm key file or has the wrong length.
    #[error("{path}: not a cvm key file: {reason}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

impl Key256 {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self, KeyFileError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut k[..])
            .map_err(|_| KeyFileError::Random)?;
        Ok(Self(k))
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut b = bytes;
        let k = Self(Zeroizing::new(b));
        b.zeroize();
        k
    }

    /// The raw key bytes (keep them out of logs).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's public identifier (see [`KeyId`]).
    pub fn key_id(&self) -> KeyId {
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]),
            KEY_ID_LABEL,
        );
        let mut id = [0u8; 16];
        id.copy_from_slice(&mac.as_ref()[..16]);
        KeyId(id)
    }

    /// The key in key-file format (one line).
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(
            KEY_FILE_PREFIX.len() + 2 * KEY_LEN + 1,
        ));
        s.push_str(KEY_FILE_PREFIX);
        let mut h = Zeroizing::new(hex::encode(&self.0[..]));
        s.push_str(&h);
        h.zeroize();
        s.push('\n');
        s
    }

    /// Parses key-file contents; `Err` holds the reason.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(contents).map_err(|_| "the file is not text".to_string())?;
        let line = text
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(text);
        let hex_part = line
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(|| format!("it does not start with {KEY_FILE_PREFIX:?}"))?;
        if hex_part.len() != 2 * KEY_LEN {
            return Err(format!(
                "expected {} hex digits (a 256-bit key) after the prefix, found {} characters",
                2 * KEY_LEN,
                hex_part.len()
            ));
        }
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(hex_part, &mut k[..])
            .map_err(|_| "the key is not valid hex".to_string())?;
        Ok(Self(k))
    }

    /// Reads a key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io_err)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        f.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if buf.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(KeyFileError::Format {
                path: path.to_path_buf(),
                reason: format!("it is longer than {MAX_KEY_FILE_LEN} bytes"),
            });
        }
        Self::from_file_contents(&buf).map_err(|reason| KeyFileError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Writes a new key file with mode 0600; refuses to overwrite an existing file.
    pub fn write_new_file(&self, path: &Path) -> Result<(), KeyFileError> {
        fsutil::write_new_private(path, self.to_file_contents().as_bytes()).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyFileError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key256(id {})", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file_format() {
        let k = Key256::generate().unwrap();
        let back = Key256::from_file_contents(k.to_file_contents().as_bytes()).unwrap();
        assert_eq!(k, back);
    }

    #[test]
    fn rejects_a_short_key() {
        let err = Key256::from_file_contents(b"cvm-key-v1:00112233\n").unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn rejects_a_file_without_the_prefix() {
        let err = Key256::from_file_contents(&[0u8; 32]).unwrap_err();
        assert!(err.contains("prefix") || err.contains("start"), "{err}");
    }

    #[test]
    fn writes_key_files_with_mode_0600_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = Key256::generate().unwrap();
        k.write_new_file(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            Key256::generate().unwrap().write_new_file(&p),
            Err(KeyFileError::Exists { .. })
        ));
        assert_eq!(Key256::read_file(&p).unwrap(), k);
    }

    #[test]
    fn key_id_does_not_contain_the_key() {
        let k = Key256::from_bytes([7u8; 32]);
        let id = k.key_id();
        assert_ne!(&id.0[..], &k.as_bytes()[..16]);
        assert_eq!(id, Key256::from_bytes([7u8; 32]).key_id());
    }
}
