//! Writing a part crash-safely: data and metadata go into `tmp_<kind>_<name>/`,
//! are fsynced with their directory, and the directory is atomically renamed to
//! the part's name. A crash at any step leaves either no part or a complete one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use roaring::RoaringBitmap;

use super::Part;
use super::checksum::{ChecksumWriter, FileChecksum};
use super::encode::ParallelEncoder;
use super::meta::{ColumnMeta, DATA_FILE, MASK_FILE, META_FILE, META_FORMAT_VERSION, PartMeta};
use super::name::PartName;
use crate::error::{Result, StorageError};
use crate::failpoint;
use crate::table::Table;

/// Prefix of directories being written; removed on startup.
pub const TMP_PREFIX: &str = "tmp_";

/// Rows in a part's first batch below which it is encoded without threads.
pub const SMALL_PART_ROWS: usize = 2048;

/// Whether a part's files reach the disk before it is published.
///
/// `Deferred` is for parts whose bytes are durable elsewhere until a later
/// [`sync_part`] (a replicated small insert carries its bytes in the Raft
/// log): the rename is still atomic, so a crash of the process never exposes
/// a half part, but a power loss may tear one that the log then restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Synced,
    Deferred,
}

/// Streams sorted batches into a new part.
pub struct PartWriter<'t> {
    table: &'t Table,
    parent: PathBuf,
    name: PartName,
    tmp_dir: PathBuf,
    file: Option<Sink>,
    writer: Option<ParallelEncoder<ChecksumWriter<Sink>>>,
    finished: bool,
    stats: Vec<(usize, MinAccumulator, MaxAccumulator)>,
    rows: u64,
    durability: Durability,
    blocks: Option<u64>,
}

/// Parquet settings for part data: LZ4 (or zstd), page statistics and a page index,
/// pages of at most `index_granularity` rows. Columns that look nearly unique
/// in `sample` skip dictionary encoding: the dictionary would overflow and fall
/// back to plain anyway, after paying for hashing every value. Strings that
/// repeat get a dictionary big enough to hold them all (URLs, names): far
/// smaller and faster to write than zstd over plain strings.
pub(crate) fn writer_properties(table: &Table, sample: Option<&RecordBatch>) -> Result<WriterProperties> {
    let s = &table.def.settings;
    let level = ZstdLevel::try_new(s.zstd_level).map_err(|e| StorageError::parquet("zstd level", e))?;
    let mut b = WriterProperties::builder();
    if let Some(batch) = sample {
        for (f, col) in table.schema().fields().iter().zip(batch.columns()) {
            let path = ColumnPath::from(f.name().as_str());
            let distinct = distinct_fraction(col)?;
            if matches!(col.data_type(), DataType::Utf8 | DataType::Binary) && distinct <= 0.9 {
                b = b.set_column_dictionary_page_size_limit(path, STRING_DICTIONARY_LIMIT);
            } else if distinct > 0.5 {
                b = b.set_column_dictionary_enabled(path, false);
            }
        }
    }
    let compression = match s.codec {
        crate::table::PartCodec::Lz4 => Compression::LZ4_RAW,
        crate::table::PartCodec::Zstd => Compression::ZSTD(level),
    };
    Ok(b.set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(s.index_granularity)
        .set_write_batch_size(s.index_granularity.min(1024))
        .set_max_row_group_row_count(Some(s.row_group_size))
        // A fixed writer identity keeps output byte-identical across replicas.
        .set_created_by("shardhouse".to_string())
        .build())
}

/// The largest dictionary page of a repeating string column.
const STRING_DICTIONARY_LIMIT: usize = 16 << 20;

/// The fraction of distinct values in a sample of up to 4096 values (0 for
/// columns too short to judge or of other types).
fn distinct_fraction(col: &ArrayRef) -> Result<f64> {
    let n = col.len();
    if n < 1024 || !col.data_type().is_primitive() && !matches!(col.data_type(), DataType::Utf8 | DataType::Binary) {
        return Ok(0.0);
    }
    let step = n.div_ceil(4096);
    let idx = UInt32Array::from_iter_values((0..n).step_by(step).map(|i| i as u32));
    let sample = arrow::compute::take(col, &idx, None)?;
    let conv = RowConverter::new(vec![SortField::new(col.data_type().clone())])?;
    let rows = conv.convert_columns(&[sample])?;
    let distinct: std::collections::HashSet<_> = rows.iter().collect();
    Ok(distinct.len() as f64 / idx.len() as f64)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(dir, e))
}

