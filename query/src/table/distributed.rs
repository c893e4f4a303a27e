//! A Distributed table as DataFusion reads it: one partition per shard,
//! each streaming the shard's rows (projected columns, pushed-down filters
//! and limit) as Arrow from one of its replicas; everything above the scan
//! — aggregation, sorting, joins — runs here on the merged streams, planned
//! once by the same planner as any query. (The shards do not yet run
//! partial aggregation themselves: answers are exact, the wire carries
//! rows.)

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
        _state: &dyn Session,
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
        let parts: Vec<Arc<dyn PartitionStream>> = (0..dist.shards().len())
            .map(|i| {
                Arc::new(ShardStream {
                    engine: self.engine.clone(),
                    shard: i,
                    sql: sql.clone(),
                    schema: schema.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(schema.clone(), parts, None, Vec::new(), false, None)?))
    }
}

/// One shard's rows.
#[derive(Debug)]
struct ShardStream {
    engine: Arc<dyn TableEngine>,
    shard: usize,
    sql: String,
    schema: SchemaRef,
}

impl PartitionStream for ShardStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (engine, shard, sql, schema) = (self.engine.clone(), self.shard, self.sql.clone(), self.schema.clone());
        let skip = ctx.session_config().get_extension::<super::SkipUnavailableShards>().is_some();
        let order = ctx.session_config().get_extension::<super::ReplicaChoice>().map(|c| c.0).unwrap_or_default();
        let out = schema.clone();
        let fut = async move {
            let dist = engine.distributed().ok_or_else(|| DataFusionError::Internal("not Distributed".into()))?;
            let target = dist.shards()[shard].clone();
            match dist.on_shard_in(&target, order, &sql, &[], b"").await {
                Ok(bytes) => decode(&bytes, &schema),
                Err(coordinator::EngineError::ShardUnreachable { shard, .. }) if skip => {
                    tracing::warn!(shard, "skip_unavailable_shards: shard left out of the answer");
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
        let cols =
            b.columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() { Ok(c.clone()) } else { arrow::compute::cast(c, f.data_type()) }
                })
                .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(out)
}
