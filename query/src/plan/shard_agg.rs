//! Aggregation on the shards of a Distributed table, ClickHouse's
//! "with mergeable state": each shard runs the query's scan, filter and
//! partial aggregation and sends back the partial states; the initiator
//! merges them with the final aggregation. DataFusion's own
//! partial/final operators do the work on both sides, so every aggregate
//! function merges as it does between two partitions of one node.
//!
//! The initiator: [`PushAggregateToShards`] (a logical rule) puts a
//! [`ShardAggregate`] node in place of an `Aggregate` whose input reads one
//! Distributed table through filters and projections only, with the SQL of
//! that aggregation over the shards' table (DataFusion's unparser, so there
//! is one planner: the shard plans the same logical aggregation). Its
//! physical form ([`ShardAggregatePlanner`]) is the final aggregation over
//! one partition per shard. The shard: `stage = with_mergeable_state` runs a
//! query up to its partial aggregation ([`mergeable_state`]).
//! `distributed_group_by_no_merge = 1` asks the shards for their complete
//! aggregation and concatenates it (ClickHouse's meaning).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, DataFusionError, Result, TableReference};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::expr::Expr;
use datafusion::logical_expr::{
    Extension, LogicalPlan, SubqueryAlias, TableScan, TableScanBuilder, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::plan::fast_agg::FastAggregateExec;
use crate::table::distributed::DistributedProvider;

/// The setting a shard reads to stop at the partial aggregation.
pub const STAGE: &str = "stage";
/// Its value for partial states (clickhouse-client's `--stage`).
pub const WITH_MERGEABLE_STATE: &str = "with_mergeable_state";

/// The SQL sent to shards is DataFusion's (its unparser's).
fn dialect() -> (String, String) {
    ("dialect".to_string(), "datafusion".to_string())
}

/// Set on a query's session when it says `GLOBAL IN` / `GLOBAL JOIN`: joins
/// run here, on the other side's rows as this node has them.
#[derive(Debug, Default)]
pub struct GlobalJoins;

/// Set on a query's session by `distributed_group_by_no_merge = 1`.
#[derive(Debug, Default)]
pub struct NoMerge;

/// An aggregation the shards of one Distributed table run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardAggregate {
    /// The aggregation as planned here (over the Distributed table).
    agg: LogicalPlan,
    /// The same aggregation over the shards' table, as SQL.
    sql: String,
}

impl PartialOrd for ShardAggregate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.sql.partial_cmp(&other.sql)
    }
}

impl UserDefinedLogicalNodeCore for ShardAggregate {
    fn name(&self) -> &str {
        "ShardAggregate"
    }

    // A leaf: the rules above must not reach into what the shards run.
    fn inputs(&self) -> Vec<&LogicalPlan> {
        Vec::new()
    }

    fn schema(&self) -> &DFSchemaRef {
        self.agg.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ShardAggregate: {}", self.sql)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// The logical rule that sends eligible aggregations to the shards.
#[derive(Debug, Default)]
pub struct PushAggregateToShards;

impl OptimizerRule for PushAggregateToShards {
    fn name(&self) -> &str {
        "push_aggregate_to_shards"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
            return Ok(Transformed::no(plan));
        }
        let Some(scan) = distributed_scan(&agg.input) else {
            return Ok(Transformed::no(plan));
        };
        match shard_sql(&plan, scan) {
            Some(sql) => Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                node: Arc::new(ShardAggregate { agg: plan, sql }),
            }))),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The Distributed table `plan` reads through filters, projections,