/// Where a part's data goes: its file, or memory for a part that travels
/// as bytes (a small insert inside its log entry).
enum Sink {
    File(File),
    Memory(Vec<u8>),
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Memory(v) => v.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Memory(_) => Ok(()),
        }
    }
}

impl<'t> PartWriter<'t> {
    /// Starts a part named `name` under `parent`; `kind` tags the temp directory
    /// (`insert`, `merge`, `mutate`).
    pub fn create(table: &'t Table, parent: &Path, name: PartName, kind: &str) -> Result<Self> {
        let tmp_dir = parent.join(format!("{TMP_PREFIX}{kind}_{name}"));
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).map_err(|e| StorageError::io(&tmp_dir, e))?;
        }
        fs::create_dir_all(&tmp_dir).map_err(|e| StorageError::io(&tmp_dir, e))?;
        let path = tmp_dir.join(DATA_FILE);
        let file = File::create(&path).map_err(|e| StorageError::io(&path, e))?;
        let mut w = Self::new(table, name, Sink::File(file))?;
        w.parent = parent.to_path_buf();
        w.tmp_dir = tmp_dir;
        Ok(w)
    }

    /// Starts a part named `name` built in memory: [`PartWriter::finish_in_memory`]
    /// returns its files' bytes; nothing touches the disk.
    pub fn in_memory(table: &'t Table, name: PartName) -> Result<Self> {
        Self::new(table, name, Sink::Memory(Vec::new()))
    }

    fn new(table: &'t Table, name: PartName, sink: Sink) -> Result<Self> {
        let mut stats = Vec::new();
        for col in table.key_columns().iter().chain(table.partition_columns()) {
            let i = table.schema().index_of(col)?;
            if stats.iter().any(|(j, _, _)| *j == i) {
                continue;
            }
            let t = table.schema().field(i).data_type();
            stats.push((i, MinAccumulator::try_new(t)?, MaxAccumulator::try_new(t)?));
        }
        Ok(PartWriter {
            table,
            parent: PathBuf::new(),
            tmp_dir: PathBuf::new(),
            file: Some(sink),
            writer: None,
            finished: false,
            stats,
            rows: 0,
            durability: Durability::Synced,
            // A level-0 part of one block is one inserted block; every
            // other writer (merge, mutation, drop) says what it holds.
            blocks: (name.level == 0 && name.min_block == name.max_block).then_some(1),
            name,
        })
    }

    /// Records how many inserted blocks the part holds (see [`PartMeta::blocks`]).
    pub fn with_blocks(mut self, blocks: Option<u64>) -> Self {
        self.blocks = blocks;
        self
    }

    /// Chooses whether `finish` fsyncs (see [`Durability`]).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The encoder, created on first use so its settings can follow the data.
    /// (Below [`SMALL_PART_ROWS`] rows in the first batch it uses no threads.)
    fn encoder(&mut self, sample: Option<&RecordBatch>) -> Result<&mut ParallelEncoder<ChecksumWriter<Sink>>> {
        if self.writer.is_none() {
            let file = self.file.take().ok_or_else(|| StorageError::BadTable("part writer reused".into()))?;
            // A small first batch is a small insert (merges write 8k-row
            // batches): encoded on this thread, no workers started.
            let workers = match sample.map_or(0, |b| b.num_rows()) {
                n if n < SMALL_PART_ROWS => 1,
                _ => usize::MAX,
            };
            let w = ParallelEncoder::with_workers(
                ChecksumWriter::new(file),
                self.table.schema().clone(),
                writer_properties(self.table, sample)?,
                self.table.def.settings.row_group_size,
                workers,
            )
            .map_err(|e| StorageError::parquet(format!("creating part {}", self.name), e))?;
            self.writer = Some(w);
        }
        self.writer.as_mut().ok_or_else(|| StorageError::BadTable("part writer reused".into()))
    }

    /// Appends rows, which must continue the sort order.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (i, min, max) in &mut self.stats {
            let col = [batch.column(*i).clone()];
            min.update_batch(&col)?;
            max.update_batch(&col)?;
        }
        self.rows += batch.num_rows() as u64;
        let name = self.name.to_string();
        self.encoder(Some(batch))?.write(batch).map_err(|e| StorageError::parquet(format!("writing part {name}"), e))
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the data file's footer: the encoder (its sink still open), the
    /// uncompressed size and the data file's checksum.
    fn close_encoder(&mut self) -> Result<(ParallelEncoder<ChecksumWriter<Sink>>, u64, FileChecksum)> {
        self.encoder(None)?;
        self.finished = true;
        let mut writer = self.writer.take().ok_or_else(|| StorageError::BadTable("writer finished twice".into()))?;
        let pq_meta = writer.finish().map_err(|e| StorageError::parquet(format!("closing part {}", self.name), e))?;
        let uncompressed: i64 = pq_meta.row_groups().iter().map(|rg| rg.total_byte_size()).sum();
        let sum = writer.inner_mut().checksum();
        Ok((writer, uncompressed.max(0) as u64, sum))
    }

    /// Finishes the part: fsyncs, writes metadata, renames into place. `mask` is
    /// a lightweight-delete row mask to store with it.
    pub fn finish(mut self, partition_value: Vec<String>, mask: Option<&RoaringBitmap>) -> Result<Part> {
        let name = self.name.to_string();
        let (mut writer, uncompressed, data_sum) = self.close_encoder()?;
        let data_path = self.tmp_dir.join(DATA_FILE);
        let data_file = match writer.inner_mut().get_mut() {
            Sink::File(f) => f.try_clone().map_err(|e| StorageError::io(&data_path, e))?,
            Sink::Memory(_) => return Err(StorageError::BadTable("an in-memory part finished as files".into())),
        };
        drop(writer);
        failpoint::hit("part_write:after_data")?;
        let mut files = std::collections::BTreeMap::new();
        files.insert(DATA_FILE.to_string(), data_sum);
        // The data file's fsync overlaps writing and syncing the small files:
        // each fsync costs milliseconds of waiting, not CPU.
        let sync = self.durability == Durability::Synced;
        std::thread::scope(|s| -> Result<()> {
            let data_sync = s.spawn(move || if sync { data_file.sync_all() } else { Ok(()) });
            let mut masked_rows = 0;
            if let Some(mask) = mask.filter(|m| !m.is_empty()) {
                let mut bytes = Vec::new();
                mask.serialize_into(&mut bytes).map_err(|e| StorageError::io(MASK_FILE, e))?;
                files.insert(MASK_FILE.to_string(), write_file(&self.tmp_dir.join(MASK_FILE), &bytes, sync)?);
                masked_rows = mask.len();
            }
            let meta = self.build_meta(partition_value, files, uncompressed, masked_rows)?;
            write_file(&self.tmp_dir.join(META_FILE), &meta.encode(), sync)?;
            if sync {
                sync_dir(&self.tmp_dir)?;
            }
            match data_sync.join() {
                Ok(r) => r.map_err(|e| StorageError::io(&data_path, e)),
                Err(_) => Err(StorageError::io(&data_path, std::io::Error::other("fsync thread panicked"))),
            }
        })?;
        failpoint::hit("part_write:before_rename")?;
        let final_dir = self.parent.join(&name);
        publish_with(&self.tmp_dir, &final_dir, &self.parent, self.durability)?;
        failpoint::hit("part_write:after_rename")?;
        let part = Part::load(&final_dir)?;
        part.mark_verified();
        Ok(part)
    }

    /// Finishes a part started with [`PartWriter::in_memory`]: the bytes of
    /// its data file and of its metadata (the checksums in it cover the data).
    pub fn finish_in_memory(
        mut self,
        partition_value: Vec<String>,
    ) -> Result<(PartMeta, std::collections::BTreeMap<String, Vec<u8>>)> {
        let (mut writer, uncompressed, data_sum) = self.close_encoder()?;
        let data = match std::mem::replace(writer.inner_mut().get_mut(), Sink::Memory(Vec::new())) {
            Sink::Memory(v) => v,
            Sink::File(_) => return Err(StorageError::BadTable("a part on disk finished in memory".into())),
        };
        drop(writer);
        let files = [(DATA_FILE.to_string(), data_sum)].into_iter().collect();
        let meta = self.build_meta(partition_value, files, uncompressed, 0)?;
        let bytes = [(DATA_FILE.to_string(), data), (META_FILE.to_string(), meta.encode())].into_iter().collect();
        Ok((meta, bytes))
    }

    fn build_meta(
        &mut self,
        partition_value: Vec<String>,
        files: std::collections::BTreeMap<String, FileChecksum>,
        uncompressed_bytes: u64,
        masked_rows: u64,
    ) -> Result<PartMeta> {
        let schema = self.table.schema();
        let mut columns: Vec<ColumnMeta> = schema
            .fields()
            .iter()
            .map(|f| ColumnMeta { name: f.name().clone(), data_type: f.data_type().to_string(), min: None, max: None })
            .collect();
        for (i, min, max) in &mut self.stats {
            if self.rows > 0 {
                columns[*i].min = scalar_text(&min.evaluate()?)?;
                columns[*i].max = scalar_text(&max.evaluate()?)?;
            }
        }
        let bytes_on_disk = files.values().map(|f| f.size).sum();
        Ok(PartMeta {
            format_version: META_FORMAT_VERSION,
            name: self.name.to_string(),
            partition_id: self.name.partition_id.clone(),
            partition_value,
            rows: self.rows,
            masked_rows,
            bytes_on_disk,
            uncompressed_bytes,
            min_block: self.name.min_block,
            max_block: self.name.max_block,
            level: self.name.level,
            data_version: self.name.data_version(),
            columns,
            files,
            modification_time_ms: chrono::Utc::now().timestamp_millis(),
            blocks: self.blocks,
        })
    }
}

