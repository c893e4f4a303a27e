//! SummingMergeTree([columns]): rows with one sorting key become one row whose
//! summed columns hold the sums and whose other columns come from the first
//! row; a row whose sums are all zero disappears.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::*;

use crate::error::{Result, StorageError};

pub(super) fn reduce(chunk: &RecordBatch, runs: &[Range<usize>], summed: &[usize]) -> Result<RecordBatch> {
    let firsts = UInt32Array::from(runs.iter().map(|r| r.start as u32).collect::<Vec<_>>());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(chunk.num_columns());
    let mut all_zero = vec![true; runs.len()];
    for (i, col) in chunk.columns().iter().enumerate() {
        if summed.contains(&i) {
            let (sums, zero) = segmented_sum(col, runs)?;
            for (z, s) in all_zero.iter_mut().zip(zero) {
                *z &= s;
            }
            columns.push(sums);
        } else {
            columns.push(take(col, &firsts, None)?);
        }
    }
    let out = RecordBatch::try_new(chunk.schema(), columns)?;
    if summed.is_empty() || !all_zero.iter().any(|z| *z) {
        return Ok(out);
    }
    let keep: Vec<u32> = (0..runs.len() as u32).filter(|&i| !all_zero[i as usize]).collect();
    super::take_rows(&out, keep)
}

fn sum_primitive<T: ArrowPrimitiveType>(
    col: &ArrayRef,
    runs: &[Range<usize>],
    add: fn(T::Native, T::Native) -> T::Native,
) -> (ArrayRef, Vec<bool>)
where
    T::Native: Default + PartialEq,
{
    let a = col.as_primitive::<T>();
    let mut sums = Vec::with_capacity(runs.len());
    let mut zero = Vec::with_capacity(runs.len());
    for r in runs {
        let mut s = T::Native::default();
        for i in r.clone() {
            if !a.is_null(i) {
                s = add(s, a.value(i));
            }
        }
        zero.push(s == T::Native::default());
        sums.push(s);
    }
    let out = PrimitiveArray::<T>::from_iter_values(sums).with_data_type(col.data_type().clone());
    (Arc::new(out), zero)
}

fn segmented_sum(col: &ArrayRef, runs: &[Range<usize>]) -> Result<(ArrayRef, Vec<bool>)> {
    macro_rules! int {
        ($t:ty) => {
            sum_primitive::<$t>(col, runs, |a, b| a.wrapping_add(b))
        };
    }
    Ok(match col.data_type() {
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Decimal128(_, _) => int!(Decimal128Type),
        DataType::Float32 => sum_primitive::<Float32Type>(col, runs, |a, b| a + b),
        DataType::Float64 => sum_primitive::<Float64Type>(col, runs, |a, b| a + b),
        t => return Err(StorageError::BadTable(format!("SummingMergeTree cannot sum {t}"))),
    })
}
