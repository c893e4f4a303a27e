//! Pruning with DataFusion's `PruningPredicate`: whole parts by the min/max in
//! their metadata (partition and key columns), and data pages of a part by the
//! Parquet page index (so a primary-key range reads only its granules).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::PhysicalExpr;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::file::metadata::ParquetMetaData;

use crate::part::Part;

/// Builds a pruning predicate; `None` when the filter can't prune anything.
pub fn predicate(filter: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<PruningPredicate> {
    let p = PruningPredicateBuilder::new().with_file_schema(schema.clone()).try_build(filter.clone()).ok()?;
    (!p.always_true()).then_some(p)
}

/// Part-level statistics: one container per part, from `meta.json`.
struct PartStats<'a> {
    parts: &'a [Arc<Part>],
    schema: &'a SchemaRef,
}

impl PartStats<'_> {
    fn values(&self, column: &Column, max: bool) -> Option<ArrayRef> {
        let field = self.schema.field_with_name(&column.name).ok()?;
        let mut any = false;
        let texts: StringArray = self
            .parts
            .iter()
            .map(|p| {
                let c = p.meta.columns.iter().find(|c| c.name == column.name)?;
                let v = if max { c.max.as_deref() } else { c.min.as_deref() };
                any |= v.is_some();
                v
            })
            .collect();
        if !any {
            return None;
        }
        cast(&texts, field.data_type()).ok()
    }
}

impl PruningStatistics for PartStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.values(column, false)
    }
    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.values(column, true)
    }
    fn num_containers(&self) -> usize {
        self.parts.len()
    }
    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(self.parts.iter().map(|p| p.meta.rows))))
    }
    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// Which parts may hold matching rows.
pub fn prune_parts(pred: &PruningPredicate, parts: &[Arc<Part>], schema: &SchemaRef) -> Vec<bool> {
    pred.prune(&PartStats { parts, schema }).unwrap_or_else(|_| vec![true; parts.len()])
}

/// Page-level statistics of one column across every row group of a file.
struct PageStats {
    column: String,
    mins: ArrayRef,
    maxes: ArrayRef,
    rows: UInt64Array,
}

impl PruningStatistics for PageStats {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        (column.name == self.column).then(|| self.mins.clone())
    }
    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        (column.name == self.column).then(|| self.maxes.clone())
    }
    fn num_containers(&self) -> usize {
        self.rows.len()
    }
    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(self.rows.clone()))
    }
    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// Selects the pages that may match, per filter column, intersected. `None`
/// when the page index can't narrow the read.
pub fn prune_pages(
    pred: &PruningPredicate,
    columns: &[String],
    meta: &ParquetMetaData,
    schema: &SchemaRef,
) -> Option<RowSelection> {
    let (col_index, off_index) = (meta.column_index()?, meta.offset_index()?);
    let rgs: Vec<usize> = (0..meta.num_row_groups()).collect();
    let mut result: Option<RowSelection> = None;
    for col in columns {
        let Ok(conv) = StatisticsConverter::try_new(col, schema, meta.file_metadata().schema_descr()) else {
            continue;
        };
        let (Ok(mins), Ok(maxes)) = (
            conv.data_page_mins(col_index, off_index, rgs.iter()),
            conv.data_page_maxes(col_index, off_index, rgs.iter()),
        ) else {
            continue;
        };
        let Ok(Some(rows)) = conv.data_page_row_counts(off_index, meta.row_groups(), rgs.iter()) else { continue };
        let stats = PageStats { column: col.clone(), mins, maxes, rows: rows.clone() };
        let Ok(keep) = pred.prune(&stats) else { continue };
        if keep.iter().all(|k| *k) {
            continue;
        }
        let selectors: Vec<RowSelector> = keep
            .iter()
            .zip(rows.iter())
            .map(|(k, n)| {
                let n = n.unwrap_or(0) as usize;
                if *k { RowSelector::select(n) } else { RowSelector::skip(n) }
            })
            .collect();
        let sel = RowSelection::from(selectors);
        result = Some(match result {
            Some(r) => r.intersection(&sel),
            None => sel,
        });
    }
    result
}
