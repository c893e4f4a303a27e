//! Applying pending mutations to one part.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, filter_record_batch};
use datafusion::physical_plan::PhysicalExpr;
use roaring::RoaringBitmap;

use super::{Mutation, MutationCommand, pending_for};
use crate::error::{Result, StorageError};
use crate::failpoint;
use crate::merge::kway::pad_to_table;
use crate::part::meta::{DATA_FILE, MASK_FILE, META_FILE};
use crate::part::name::PartName;
use crate::part::writer::{PartWriter, TMP_PREFIX, publish, write_synced};
use crate::part::{Part, reader};
use crate::table::Table;

pub(super) enum Compiled {
    Delete(Arc<dyn PhysicalExpr>),
    Lightweight(Arc<dyn PhysicalExpr>),
    Update { predicate: Arc<dyn PhysicalExpr>, assignments: Vec<(usize, Arc<dyn PhysicalExpr>)> },
}

fn compile(table: &Table, pending: &[&Mutation]) -> Result<(Vec<Compiled>, Vec<usize>)> {
    let mut cols: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for m in pending {
        for c in &m.commands {
            match c {
                MutationCommand::Delete { predicate } | MutationCommand::LightweightDelete { predicate } => {
                    let (e, used) = table.compiler.compile_with_columns(predicate)?;
                    cols.extend(used);
                    out.push(if matches!(c, MutationCommand::Delete { .. }) {
                        Compiled::Delete(e)
                    } else {
                        Compiled::Lightweight(e)
                    });
                }
                MutationCommand::Update { assignments, predicate } => {
                    let (p, used) = table.compiler.compile_with_columns(predicate)?;
                    cols.extend(used);
                    let mut a = Vec::new();
                    for (col, expr) in assignments {
                        if table.key_columns().contains(col) || table.partition_columns().contains(col) {
                            return Err(StorageError::UpdateKeyColumn(col.clone()));
                        }
                        let i = table.schema().index_of(col).map_err(|_| StorageError::NoSuchColumn(col.clone()))?;
                        let (e, used) = table.compiler.compile_with_columns(expr)?;
                        cols.extend(used);
                        cols.push(col.clone());
                        a.push((i, e));
                    }
                    out.push(Compiled::Update { predicate: p, assignments: a });
                }
            }
        }
    }
    let mut idx: Vec<usize> = cols.iter().filter_map(|c| table.schema().index_of(c).ok()).collect();
    idx.sort();
    idx.dedup();
    Ok((out, idx))
}

