//! A table's storage definition (schema, engine, keys, settings) and its compiled
//! form: the expressions the engine evaluates on every block and merge.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_plan::PhysicalExpr;
use serde::{Deserialize, Serialize};

use crate::agg::AggregateFunction;
use crate::error::{Result, StorageError};
use crate::expr::ExprCompiler;

/// The MergeTree family engine of a table and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    /// Plain MergeTree: merges only sort.
    MergeTree,
    /// ReplacingMergeTree([ver[, is_deleted]]).
    Replacing { version: Option<String>, is_deleted: Option<String> },
    /// SummingMergeTree([columns]); `None` sums every numeric non-key column.
    Summing { columns: Option<Vec<String>> },
    /// AggregatingMergeTree: columns with an aggregate function merge their states.
    Aggregating,
    /// CollapsingMergeTree(sign).
    Collapsing { sign: String },
}

/// The compression of part data (`SETTINGS compression_codec = 'lz4' | 'zstd'`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartCodec {
    #[default]
    Lz4,
    Zstd,
}

/// MergeTree settings that storage itself honours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeTreeSettings {
    /// Rows per Parquet data page: the granule a primary-key range reads.
    pub index_granularity: usize,
    /// Rows per Parquet row group.
    pub row_group_size: usize,
    /// How part data is compressed. LZ4 (ClickHouse's default) decompresses
    /// several times faster than zstd, which scans feel directly; zstd makes
    /// smaller parts.
    #[serde(default)]
    pub codec: PartCodec,
    /// zstd level for part data when the codec is zstd.
    pub zstd_level: i32,
    /// Active parts in one partition above which inserts are delayed.
    pub parts_to_delay_insert: usize,
    /// Active parts in one partition above which inserts are rejected.
    pub parts_to_throw_insert: usize,
    /// The longest delay an insert gets before the throw threshold, in ms.
    pub max_delay_to_insert_ms: u64,
    /// The most parts one merge takes.
    pub max_parts_to_merge_at_once: usize,
    /// The largest merged part the selector will produce, in bytes.
    pub max_bytes_to_merge_at_max_space_in_pool: u64,
    /// Seconds an outdated part stays on disk before deletion.
    pub old_parts_lifetime_secs: u64,
    /// Rows a merge or scan reads per batch.
    pub merge_batch_rows: usize,
    /// Recent inserted blocks whose ids are kept for deduplication (0: off).
    #[serde(default)]
    pub non_replicated_deduplication_window: usize,
}

impl Default for MergeTreeSettings {
    fn default() -> Self {
        MergeTreeSettings {
            index_granularity: 8192,
            row_group_size: 1 << 20,
            codec: PartCodec::Lz4,
            zstd_level: 1,
            parts_to_delay_insert: 1000,
            parts_to_throw_insert: 3000,
            max_delay_to_insert_ms: 1000,
            max_parts_to_merge_at_once: 100,
            max_bytes_to_merge_at_max_space_in_pool: 150 << 30,
            old_parts_lifetime_secs: 480,
            merge_batch_rows: 8192,
            non_replicated_deduplication_window: 0,
        }
    }
}

/// What a table's storage needs to know, as written in its DDL.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Columns. An `AggregateFunction` column is Binary with field metadata
    /// [`crate::agg::AGG_META_KEY`] naming its function.
    pub schema: SchemaRef,
    pub engine: Engine,
    /// `PARTITION BY` expression (SQL text); `None` means one partition `all`.
    pub partition_by: Option<String>,
    /// `ORDER BY` expressions (SQL text); empty is `ORDER BY tuple()`.
    pub order_by: Vec<String>,
    pub settings: MergeTreeSettings,
}

