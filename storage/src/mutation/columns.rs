//! Column-level rewrite for UPDATE-only mutations: the updated columns are
//! decoded, changed and re-encoded; every other column chunk is copied byte
//! for byte from the old data file, page index included. Row positions do not
//! change, so the lightweight-delete mask carries over as it is.

use std::fs::File;
use std::path::Path;

use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{ArrowColumnWriter, compute_leaves};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use super::rewrite::{Compiled, apply};
use crate::error::{Result, StorageError};
use crate::failpoint;
use crate::merge::kway::pad_to_table;
use crate::part::checksum::ChecksumWriter;
use crate::part::meta::{DATA_FILE, MASK_FILE, META_FILE};
use crate::part::name::PartName;
use crate::part::writer::{TMP_PREFIX, publish, write_synced, writer_properties};
use crate::part::{Part, reader};
use crate::table::Table;

/// Whether every column is one Parquet leaf (so leaf index == column index).
pub(super) fn flat_schema(meta: &ParquetMetaData, table: &Table) -> bool {
    meta.file_metadata().schema_descr().num_columns() == table.schema().fields().len()
}

fn pq(part: &Part, e: parquet::errors::ParquetError) -> StorageError {
    StorageError::parquet(format!("rewriting columns of part {}", part.name), e)
}

/// Rewrites only the `updated` columns of `part` into `new_name`.
pub(super) fn rewrite_columns(
    table: &Table,
    parent: &Path,
    part: &Part,
    cmds: &[Compiled],
    read_cols: &[usize],
    updated: &[usize],
    new_name: &PartName,
) -> Result<Part> {
    let src_meta = reader::reader_metadata(part)?.metadata().clone();
    let src_path = part.data_path();
    let src = reader::data_file(part)?;
    let tmp = parent.join(format!("{TMP_PREFIX}mutate_{new_name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    let out_path = tmp.join(DATA_FILE);
    let out = File::create(&out_path).map_err(|e| StorageError::io(&out_path, e))?;
    let schema = table.schema().clone();
    let (mut fw, factory) =
        ArrowWriter::try_new(ChecksumWriter::new(out), schema.clone(), Some(writer_properties(table, None)?))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| pq(part, e))?;
    let batch_rows = table.def.settings.merge_batch_rows;
    let mut cols: Vec<usize> = read_cols.iter().chain(updated).copied().collect();
    cols.sort();
    cols.dedup();

    for rg in 0..src_meta.num_row_groups() {
        let mut writers: Vec<(usize, ArrowColumnWriter)> = factory
            .create_column_writers(rg)
            .map_err(|e| pq(part, e))?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| updated.contains(i))
            .collect();
        let file = src.try_clone().map_err(|e| StorageError::io(&src_path, e))?;
        let b = ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Skip),
        )
        .map_err(|e| pq(part, e))?;
        let mask = ProjectionMask::roots(b.parquet_schema(), cols.iter().copied());
        let r = b
            .with_row_groups(vec![rg])
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| pq(part, e))?;
        for batch in r {
            let batch = batch
                .map_err(|e| StorageError::CorruptedPart { part: part.name.to_string(), reason: e.to_string() })?;
            let (changed, _) = apply(cmds, pad_to_table(table, &batch)?)?;
            for (c, w) in &mut writers {
                for leaf in compute_leaves(schema.field(*c), changed.column(*c)).map_err(|e| pq(part, e))? {
                    w.write(&leaf).map_err(|e| pq(part, e))?;
                }
            }
        }
        let mut chunks = Vec::new();
        for (c, w) in writers {
            chunks.push((c, w.close().map_err(|e| pq(part, e))?));
        }
        let rg_meta = src_meta.row_group(rg);
        let mut rgw = fw.next_row_group().map_err(|e| pq(part, e))?;
        for c in 0..schema.fields().len() {
            if let Some(pos) = chunks.iter().position(|(i, _)| *i == c) {
                let (_, chunk) = chunks.swap_remove(pos);
                chunk.append_to_row_group(&mut rgw).map_err(|e| pq(part, e))?;
            } else {
                let col = rg_meta.column(c);
                let close = ColumnCloseResult {
                    bytes_written: col.compressed_size() as u64,
                    rows_written: rg_meta.num_rows() as u64,
                    metadata: col.clone(),
                    bloom_filter: None,
                    column_index: src_meta.column_index().map(|ci| ci[rg][c].clone()),
                    offset_index: src_meta.offset_index().map(|oi| oi[rg][c].clone()),
                };
                rgw.append_column(&src, close).map_err(|e| pq(part, e))?;
            }
        }
        rgw.close().map_err(|e| pq(part, e))?;
    }
    let new_meta = fw.finish().map_err(|e| pq(part, e))?;
    let data_sum = fw.inner_mut().checksum();
    fw.inner_mut().get_mut().sync_all().map_err(|e| StorageError::io(&out_path, e))?;
    drop(fw);

    let mut meta = part.meta.clone();
    meta.files.clear();
    meta.files.insert(DATA_FILE.to_string(), data_sum);
    if let Some(mask) = part.mask.as_ref().filter(|m| !m.is_empty()) {
        let mut bytes = Vec::new();
        mask.serialize_into(&mut bytes).map_err(|e| StorageError::io(MASK_FILE, e))?;
        meta.files.insert(MASK_FILE.to_string(), write_synced(&tmp.join(MASK_FILE), &bytes)?);
    }
    meta.name = new_name.to_string();
    meta.data_version = new_name.data_version();
    meta.bytes_on_disk = meta.files.values().map(|f| f.size).sum();
    meta.uncompressed_bytes = new_meta.row_groups().iter().map(|rg| rg.total_byte_size().max(0) as u64).sum();
    meta.modification_time_ms = chrono::Utc::now().timestamp_millis();
    write_synced(&tmp.join(META_FILE), &meta.encode())?;
    File::open(&tmp).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(&tmp, e))?;
    failpoint::hit("mutate:before_rename")?;
    let final_dir = parent.join(new_name.to_string());
    publish(&tmp, &final_dir, parent)?;
    let p = Part::load(&final_dir)?;
    p.mark_verified();
    Ok(p)
}
