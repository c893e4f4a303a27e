//! DDL beyond create/drop: `CREATE TABLE … AS SELECT`'s columns and
//! `RENAME TABLE`.

use std::sync::Arc;

use super::catalog::Server;
use super::execute::{blocking, render_metadata};
use query::error::QueryError;
use query::parse::ColumnDef;
use query::parse::types::{ChType, parse_type};
use query::session::QueryContext;

impl Server {
    /// The columns a SELECT would give a new table: the declared ClickHouse
    /// types where the values come straight from a column, else derived from
    /// Arrow; computed values are not Nullable unless declared so (DataFusion
    /// marks most expressions nullable; ClickHouse does not).
    pub(crate) async fn columns_of(
        self: &Arc<Self>,
        select: &str,
        q: &QueryContext,
    ) -> Result<Vec<ColumnDef>, QueryError> {
        let frame = self.planner.plan_select(select, q).await?;
        Ok(frame
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let declared = f.metadata().contains_key(query::parse::types::CH_TYPE_KEY);
                let mut ty = parse_type(&query::format::ch_type_name(f)).unwrap_or(ChType::String);
                if !declared && let ChType::Nullable(inner) = ty {
                    ty = *inner;
                }
                ColumnDef { name: f.name().clone(), ty, default: None, comment: None, codec: None, ttl: None }
            })
            .collect())
    }

    /// Renames `from_db.from` to `to_db.to`: its catalog entry moves (its
    /// data stays where its UUID puts it) and it is reopened under the new name.
    pub(crate) async fn rename_table(
        self: &Arc<Self>,
        from_db: &str,
        from: &str,
        to_db: &str,
        to: &str,
    ) -> Result<(), QueryError> {
        let table = self.table(from_db, from)?;
        if self.table(to_db, to).is_ok() {
            return Err(QueryError {
                code: 57,
                name: "TABLE_ALREADY_EXISTS",
                message: format!("Table {to_db}.{to} already exists"),
            });
        }
        if !self.tables().contains_key(to_db) {
            return Err(super::catalog::unknown_database(to_db));
        }
        if table.create().engine_kind() == query::parse::EngineKind::Replicated {
            // Its Raft groups are named after the table on every replica.
            return Err(QueryError {
                code: 48,
                name: "NOT_IMPLEMENTED",
                message: format!("RENAME of replicated table {from_db}.{from} is not supported yet"),
            });
        }
        let mut create = table.create().clone();
        create.name = to.to_string();
        create.database = None;
        let dir = self.table_dir(&create);
        table.set_merges_stopped(true);
        self.deregister_table(from_db, from);
        drop(table);
        // The catalog's rename is the whole RENAME on disk (the data stays
        // in `store/<uuid>`): a crash leaves the old table or the new one.
        self.catalog().rename_table((from_db, from), (to_db, to), &render_metadata(&create)).await?;
        let server = self.clone();
        let db = to_db.to_string();
        let reopened = blocking(move || server.open_engine(&db, &dir, create)).await?;
        self.register_table(to_db, to, reopened)
    }
}