/// A compiled table definition, shared by writers, merges, mutations and scans.
#[derive(Debug)]
pub struct Table {
    pub def: TableDef,
    pub compiler: ExprCompiler,
    pub(crate) order_by: Vec<Arc<dyn PhysicalExpr>>,
    pub(crate) order_by_types: Vec<DataType>,
    pub(crate) partition_by: Option<Vec<Arc<dyn PhysicalExpr>>>,
    /// Columns the ORDER BY and PARTITION BY expressions read.
    pub(crate) key_columns: Vec<String>,
    pub(crate) partition_columns: Vec<String>,
    /// Position of the engine's special columns.
    pub(crate) engine_cols: EngineColumns,
}

/// Positions of the columns an engine's merge reads.
#[derive(Debug, Default, Clone)]
pub(crate) struct EngineColumns {
    pub version: Option<usize>,
    pub is_deleted: Option<usize>,
    pub sign: Option<usize>,
    pub summed: Vec<usize>,
    pub aggregates: Vec<(usize, AggregateFunction)>,
}

impl Table {
    /// The types of the PARTITION BY key's elements (none without a key).
    pub fn partition_key_types(&self) -> Result<Vec<DataType>> {
        match &self.partition_by {
            None => Ok(Vec::new()),
            Some(exprs) => exprs.iter().map(|e| Ok(e.data_type(&self.def.schema)?)).collect(),
        }
    }

    /// Compiles and validates a table definition.
    pub fn new(def: TableDef) -> Result<Arc<Table>> {
        let compiler = ExprCompiler::new(def.schema.clone())?;
        let mut order_by = Vec::new();
        let mut order_by_types = Vec::new();
        let mut key_columns = Vec::new();
        for e in &def.order_by {
            let (pe, cols) = compiler.compile_with_columns(e)?;
            order_by_types.push(pe.data_type(&def.schema)?);
            order_by.push(pe);
            key_columns.extend(cols);
        }
        let mut partition_columns = Vec::new();
        let partition_by = match &def.partition_by {
            None => None,
            Some(text) => {
                let exprs = split_tuple(text);
                let mut v = Vec::new();
                for e in exprs {
                    let (pe, cols) = compiler.compile_with_columns(&e)?;
                    partition_columns.extend(cols);
                    v.push(pe);
                }
                Some(v)
            }
        };
        dedup_keep_order(&mut key_columns);
        dedup_keep_order(&mut partition_columns);
        let engine_cols = resolve_engine_columns(&def, &key_columns)?;
        Ok(Arc::new(Table {
            def,
            compiler,
            order_by,
            order_by_types,
            partition_by,
            key_columns,
            partition_columns,
            engine_cols,
        }))
    }

    /// The table's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.def.schema
    }

    /// Columns read by the ORDER BY expressions, in order of first use.
    pub fn key_columns(&self) -> &[String] {
        &self.key_columns
    }

    /// Columns read by the PARTITION BY expression.
    pub fn partition_columns(&self) -> &[String] {
        &self.partition_columns
    }

    /// Evaluates the ORDER BY expressions on a batch.
    pub(crate) fn eval_sort_key(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.order_by.iter().map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?)).collect()
    }

    /// A row converter for the sort key: its rows compare as the ORDER BY does.
    pub(crate) fn sort_key_converter(&self) -> Result<RowConverter> {
        if self.order_by.is_empty() {
            // ORDER BY tuple(): every row has the same (constant) key.
            return Ok(RowConverter::new(vec![SortField::new(DataType::Boolean)])?);
        }
        Ok(RowConverter::new(self.order_by_types.iter().map(|t| SortField::new(t.clone())).collect())?)
    }

    /// The sort key of a batch in row format.
    pub(crate) fn sort_key_rows(&self, conv: &RowConverter, batch: &RecordBatch) -> Result<Rows> {
        if self.order_by.is_empty() {
            // One row per input row, all equal: a zero-column conversion would
            // have no rows at all (regression: OPTIMIZE of an ORDER BY tuple()
            // table panicked with "row index out of bounds").
            let constant: arrow::array::ArrayRef =
                Arc::new(arrow::array::BooleanArray::from(vec![false; batch.num_rows()]));
            return Ok(conv.convert_columns(&[constant])?);
        }
        let cols = self.eval_sort_key(batch)?;
        Ok(conv.convert_columns(&cols)?)
    }
}