impl Drop for PartWriter<'_> {
    fn drop(&mut self) {
        // An abandoned writer (error before finish) leaves a temp dir; startup
        // removes those, but don't leave litter while running either.
        if !self.finished && !self.tmp_dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

/// Renames a finished temp directory to its final name. If the part already
/// exists (a command re-executed after a restart) the existing one is kept when
/// it loads, since merges and mutations are deterministic.
pub fn publish(tmp_dir: &Path, final_dir: &Path, parent: &Path) -> Result<()> {
    publish_with(tmp_dir, final_dir, parent, Durability::Synced)
}

/// [`publish`], fsyncing the parent directory only for [`Durability::Synced`].
pub fn publish_with(tmp_dir: &Path, final_dir: &Path, parent: &Path, durability: Durability) -> Result<()> {
    if final_dir.exists() {
        if Part::load(final_dir).is_ok() {
            fs::remove_dir_all(tmp_dir).map_err(|e| StorageError::io(tmp_dir, e))?;
            return Ok(());
        }
        fs::remove_dir_all(final_dir).map_err(|e| StorageError::io(final_dir, e))?;
    }
    fs::rename(tmp_dir, final_dir).map_err(|e| StorageError::io(final_dir, e))?;
    match durability {
        Durability::Synced => sync_dir(parent),
        Durability::Deferred => Ok(()),
    }
}

/// Makes a part published with [`Durability::Deferred`] durable: every file,
/// the part's directory and its parent, and the directories in `also`.
pub fn sync_part(dir: &Path, also: &[&Path]) -> Result<()> {
    let mut paths = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        paths.push(e.map_err(|e| StorageError::io(dir, e))?.path());
    }
    paths.push(dir.to_path_buf());
    paths.extend(dir.parent().map(Path::to_path_buf));
    paths.extend(also.iter().map(|p| p.to_path_buf()));
    sync_paths(&paths)
}

