//! A Distributed table as DataFusion reads it: one partition per shard,
//! each streaming the shard's rows (projected columns, pushed-down filters
//! and limit) as Arrow from one of its replicas; what runs above the scan
//! runs here on the merged streams, planned once by the same planner as any
//! query — except aggregations, which `plan::shard_agg` sends to the shards
//! through the same per-shard streams ([`DistributedProvider::shard_exec`]).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

use super::TableEngine;

/// The provider of a Distributed table.
#[derive(Debug)]
pub struct DistributedProvider {
    pub engine: Arc<dyn TableEngine>,
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "\\`"))
}

#[async_trait]
impl TableProvider for DistributedProvider {
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
        // Sent to the shards where they can be written back as SQL, and
        // applied here again either way.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let dist = self
            .engine
            .distributed()
            .ok_or_else(|| DataFusionError::Internal("a Distributed provider over another engine".into()))?;
        let full = self.schema();
        let schema: SchemaRef = match projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full.clone(),
        };
        // With no column wanted (count()), each shard counts its rows.
        let wanted: Vec<String> = if schema.fields().is_empty() {
            vec!["count()".to_string()]
        } else {
            schema.fields().iter().map(|f| quote(f.name())).collect()
        };
        let mut sql = format!("SELECT {} FROM {}", wanted.join(", "), dist.remote_table());
        let pushed: Vec<String> = filters
            .iter()
            .filter_map(|f| datafusion::sql::unparser::expr_to_sql(f).ok().map(|e| format!("({e})")))
            .collect();
        if !pushed.is_empty() {
            sql.push_str(&format!(" WHERE {}", pushed.join(" AND ")));
        }
        // A limit with filters DataFusion still applies here would cut rows
        // the filter keeps; only an unfiltered limit goes to the shards.
        if let (Some(l), true) = (limit, filters.is_empty()) {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        sql.push_str(" FORMAT ArrowStream");
        let shards = self.shards_to_ask(state, filters)?;
        self.shard_exec(shards, sql, Vec::new(), schema)
    }
}

impl DistributedProvider {
    /// The shards a read with `filters` asks: all, or with
    /// `optimize_skip_unused_shards` those the pinned key values go to.
    pub(crate) fn shards_to_ask(&self, state: &dyn Session, filters: &[Expr]) -> datafusion::error::Result<Vec<usize>> {
        let dist = self
            .engine
            .distributed()
            .ok_or_else(|| DataFusionError::Internal("a Distributed provider over another engine".into()))?;
        let mut shards: Vec<usize> = (0..dist.shards().len()).collect();
        if state.config().get_extension::<super::SkipUnusedShards>().is_some()
            && let Some(col) = dist.key_column()
        {
            for values in filters.iter().filter_map(|f| pinned_values(f, &col)) {
                let keep = dist
                    .shards_for(&values)
                    .map_err(|e| DataFusionError::External(Box::new(crate::error::QueryError::engine(&e))))?;
                shards.retain(|s| keep.contains(s));
            }
        }
        Ok(shards)
    }

