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

/// Some row groups of a part (all of them when `row_groups` is `None`): the
/// unit a parallel scan hands to each stream, so that one big part (a table
/// after OPTIMIZE FINAL) is decoded by every core, not one.
#[derive(Debug, Clone)]
pub struct PartSlice {
    pub part: Arc<Part>,
    /// Row group indices in ascending order.
    pub row_groups: Option<Vec<usize>>,
}

/// Splits `parts` into at most `n` lists of slices with about as many rows
/// each: whole parts when they have one row group, else row groups dealt to
/// the least loaded list. Each part appears at most once per list.
pub fn split(parts: Vec<Arc<Part>>, n: usize) -> Result<Vec<Vec<PartSlice>>> {
    let n = n.max(1);
    let mut load = vec![0u64; n];
    let mut out: Vec<Vec<PartSlice>> = vec![Vec::new(); n];
    let least = |load: &[u64]| (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0);
    for part in parts {
        let rgs: Vec<u64> = if part.meta.rows > 0 && n > 1 {
            let m = reader::reader_metadata(&part)?;
            m.metadata().row_groups().iter().map(|g| g.num_rows().max(0) as u64).collect()
        } else {
            Vec::new()
        };
        if rgs.len() <= 1 {
            let k = least(&load);
            load[k] += part.meta.rows;
            out[k].push(PartSlice { part, row_groups: None });
            continue;
        }
        let mut mine: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, rows) in rgs.iter().enumerate() {
            let k = least(&load);
            load[k] += rows;
            mine[k].push(i);
        }
        for (k, groups) in mine.into_iter().enumerate() {
            if groups.len() == rgs.len() {
                out[k].push(PartSlice { part: part.clone(), row_groups: None });
            } else if !groups.is_empty() {
                out[k].push(PartSlice { part: part.clone(), row_groups: Some(groups) });
            }
        }
    }
    out.retain(|l| !l.is_empty());
    Ok(out)
}

/// `sel` (over every row of a part) cut down to the rows of `bounds` (row
/// ranges of the chosen row groups, ascending), as the reader expects it
/// when only those row groups are read.
fn restrict(sel: &RowSelection, bounds: &[std::ops::Range<usize>]) -> RowSelection {
    let mut selected: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pos = 0usize;
    for s in sel.iter() {
        if !s.skip {
            selected.push(pos..pos + s.row_count);
        }
        pos += s.row_count;
    }
    let mut out = Vec::new();
    let mut base = 0usize;
    let mut i = 0usize;
    for b in bounds {
        while i < selected.len() && selected[i].end <= b.start {
            i += 1;
        }
        let mut j = i;
        while j < selected.len() && selected[j].start < b.end {
            let (s, e) = (selected[j].start.max(b.start), selected[j].end.min(b.end));
            if s < e {
                out.push(base + s - b.start..base + e - b.start);
            }
            j += 1;
        }
        base += b.end - b.start;
    }
    RowSelection::from_consecutive_ranges(out.into_iter(), base)
}

enum Task {
    Part { part: Arc<Part>, row_groups: Option<Vec<usize>>, selection: Option<RowSelection> },
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
        Self::new_slices(table, parts.into_iter().map(|part| PartSlice { part, row_groups: None }).collect(), req)
    }

    /// Plans a scan of slices of parts (see [`split`]); FINAL reads whole parts.
    pub fn new_slices(table: &Arc<Table>, slices: Vec<PartSlice>, req: &ScanRequest) -> Result<Scan> {
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
        let mut stats = ScanStats { parts_total: slices.len(), ..Default::default() };
        let keep = match &pred {
            Some(p) => pruning::prune_parts(p, &slices.iter().map(|s| s.part.clone()).collect::<Vec<_>>(), &schema),
            None => vec![true; slices.len()],
        };
        let selected: Vec<PartSlice> =
            slices.into_iter().zip(keep).filter(|(s, k)| *k && s.part.live_rows() > 0).map(|(s, _)| s).collect();
        stats.parts_selected = selected.len();

        let mut tasks = VecDeque::new();
        if final_merge {
            let mut by_partition: BTreeMap<String, Vec<Arc<Part>>> = BTreeMap::new();
            // FINAL merges whole parts: slices of one part read it once.
            let mut seen = std::collections::HashSet::new();
            for PartSlice { part: p, .. } in selected {
                if !seen.insert(p.name.to_string()) {
                    continue;
                }
                stats.rows_selected += p.live_rows();
                by_partition.entry(p.name.partition_id.clone()).or_default().push(p);
            }
            for (_, parts) in by_partition {
                tasks.push_back(Task::Final { parts });
            }
        } else {
            for PartSlice { part, row_groups } in selected {
                let page_sel = match &pred {
                    Some(p) => {
                        let m = reader::reader_metadata(&part)?;
                        pruning::prune_pages(p, &filter_cols, m.metadata(), &schema)
                    }
                    None => None,
                };
                let mut selection = reader::effective_selection(&part, page_sel);
                let mut rows = match &selection {
                    Some(s) => s.row_count() as u64,
                    None => part.meta.rows,
                };
                if let Some(groups) = &row_groups {
                    let m = reader::reader_metadata(&part)?;
                    let all = m.metadata().row_groups();
                    let mut starts = Vec::with_capacity(all.len());
                    let mut at = 0usize;
                    for g in all {
                        starts.push(at);
                        at += g.num_rows().max(0) as usize;
                    }
                    let bounds: Vec<std::ops::Range<usize>> = groups
                        .iter()
                        .filter_map(|&g| all.get(g).map(|rg| starts[g]..starts[g] + rg.num_rows().max(0) as usize))
                        .collect();
                    selection = selection.map(|s| restrict(&s, &bounds));
                    rows = match &selection {
                        Some(s) => s.row_count() as u64,
                        None => bounds.iter().map(|b| (b.end - b.start) as u64).sum(),
                    };
                }
                stats.rows_selected += rows;
                if rows > 0 {
                    tasks.push_back(Task::Part { part, row_groups, selection });
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
            Task::Part { part, row_groups, selection } => {
                let mut b = reader::builder(&part)?.with_batch_size(batch_rows);
                let mask = ProjectionMask::roots(b.parquet_schema(), self.read_cols.iter().copied());
                b = b.with_projection(mask);
                if let Some(groups) = row_groups {
                    b = b.with_row_groups(groups);
                }
                if let Some(sel) = selection {
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