/// Rows where the predicate is true (NULL counts as false).
fn matched(pred: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray> {
    let v = pred.evaluate(batch)?.into_array(batch.num_rows())?;
    let v = cast(&v, &arrow::datatypes::DataType::Boolean)?;
    let b = v.as_boolean();
    Ok(match b.nulls() {
        Some(_) => b.iter().map(|x| Some(x == Some(true))).collect(),
        None => b.clone(),
    })
}

/// Applies the commands to a batch; returns the new batch and whether anything changed.
pub(super) fn apply(cmds: &[Compiled], mut batch: RecordBatch) -> Result<(RecordBatch, bool)> {
    let mut changed = false;
    for c in cmds {
        match c {
            Compiled::Delete(p) | Compiled::Lightweight(p) => {
                let m = matched(p, &batch)?;
                if m.true_count() > 0 {
                    changed = true;
                    let keep = arrow::compute::not(&m)?;
                    batch = filter_record_batch(&batch, &keep)?;
                }
            }
            Compiled::Update { predicate, assignments } => {
                let m = matched(predicate, &batch)?;
                if m.true_count() == 0 {
                    continue;
                }
                changed = true;
                let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
                for (i, e) in assignments {
                    let target = batch.schema().field(*i).data_type().clone();
                    let new = cast(&e.evaluate(&batch)?.into_array(batch.num_rows())?, &target)?;
                    cols[*i] = zip(&m, &new, batch.column(*i))?;
                }
                batch = RecordBatch::try_new(batch.schema(), cols)?;
            }
        }
    }
    Ok((batch, changed))
}

/// Checks that a mutation's predicates and assignments compile and that it
/// updates no key column, without touching any part: callers validate before
/// recording the mutation.
pub fn validate(table: &Table, mutation: &Mutation) -> Result<()> {
    compile(table, &[mutation]).map(|_| ())
}

/// Applies every mutation `part` still needs. Returns the new part
/// `<name>_<version>` (rewritten, or hard-linked when no row changes), or
/// `None` when no mutation applies to it.
pub fn mutate_part(
    table: &Arc<Table>,
    parent: &Path,
    part: &Arc<Part>,
    mutations: &[Mutation],
) -> Result<Option<Part>> {
    let pending = pending_for(part, mutations);
    let Some(last) = pending.last() else { return Ok(None) };
    let new_name = part.name.mutated(last.version);
    let (cmds, used_cols) = compile(table, &pending)?;
    let batch_rows = table.def.settings.merge_batch_rows;

    if cmds.iter().all(|c| matches!(c, Compiled::Lightweight(_))) {
        let mask = lightweight_mask(table, part, &cmds, &used_cols, batch_rows)?;
        return link_part(parent, part, &new_name, mask.as_ref()).map(Some);
    }

    // Pass 1: only the columns the commands read, to find out whether any row changes.
    let mut any = false;
    for b in reader::open(part, Some(&used_cols), None, batch_rows)? {
        let b = b.map_err(|e| StorageError::CorruptedPart { part: part.name.to_string(), reason: e.to_string() })?;
        if apply(&cmds, pad_to_table(table, &b)?)?.1 {
            any = true;
            break;
        }
    }
    if !any {
        return link_part(parent, part, &new_name, part.mask.as_ref()).map(Some);
    }

    // UPDATE only: re-encode just the updated columns, copy the rest.
    let updated: Vec<usize> = cmds
        .iter()
        .filter_map(|c| match c {
            Compiled::Update { assignments, .. } => Some(assignments.iter().map(|(i, _)| *i)),
            _ => None,
        })
        .flatten()
        .collect();
    let only_updates = cmds.iter().all(|c| matches!(c, Compiled::Update { .. }));
    if only_updates && super::columns::flat_schema(reader::reader_metadata(part)?.metadata(), table) {
        let mut updated = updated;
        updated.sort();
        updated.dedup();
        return super::columns::rewrite_columns(table, parent, part, &cmds, &used_cols, &updated, &new_name).map(Some);
    }

    // Pass 2: rewrite every column.
    let mut w = PartWriter::create(table, parent, new_name, "mutate")?.with_blocks(part.meta.blocks);
    for b in reader::open(part, None, None, batch_rows)? {
        let b = b.map_err(|e| StorageError::CorruptedPart { part: part.name.to_string(), reason: e.to_string() })?;
        let (out, _) = apply(&cmds, b)?;
        w.write(&out)?;
    }
    w.finish(part.meta.partition_value.clone(), None).map(Some)
}

/// The part's mask plus every row matching a lightweight delete, by row offset.
fn lightweight_mask(
    table: &Table,
    part: &Part,
    cmds: &[Compiled],
    cols: &[usize],
    batch_rows: usize,
) -> Result<Option<RoaringBitmap>> {
    let mut mask = part.mask.clone().unwrap_or_default();
    // Read every row, masked ones too, so offsets are the file's row numbers.
    let mut b = reader::builder(part)?.with_batch_size(batch_rows);
    let proj = parquet::arrow::ProjectionMask::roots(b.parquet_schema(), cols.iter().copied());
    b = b.with_projection(proj);
    let r = b.build().map_err(|e| StorageError::parquet(part.name.to_string(), e))?;
    let mut offset = 0u32;
    for batch in r {
        let batch =
            batch.map_err(|e| StorageError::CorruptedPart { part: part.name.to_string(), reason: e.to_string() })?;
        let full = pad_to_table(table, &batch)?;
        for c in cmds {
            if let Compiled::Lightweight(p) = c {
                let m = matched(p, &full)?;
                for (i, v) in m.iter().enumerate() {
                    if v == Some(true) {
                        mask.insert(offset + i as u32);
                    }
                }
            }
        }
        offset += batch.num_rows() as u32;
    }
    Ok((!mask.is_empty()).then_some(mask))
}

/// Creates `new_name` sharing the data file of `part` by hard link, with `mask`.
fn link_part(parent: &Path, part: &Part, new_name: &PartName, mask: Option<&RoaringBitmap>) -> Result<Part> {
    let tmp = parent.join(format!("{TMP_PREFIX}mutate_{new_name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    match part.mem_files().and_then(|f| f.get(DATA_FILE)) {
        Some(bytes) => {
            write_synced(&tmp.join(DATA_FILE), bytes)?;
        }
        None => fs::hard_link(part.data_path(), tmp.join(DATA_FILE))
            .map_err(|e| StorageError::io(tmp.join(DATA_FILE), e))?,
    }
    let mut meta = part.meta.clone();
    meta.files.retain(|f, _| f == DATA_FILE);
    meta.masked_rows = 0;
    if let Some(mask) = mask.filter(|m| !m.is_empty()) {
        let mut bytes = Vec::new();
        mask.serialize_into(&mut bytes).map_err(|e| StorageError::io(MASK_FILE, e))?;
        meta.files.insert(MASK_FILE.to_string(), write_synced(&tmp.join(MASK_FILE), &bytes)?);
        meta.masked_rows = mask.len();
    }
    meta.name = new_name.to_string();
    meta.data_version = new_name.data_version();
    meta.bytes_on_disk = meta.files.values().map(|f| f.size).sum();
    meta.modification_time_ms = chrono::Utc::now().timestamp_millis();
    write_synced(&tmp.join(META_FILE), &meta.encode())?;
    std::fs::File::open(&tmp).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(&tmp, e))?;
    failpoint::hit("mutate:before_rename")?;
    let final_dir = parent.join(new_name.to_string());
    publish(&tmp, &final_dir, parent)?;
    Part::load(&final_dir)
}
