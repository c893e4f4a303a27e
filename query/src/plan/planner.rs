//! The planner: one DataFusion session with ClickHouse's functions, the
//! catalog of databases and tables DataFusion resolves `db.table` in, and
//! the step from SQL text to a [`Planned`] statement with its own memory
//! pool. The server registers tables here and runs what comes back.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{QueryError, df};
use crate::parse::cursor::Cursor;
use crate::session::QueryContext;
use crate::table::EngineProvider;
use crate::table::TableEngine;

/// Name of the catalog DataFusion resolves `db.table` in.
const CATALOG: &str = "shardhouse";

/// The hidden name under which `t FINAL` is registered.
pub fn final_name(table: &str) -> String {
    format!("{table} FINAL")
}

/// The SQL session every query is planned in.
pub struct Planner {
    ctx: SessionContext,
}

impl Default for Planner {
    fn default() -> Self {
        Self::new()
    }
}

impl Planner {
    /// A session with ClickHouse's dialect, functions, `numbers()` and an
    /// empty catalog.
    pub fn new() -> Planner {
        let mut config =
            SessionConfig::new().with_default_catalog_and_schema(CATALOG, "default").with_information_schema(true);
        config.options_mut().sql_parser.enable_ident_normalization = false;
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::ClickHouse;
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::plan::fast_agg::FastAggregate))
            .with_optimizer_rule(Arc::new(crate::plan::shard_agg::PushAggregateToShards))
            .with_query_planner(Arc::new(crate::plan::shard_agg::ShardAwareQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for udf in storage::expr::clickhouse_udfs() {
            ctx.register_udf(udf);
        }
        ctx.register_udtf("numbers", Arc::new(crate::plan::numbers::NumbersFunction));
        for (name, value) in [("version", env!("CARGO_PKG_VERSION")), ("timezone", "UTC")] {
            let value = value.to_string();
            ctx.register_udf(create_udf(
                name,
                vec![],
                DataType::Utf8,
                Volatility::Stable,
                Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(value.clone()))))),
            ));
        }
        Planner { ctx }
    }

    /// Makes `db` known (empty) if it is not yet.
    pub fn register_database(&self, db: &str) -> Result<(), QueryError> {
        if self.schema(db).is_none() {
            self.register_schema(db, Arc::new(MemorySchemaProvider::new()))?;
        }
        Ok(())
    }

    /// Serves database `name` from `schema` (e.g. the system tables).
    pub fn register_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) -> Result<(), QueryError> {
        let catalog = self.ctx.catalog(CATALOG).ok_or_else(|| QueryError::bad_arguments("no default catalog"))?;
        catalog.register_schema(name, schema).map_err(|e| QueryError::bad_arguments(e.to_string()))?;
        Ok(())
    }

    /// Forgets database `db` and every table in it.
    pub fn deregister_database(&self, db: &str) {
        if let Some(c) = self.ctx.catalog(CATALOG) {
            let _ = c.deregister_schema(db, true);
        }
    }

    /// Serves `db.name` (and `db.name FINAL`) from `engine`.
    pub fn register_table(&self, db: &str, name: &str, engine: &Arc<dyn TableEngine>) -> Result<(), QueryError> {
        let schema = self.schema(db).ok_or_else(|| QueryError {
            code: 81,
            name: "UNKNOWN_DATABASE",
            message: format!("Database {db} does not exist"),
        })?;
        for final_ in [false, true] {
            let provider: Arc<dyn datafusion::catalog::TableProvider> =
                if engine.kind() == crate::table::EngineKind::Distributed {
                    Arc::new(crate::table::distributed::DistributedProvider { engine: engine.clone() })
                } else {
                    Arc::new(EngineProvider { engine: engine.clone(), final_ })
                };
            schema
                .register_table(if final_ { final_name(name) } else { name.to_string() }, provider)
                .map_err(|e| QueryError::bad_arguments(e.to_string()))?;
        }
        Ok(())
    }

    /// Stops serving `db.name`.
    pub fn deregister_table(&self, db: &str, name: &str) {
        if let Some(s) = self.schema(db) {
            let _ = s.deregister_table(name);
            let _ = s.deregister_table(&final_name(name));
        }
    }

    fn schema(&self, db: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.ctx.catalog(CATALOG).and_then(|c| c.schema(db))
    }

    /// Plans a SELECT as written by a user (FINAL included).
    pub async fn plan_select(&self, sql: &str, q: &QueryContext) -> Result<Planned, QueryError> {
        let (sql, global) = rewrite_global(&rewrite_final(sql)?)?;
        self.plan_with(&sql, q, global).await
    }

    /// Plans a query on DataFusion after rewriting ClickHouse functions.
    /// FINAL must have been rewritten already ([`Planner::plan_select`]).
    pub async fn plan(&self, sql: &str, q: &QueryContext) -> Result<Planned, QueryError> {
        self.plan_with(sql, q, false).await
    }

    async fn plan_with(&self, sql: &str, q: &QueryContext, global: bool) -> Result<Planned, QueryError> {
        let mut state = self.ctx.state();
        if global {
            state.config_mut().set_extension(Arc::new(crate::plan::shard_agg::GlobalJoins));
        }
        let opts = state.config_mut().options_mut();
        opts.catalog.default_schema = q.database.clone();
        let threads = q.settings.u64("max_threads");
        if threads > 0 {
            opts.execution.target_partitions = threads as usize;
        }
        // High-cardinality GROUP BYs (user ids) gain nothing from partial
        // aggregation; hand their rows straight to the final one sooner
        // (benches/results/DECISIONS.md).
        opts.execution.skip_partial_aggregation_probe_ratio_threshold = 0.3;
        if q.settings.bool("select_sequential_consistency") {
            state.config_mut().set_extension(Arc::new(crate::table::SequentialConsistency));
        }
        let policy = coordinator::engine::distributed::LoadBalancing::parse(
            q.settings.get("load_balancing").unwrap_or("random"),
        )
        .unwrap_or_default();
        let order = coordinator::engine::distributed::ReplicaOrder {
            policy,
            prefer_local: q.settings.bool("prefer_localhost_replica"),
        };
        state.config_mut().set_extension(Arc::new(crate::table::ReplicaChoice(order)));
        if q.settings.bool("optimize_skip_unused_shards") {
            state.config_mut().set_extension(Arc::new(crate::table::SkipUnusedShards));
        }
        if q.settings.bool("distributed_group_by_no_merge") {
            state.config_mut().set_extension(Arc::new(crate::plan::shard_agg::NoMerge));
        }
        // Distributed reads record the shards they leave out here.
        state.config_mut().set_extension(q.stats.clone());
        if q.settings.bool("skip_unavailable_shards") {
            state.config_mut().set_extension(Arc::new(crate::table::SkipUnavailableShards));
        }
        // A shard's part of a Distributed query comes as DataFusion's own SQL
        // (its unparser's), with its functions already rewritten.
        let datafusion_sql = q.settings.get("dialect") == Some("datafusion");
        let dialect =
            if datafusion_sql { datafusion::config::Dialect::Generic } else { datafusion::config::Dialect::ClickHouse };
        let mut stmt = state.sql_to_statement(sql, &dialect).map_err(df)?;
        // EXPLAIN shows the plan of the statement as it runs: rewritten too.
        let inner = match &mut stmt {
            datafusion::sql::parser::Statement::Explain(e) => &mut *e.statement,
            other => other,
        };
        if let datafusion::sql::parser::Statement::Statement(s) = inner
            && !datafusion_sql
        {
            crate::plan::functions::rewrite_statement(s)?;
        }
        let plan = state.statement_to_plan(stmt).await.map_err(df)?;
        let plan = crate::plan::count::unsigned_counts(plan).map_err(df)?;
        // A runtime per query: its memory pool bounds it by max_memory_usage
        // and records its peak for the query log.
        let pool = crate::metering::PeakPool::new(q.settings.u64("max_memory_usage") as usize, q.stats.clone());
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(df)?;
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
            let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
                .with_runtime_env(runtime.clone())
                .build();
            let frame = SessionContext::new_with_state(state).execute_logical_plan(plan).await.map_err(df)?;
            return Ok(Planned { frame, runtime, mergeable: false });
        }
        // A query runs with the session's state as it is and the runtime
        // given to its task context: rebuilding a SessionState around the
        // runtime re-registered every function, a third of `SELECT 1`.
        let mergeable =
            q.settings.get(crate::plan::shard_agg::STAGE) == Some(crate::plan::shard_agg::WITH_MERGEABLE_STATE);
        Ok(Planned { frame: datafusion::dataframe::DataFrame::new(state, plan), runtime, mergeable })
    }
}

