//! Partition keys: splitting a block by partition and naming each partition
//! with ClickHouse's `partition_id`.
//!
//! The id is the key's value when every element is an integer or a date
//! (dates as `YYYYMMDD`, elements joined by `-`), `all` without a partition
//! key, the value itself for short alphanumeric strings, and otherwise a
//! 128-bit hash of the values in hex.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Date32Type, Int64Type, UInt64Type};
use arrow::row::{RowConverter, SortField};
use chrono::Datelike;

use crate::error::Result;
use crate::table::Table;

/// One partition's rows of a block.
#[derive(Debug, Clone)]
pub struct PartitionBlock {
    pub partition_id: String,
    /// The key's values as text (`system.parts.partition`).
    pub value: Vec<String>,
    pub batch: RecordBatch,
}

/// Splits a block into one piece per partition, rows in their original order,
/// pieces in order of first appearance.
pub fn split_by_partition(table: &Table, batch: &RecordBatch) -> Result<Vec<PartitionBlock>> {
    let Some(exprs) = &table.partition_by else {
        return Ok(vec![PartitionBlock { partition_id: "all".into(), value: vec![], batch: batch.clone() }]);
    };
    let n = batch.num_rows();
    let keys: Vec<ArrayRef> = exprs.iter().map(|e| Ok(e.evaluate(batch)?.into_array(n)?)).collect::<Result<_>>()?;
    let conv = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
    let rows = conv.convert_columns(&keys)?;
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut index: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
    for i in 0..n {
        let g = *index.entry(rows.row(i)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i as u32);
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let first = g[0] as usize;
        let (partition_id, value) = partition_id_of(&keys, first)?;
        let piece = if g.len() == n { batch.clone() } else { take_record_batch(batch, &UInt32Array::from(g))? };
        out.push(PartitionBlock { partition_id, value, batch: piece });
    }
    Ok(out)
}

/// The partition id and display values of row `row` of the key columns.
pub fn partition_id_of(keys: &[ArrayRef], row: usize) -> Result<(String, Vec<String>)> {
    let mut display = Vec::with_capacity(keys.len());
    let mut id_parts = Vec::with_capacity(keys.len());
    let mut simple = true;
    for k in keys {
        let one = k.slice(row, 1);
        let text = if one.is_null(0) {
            simple = false;
            "NULL".to_string()
        } else {
            cast(&one, &DataType::Utf8)?.as_string::<i32>().value(0).to_string()
        };
        match integral_id(&one)? {
            Some(id) => id_parts.push(id),
            None => {
                let is_str = matches!(k.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
                if is_str && !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    id_parts.push(text.clone());
                } else {
                    simple = false;
                }
            }
        }
        display.push(text);
    }
    if simple {
        return Ok((id_parts.join("-"), display));
    }
    let mut bytes = Vec::new();
    for (k, d) in keys.iter().zip(&display) {
        bytes.extend_from_slice(k.data_type().to_string().as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&(d.len() as u64).to_le_bytes());
        bytes.extend_from_slice(d.as_bytes());
    }
    Ok((format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes)), display))
}

fn integral_id(one: &ArrayRef) -> Result<Option<String>> {
    if one.is_null(0) {
        return Ok(None);
    }
    let t = one.data_type();
    Ok(match t {
        DataType::Date32 => {
            let d = one.as_primitive::<Date32Type>().value(0);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163).unwrap_or(chrono::NaiveDate::MIN);
            Some(format!("{}", date.year() as i64 * 10000 + date.month() as i64 * 100 + date.day() as i64))
        }
        DataType::Boolean => Some(
            cast(one, &DataType::UInt8)
                .map(|a| cast(&a, &DataType::UInt64))??
                .as_primitive::<UInt64Type>()
                .value(0)
                .to_string(),
        ),
        t if t.is_unsigned_integer() => {
            Some(cast(one, &DataType::UInt64)?.as_primitive::<UInt64Type>().value(0).to_string())
        }
        t if t.is_signed_integer() || matches!(t, DataType::Timestamp(_, _) | DataType::Date64) => {
            let v = if let DataType::Timestamp(_, _) = t {
                // DateTime partitions are named by seconds, as ClickHouse does.
                let s = cast(one, &DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None))?;
                cast(&s, &DataType::Int64)?
            } else {
                cast(one, &DataType::Int64)?
            };
            Some(v.as_primitive::<Int64Type>().value(0).to_string())
        }
        _ => None,
    })
}
