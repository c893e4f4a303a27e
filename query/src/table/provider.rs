//! A table as a DataFusion table provider: projection and filters are pushed
//! into the storage scan (part, min/max and page-index pruning); the scan runs
//! as a few streams over disjoint parts.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties, SendableRecordBatchStream,
    StatisticsArgs,
};
use storage::scan::{PartSlice, Scan, ScanRequest};

use super::TableEngine;

/// DataFusion's view of a table.
#[derive(Debug)]
pub struct EngineProvider {
    pub engine: Arc<dyn TableEngine>,
    /// `SELECT … FROM t FINAL`: the engine's merge rules apply while reading.
    pub final_: bool,
}

struct PartsStream {
    table: Arc<storage::Table>,
    parts: Vec<PartSlice>,
    req: ScanRequest,
    schema: SchemaRef,
}

impl fmt::Debug for PartsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartsStream({} parts)", self.parts.len())
    }
}

impl PartitionStream for PartsStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let to_df = |e: storage::StorageError| DataFusionError::External(Box::new(e));
        let batches: Box<dyn Iterator<Item = datafusion::error::Result<arrow::array::RecordBatch>> + Send> =
            match Scan::new_slices(&self.table, self.parts.clone(), &self.req) {
                Ok(scan) => Box::new(scan.map(move |b| b.map_err(to_df))),
                Err(e) => Box::new(std::iter::once(Err(to_df(e)))),
            };
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(batches)))
    }
}

#[async_trait]
impl TableProvider for EngineProvider {
    fn schema(&self) -> SchemaRef {
        self.engine.storage().schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // A filter the storage compiler understands prunes parts and pages and
        // is then applied to every row by the scan (after the FINAL merge), so
        // DataFusion need not evaluate it again; others stay with DataFusion.
        // Filters arrive here with qualified columns (`hits.k`), in scan()
        // without; the compiler knows only the bare names.
        use datafusion::common::tree_node::{Transformed, TreeNode};
        let compiler = &self.engine.storage().compiler;
        let bare = |f: &Expr| {
            f.clone()
                .transform(|e| match e {
                    Expr::Column(c) => {
                        Ok(Transformed::yes(Expr::Column(datafusion::common::Column::new_unqualified(c.name))))
                    }
                    e => Ok(Transformed::no(e)),
                })
                .map(|t| t.data)
        };
        Ok(filters
            .iter()
            .map(|f| match bare(f).map(|e| compiler.compile_expr(e)) {
                Ok(Ok(_)) => TableProviderFilterPushDown::Exact,
                _ => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if state.config().get_extension::<super::SequentialConsistency>().is_some() {
            self.engine.read_barrier().await.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        }
        self.engine.read_your_writes().await;
        self.engine.check_readable().map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let table = self.engine.storage().clone();
        let schema = table.schema().clone();
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let columns = Some(projected.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>());
        // Only filters the storage compiler understands are pushed down.
        let pushed: Vec<Expr> =
            filters.iter().filter(|f| table.compiler.compile_expr((*f).clone()).is_ok()).cloned().collect();
        let filter = pushed.into_iter().reduce(|a, b| a.and(b));
        let req = ScanRequest { columns, filter, final_: self.final_ };
        let parts = self.engine.snapshot();
        // The exact count, when nothing filters, from the very parts this scan
        // reads (a second snapshot could already see a merge's result).
        let rows = (filters.is_empty() && !self.final_).then(|| parts.iter().map(|p| p.live_rows() as usize).sum());
        let n = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartSlice>> = if self.final_ {
            // FINAL merges within a partition: its parts must share a stream.
            let n = n.min(parts.len().max(1));
            let mut groups: Vec<Vec<PartSlice>> = vec![Vec::new(); n];
            let mut ids: Vec<String> = parts.iter().map(|p| p.name.partition_id.clone()).collect();
            ids.sort();
            ids.dedup();
            for p in parts {
                let k = ids.binary_search(&p.name.partition_id).unwrap_or(0) % n;
                groups[k].push(PartSlice { part: p, row_groups: None });
            }
            groups
        } else {
            storage::scan::split(parts, n).map_err(|e| DataFusionError::External(Box::new(e)))?
        };
        if groups.is_empty() {
            groups.push(Vec::new());
        }
        let streams: Vec<Arc<dyn PartitionStream>> = groups
            .into_iter()
            .map(|parts| {
                Arc::new(PartsStream { table: table.clone(), parts, req: req.clone(), schema: projected.clone() })
                    as Arc<dyn PartitionStream>
            })
            .collect();
        let exec = Arc::new(StreamingTableExec::try_new(projected, streams, None, Vec::new(), false, None)?);
        Ok(Arc::new(CountedExec { inner: exec, rows }))
    }
}

/// The scan, with the exact row count when it is known.
#[derive(Debug)]
struct CountedExec {
    inner: Arc<StreamingTableExec>,
    rows: Option<usize>,
}

impl DisplayAs for CountedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for CountedExec {
    fn name(&self) -> &str {
        "StreamingTableExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(&self, partition: usize, ctx: Arc<TaskContext>) -> datafusion::error::Result<SendableRecordBatchStream> {
        self.inner.execute(partition, ctx)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> datafusion::error::Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        if let (None, Some(rows)) = (args.partition(), self.rows) {
            stats.num_rows = Precision::Exact(rows);
        }
        Ok(Arc::new(stats))
    }
}
