//! CollapsingMergeTree(sign) with ClickHouse's order-dependent rules
//! (`CollapsingSortedAlgorithm`): within one sorting key, if the last row is
//! positive or the counts differ, keep the first negative row when negatives
//! are at least as many, and the last positive row when positives are at least
//! as many; equal counts ending in a negative row cancel out entirely. A FINAL
//! read keeps only positive rows.

use std::ops::Range;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int8Type;

use crate::error::Result;

pub(super) fn select(
    chunk: &RecordBatch,
    runs: &[Range<usize>],
    sign_col: usize,
    only_positive: bool,
) -> Result<Vec<u32>> {
    let sign = chunk.column(sign_col).as_primitive::<Int8Type>();
    let mut out = Vec::new();
    for run in runs {
        let (mut pos, mut neg) = (0usize, 0usize);
        let (mut first_neg, mut last_pos) = (None, None);
        let mut last_is_positive = false;
        for i in run.clone() {
            let s = if sign.is_null(i) { 0 } else { sign.value(i) };
            if s == 1 {
                pos += 1;
                last_pos = Some(i);
                last_is_positive = true;
            } else if s == -1 {
                neg += 1;
                if first_neg.is_none() {
                    first_neg = Some(i);
                }
                last_is_positive = false;
            } else {
                tracing::warn!(sign = s, "CollapsingMergeTree: sign must be 1 or -1; row ignored");
            }
        }
        if pos == 0 && neg == 0 {
            continue;
        }
        if last_is_positive || pos != neg {
            if pos <= neg
                && !only_positive
                && let Some(i) = first_neg
            {
                out.push(i as u32);
            }
            if pos >= neg
                && let Some(i) = last_pos
            {
                out.push(i as u32);
            }
            if pos.abs_diff(neg) > 1 {
                tracing::warn!(
                    pos,
                    neg,
                    "CollapsingMergeTree: incorrect data, counts of sign 1 and -1 differ by more than one"
                );
            }
        }
    }
    Ok(out)
}
