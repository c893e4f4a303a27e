//! File checksums: the size and CRC32 of every file of a part.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// Size and CRC32 of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChecksum {
    pub size: u64,
    pub crc32: u32,
}

/// Reads a whole file and computes its checksum.
pub fn checksum_file(path: &Path) -> Result<FileChecksum> {
    let mut f = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| StorageError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileChecksum { size, crc32: h.finalize() })
}

/// A `Write` adapter that computes the checksum of what passes through it, so
/// writers need not read their output back.
pub struct ChecksumWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl<W> ChecksumWriter<W> {
    pub fn new(inner: W) -> Self {
        ChecksumWriter { inner, hasher: crc32fast::Hasher::new(), size: 0 }
    }

    /// The checksum of everything written so far.
    pub fn checksum(&self) -> FileChecksum {
        FileChecksum { size: self.size, crc32: self.hasher.clone().finalize() }
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: std::io::Write> std::io::Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