/// aliases and joins with tables every node has (ClickHouse's meaning of a
/// JOIN or IN without GLOBAL: the other side is read on each shard).
fn distributed_scan(plan: &LogicalPlan) -> Option<&TableScan> {
    use datafusion::logical_expr::JoinType::*;
    match plan {
        LogicalPlan::Filter(f) => distributed_scan(&f.input),
        LogicalPlan::Projection(p) => distributed_scan(&p.input),
        LogicalPlan::SubqueryAlias(a) => distributed_scan(&a.input),
        LogicalPlan::TableScan(s) => provider(s).is_some().then_some(s),
        LogicalPlan::Join(j) => {
            // Rows of the other side that match nothing must not come back
            // once per shard: only joins that keep the Distributed side's
            // rows (matched or not) split by shard. Semi and anti joins
            // (decorrelated IN subqueries) stay here: the unparser's SQL
            // for them does not plan again.
            match (distributed_scan(&j.left), distributed_scan(&j.right)) {
                (Some(s), None) if local_only(&j.right) && matches!(j.join_type, Inner | Left) => Some(s),
                (None, Some(s)) if local_only(&j.left) && matches!(j.join_type, Inner | Right) => Some(s),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `plan` reads only tables that are not Distributed (nor this node's
/// system tables), through filters, projections and aliases.
fn local_only(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Filter(f) => local_only(&f.input),
        LogicalPlan::Projection(p) => local_only(&p.input),
        LogicalPlan::SubqueryAlias(a) => local_only(&a.input),
        LogicalPlan::TableScan(s) => provider(s).is_none() && s.table_name.schema() != Some("system"),
        _ => false,
    }
}

/// Whether `plan` joins (then `GLOBAL` keeps it here).
fn has_join(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(_)) || plan.inputs().into_iter().any(has_join)
}

fn provider(scan: &TableScan) -> Option<Arc<dyn datafusion::catalog::TableProvider>> {
    source_as_provider(&scan.source).ok().filter(|p| p.downcast_ref::<DistributedProvider>().is_some())
}

/// `agg` as SQL over the shards' table: the scan becomes the remote table
/// under the name the expressions above it qualify columns with. `None`
/// when the unparser cannot write it (the rows are then shipped instead).
fn shard_sql(agg: &LogicalPlan, scan: &TableScan) -> Option<String> {
    let p = provider(scan)?;
    let dist = p.downcast_ref::<DistributedProvider>()?.engine.distributed()?;
    let (db, table) = dist.remote_names();
    let remote = TableReference::partial(db, table);
    let alias = TableReference::bare(scan.table_name.table());
    let renamed = agg
        .clone()
        .transform_up(|node| match node {
            LogicalPlan::TableScan(s) if provider(&s).is_some() => {
                let inner = TableScanBuilder::new(remote.clone(), s.source.clone())
                    .with_projection(s.projection.clone())
                    .with_filters(s.filters.clone())
                    .with_fetch(s.fetch)
                    .build()?;
                let aliased = SubqueryAlias::try_new(Arc::new(LogicalPlan::TableScan(inner)), alias.clone())?;
                Ok(Transformed::yes(LogicalPlan::SubqueryAlias(aliased)))
            }
            // `FROM d AS h`: the shards' table under the user's alias alone.
            LogicalPlan::SubqueryAlias(outer) => match outer.input.as_ref() {
                LogicalPlan::SubqueryAlias(inner)
                    if matches!(inner.input.as_ref(), LogicalPlan::TableScan(s) if provider(s).is_some()) =>
                {
                    let aliased = SubqueryAlias::try_new(inner.input.clone(), outer.alias.clone())?;
                    Ok(Transformed::yes(LogicalPlan::SubqueryAlias(aliased)))
                }
                _ => Ok(Transformed::no(LogicalPlan::SubqueryAlias(outer))),
            },
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    // Every output named apart: two aggregates that differ only in their
    // ORDER BY (argMin, argMax) would otherwise clash on the shard.
    let named: Vec<Expr> = renamed
        .schema()
        .columns()
        .into_iter()
        .enumerate()
        .map(|(i, c)| Expr::Column(c).alias(format!("c{i}")))
        .collect();
    let renamed =
        LogicalPlan::Projection(datafusion::logical_expr::Projection::try_new(named, Arc::new(renamed)).ok()?);
    let dialect =
        datafusion::sql::unparser::dialect::CustomDialectBuilder::new().with_identifier_quote_style('`').build();
    let unparser = datafusion::sql::unparser::Unparser::new(&dialect);
    let mut stmt = unparser.plan_to_sql(&renamed).ok()?;
    restore_aggregate_order(&unparser, agg, &mut stmt)?;
    Some(format!("{stmt} FORMAT ArrowStream"))
}

/// Puts back the `ORDER BY` inside ordered aggregates (`first_value(v
/// ORDER BY k)`, argMin/argMax), which the unparser leaves out: select item
/// i of `stmt` is output column i of `agg`. `None` when `stmt` is not of
/// that shape.
fn restore_aggregate_order(
    unparser: &datafusion::sql::unparser::Unparser,
    agg: &LogicalPlan,
    stmt: &mut datafusion::sql::sqlparser::ast::Statement,
) -> Option<()> {
    use datafusion::sql::sqlparser::ast;
    let LogicalPlan::Aggregate(a) = agg else { return None };
    let groups = a.group_expr.len();
    let mut select = None;
    for (i, e) in a.aggr_expr.iter().enumerate() {
        let inner = match e {
            Expr::Alias(al) => &*al.expr,
            other => other,
        };
        let Expr::AggregateFunction(f) = inner else { continue };
        if f.params.order_by.is_empty() || f.func.supports_within_group_clause() {
            continue;
        }
        let order: Vec<ast::OrderByExpr> =
            f.params.order_by.iter().map(|s| unparser.sort_to_sql(s)).collect::<Result<_>>().ok()?;
        let sel = match select.take() {
            Some(s) => s,
            None => {
                let ast::Statement::Query(q) = &mut *stmt else { return None };
                let ast::SetExpr::Select(sel) = q.body.as_mut() else { return None };
                sel
            }
        };
        let expr = match sel.projection.get_mut(groups + i)? {
            ast::SelectItem::ExprWithAlias { expr, .. } | ast::SelectItem::UnnamedExpr(expr) => expr,
            _ => return None,
        };
        let ast::Expr::Function(func) = expr else { return None };
        let ast::FunctionArguments::List(list) = &mut func.args else { return None };
        list.clauses.push(ast::FunctionArgumentClause::OrderBy(order));
        select = Some(sel);
    }
    Some(())
}

/// The query planner: DataFusion's, with [`ShardAggregatePlanner`].
#[derive(Debug, Default)]
pub struct ShardAwareQueryPlanner;

#[async_trait]
impl QueryPlanner for ShardAwareQueryPlanner {
    async fn create_physical_plan(&self, plan: &LogicalPlan, session: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ShardAggregatePlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

/// Plans a [`ShardAggregate`]: the final aggregation over the shards'
/// partial states.
#[derive(Debug, Default)]
pub struct ShardAggregatePlanner;

#[async_trait]
impl ExtensionPlanner for ShardAggregatePlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn datafusion::logical_expr::UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<ShardAggregate>() else {
            return Ok(None);
        };
        let LogicalPlan::Aggregate(agg) = &node.agg else {
            return Err(DataFusionError::Internal("ShardAggregate over something else".into()));
        };
        let scan = distributed_scan(&agg.input)
            .ok_or_else(|| DataFusionError::Internal("ShardAggregate without its Distributed table".into()))?;
        let p = provider(scan).ok_or_else(|| DataFusionError::Internal("not a Distributed table".into()))?;
        let dist = p
            .downcast_ref::<DistributedProvider>()
            .ok_or_else(|| DataFusionError::Internal("not a Distributed table".into()))?;
        if session.config().get_extension::<GlobalJoins>().is_some() && has_join(&node.agg) {
            return Ok(Some(planner.create_physical_plan(&node.agg, session).await?));
        }
        let shards = dist.shards_to_ask(session, &scan.filters)?;
        // Tables named without a database resolve on the shard as here.
        let database = ("database".to_string(), session.config().options().catalog.default_schema.clone());
        if session.config().get_extension::<NoMerge>().is_some() {
            let schema = Arc::new(node.agg.schema().as_arrow().clone());
            return Ok(Some(dist.shard_exec(shards, node.sql.clone(), vec![dialect(), database], schema)?));
        }
        // Planning the aggregation as DataFusion would here gives its
        // partial half: what each shard sends, and what the final half
        // merges.
        let local = planner.create_physical_plan(&node.agg, session).await?;
        let partial = partial_of(&local)?;
        let settings = vec![(STAGE.to_string(), WITH_MERGEABLE_STATE.to_string()), dialect(), database];
        let input = dist.shard_exec(shards, node.sql.clone(), settings, partial.schema())?;
        let groups = partial.group_expr();
        let config = session.config();
        let mode = if !groups.is_empty() && config.target_partitions() > 1 && config.repartition_aggregations() {
            AggregateMode::FinalPartitioned
        } else {
            AggregateMode::Final
        };
        let final_ = AggregateExec::try_new(
            mode,
            groups.as_final(),
            partial.aggr_expr().to_vec(),
            partial.filter_expr().to_vec(),
            input,
            partial.input_schema(),
        )?;
        Ok(Some(Arc::new(final_)))
    }
}

/// An [`AggregateExec`] of `node`, seen through the fast operator.
fn as_aggregate(node: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    node.downcast_ref::<AggregateExec>().or_else(|| node.downcast_ref::<FastAggregateExec>().map(|f| f.inner()))
}

/// Nodes between a query's root and its aggregation that change neither
/// its rows' values nor their number.
fn passes_through(node: &Arc<dyn ExecutionPlan>) -> bool {
    matches!(node.name(), "ProjectionExec" | "CoalescePartitionsExec" | "CoalesceBatchesExec" | "RepartitionExec")
}

/// The first aggregation below `plan`'s root, through nodes that pass rows
/// through.
fn top_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let mut node = plan.clone();
    loop {
        if as_aggregate(&node).is_some() {
            return Ok(node);
        }
        let children = node.children();
        match children.as_slice() {
            [child] if passes_through(&node) => node = (*child).clone(),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{STAGE} = {WITH_MERGEABLE_STATE} needs a query whose last step is an aggregation, not {}",
                    node.name()
                )));
            }
        }
    }
}

