//! A part: an immutable directory of sorted column data plus its metadata —
//! or, for a small replicated insert, the same files held in memory until a
//! merge absorbs them or a checkpoint writes them out (see [`Part::in_memory`]).

pub mod adopt;
pub mod checksum;
pub mod encode;
pub mod meta;
pub mod name;
pub mod reader;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use roaring::RoaringBitmap;

use crate::error::{Result, StorageError};
use checksum::checksum_file;
use meta::{MASK_FILE, PartMeta};
use name::PartName;

/// A loaded, checked part.
#[derive(Debug)]
pub struct Part {
    pub name: PartName,
    /// Where the part's files are — or, for an in-memory part, where they
    /// will be once it is written out.
    pub dir: PathBuf,
    pub meta: PartMeta,
    /// Row offsets hidden by lightweight deletes.
    pub mask: Option<RoaringBitmap>,
    /// Outcome of the full checksum verification, done once before the first read.
    verified: OnceLock<Result<(), String>>,
    /// The data file's footer and page index, parsed on the first read: parts
    /// are immutable, and parsing them again for every query cost more than
    /// reading the few pages a primary-key query needs.
    reader_meta: OnceLock<parquet::arrow::arrow_reader::ArrowReaderMetadata>,
    /// The files' bytes (metadata included) of a part held in memory.
    mem: Option<MemFiles>,
}

/// The files of an in-memory part by name.
pub type MemFiles = Arc<BTreeMap<String, bytes::Bytes>>;

impl Part {
    /// Loads the part in `dir`: parses and checks its metadata and the size of
    /// every file (the cheap check done at startup). Any failure is
    /// [`StorageError::CorruptedPart`].
    pub fn load(dir: &Path) -> Result<Part> {
        let file_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let name: PartName = file_name.parse()?;
        let meta = PartMeta::read(dir, &file_name)?;
        let corrupt = |reason: String| StorageError::CorruptedPart { part: file_name.clone(), reason };
        for (file, sum) in &meta.files {
            let len = std::fs::metadata(dir.join(file)).map_err(|e| corrupt(format!("file {file}: {e}")))?.len();
            if len != sum.size {
                return Err(corrupt(format!("file {file} has {len} bytes, expected {}", sum.size)));
            }
        }
        let mask = if meta.files.contains_key(MASK_FILE) {
            let bytes = std::fs::read(dir.join(MASK_FILE)).map_err(|e| corrupt(format!("{MASK_FILE}: {e}")))?;
            let sum = crc32fast::hash(&bytes);
            if Some(sum) != meta.files.get(MASK_FILE).map(|c| c.crc32) {
                return Err(corrupt(format!("{MASK_FILE} checksum mismatch")));
            }
            Some(RoaringBitmap::deserialize_from(&bytes[..]).map_err(|e| corrupt(format!("{MASK_FILE}: {e}")))?)
        } else {
            None
        };
        Ok(Part {
            name,
            dir: dir.to_path_buf(),
            meta,
            mask,
            verified: OnceLock::new(),
            reader_meta: OnceLock::new(),
            mem: None,
        })
    }

    /// A part whose files are `files` (those `meta` lists; the metadata
    /// itself is `meta`) held in memory; `dir` is where [`adopt::write_in_memory`] puts them.
    /// Every file is checked against the metadata's checksums here, once.
    ///
    /// Small replicated inserts become parts like this: creating a directory
    /// and two files per insert on every replica cost more CPU than the rest
    /// of the insert, and most of these parts are merged away within seconds.
    pub fn in_memory(dir: PathBuf, meta: PartMeta, files: BTreeMap<String, bytes::Bytes>) -> Result<Part> {
        let name: PartName = meta.name.parse()?;
        let corrupt = |reason: String| StorageError::CorruptedPart { part: meta.name.clone(), reason };
        for (file, want) in &meta.files {
            let bytes = files.get(file).ok_or_else(|| corrupt(format!("file {file} missing")))?;
            let got = checksum::FileChecksum { size: bytes.len() as u64, crc32: crc32fast::hash(bytes) };
            if got != *want {
                return Err(corrupt(format!("file {file}: checksum {got:?}, expected {want:?}")));
            }
        }
        let mask = match files.get(MASK_FILE) {
            Some(b) => Some(RoaringBitmap::deserialize_from(&b[..]).map_err(|e| corrupt(format!("{MASK_FILE}: {e}")))?),
            None => None,
        };
        let part = Part {
            name,
            dir,
            meta,
            mask,
            verified: OnceLock::new(),
            reader_meta: OnceLock::new(),
            mem: Some(Arc::new(files)),
        };
        part.mark_verified();
        Ok(part)
    }

    /// The files of a part held in memory; `None` for a part on disk.
    pub fn mem_files(&self) -> Option<&MemFiles> {
        self.mem.as_ref()
    }

    /// Whether the part's files are only in memory.
    pub fn is_in_memory(&self) -> bool {
        self.mem.is_some()
    }

    /// Full verification (`CHECK TABLE`): every file's size and CRC32.
    pub fn verify(&self) -> Result<()> {
        let part = self.name.to_string();
        for (file, want) in &self.meta.files {
            let got = match &self.mem {
                Some(files) => match files.get(file) {
                    Some(b) => checksum::FileChecksum { size: b.len() as u64, crc32: crc32fast::hash(b) },
                    None => checksum::FileChecksum { size: 0, crc32: 0 },
                },
                None => checksum_file(&self.dir.join(file)).map_err(|e| StorageError::CorruptedPart {
                    part: part.clone(),
                    reason: format!("file {file}: {e}"),
                })?,
            };
            if got != *want {
                return Err(StorageError::CorruptedPart {
                    part: part.clone(),
                    reason: format!(
                        "checksum mismatch in {file}: expected size {} crc {:08x}, got size {} crc {:08x}",
                        want.size, want.crc32, got.size, got.crc32
                    ),
                });
            }
        }
        Ok(())
    }

    /// Verifies every file once per process before the part's data is first
    /// read, so bit rot since the part was written is caught by name instead
    /// of being read as rows. Later calls return the first outcome.
    pub fn ensure_verified(&self) -> Result<()> {
        match self.verified.get_or_init(|| self.verify().map_err(|e| e.to_string())) {
            Ok(()) => Ok(()),
            Err(reason) => Err(StorageError::CorruptedPart { part: self.name.to_string(), reason: reason.clone() }),
        }
    }

    /// Records that the files were just written and checksummed by this process.
    pub(crate) fn mark_verified(&self) {
        let _ = self.verified.set(Ok(()));
    }

    /// The cached reader metadata, if loaded.
    pub(crate) fn cached_reader_meta(&self) -> Option<&parquet::arrow::arrow_reader::ArrowReaderMetadata> {
        self.reader_meta.get()
    }

    /// Caches reader metadata (a concurrent first read may have won; either is the same).
    pub(crate) fn cache_reader_meta(
        &self,
        m: parquet::arrow::arrow_reader::ArrowReaderMetadata,
    ) -> &parquet::arrow::arrow_reader::ArrowReaderMetadata {
        self.reader_meta.get_or_init(|| m)
    }

    /// Path of the column data file.
    pub fn data_path(&self) -> PathBuf {
        self.dir.join(meta::DATA_FILE)
    }

    /// Rows a read returns.
    pub fn live_rows(&self) -> u64 {
        self.meta.live_rows()
    }
}
