//! Reading a part's data: projection, row selection, and the lightweight-delete
//! mask applied to every read.

use std::fs::File;
use std::io::Read;
use std::ops::Range;

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

use arrow::array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
};

use parquet::file::metadata::PageIndexPolicy;

use super::Part;
use crate::error::{Result, StorageError};

/// The part's parsed footer and page index, read once per part and cached.
pub fn reader_metadata(part: &Part) -> Result<ArrowReaderMetadata> {
    part.ensure_verified()?;
    if let Some(m) = part.cached_reader_meta() {
        return Ok(m.clone());
    }
    let file = data_file(part)?;
    let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let m = ArrowReaderMetadata::load(&file, opts).map_err(|e| corrupted(part, e))?;
    Ok(part.cache_reader_meta(m).clone())
}

/// Opens the part's data file with its cached metadata (page index included).
pub fn builder(part: &Part) -> Result<ParquetRecordBatchReaderBuilder<DataFile>> {
    let meta = reader_metadata(part)?;
    Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(data_file(part)?, meta))
}

/// A part's data file: on disk, or the bytes of an in-memory part.
pub enum DataFile {
    Disk(File),
    Mem(Bytes),
}

impl DataFile {
    /// Another handle on the same data.
    pub fn try_clone(&self) -> std::io::Result<DataFile> {
        Ok(match self {
            DataFile::Disk(f) => DataFile::Disk(f.try_clone()?),
            DataFile::Mem(b) => DataFile::Mem(b.clone()),
        })
    }
}

/// Opens the data file of `part`, wherever it is.
pub fn data_file(part: &Part) -> Result<DataFile> {
    if let Some(files) = part.mem_files() {
        let bytes = files.get(super::meta::DATA_FILE).cloned().ok_or_else(|| StorageError::CorruptedPart {
            part: part.name.to_string(),
            reason: "no data file in memory".into(),
        })?;
        return Ok(DataFile::Mem(bytes));
    }
    let path = part.data_path();
    File::open(&path).map(DataFile::Disk).map_err(|e| StorageError::io(&path, e))
}

/// A reader over a [`DataFile`].
pub enum DataRead {
    Disk(<File as ChunkReader>::T),
    Mem(<Bytes as ChunkReader>::T),
}

impl Read for DataRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            DataRead::Disk(r) => r.read(buf),
            DataRead::Mem(r) => r.read(buf),
        }
    }
}

impl Length for DataFile {
    fn len(&self) -> u64 {
        match self {
            DataFile::Disk(f) => Length::len(f),
            DataFile::Mem(b) => b.len() as u64,
        }
    }
}

impl ChunkReader for DataFile {
    type T = DataRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<DataRead> {
        Ok(match self {
            DataFile::Disk(f) => DataRead::Disk(f.get_read(start)?),
            DataFile::Mem(b) => DataRead::Mem(b.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            DataFile::Disk(f) => f.get_bytes(start, length),
            DataFile::Mem(b) => b.get_bytes(start, length),
        }
    }
}

fn corrupted(part: &Part, e: parquet::errors::ParquetError) -> StorageError {
    StorageError::CorruptedPart { part: part.name.to_string(), reason: format!("data.parquet: {e}") }
}

/// Row ranges of the part not hidden by its mask; `None` when nothing is masked.
pub fn unmasked_ranges(part: &Part) -> Option<Vec<Range<usize>>> {
    let mask = part.mask.as_ref()?;
    let total = part.meta.rows as usize;
    let mut ranges = Vec::new();
    let mut start = 0usize;
    for r in mask.iter() {
        let r = r as usize;
        if r > start {
            ranges.push(start..r);
        }
        start = r + 1;
    }
    if start < total {
        ranges.push(start..total);
    }
    Some(ranges)
}

/// The selection that skips masked rows, intersected with `selection`.
pub fn effective_selection(part: &Part, selection: Option<RowSelection>) -> Option<RowSelection> {
    let mask_sel =
        unmasked_ranges(part).map(|r| RowSelection::from_consecutive_ranges(r.into_iter(), part.meta.rows as usize));
    match (mask_sel, selection) {
        (Some(a), Some(b)) => Some(a.intersection(&b)),
        (a, b) => a.or(b),
    }
}

/// Opens a batch reader over the part's live rows. `columns` are table column
/// indices (`None` reads all); output columns come in table order.
pub fn open(
    part: &Part,
    columns: Option<&[usize]>,
    selection: Option<RowSelection>,
    batch_rows: usize,
) -> Result<ParquetRecordBatchReader> {
    let mut b = builder(part)?.with_batch_size(batch_rows);
    if let Some(cols) = columns {
        let mask = ProjectionMask::roots(b.parquet_schema(), cols.iter().copied());
        b = b.with_projection(mask);
    }
    if let Some(sel) = effective_selection(part, selection) {
        b = b.with_row_selection(sel);
    }
    b.build().map_err(|e| corrupted(part, e))
}

/// Reads every live row of a part (tests and small tools).
pub fn read_all(part: &Part) -> Result<Vec<RecordBatch>> {
    let r = open(part, None, None, 8192)?;
    r.map(|b| b.map_err(|e| StorageError::CorruptedPart { part: part.name.to_string(), reason: e.to_string() }))
        .collect()
}