/// The partial aggregation of `plan`'s top aggregation (built from it when
/// DataFusion combined both halves into one).
fn partial_of(plan: &Arc<dyn ExecutionPlan>) -> Result<AggregateExec> {
    let top = top_aggregate(plan)?;
    let agg = as_aggregate(&top).ok_or_else(|| DataFusionError::Internal("no aggregation found".into()))?;
    match agg.mode() {
        AggregateMode::Partial => Ok(agg.clone()),
        AggregateMode::Final | AggregateMode::FinalPartitioned | AggregateMode::PartialReduce => {
            let below = top_aggregate(agg.input())?;
            partial_of(&below)
        }
        AggregateMode::Single | AggregateMode::SinglePartitioned => AggregateExec::try_new(
            AggregateMode::Partial,
            agg.group_expr().clone(),
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            agg.input().clone(),
            agg.input_schema(),
        ),
    }
}

/// Whether DataFusion answered the aggregation from the table's statistics
/// (count, min, max without GROUP BY: one value per aggregate, which is
/// also each one's partial state).
fn from_statistics(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    match children.as_slice() {
        [] => plan.name() == "PlaceholderRowExec",
        [child] => passes_through(plan) && from_statistics(child),
        _ => false,
    }
}

/// A shard's side of `stage = with_mergeable_state`: `plan` cut at its
/// aggregation's partial states.
pub fn mergeable_state(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if from_statistics(&plan) {
        return Ok(plan);
    }
    let partial: Arc<dyn ExecutionPlan> = Arc::new(partial_of(&plan)?);
    // The fast grouping operator applies to the partial half too.
    use datafusion::physical_optimizer::PhysicalOptimizerRule as _;
    crate::plan::fast_agg::FastAggregate.optimize(partial, &datafusion::config::ConfigOptions::default())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use coordinator::engine::distributed::{DistributedTable, ShardTarget};

    use crate::plan::planner::Planner;
    use crate::session::QueryContext;
    use crate::table::TableEngine;

    /// A planner with `default.d`, a Distributed table over `db.t` on two
    /// shards (nothing listens: these tests only plan).
    fn planner() -> Planner {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::UInt64, false),
            Field::new("v", DataType::Utf8, false),
        ]));
        let def = storage::TableDef {
            schema,
            engine: storage::Engine::MergeTree,
            partition_by: None,
            order_by: vec![],
            settings: Default::default(),
        };
        let storage = storage::Table::new(def).unwrap();
        let shard = |num| ShardTarget { num, weight: 1, replicas: vec![(num as u64, String::new())] };
        let d = DistributedTable::new(storage, "c", "db", "t", Some("k".into()), vec![shard(1), shard(2)], 1).unwrap();
        let p = Planner::new();
        p.register_database("default").unwrap();
        p.register_table("default", "d", &(Arc::new(d) as Arc<dyn TableEngine>)).unwrap();
        p
    }

    async fn explain(p: &Planner, sql: &str) -> String {
        let out = p.plan_select(&format!("EXPLAIN {sql}"), &QueryContext::new("default")).await.unwrap();
        let batches = out.collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                c.iter().map(|s| s.unwrap_or_default().to_string()).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn aggregations_go_to_the_shards_as_sql_over_their_table() {
        let p = planner();
        let plan = explain(&p, "SELECT v, count(), sum(k) FROM d WHERE k > 5 GROUP BY v").await;
        assert!(plan.contains("ShardAggregate: SELECT"), "{plan}");
        assert!(plan.contains("FROM `db`.`t` AS `d`") || plan.contains("FROM db.t AS d"), "{plan}");
        assert!(plan.contains("GROUP BY"), "{plan}");
        // The final aggregation runs here, over the shards' partial states.
        assert!(plan.contains("mode=Final"), "{plan}");
    }

    #[tokio::test]
    async fn ordered_aggregates_keep_their_order_on_the_shards() {
        let p = planner();
        let plan = explain(&p, "SELECT argMin(v, k), argMax(v, k) FROM d").await;
        let sql = plan.lines().find(|l| l.contains("ShardAggregate")).unwrap_or_default().to_string();
        assert!(sql.contains("ORDER BY") && sql.contains("ASC") && sql.contains("DESC"), "{sql}");
    }

    #[tokio::test]
    async fn what_the_shards_cannot_aggregate_alone_ships_rows() {
        let p = planner();
        // A join above the scan: rows come here, nothing is pushed.
        let plan = explain(&p, "SELECT count() FROM d AS a JOIN d AS b ON a.k = b.k").await;
        assert!(!plan.contains("ShardAggregate"), "{plan}");
        // No aggregation at all: a plain scan.
        let plan = explain(&p, "SELECT v FROM d WHERE k = 1").await;
        assert!(!plan.contains("ShardAggregate"), "{plan}");
    }
}
