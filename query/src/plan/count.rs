//! `count()` is UInt64 in ClickHouse (DataFusion's is Int64): clients that
//! check types (the `clickhouse` crate, RowBinaryWithNamesAndTypes) and
//! readers of `toTypeName(count())` see what ClickHouse would give them.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, cast};

fn is_count(e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => is_count(&a.expr),
        Expr::AggregateFunction(f) => f.func.name().eq_ignore_ascii_case("count"),
        _ => false,
    }
}

/// Puts a projection casting each count to UInt64 above every aggregation,
/// keeping column names, so everything above sees an unsigned count. Runs
/// before type coercion, which then fits comparisons and arithmetic to it.
pub fn unsigned_counts(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|p| {
        // Nodes above a rewritten aggregation must see its new types.
        let LogicalPlan::Aggregate(agg) = &p else { return Ok(Transformed::yes(p.recompute_schema()?)) };
        let schema = agg.schema.clone();
        let first_agg = schema.fields().len() - agg.aggr_expr.len();
        let counts: Vec<usize> =
            agg.aggr_expr.iter().enumerate().filter(|(_, e)| is_count(e)).map(|(i, _)| first_agg + i).collect();
        if counts.is_empty() {
            return Ok(Transformed::no(p));
        }
        let exprs: Vec<Expr> = schema
            .iter()
            .enumerate()
            .map(|(i, (q, f))| {
                let c = Expr::Column(Column::new(q.cloned(), f.name()));
                if counts.contains(&i) && f.data_type() == &DataType::Int64 {
                    cast(c, DataType::UInt64).alias_qualified(q.cloned(), f.name())
                } else {
                    c
                }
            })
            .collect();
        Ok(Transformed::yes(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(p))?)))
    })
    .map(|t| t.data)
}
