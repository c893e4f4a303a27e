//! SQL expressions of a table — partition key, ORDER BY, mutation predicates and
//! assignments — compiled with DataFusion into physical expressions, with the
//! ClickHouse functions they use registered.

mod functions;
pub mod hash;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Result, StorageError};

pub use functions::clickhouse_udfs;
pub use hash::int_hash64;

/// Compiles SQL expression text against one table schema.
pub struct ExprCompiler {
    ctx: SessionContext,
    schema: SchemaRef,
    df_schema: DFSchema,
}

impl std::fmt::Debug for ExprCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExprCompiler").field("schema", &self.schema).finish()
    }
}

impl ExprCompiler {
    /// A compiler for expressions over `schema`. Identifiers are case-sensitive,
    /// as in ClickHouse.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = false;
        let ctx = SessionContext::new_with_config(config);
        for udf in clickhouse_udfs() {
            ctx.register_udf(udf);
        }
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        Ok(ExprCompiler { ctx, schema, df_schema })
    }

    /// The schema expressions are compiled against.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Parses SQL text into a logical expression over the schema.
    pub fn parse(&self, sql: &str) -> Result<Expr> {
        self.ctx.parse_sql_expr(sql, &self.df_schema).map_err(|e| bad(sql, e))
    }

    /// Compiles SQL text into a physical expression.
    pub fn compile(&self, sql: &str) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self.compile_with_columns(sql)?.0)
    }

    /// Compiles SQL text and also returns the columns it reads.
    pub fn compile_with_columns(&self, sql: &str) -> Result<(Arc<dyn PhysicalExpr>, Vec<String>)> {
        let expr = self.parse(sql)?;
        let mut cols: Vec<String> = expr.column_refs().into_iter().map(|c| c.name.clone()).collect();
        cols.sort();
        let pe = self.ctx.create_physical_expr(expr, &self.df_schema).map_err(|e| bad(sql, e))?;
        Ok((pe, cols))
    }

    /// Compiles an already-parsed logical expression.
    pub fn compile_expr(&self, expr: Expr) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self.ctx.create_physical_expr(expr, &self.df_schema)?)
    }
}

fn bad(sql: &str, e: datafusion::error::DataFusionError) -> StorageError {
    StorageError::BadExpression { expr: sql.to_string(), reason: e.strip_backtrace() }
}
