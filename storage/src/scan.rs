//! Reading a part set: a stream of Arrow batches with projection, filter
//! pushdown, part pruning (partition and key min/max), page pruning (the
//! primary-key granules via the page index) and FINAL (merge on read).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::utils::reassign_expr_columns;
use datafusion::physical_plan::PhysicalExpr;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::RowSelection;

use crate::error::{Result, StorageError};
use crate::merge::engine::{self, ReduceMode};
use crate::merge::kway::KWayMerge;
use crate::part::{Part, reader};
use crate::pruning;
use crate::table::{Engine, Table};

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Columns to return, in this order; `None` returns every column.
    pub columns: Option<Vec<String>>,
    /// Rows to keep (a boolean expression over the table's columns).
    pub filter: Option<Expr>,
    /// `SELECT … FINAL`: apply the engine's merge rules while reading.
    pub final_: bool,
}

impl ScanRequest {
    /// A request with the filter given as SQL text.
    pub fn with_filter_sql(mut self, table: &Table, sql: &str) -> Result<Self> {
        self.filter = Some(table.compiler.parse(sql)?);
        Ok(self)
    }
}

/// What pruning left to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub parts_total: usize,
    pub parts_selected: usize,
    /// Rows of the selected parts the read will decode after page pruning.
    pub rows_selected: u64,
}

enum Task {
    Part { part: Arc<Part>, selection: Option<RowSelection> },
    Final { parts: Vec<Arc<Part>> },
}

/// An iterator of result batches.
pub struct Scan {
    table: Arc<Table>,
    out_schema: SchemaRef,
    /// Table columns each task reads (output columns plus filter columns).
    read_cols: Vec<usize>,
    out_cols_in_read: Vec<usize>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    tasks: VecDeque<Task>,
    current: Option<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>>,
    stats: ScanStats,
}

