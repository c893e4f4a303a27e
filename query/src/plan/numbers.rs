//! `system.numbers` (0, 1, 2, … without end, cut by LIMIT) and the table
//! function `numbers(N)` / `numbers(offset, N)`, as in ClickHouse.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue, plan_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};

const BLOCK: u64 = 65536;

/// Numbers from `start`, `count` of them (None: no end).
#[derive(Debug, Clone)]
pub struct Numbers {
    pub start: u64,
    pub count: Option<u64>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("number", DataType::UInt64, false)]))
}

impl PartitionStream for Numbers {
    fn schema(&self) -> &SchemaRef {
        static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(schema)
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let end = self.count.map(|c| self.start.saturating_add(c)).unwrap_or(u64::MAX);
        let starts = (self.start..end).step_by(BLOCK as usize);
        let batches = starts.map(move |s| {
            let e = s.saturating_add(BLOCK).min(end);
            RecordBatch::try_new(schema(), vec![Arc::new(UInt64Array::from_iter_values(s..e))])
                .map_err(DataFusionError::from)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema(), futures::stream::iter(batches)))
    }
}

#[async_trait]
impl TableProvider for Numbers {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let mut n = self.clone();
        if let Some(l) = limit {
            n.count = Some(n.count.map_or(l as u64, |c| c.min(l as u64)));
        }
        Ok(Arc::new(StreamingTableExec::try_new(schema(), vec![Arc::new(n)], projection, Vec::new(), false, None)?))
    }
}

/// The table function `numbers(N)` / `numbers(offset, N)`.
#[derive(Debug)]
pub struct NumbersFunction;

impl TableFunctionImpl for NumbersFunction {
    fn call(&self, args: &[Expr]) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let int = |e: &Expr| match e {
            Expr::Literal(v, _) => match v {
                ScalarValue::Int64(Some(x)) if *x >= 0 => Some(*x as u64),
                ScalarValue::UInt64(Some(x)) => Some(*x),
                _ => v.cast_to(&DataType::UInt64).ok().and_then(|s| match s {
                    ScalarValue::UInt64(x) => x,
                    _ => None,
                }),
            },
            _ => None,
        };
        let vals: Vec<Option<u64>> = args.iter().map(int).collect();
        match vals.as_slice() {
            [Some(n)] => Ok(Arc::new(Numbers { start: 0, count: Some(*n) })),
            [Some(o), Some(n)] => Ok(Arc::new(Numbers { start: *o, count: Some(*n) })),
            _ => {
                plan_err!("numbers() takes one or two non-negative integer constants: numbers(N) or numbers(offset, N)")
            }
        }
    }
}
