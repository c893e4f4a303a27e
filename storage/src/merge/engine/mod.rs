//! The merge semantics of each engine, applied to a sorted chunk whose runs of
//! equal sorting keys are whole (never split across chunks).

mod aggregating;
mod collapsing;
mod replacing;
mod summing;

use std::collections::HashSet;
use std::ops::Range;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::row::{RowConverter, SortField};

use crate::error::Result;
use crate::merge::kway::pad_to_table;
use crate::table::{Engine, Table};

/// How a merge or a FINAL read reduces rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReduceMode {
    /// FINAL read: Collapsing keeps only positive rows.
    pub final_read: bool,
    /// `OPTIMIZE … FINAL CLEANUP`: Replacing drops rows whose winner is deleted.
    pub cleanup: bool,
    /// `OPTIMIZE … DEDUPLICATE`: drop fully identical rows.
    pub deduplicate: bool,
}

/// Whether the engine (or dedup) needs runs of equal keys kept whole.
pub fn needs_runs(table: &Table, mode: ReduceMode) -> bool {
    mode.deduplicate || table.def.engine != Engine::MergeTree
}

/// Runs of equal sorting keys in a sorted chunk.
pub(crate) fn runs(table: &Table, chunk: &RecordBatch) -> Result<Vec<Range<usize>>> {
    let n = chunk.num_rows();
    if n == 0 {
        return Ok(vec![]);
    }
    if table.order_by.is_empty() {
        return Ok(std::iter::once(0..n).collect());
    }
    let conv = table.sort_key_converter()?;
    let full =
        if chunk.num_columns() == table.schema().fields().len() { chunk.clone() } else { pad_to_table(table, chunk)? };
    let rows = table.sort_key_rows(&conv, &full)?;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..n {
        if rows.row(i) != rows.row(i - 1) {
            out.push(start..i);
            start = i;
        }
    }
    out.push(start..n);
    Ok(out)
}

/// Applies the engine's merge rule (and DEDUPLICATE) to one sorted chunk.
pub fn reduce(table: &Table, chunk: RecordBatch, mode: ReduceMode) -> Result<RecordBatch> {
    if !needs_runs(table, mode) || chunk.num_rows() == 0 {
        return Ok(chunk);
    }
    let runs = runs(table, &chunk)?;
    let ec = &table.engine_cols;
    let reduced = match &table.def.engine {
        Engine::MergeTree => chunk,
        Engine::Replacing { .. } => {
            let idx = replacing::select(&chunk, &runs, ec.version, ec.is_deleted, mode.cleanup)?;
            take_rows(&chunk, idx)?
        }
        Engine::Collapsing { .. } => {
            let sign = ec.sign.unwrap_or(0);
            let idx = collapsing::select(&chunk, &runs, sign, mode.final_read)?;
            take_rows(&chunk, idx)?
        }
        Engine::Summing { .. } => summing::reduce(&chunk, &runs, &ec.summed)?,
        Engine::Aggregating => aggregating::reduce(&chunk, &runs, &ec.aggregates)?,
    };
    if mode.deduplicate { deduplicate(table, reduced) } else { Ok(reduced) }
}

pub(crate) fn take_rows(chunk: &RecordBatch, idx: Vec<u32>) -> Result<RecordBatch> {
    if idx.len() == chunk.num_rows() && idx.iter().enumerate().all(|(i, &j)| i as u32 == j) {
        return Ok(chunk.clone());
    }
    Ok(take_record_batch(chunk, &UInt32Array::from(idx))?)
}

/// Drops rows identical in every column to an earlier row with the same key.
fn deduplicate(table: &Table, chunk: RecordBatch) -> Result<RecordBatch> {
    let runs = runs(table, &chunk)?;
    let conv =
        RowConverter::new(chunk.schema().fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
    let all = conv.convert_columns(chunk.columns())?;
    let mut keep = Vec::with_capacity(chunk.num_rows());
    for run in runs {
        let mut seen = HashSet::new();
        for i in run {
            if seen.insert(all.row(i)) {
                keep.push(i as u32);
            }
        }
    }
    take_rows(&chunk, keep)
}