/// Fsyncs files and directories. (Concurrently, on threads of their own,
/// they took no less time here: a replicated insert's push phase is the
/// transfer, not these.)
pub fn sync_paths(paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        File::open(p).and_then(|f| f.sync_all()).map_err(|e| StorageError::io(p, e))?;
    }
    Ok(())
}

/// Writes a file and fsyncs it, returning its checksum.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<FileChecksum> {
    write_file(path, bytes, true)
}

/// Writes a file, fsynced when `sync`, returning its checksum.
pub fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<FileChecksum> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| StorageError::io(path, e))?;
    f.write_all(bytes).and_then(|_| if sync { f.sync_all() } else { Ok(()) }).map_err(|e| StorageError::io(path, e))?;
    Ok(FileChecksum { size: bytes.len() as u64, crc32: crc32fast::hash(bytes) })
}

/// A scalar as the text `cast(.. as Utf8)` gives; parsed back with a cast.
pub(crate) fn scalar_text(v: &datafusion::scalar::ScalarValue) -> Result<Option<String>> {
    if v.is_null() {
        return Ok(None);
    }
    let arr = v.to_array()?;
    let s = arrow::compute::cast(&arr, &arrow::datatypes::DataType::Utf8)?;
    let s = arrow::array::AsArray::as_string::<i32>(&s);
    Ok(Some(s.value(0).to_string()))
}

