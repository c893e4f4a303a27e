//! AggregatingMergeTree: rows with one sorting key become one row whose
//! aggregate-state columns hold the merged states and whose other columns come
//! from the first row.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BinaryBuilder, RecordBatch, UInt32Array};
use arrow::compute::take;

use crate::agg::AggregateFunction;
use crate::error::Result;

pub(super) fn reduce(
    chunk: &RecordBatch,
    runs: &[Range<usize>],
    aggregates: &[(usize, AggregateFunction)],
) -> Result<RecordBatch> {
    let firsts = UInt32Array::from(runs.iter().map(|r| r.start as u32).collect::<Vec<_>>());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(chunk.num_columns());
    for (i, col) in chunk.columns().iter().enumerate() {
        match aggregates.iter().find(|(j, _)| *j == i) {
            Some((_, func)) => {
                let states = col.as_binary::<i32>();
                let mut b = BinaryBuilder::new();
                for r in runs {
                    if r.len() == 1 {
                        b.append_value(states.value(r.start));
                    } else {
                        b.append_value(func.merge_rows(states, r.clone())?);
                    }
                }
                columns.push(Arc::new(b.finish()));
            }
            None => columns.push(take(col, &firsts, None)?),
        }
    }
    Ok(RecordBatch::try_new(chunk.schema(), columns)?)
}
