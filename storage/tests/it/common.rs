//! Helpers shared by the storage integration tests.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int8Array, Int64Array, RecordBatch, StringArray, UInt8Array, UInt64Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use storage::part::name::PartName;
use storage::part::{Part, reader, writer};
use storage::partition::split_by_partition;
use storage::{Engine, MergeTreeSettings, Table, TableDef};

/// A table `(k Int64, v Int64, s Utf8)` with the given engine, ORDER BY k.
pub fn kv_table(engine: Engine, extra: Vec<Field>) -> Arc<Table> {
    let mut fields = vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ];
    fields.extend(extra);
    table(Arc::new(Schema::new(fields)), engine, None, vec!["k".into()])
}

pub fn table(schema: SchemaRef, engine: Engine, partition_by: Option<&str>, order_by: Vec<String>) -> Arc<Table> {
    Table::new(TableDef {
        schema,
        engine,
        partition_by: partition_by.map(str::to_string),
        order_by,
        settings: MergeTreeSettings { merge_batch_rows: 1000, ..Default::default() },
    })
    .unwrap()
}

pub fn kv_batch(t: &Table, ks: &[i64], vs: &[i64]) -> RecordBatch {
    let s: StringArray = ks.iter().map(|k| Some(format!("s{k}"))).collect();
    let mut cols: Vec<ArrayRef> =
        vec![Arc::new(Int64Array::from(ks.to_vec())), Arc::new(Int64Array::from(vs.to_vec())), Arc::new(s)];
    for f in t.schema().fields().iter().skip(3) {
        let n = ks.len();
        cols.push(match f.data_type() {
            DataType::UInt8 => Arc::new(UInt8Array::from(vec![0u8; n])),
            DataType::Int8 => Arc::new(Int8Array::from(vec![1i8; n])),
            DataType::UInt64 => Arc::new(UInt64Array::from(vec![1u64; n])),
            _ => arrow::array::new_null_array(f.data_type(), n),
        });
    }
    RecordBatch::try_new(t.schema().clone(), cols).unwrap()
}

/// Writes a batch as the level-0 part of `block` (one partition expected).
pub fn insert(t: &Table, dir: &Path, block: i64, batch: &RecordBatch) -> Arc<Part> {
    let mut pieces = split_by_partition(t, batch).unwrap();
    assert_eq!(pieces.len(), 1, "insert() takes one partition");
    let p = pieces.remove(0);
    let name = PartName::new_insert(p.partition_id, block);
    Arc::new(writer::write_block(t, dir, name, p.value, &p.batch).unwrap())
}

pub fn read(part: &Part) -> RecordBatch {
    let batches = reader::read_all(part).unwrap();
    // An empty part (every row summed or collapsed away) still has its columns.
    let schema = reader::builder(part).unwrap().schema().clone();
    if batches.is_empty() {
        return RecordBatch::new_empty(schema);
    }
    concat_batches(&schema, &batches).unwrap()
}

pub fn concat(batches: &[RecordBatch]) -> RecordBatch {
    concat_batches(&batches[0].schema(), batches).unwrap()
}

pub fn i64s(b: &RecordBatch, col: &str) -> Vec<i64> {
    b.column_by_name(col).unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec()
}

pub fn strs(b: &RecordBatch, col: &str) -> Vec<String> {
    let c = arrow::compute::cast(b.column_by_name(col).unwrap(), &DataType::Utf8).unwrap();
    c.as_string::<i32>().iter().map(|s| s.unwrap_or("NULL").to_string()).collect()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
