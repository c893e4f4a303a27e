//! ReplacingMergeTree([ver[, is_deleted]]): of the rows with one sorting key,
//! the one with the highest `ver` survives; ties (and no `ver`) go to the last
//! inserted. With CLEANUP a surviving row with `is_deleted = 1` is dropped.

use std::ops::Range;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, UInt8Type};
use arrow::row::{RowConverter, SortField};

use crate::error::Result;

pub(super) fn select(
    chunk: &RecordBatch,
    runs: &[Range<usize>],
    version: Option<usize>,
    is_deleted: Option<usize>,
    cleanup: bool,
) -> Result<Vec<u32>> {
    // Versions compare through the row format, so any orderable type works.
    let ver_rows = match version {
        Some(v) => {
            let col: ArrayRef = chunk.column(v).clone();
            let conv = RowConverter::new(vec![SortField::new(col.data_type().clone())])?;
            Some(conv.convert_columns(&[col])?)
        }
        None => None,
    };
    let deleted = match is_deleted {
        Some(d) if cleanup && chunk.column(d).data_type() == &DataType::UInt8 => {
            Some(chunk.column(d).as_primitive::<UInt8Type>().clone())
        }
        _ => None,
    };
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let mut best = run.start;
        if let Some(vr) = &ver_rows {
            for i in run.clone().skip(1) {
                if vr.row(i) >= vr.row(best) {
                    best = i;
                }
            }
        } else {
            best = run.end - 1;
        }
        if let Some(d) = &deleted
            && !d.is_null(best)
            && d.value(best) == 1
        {
            continue;
        }
        out.push(best as u32);
    }
    Ok(out)
}