/// Drops `GLOBAL` before `IN`, `NOT IN` and `JOIN` and says whether there
/// was one: such a query's joins and subqueries run on this node, once
/// (without GLOBAL, an aggregation over a join of a Distributed table with
/// a table every node has runs on the shards).
pub fn rewrite_global(sql: &str) -> Result<(String, bool), QueryError> {
    let c = Cursor::new(sql)?;
    let mut out = String::new();
    let mut copied = 0;
    for (i, t) in c.toks.iter().enumerate() {
        let next = |k: usize| c.toks.get(i + k);
        const JOINS: [&str; 11] =
            ["JOIN", "LEFT", "RIGHT", "INNER", "FULL", "CROSS", "ANY", "ALL", "SEMI", "ANTI", "ASOF"];
        let before_in = next(1).is_some_and(|n| n.is_kw("IN") || JOINS.iter().any(|k| n.is_kw(k)))
            || (next(1).is_some_and(|n| n.is_kw("NOT")) && next(2).is_some_and(|n| n.is_kw("IN")));
        if t.is_kw("GLOBAL") && before_in {
            out.push_str(&sql[copied..t.start]);
            copied = t.end;
        }
    }
    let global = copied > 0;
    out.push_str(&sql[copied..]);
    Ok((out, global))
}