    /// One partition per shard in `shards`, each the answer of `sql` (with
    /// `settings`) on a replica of it, as batches of `schema` by position.
    pub(crate) fn shard_exec(
        &self,
        shards: Vec<usize>,
        sql: String,
        settings: Vec<(String, String)>,
        schema: SchemaRef,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let parts: Vec<Arc<dyn PartitionStream>> = shards
            .into_iter()
            .map(|i| {
                Arc::new(ShardStream {
                    engine: self.engine.clone(),
                    shard: i,
                    sql: sql.clone(),
                    settings: settings.clone(),
                    schema: schema.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(schema.clone(), parts, None, Vec::new(), false, None)?))
    }
}

/// The values a filter pins `col` to: `col = c`, `c = col`, `col IN (c, …)`
/// and ORs of those (DataFusion writes a short IN list as one).
fn pinned_values(f: &Expr, col: &str) -> Option<arrow::array::ArrayRef> {
    datafusion::common::ScalarValue::iter_to_array(pinned_literals(f, col)?).ok()
}

fn pinned_literals(f: &Expr, col: &str) -> Option<Vec<datafusion::common::ScalarValue>> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let is_col = |e: &Expr| matches!(e, Expr::Column(c) if c.name == col);
    let lits: Vec<datafusion::common::ScalarValue> = match f {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => match (&**left, &**right) {
            (l, Expr::Literal(v, _)) if is_col(l) => vec![v.clone()],
            (Expr::Literal(v, _), r) if is_col(r) => vec![v.clone()],
            _ => return None,
        },
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let mut l = pinned_literals(left, col)?;
            l.extend(pinned_literals(right, col)?);
            l
        }
        Expr::InList(i) if !i.negated && is_col(&i.expr) => i
            .list
            .iter()
            .map(|e| match e {
                Expr::Literal(v, _) => Some(v.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    Some(lits)
}

/// One shard's rows.
#[derive(Debug)]
struct ShardStream {
    engine: Arc<dyn TableEngine>,
    shard: usize,
    sql: String,
    settings: Vec<(String, String)>,
    schema: SchemaRef,
}

impl PartitionStream for ShardStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (engine, shard, sql, schema) = (self.engine.clone(), self.shard, self.sql.clone(), self.schema.clone());
        let settings = self.settings.clone();
        let stats = ctx.session_config().get_extension::<crate::metering::QueryStats>();
        let skip = ctx.session_config().get_extension::<super::SkipUnavailableShards>().is_some();
        let order = ctx.session_config().get_extension::<super::ReplicaChoice>().map(|c| c.0).unwrap_or_default();
        let out = schema.clone();
        let fut = async move {
            let dist = engine.distributed().ok_or_else(|| DataFusionError::Internal("not Distributed".into()))?;
            let target = dist.shards()[shard].clone();
            match dist.on_shard_in(&target, order, &sql, &settings, b"").await {
                Ok(bytes) => decode(&bytes, &schema),
                Err(coordinator::EngineError::ShardUnreachable { shard, .. }) if skip => {
                    tracing::warn!(shard, "skip_unavailable_shards: shard left out of the answer");
                    if let Some(stats) = &stats {
                        let mut s = stats.skipped_shards.lock().unwrap_or_else(|e| e.into_inner());
                        if !s.contains(&(shard as u32)) {
                            s.push(shard as u32);
                            s.sort_unstable();
                        }
                    }
                    Ok(Vec::new())
                }
                Err(e) => Err(DataFusionError::External(Box::new(crate::error::QueryError::engine(&e)))),
            }
        };
        let stream = futures::stream::once(fut).flat_map(|r: datafusion::error::Result<Vec<RecordBatch>>| {
            futures::stream::iter(match r {
                Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Box::pin(RecordBatchStreamAdapter::new(out, stream))
    }
}

use futures::StreamExt as _;

/// A shard's ArrowStream answer as batches of `schema` (by column position;
/// no columns: the row counts alone).
fn decode(bytes: &[u8], schema: &SchemaRef) -> datafusion::error::Result<Vec<RecordBatch>> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let mut out = Vec::new();
    let got = reader.schema();
    if !schema.fields().is_empty() && got.fields().len() != schema.fields().len() {
        return Err(DataFusionError::Internal(format!(
            "a shard answered {} columns, {} expected ({got:?} vs {schema:?})",
            got.fields().len(),
            schema.fields().len()
        )));
    }
    for b in reader {
        let b = b?;
        if schema.fields().is_empty() {
            // The shard's count(): as many rows, without columns.
            let n = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::UInt64)?;
            let n = n.as_any().downcast_ref::<arrow::array::UInt64Array>().map_or(0, |a| a.iter().flatten().sum());
            let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(n as usize));
            out.push(RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &opts)?);
            continue;
        }
        let cols = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    arrow::compute::cast(c, f.data_type()).map_err(|e| {
                        DataFusionError::Internal(format!(
                            "a shard's column {} is {}, {} expected: {e}",
                            f.name(),
                            c.data_type(),
                            f.data_type()
                        ))
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(out)
}
