//! The software key file: 32 random bytes as 64 hex characters in a mode-0600 file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{SealingKey, SealingKeySource};
use crate::StoreError;

/// A sealing key kept in a file, created on first use.
///
/// **Insecure**: nothing binds the key to a TEE. It protects a store against a stolen disk
/// only if the key file is kept somewhere else (another disk, a secret mount); with the key
/// next to the store it protects against nothing but accidents. Never chosen automatically.
///
/// The file holds exactly 64 hex characters and an optional newline, and must not be
/// readable by group or others (mode 0600 or stricter).
#[derive(Clone, Debug)]
pub struct SoftwareKeyFile {
    path: PathBuf,
}

impl SoftwareKeyFile {
    /// A key file at `path` (nothing is read or created until [`SealingKeySource::load`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn malformed(&self, detail: impl Into<String>) -> StoreError {
        StoreError::KeyFileMalformed {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// Creates the key file; `Ok(None)` if it already exists.
    fn create(&self) -> Result<Option<SealingKey>, StoreError> {
        // create_new + mode: the file never exists with wider permissions, and two
        // processes racing cannot both create it.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let key = SealingKey::random()?;
        let mut text = Zeroizing::new(hex::encode(key.expose()));
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_parent_dir(&self.path));
        if let Err(e) = written {
            // Leave no half-written key behind: the next start would refuse it.
            let _ = std::fs::remove_file(&self.path);
            return Err(self.io(e));
        }
        Ok(Some(key))
    }

    fn read(&self) -> Result<SealingKey, StoreError> {
        let mut file = File::open(&self.path).map_err(|e| self.io(e))?;
        let meta = file.metadata().map_err(|e| self.io(e))?;
        if !meta.is_file() {
            return Err(self.malformed("not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyFilePermissions {
                path: self.path.clone(),
                mode,
            });
        }
        // Read at most one byte more than the longest valid content.
        let mut buf = Zeroizing::new(Vec::with_capacity(66));
        (&mut file)
            .take(66)
            .read_to_end(&mut buf)
            .map_err(|e| self.io(e))?;
        let hex_part = match buf.as_slice() {
            [body @ .., b'\n'] => body,
            body => body,
        };
        if hex_part.len() != 64 {
            return Err(self.malformed(format!(
                "{} bytes where 64 hex characters were expected",
                buf.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, bytes.as_mut()).map_err(|_| self.malformed("not hex"))?;
        Ok(SealingKey::from_zeroizing(bytes))
    }
}

impl SealingKeySource for SoftwareKeyFile {
    fn load(&self) -> Result<SealingKey, StoreError> {
        match self.create()? {
            Some(key) => Ok(key),
            None => self.read(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "software key file {} (INSECURE: not bound to any TEE; protects the store \
             against a stolen disk only if this file is kept elsewhere)",
            self.path.display()
        )
    }
}

/// fsync the directory holding `path`, so a new entry in it survives a crash.
pub(crate) fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}