/// Splits `(a, b)` / `tuple(a, b)` into its elements; a single expression stays whole.
pub(crate) fn split_tuple(text: &str) -> Vec<String> {
    let t = text.trim();
    let inner = if let Some(rest) = t.strip_prefix("tuple(") {
        rest.strip_suffix(')')
    } else if t.starts_with('(') && matching_close(t) == Some(t.len() - 1) {
        Some(&t[1..t.len() - 1])
    } else {
        None
    };
    let Some(inner) = inner else { return vec![t.to_string()] };
    let mut parts = Vec::new();
    let (mut depth, mut start, mut quote) = (0i32, 0usize, false);
    for (i, c) in inner.char_indices() {
        match c {
            '\'' => quote = !quote,
            '(' if !quote => depth += 1,
            ')' if !quote => depth -= 1,
            ',' if !quote && depth == 0 => {
                parts.push(inner[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        parts.push(last.to_string());
    }
    parts
}

fn matching_close(t: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in t.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = HashSet::new();
    v.retain(|c| seen.insert(c.clone()));
}

fn col_index(def: &TableDef, name: &str) -> Result<usize> {
    def.schema.index_of(name).map_err(|_| StorageError::NoSuchColumn(name.to_string()))
}

fn resolve_engine_columns(def: &TableDef, key_columns: &[String]) -> Result<EngineColumns> {
    let mut ec = EngineColumns::default();
    match &def.engine {
        Engine::MergeTree => {}
        Engine::Replacing { version, is_deleted } => {
            if let Some(v) = version {
                ec.version = Some(col_index(def, v)?);
            }
            if let Some(d) = is_deleted {
                if version.is_none() {
                    return Err(StorageError::BadTable(
                        "ReplacingMergeTree: is_deleted requires a version column".into(),
                    ));
                }
                let i = col_index(def, d)?;
                if def.schema.field(i).data_type() != &DataType::UInt8 {
                    return Err(StorageError::BadTable(format!("is_deleted column `{d}` must be UInt8")));
                }
                ec.is_deleted = Some(i);
            }
        }
        Engine::Collapsing { sign } => {
            let i = col_index(def, sign)?;
            if def.schema.field(i).data_type() != &DataType::Int8 {
                return Err(StorageError::BadTable(format!("sign column `{sign}` must be Int8")));
            }
            ec.sign = Some(i);
        }
        Engine::Summing { columns } => {
            let is_key = |n: &str| key_columns.iter().any(|k| k == n);
            match columns {
                Some(cols) => {
                    for c in cols {
                        let i = col_index(def, c)?;
                        if is_key(c) {
                            return Err(StorageError::BadTable(format!(
                                "SummingMergeTree: column `{c}` is in the sorting key"
                            )));
                        }
                        if !def.schema.field(i).data_type().is_numeric() {
                            return Err(StorageError::BadTable(format!(
                                "SummingMergeTree: column `{c}` is not numeric"
                            )));
                        }
                        ec.summed.push(i);
                    }
                }
                None => {
                    for (i, f) in def.schema.fields().iter().enumerate() {
                        if f.data_type().is_numeric() && !is_key(f.name()) {
                            ec.summed.push(i);
                        }
                    }
                }
            }
        }
        Engine::Aggregating => {
            for (i, f) in def.schema.fields().iter().enumerate() {
                if let Some(func) = AggregateFunction::from_field(f)? {
                    ec.aggregates.push((i, func));
                }
            }
        }
    }
    Ok(ec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tuple_forms() {
        assert_eq!(split_tuple("toYYYYMM(d)"), vec!["toYYYYMM(d)"]);
        assert_eq!(split_tuple("(a, toDate(b))"), vec!["a", "toDate(b)"]);
        assert_eq!(split_tuple("tuple(a, b)"), vec!["a", "b"]);
        assert!(split_tuple("tuple()").is_empty());
        assert_eq!(split_tuple("(a) + (b)"), vec!["(a) + (b)"]);
    }
}