impl Scan {
    /// Plans a scan of `parts` (a snapshot of a part set).
    pub fn new(table: &Arc<Table>, parts: Vec<Arc<Part>>, req: &ScanRequest) -> Result<Scan> {
        let schema = table.schema().clone();
        let out_names: Vec<String> = match &req.columns {
            Some(c) => c.clone(),
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        let mut filter_cols: Vec<String> = Vec::new();
        let filter = match &req.filter {
            Some(e) => {
                filter_cols = e.column_refs().into_iter().map(|c| c.name.clone()).collect();
                filter_cols.sort();
                Some(table.compiler.compile_expr(e.clone())?)
            }
            None => None,
        };
        let mut read_cols: Vec<usize> = Vec::new();
        for n in out_names.iter().chain(&filter_cols) {
            let i = schema.index_of(n).map_err(|_| StorageError::NoSuchColumn(n.clone()))?;
            read_cols.push(i);
        }
        if req.final_ && table.def.engine != Engine::MergeTree {
            read_cols = (0..schema.fields().len()).collect();
        }
        read_cols.sort();
        read_cols.dedup();
        let read_schema = Arc::new(schema.project(&read_cols)?);
        let out_cols_in_read =
            out_names.iter().map(|n| read_schema.index_of(n)).collect::<std::result::Result<Vec<_>, _>>()?;
        let out_schema = Arc::new(read_schema.project(&out_cols_in_read)?);
        let filter_on_read = filter.as_ref().map(|f| reassign_expr_columns(f.clone(), &read_schema)).transpose()?;

        // FINAL may prune only by columns that all versions of a row share.
        let final_merge = req.final_ && table.def.engine != Engine::MergeTree;
        let prune_ok = !final_merge
            || filter_cols.iter().all(|c| table.key_columns().contains(c) || table.partition_columns().contains(c));
        let pred = match (&filter, prune_ok) {
            (Some(f), true) => pruning::predicate(f, &schema),
            _ => None,
        };
        let mut stats = ScanStats { parts_total: parts.len(), ..Default::default() };
        let keep = match &pred {
            Some(p) => pruning::prune_parts(p, &parts, &schema),
            None => vec![true; parts.len()],
        };
        let selected: Vec<Arc<Part>> =
            parts.into_iter().zip(keep).filter(|(p, k)| *k && p.live_rows() > 0).map(|(p, _)| p).collect();
        stats.parts_selected = selected.len();

        let mut tasks = VecDeque::new();
        if final_merge {
            let mut by_partition: BTreeMap<String, Vec<Arc<Part>>> = BTreeMap::new();
            for p in selected {
                stats.rows_selected += p.live_rows();
                by_partition.entry(p.name.partition_id.clone()).or_default().push(p);
            }
            for (_, parts) in by_partition {
                tasks.push_back(Task::Final { parts });
            }
        } else {
            for part in selected {
                let selection = match &pred {
                    Some(p) => {
                        let b = reader::builder(&part, true)?;
                        pruning::prune_pages(p, &filter_cols, b.metadata(), &schema)
                    }
                    None => None,
                };
                let rows = match reader::effective_selection(&part, selection.clone()) {
                    Some(s) => s.row_count() as u64,
                    None => part.meta.rows,
                };
                stats.rows_selected += rows;
                if rows > 0 {
                    tasks.push_back(Task::Part { part, selection });
                }
            }
        }
        Ok(Scan {
            table: table.clone(),
            out_schema,
            read_cols,
            out_cols_in_read,
            filter: filter_on_read,
            tasks,
            current: None,
            stats,
        })
    }

    /// The schema of the returned batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// What pruning selected.
    pub fn stats(&self) -> &ScanStats {
        &self.stats
    }

    fn open(&self, task: Task) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        let batch_rows = self.table.def.settings.merge_batch_rows;
        Ok(match task {
            Task::Part { part, selection } => {
                let mut b = reader::builder(&part, false)?.with_batch_size(batch_rows);
                let mask = ProjectionMask::roots(b.parquet_schema(), self.read_cols.iter().copied());
                b = b.with_projection(mask);
                if let Some(sel) = reader::effective_selection(&part, selection) {
                    b = b.with_row_selection(sel);
                }
                let name = part.name.to_string();
                let r = b.build().map_err(|e| StorageError::parquet(name.clone(), e))?;
                Box::new(r.map(move |b| {
                    b.map_err(|e| StorageError::CorruptedPart { part: name.clone(), reason: e.to_string() })
                }))
            }
            Task::Final { parts } => {
                let table = self.table.clone();
                let merge = KWayMerge::new(table.clone(), &parts, None, batch_rows, true)?;
                let mode = ReduceMode { final_read: true, ..Default::default() };
                Box::new(merge.map(move |c| c.and_then(|c| engine::reduce(&table, c, mode))))
            }
        })
    }

    fn finish_batch(&self, b: RecordBatch) -> Result<RecordBatch> {
        let Some(f) = &self.filter else {
            return Ok(b.project(&self.out_cols_in_read)?.with_schema(self.out_schema.clone())?);
        };
        let m = f.evaluate(&b)?.into_array(b.num_rows())?;
        let m = arrow::compute::cast(&m, &arrow::datatypes::DataType::Boolean)?;
        let mask = m.as_boolean();
        // Filter only the output columns: columns read just for the filter are
        // dropped first, and with no output columns (count()) only the
        // selected rows are counted.
        let out = b.project(&self.out_cols_in_read)?.with_schema(self.out_schema.clone())?;
        if out.num_columns() == 0 {
            let selected = match arrow::array::Array::null_count(mask) {
                0 => mask.true_count(),
                _ => arrow::compute::prep_null_mask_filter(mask).true_count(),
            };
            let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(selected));
            return Ok(RecordBatch::try_new_with_options(self.out_schema.clone(), vec![], &opts)?);
        }
        Ok(filter_record_batch(&out, mask)?)
    }
}

impl Iterator for Scan {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(cur) = self.current.as_mut() {
                match cur.next() {
                    Some(Ok(b)) => match self.finish_batch(b) {
                        Ok(b) if b.num_rows() == 0 => continue,
                        r => return Some(r),
                    },
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.current = None,
                }
            }
            let task = self.tasks.pop_front()?;
            match self.open(task) {
                Ok(it) => self.current = Some(it),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