/// Rewrites `FROM [db.]t FINAL` to the table's FINAL provider; FINAL
/// anywhere else is an error rather than silently ignored.
pub fn rewrite_final(sql: &str) -> Result<String, QueryError> {
    let c = Cursor::new(sql)?;
    let mut out = String::new();
    let mut copied = 0;
    for (i, t) in c.toks.iter().enumerate() {
        if !t.is_kw("FINAL") {
            continue;
        }
        let name_tok = i.checked_sub(1).and_then(|j| c.toks.get(j)).filter(|n| n.ident().is_some());
        let Some(name) = name_tok else {
            return Err(QueryError::syntax("FINAL must follow a table name"));
        };
        let qualified = i >= 3 && c.toks[i - 2].is_punct(".") && c.toks[i - 3].ident().is_some();
        let before = if qualified { i.checked_sub(4) } else { i.checked_sub(2) };
        if !before.and_then(|j| c.toks.get(j)).is_some_and(|b| b.is_kw("FROM") || b.is_kw("JOIN")) {
            return Err(QueryError::bad_arguments("FINAL is supported directly after a table name in FROM or JOIN"));
        }
        let table = name.ident().unwrap_or_default();
        out.push_str(&sql[copied..name.start]);
        out.push_str(&format!("`{}`", final_name(table).replace('`', "\\`")));
        copied = t.end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// A planned statement and the runtime (memory pool) it must execute with.
pub struct Planned {
    frame: datafusion::dataframe::DataFrame,
    runtime: Arc<RuntimeEnv>,
    /// `stage = with_mergeable_state`: run up to the partial aggregation
    /// (a shard's part of a Distributed query).
    mergeable: bool,
}

impl Planned {
    /// The result's schema.
    pub fn schema(&self) -> &datafusion::common::DFSchema {
        self.frame.schema()
    }

    /// The context to execute with: the query's memory pool.
    pub fn task_ctx(&self) -> datafusion::execution::TaskContext {
        self.frame.task_ctx().with_runtime(self.runtime.clone())
    }

    /// Runs the statement to the end.
    pub async fn collect(self) -> Result<Vec<arrow::array::RecordBatch>, QueryError> {
        let task = Arc::new(self.task_ctx());
        let mut plan = self.frame.create_physical_plan().await.map_err(df)?;
        if self.mergeable {
            plan =
                crate::plan::shard_agg::mergeable_state(plan).map_err(|e| QueryError::bad_arguments(e.to_string()))?;
        }
        datafusion::physical_plan::collect(plan, task).await.map_err(df)
    }

    /// Runs the statement to the end with its rows, bytes and time counted
    /// into `stats` (for the query log and `X-ClickHouse-Summary`).
    pub async fn collect_metered(
        self,
        stats: &Arc<crate::metering::QueryStats>,
    ) -> Result<(SchemaRef, Vec<arrow::array::RecordBatch>), QueryError> {
        let mut schema: SchemaRef = Arc::new(self.schema().as_arrow().clone());
        let task = Arc::new(self.task_ctx());
        let mut physical = self.frame.create_physical_plan().await.map_err(df)?;
        if self.mergeable {
            physical = crate::plan::shard_agg::mergeable_state(physical)
                .map_err(|e| QueryError::bad_arguments(e.to_string()))?;
            schema = physical.schema();
        }
        // EXPLAIN ANALYZE prints the plan it ran: leave it unwrapped.
        let physical = if matches!(physical.name(), "AnalyzeExec" | "ExplainExec") {
            physical
        } else {
            crate::metering::meter(physical, stats).map_err(df)?
        };
        Ok((schema, datafusion::physical_plan::collect(physical, task).await.map_err(df)?))
    }
}