/// Sorts a block by the table's ORDER BY, stably: rows with equal keys keep
/// their insertion order, which Replacing and Collapsing merges depend on.
pub fn sort_block(table: &Table, batch: &RecordBatch) -> Result<RecordBatch> {
    if table.order_by.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let conv = table.sort_key_converter()?;
    let rows = table.sort_key_rows(&conv, batch)?;
    let idx = match sort_fixed_width(&rows) {
        Some(idx) => idx,
        None => {
            let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
            if rows.iter().zip(rows.iter().skip(1)).all(|(a, b)| a <= b) {
                return Ok(batch.clone());
            }
            idx.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
            idx
        }
    };
    if idx.iter().enumerate().all(|(i, &j)| i as u32 == j) {
        return Ok(batch.clone());
    }
    Ok(take_record_batch(batch, &UInt32Array::from(idx))?)
}

/// Fast path for keys whose row encoding is at most 32 bytes and equal in
/// length (fixed-width key columns): pack each key big-endian into two u128s,
/// which compare like the bytes, and sort `(key, index)` — stable by index.
fn sort_fixed_width(rows: &arrow::row::Rows) -> Option<Vec<u32>> {
    let first = rows.iter().next()?.as_ref().len();
    if first > 32 || rows.iter().any(|r| r.as_ref().len() != first) {
        return None;
    }
    let mut keys: Vec<(u128, u128, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut buf = [0u8; 32];
            buf[..first].copy_from_slice(r.as_ref());
            let hi = u128::from_be_bytes(buf[..16].try_into().unwrap_or([0; 16]));
            let lo = u128::from_be_bytes(buf[16..].try_into().unwrap_or([0; 16]));
            (hi, lo, i as u32)
        })
        .collect();
    if !keys.windows(2).all(|w| w[0] <= w[1]) {
        keys.sort_unstable();
    }
    Some(keys.into_iter().map(|k| k.2).collect())
}

/// Sorts and writes one inserted block as a level-0 part.
pub fn write_block(
    table: &Table,
    parent: &Path,
    name: PartName,
    partition_value: Vec<String>,
    batch: &RecordBatch,
) -> Result<Part> {
    write_block_with(table, parent, name, partition_value, batch, Durability::Synced)
}

/// Sorts and encodes a block as part `name` in memory: its metadata and the
/// bytes of its files, metadata included (see [`PartWriter::in_memory`]).
pub fn encode_block(
    table: &Table,
    name: PartName,
    partition_value: Vec<String>,
    batch: &RecordBatch,
) -> Result<(PartMeta, std::collections::BTreeMap<String, Vec<u8>>)> {
    let sorted = sort_block(table, batch)?;
    let mut w = PartWriter::in_memory(table, name)?;
    w.write(&sorted)?;
    w.finish_in_memory(partition_value)
}

/// [`write_block`] with a choice of [`Durability`].
pub fn write_block_with(
    table: &Table,
    parent: &Path,
    name: PartName,
    partition_value: Vec<String>,
    batch: &RecordBatch,
    durability: Durability,
) -> Result<Part> {
    let sorted = sort_block(table, batch)?;
    let mut w = PartWriter::create(table, parent, name, "insert")?.with_durability(durability);
    w.write(&sorted)?;
    w.finish(partition_value, None)
}
