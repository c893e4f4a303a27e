//! Writing a part crash-safely: data and metadata go into `tmp_<kind>_<name>/`,
//! are fsynced with their directory, and the directory is atomically renamed to
//! the part's name. A crash at any step leaves either no part or a complete one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::Accumulator;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
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

/// Streams sorted batches into a new part.
pub struct PartWriter<'t> {
    table: &'t Table,
    parent: PathBuf,
    name: PartName,
    tmp_dir: PathBuf,
    writer: Option<ParallelEncoder<ChecksumWriter<File>>>,
    stats: Vec<(usize, MinAccumulator, MaxAccumulator)>,
    rows: u64,
}

/// Parquet settings for part data: zstd, page statistics and a page index,
/// pages of at most `index_granularity` rows.
pub(crate) fn writer_properties(table: &Table) -> Result<WriterProperties> {
    let s = &table.def.settings;
    let level = ZstdLevel::try_new(s.zstd_level).map_err(|e| StorageError::parquet("zstd level", e))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(s.index_granularity)
        .set_write_batch_size(s.index_granularity.min(1024))
        .set_max_row_group_row_count(Some(s.row_group_size))
        // A fixed writer identity keeps output byte-identical across replicas.
        .set_created_by("shardhouse".to_string())
        .build())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(dir, e))
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
        let writer =
            ParallelEncoder::try_new(
                ChecksumWriter::new(file),
                table.schema().clone(),
                writer_properties(table)?,
                table.def.settings.row_group_size,
            )
                .map_err(|e| StorageError::parquet(format!("creating part {name}"), e))?;
        let mut stats = Vec::new();
        for col in table.key_columns().iter().chain(table.partition_columns()) {
            let i = table.schema().index_of(col)?;
            if stats.iter().any(|(j, _, _)| *j == i) {
                continue;
            }
            let t = table.schema().field(i).data_type();
            stats.push((i, MinAccumulator::try_new(t)?, MaxAccumulator::try_new(t)?));
        }
        Ok(PartWriter { table, parent: parent.to_path_buf(), name, tmp_dir, writer: Some(writer), stats, rows: 0 })
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
        let name = &self.name;
        match self.writer.as_mut() {
            Some(w) => w.write(batch).map_err(|e| StorageError::parquet(format!("writing part {name}"), e)),
            None => Ok(()),
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finishes the part: fsyncs, writes metadata, renames into place. `mask` is
    /// a lightweight-delete row mask to store with it.
    pub fn finish(mut self, partition_value: Vec<String>, mask: Option<&RoaringBitmap>) -> Result<Part> {
        let name = self.name.to_string();
        let mut writer = self.writer.take().ok_or_else(|| StorageError::BadTable("writer finished twice".into()))?;
        let pq_meta = writer.finish().map_err(|e| StorageError::parquet(format!("closing part {name}"), e))?;
        let uncompressed: i64 = pq_meta.row_groups().iter().map(|rg| rg.total_byte_size()).sum();
        let data_sum = writer.inner_mut().checksum();
        let data_path = self.tmp_dir.join(DATA_FILE);
        writer.inner_mut().get_mut().sync_all().map_err(|e| StorageError::io(&data_path, e))?;
        drop(writer);
        failpoint::hit("part_write:after_data")?;
        let mut files = std::collections::BTreeMap::new();
        files.insert(DATA_FILE.to_string(), data_sum);
        let mut masked_rows = 0;
        if let Some(mask) = mask.filter(|m| !m.is_empty()) {
            let mut bytes = Vec::new();
            mask.serialize_into(&mut bytes).map_err(|e| StorageError::io(MASK_FILE, e))?;
            files.insert(MASK_FILE.to_string(), write_synced(&self.tmp_dir.join(MASK_FILE), &bytes)?);
            masked_rows = mask.len();
        }
        let meta = self.build_meta(partition_value, files, uncompressed.max(0) as u64, masked_rows)?;
        write_synced(&self.tmp_dir.join(META_FILE), &meta.encode())?;
        sync_dir(&self.tmp_dir)?;
        failpoint::hit("part_write:before_rename")?;
        let final_dir = self.parent.join(&name);
        publish(&self.tmp_dir, &final_dir, &self.parent)?;
        failpoint::hit("part_write:after_rename")?;
        Part::load(&final_dir)
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
        })
    }
}

impl Drop for PartWriter<'_> {
    fn drop(&mut self) {
        // An abandoned writer (error before finish) leaves a temp dir; startup
        // removes those, but don't leave litter while running either.
        if self.writer.is_some() {
            let _ = fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

/// Renames a finished temp directory to its final name. If the part already
/// exists (a command re-executed after a restart) the existing one is kept when
/// it loads, since merges and mutations are deterministic.
pub(crate) fn publish(tmp_dir: &Path, final_dir: &Path, parent: &Path) -> Result<()> {
    if final_dir.exists() {
        if Part::load(final_dir).is_ok() {
            fs::remove_dir_all(tmp_dir).map_err(|e| StorageError::io(tmp_dir, e))?;
            return Ok(());
        }
        fs::remove_dir_all(final_dir).map_err(|e| StorageError::io(final_dir, e))?;
    }
    fs::rename(tmp_dir, final_dir).map_err(|e| StorageError::io(final_dir, e))?;
    sync_dir(parent)
}

/// Writes a file and fsyncs it, returning its checksum.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<FileChecksum> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| StorageError::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| StorageError::io(path, e))?;
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
    let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
    if idx.windows(2).all(|w| rows.row(w[0] as usize) <= rows.row(w[1] as usize)) {
        return Ok(batch.clone());
    }
    idx.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    Ok(take_record_batch(batch, &UInt32Array::from(idx))?)
}

/// Sorts and writes one inserted block as a level-0 part.
pub fn write_block(
    table: &Table,
    parent: &Path,
    name: PartName,
    partition_value: Vec<String>,
    batch: &RecordBatch,
) -> Result<Part> {
    let sorted = sort_block(table, batch)?;
    let mut w = PartWriter::create(table, parent, name, "insert")?;
    w.write(&sorted)?;
    w.finish(partition_value, None)
}
