//! Statement execution: DDL and administrative statements run here against
//! the catalog and the table engines; SELECT and INSERT … SELECT/VALUES run
//! on DataFusion.

use query::plan::truthiness::condition_text;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt8Array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use storage::mutation::MutationCommand;

use super::catalog::{Server, unknown_database};
use super::mutations::statement_setting;
use query::error::QueryError;
use query::format::Format;
use query::parse::cursor::Cursor;
use query::parse::{AlterCommand, PartitionSpec, Statement, parse_statement, split_settings};
use query::session::QueryContext;
use query::settings::Settings;
use query::table::{MutationSync, OptimizeOptions};

/// What a statement returns.
#[derive(Debug, Default)]
pub struct QueryOutput {
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
    /// The format named in the query's FORMAT clause, if any.
    pub format: Option<Format>,
    pub written_rows: u64,
}

impl QueryOutput {
    fn rows(schema: SchemaRef, batches: Vec<RecordBatch>, format: Option<Format>) -> Self {
        QueryOutput { schema: Some(schema), batches, format, written_rows: 0 }
    }
}

pub(super) fn st(e: storage::StorageError) -> QueryError {
    QueryError::storage(&e)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| QueryError::bad_arguments(format!("task failed: {e}")))?
}

/// For `INSERT … FORMAT <name> <data>`: the statement up to the format name,
/// and the inline data after the whitespace ending it. Only the head is
/// tokenised, so the data may hold anything (quotes included).
pub(crate) fn split_insert_format(sql: &str) -> Option<(&str, &str)> {
    match scan_insert(sql)? {
        InsertTail::Format { head_end, data_start } => Some((&sql[..head_end], &sql[data_start..])),
        InsertTail::Values(_) => None,
    }
}

/// For `INSERT … VALUES (…), …`: the statement before `VALUES`, and the rest
/// from `VALUES` on. The rows are data for the VALUES reader: lexing them as
/// SQL, as every step before the insert did, cost more than reading them.
pub(crate) fn split_insert_values(sql: &str) -> Option<(&str, &str)> {
    match scan_insert(sql)? {
        InsertTail::Values(at) => Some((&sql[..at], &sql[at..])),
        InsertTail::Format { .. } => None,
    }
}

/// Where the rows of an INSERT start.
enum InsertTail {
    /// `FORMAT <name>` ends at `head_end`; inline data starts at `data_start`.
    Format { head_end: usize, data_start: usize },
    /// `VALUES` at this byte.
    Values(usize),
}

/// Scans an INSERT's head (quotes and parentheses respected) for `FORMAT
/// <name>` or `VALUES`; `None` for anything else (INSERT … SELECT included).
fn scan_insert(sql: &str) -> Option<InsertTail> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if !sql.get(i..i + 6).is_some_and(|w| w.eq_ignore_ascii_case("INSERT")) {
        return None;
    }
    let mut depth = 0i32;
    let (mut prev_format, mut prev_into) = (false, false);
    while i < b.len() {
        let c = b[i];
        if c == b'`' || c == b'"' || c == b'\'' {
            let q = c;
            i += 1;
            while i < b.len() && b[i] != q {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            (prev_format, prev_into) = (false, false);
        } else if c == b'(' {
            depth += 1;
            i += 1;
        } else if c == b')' {
            depth -= 1;
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &sql[start..i];
            if prev_format {
                let rest = &sql[i..];
                let rest = rest
                    .strip_prefix("\r\n")
                    .or_else(|| rest.strip_prefix('\n'))
                    .unwrap_or_else(|| rest.trim_start_matches([' ', '\t']));
                let rest = rest.strip_prefix("\r\n").or_else(|| rest.strip_prefix('\n')).unwrap_or(rest);
                return Some(InsertTail::Format { head_end: i, data_start: sql.len() - rest.len() });
            }
            // Not a table named `values` (`INTO values`, `db.values`).
            let name = prev_into || (start > 0 && b[start - 1] == b'.');
            if depth == 0 && word.eq_ignore_ascii_case("VALUES") && !name {
                return Some(InsertTail::Values(start));
            }
            prev_into = word.eq_ignore_ascii_case("INTO") || word.eq_ignore_ascii_case("TABLE");
            if depth == 0 && (word.eq_ignore_ascii_case("SELECT") || word.eq_ignore_ascii_case("WITH")) {
                return None;
            }
            prev_format = depth == 0 && word.eq_ignore_ascii_case("FORMAT");
        } else {
            i += 1;
        }
    }
    None
}

/// Splits a trailing `FORMAT <name>` off a statement.
pub(crate) fn split_format(sql: &str) -> Result<(String, Option<Format>), QueryError> {
    let c = Cursor::new(sql)?;
    let end = c.toks.len();
    if end >= 2 && c.toks[end - 2].is_kw("FORMAT") && !(end >= 3 && c.toks[end - 3].is_punct(".")) {
        let name = c.toks[end - 1].ident().unwrap_or_default().to_string();
        let format = Format::from_name(&name)?;
        let text = if end > 2 { sql[..c.toks[end - 3].end].to_string() } else { String::new() };
        return Ok((text, Some(format)));
    }
    Ok((sql.to_string(), None))
}

/// Applies `max_result_rows` / `result_overflow_mode`.
fn limit_result(batches: &mut Vec<RecordBatch>, settings: &Settings) -> Result<(), QueryError> {
    let max = settings.u64("max_result_rows") as usize;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if max == 0 || total <= max {
        return Ok(());
    }
    if settings.get("result_overflow_mode") != Some("break") {
        return Err(QueryError {
            code: 396,
            name: "TOO_MANY_ROWS_OR_BYTES",
            message: format!("Limit for result exceeded, max rows: {max}, current rows: {total}"),
        });
    }
    let mut left = max;
    for b in batches.iter_mut() {
        let keep = b.num_rows().min(left);
        *b = b.slice(0, keep);
        left -= keep;
    }
    batches.retain(|b| b.num_rows() > 0);
    Ok(())
}

impl Server {
    /// Executes one statement. `data` is the rest of the request body after
    /// the statement (the rows of an `INSERT … FORMAT`).
    pub async fn execute(self: &Arc<Self>, sql: &str, db: &str) -> Result<QueryOutput, QueryError> {
        self.execute_with_data(sql, &[], db).await
    }

    /// Executes a statement followed by `data` in `db` with default settings.
    pub async fn execute_with_data(
        self: &Arc<Self>,
        sql: &str,
        data: &[u8],
        db: &str,
    ) -> Result<QueryOutput, QueryError> {
        self.execute_in(sql, data, &mut QueryContext::new(db)).await
    }

    /// Executes a statement followed by `data`: the rows of an `INSERT …
    /// FORMAT` (any bytes), or more query text otherwise (UTF-8). Settings,
    /// parameters and sessions were applied by `execute_in`.
    pub(crate) async fn execute_statement(
        self: &Arc<Self>,
        sql: &str,
        data: &[u8],
        q: &QueryContext,
    ) -> Result<QueryOutput, QueryError> {
        // Replicated tables read this node's groups: bring them up before the
        // first statement after a restart (the server binary starts them at once).
        if self.replication.started().is_none() && self.has_replicated_tables() {
            self.replication.start().await?;
        }
        if data.is_empty() && split_insert_values(sql).is_some() {
            return self.execute_insert(sql, None, q).await;
        }
        if !q.from_ddl_log
            && let Some(oc) = query::parse::on_cluster::on_cluster(sql, &query::session::new_query_id())?
        {
            return self.execute_on_cluster(oc, q).await;
        }
        if let Some((head, inline)) = split_insert_format(sql) {
            let mut rows = inline.as_bytes().to_vec();
            if !data.is_empty() {
                if !rows.is_empty() {
                    rows.push(b'\n');
                }
                rows.extend_from_slice(data);
            }
            return self.execute_insert(head, Some(&rows), q).await;
        }
        let full;
        let sql = if data.is_empty() {
            sql
        } else {
            let more = std::str::from_utf8(data).map_err(|e| QueryError {
                code: 27,
                name: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                message: format!("the query is not valid UTF-8 at byte {}", e.valid_up_to()),
            })?;
            full = format!("{sql}\n{more}");
            &full
        };
        // A FORMAT clause applies to whatever the statement returns (DESCRIBE,
        // SHOW, CHECK as much as SELECT).
        let (sql, format) = split_format(sql)?;
        let sql = sql.as_str();
        let mut out = self.execute_parsed(sql, q).await?;
        out.format = out.format.or(format);
        Ok(out)
    }

    async fn execute_parsed(self: &Arc<Self>, sql: &str, q: &QueryContext) -> Result<QueryOutput, QueryError> {
        let db = q.database.as_str();
        match parse_statement(sql)? {
            Statement::CreateDatabase { name, if_not_exists } => {
                if self.tables().contains_key(&name) {
                    if if_not_exists {
                        return Ok(QueryOutput::default());
                    }
                    return Err(QueryError {
                        code: 82,
                        name: "DATABASE_ALREADY_EXISTS",
                        message: format!("Database {name} already exists"),
                    });
                }
                self.catalog().create_database(&name).await?;
                self.register_database(&name)?;
                Ok(QueryOutput::default())
            }
            Statement::CreateTable(mut create) => {
                let db = create.database.clone().unwrap_or_else(|| db.to_string());
                if !self.tables().contains_key(&db) {
                    return Err(unknown_database(&db));
                }
                if self.table(&db, &create.name).is_ok() {
                    if create.if_not_exists {
                        return Ok(QueryOutput::default());
                    }
                    return Err(QueryError {
                        code: 57,
                        name: "TABLE_ALREADY_EXISTS",
                        message: format!("Table {db}.{} already exists", create.name),
                    });
                }
                let select = create.as_select.take();
                if let Some(sel) = &select
                    && create.columns.is_empty()
                {
                    create.columns = self.columns_of(sel, q).await?;
                }
                if let Some((src_db, src)) = create.as_table.take() {
                    let source = self.table(src_db.as_deref().unwrap_or(&db), &src)?;
                    let orig = source.create();
                    create.columns = orig.columns.clone();
                    if create.engine.is_none() {
                        create.engine = orig.engine.clone();
                        create.partition_by = orig.partition_by.clone();
                        create.order_by = orig.order_by.clone();
                        create.primary_key = orig.primary_key.clone();
                        create.settings = orig.settings.clone();
                    }
                }
                create.table_def()?;
                create.database = None;
                if create.uuid.is_none() {
                    create.uuid = Some(query::session::new_query_id());
                }
                self.replica_path(&db, &create)?;
                let name = create.name.clone();
                let text = render_metadata(&create);
                let dir = self.table_dir(&create);
                let server = self.clone();
                let db2 = db.clone();
                let table = blocking(move || server.open_engine(&db2, &dir, *create)).await?;
                self.catalog().put_table(&db, &name, &text).await?;
                self.register_table(&db, &name, table)?;
                if let Some(sel) = select {
                    let insert = format!("INSERT INTO {}.{} {sel}", quote_ident(&db), quote_ident(&name));
                    if let Err(e) = self.execute_insert(&insert, None, q).await {
                        // Like ClickHouse: a failed AS SELECT leaves no table behind.
                        let _ = self.drop_table(&db, &name).await;
                        return Err(e);
                    }
                }
                Ok(QueryOutput::default())
            }
            Statement::DropTable { table: (d, name), if_exists } => {
                let db = d.unwrap_or_else(|| db.to_string());
                if self.table(&db, &name).is_err() && if_exists {
                    return Ok(QueryOutput::default());
                }
                self.table(&db, &name)?;
                self.drop_table(&db, &name).await?;
                Ok(QueryOutput::default())
            }
            Statement::DropDatabase { name, if_exists } => {
                let tables: Vec<String> = match self.tables().get(&name) {
                    Some(t) => t.keys().cloned().collect(),
                    None if if_exists => return Ok(QueryOutput::default()),
                    None => return Err(unknown_database(&name)),
                };
                for t in tables {
                    self.drop_table(&name, &t).await?;
                }
                self.tables().remove(&name);
                self.planner.deregister_database(&name);
                self.catalog().drop_database(&name).await?;
                // Data of tables from before UUIDs, if any is left.
                let legacy = self.data_dir.join("data").join(&name);
                blocking(move || {
                    let _ = std::fs::remove_dir_all(legacy);
                    Ok(())
                })
                .await?;
                Ok(QueryOutput::default())
            }
            Statement::TruncateTable { table: (d, name), if_exists } => {
                let db = d.unwrap_or_else(|| db.to_string());
                match self.table(&db, &name) {
                    Ok(t) => t.truncate().await?,
                    Err(_) if if_exists => {}
                    Err(e) => return Err(e),
                }
                Ok(QueryOutput::default())
            }
            Statement::Optimize { table: (d, name), partition, final_, deduplicate, cleanup } => {
                let t = self.table(&d.unwrap_or_else(|| db.to_string()), &name)?;
                let partition_id = match partition {
                    Some(p) => self.partition_id(t.as_ref(), &p, q).await?,
                    None => None,
                };
                let opts = OptimizeOptions { partition_id, final_, deduplicate, cleanup };
                t.optimize(&opts).await?;
                Ok(QueryOutput::default())
            }
            Statement::Alter { table: (d, name), commands, settings } => {
                let t = self.table(&d.unwrap_or_else(|| db.to_string()), &name)?;
                let mut mutation = Vec::new();
                for c in commands {
                    match c {
                        AlterCommand::Delete { predicate } => {
                            mutation.push(MutationCommand::Delete { predicate: condition_text(&predicate) })
                        }
                        AlterCommand::Update { assignments, predicate } => {
                            let predicate = condition_text(&predicate);
                            mutation.push(MutationCommand::Update { assignments, predicate })
                        }
                        AlterCommand::DropPartition(p) => {
                            let t = t.clone();
                            match self.partition_id(t.as_ref(), &p, q).await? {
                                Some(id) => t.drop_partition(&id).await?,
                                None => t.truncate().await?,
                            }
                        }
                    }
                }
                if !mutation.is_empty() {
                    let text = sql.to_string();
                    let sync = MutationSync::from_setting(statement_setting(q, &settings, "mutations_sync"));
                    t.mutate(mutation, &text, sync).await?;
                }
                Ok(QueryOutput::default())
            }
            Statement::Delete { table: (d, name), predicate, settings } => {
                let t = self.table(&d.unwrap_or_else(|| db.to_string()), &name)?;
                let text = sql.to_string();
                let predicate = condition_text(&predicate);
                let sync = MutationSync::from_setting(statement_setting(q, &settings, "lightweight_deletes_sync"));
                t.mutate(vec![MutationCommand::LightweightDelete { predicate }], &text, sync).await?;
                Ok(QueryOutput::default())
            }
            Statement::SystemMerges { start, table } => {
                let targets: Vec<Arc<query::table::Table>> = match table {
                    Some((d, name)) => vec![self.table(&d.unwrap_or_else(|| db.to_string()), &name)?],
                    None => self.tables().values().flat_map(|t| t.values().cloned()).collect(),
                };
                for t in targets {
                    t.set_merges_stopped(!start);
                }
                Ok(QueryOutput::default())
            }
            Statement::KillMutation { predicate } => Box::pin(self.kill_mutations(&predicate, q)).await,
            Statement::CheckTable { table: (d, name), .. } => {
                let t = self.table(&d.unwrap_or_else(|| db.to_string()), &name)?;
                t.read_your_writes().await;
                let bad = blocking(move || {
                    Ok(t.snapshot().iter().filter_map(|p| p.verify().err()).map(|e| e.to_string()).collect::<Vec<_>>())
                })
                .await?;
                let schema = Arc::new(Schema::new(vec![
                    Field::new("result", DataType::UInt8, false),
                    Field::new("message", DataType::Utf8, false),
                ]));
                let ok = bad.is_empty() as u8;
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(UInt8Array::from(vec![ok])), Arc::new(StringArray::from(vec![bad.join("; ")]))],
                )
                .map_err(|e| QueryError::bad_arguments(e.to_string()))?;
                Ok(QueryOutput::rows(schema, vec![batch], None))
            }
            Statement::RenameTable { pairs } => {
                for ((fd, from), (td, to)) in pairs {
                    let fd = fd.unwrap_or_else(|| db.to_string());
                    let td = td.unwrap_or_else(|| db.to_string());
                    self.rename_table(&fd, &from, &td, &to).await?;
                }
                Ok(QueryOutput::default())
            }
            Statement::Other(text) => self.execute_other(&text, q).await,
        }
    }

    /// The partition `PARTITION <expr>` names: the expression (a tuple for
    /// a tuple key) is evaluated, cast to the key's types, and turned into
    /// the partition id as an inserted row with that key would get it.
    async fn partition_id(
        &self,
        t: &query::table::Table,
        p: &PartitionSpec,
        q: &QueryContext,
    ) -> Result<Option<String>, QueryError> {
        let text = match p {
            PartitionSpec::Id(id) => return Ok(Some(id.clone())),
            PartitionSpec::All => return Ok(None),
            PartitionSpec::Value(v) => v,
        };
        let types = t.storage().partition_key_types().map_err(st)?;
        if types.is_empty() {
            return Ok(Some("all".into()));
        }
        let values = if types.len() == 1 { vec![text.clone()] } else { query::parse::cursor::split_key(text)? };
        if values.len() != types.len() {
            return Err(QueryError::arguments(format!(
                "PARTITION {text}: the partition key has {} elements, the value {}",
                types.len(),
                values.len()
            )));
        }
        let frame = self.planner.plan(&format!("SELECT {}", values.join(", ")), q).await?;
        let batches = frame.collect().await?;
        let row =
            batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| QueryError::arguments("empty PARTITION value"))?;
        let keys = row
            .columns()
            .iter()
            .zip(&types)
            .map(|(c, ty)| {
                cast_with_options(c, ty, &CastOptions { safe: false, ..Default::default() }).map_err(|e| QueryError {
                    code: 53,
                    name: "TYPE_MISMATCH",
                    message: format!("PARTITION {text}: cannot convert to the key's type {ty}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(storage::partition::partition_id_of(&keys, 0).map_err(st)?.0))
    }

    fn has_replicated_tables(&self) -> bool {
        self.tables()
            .values()
            .flat_map(|t| t.values())
            .any(|t| t.create().engine_kind() == query::parse::EngineKind::Replicated)
    }

    pub(crate) async fn drop_table(&self, db: &str, name: &str) -> Result<(), QueryError> {
        let table = self.deregister_table(db, name);
        // A replicated table's groups go with it on this replica (other
        // replicas drop theirs with their own DROP, as in ClickHouse).
        if self.replication.started().is_some() {
            let table = format!("{db}.{name}");
            self.replication.run(move |node| async move { node.remove_groups_of(&table).await }).await??;
        }
        self.catalog().drop_table(db, name).await?;
        if let Some(t) = table {
            // A table's parts can be many thousands of files: off the runtime.
            let dir = self.table_dir(t.create());
            blocking(move || {
                let _ = std::fs::remove_dir_all(dir);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn execute_other(self: &Arc<Self>, sql: &str, q: &QueryContext) -> Result<QueryOutput, QueryError> {
        if Cursor::new(sql)?.peek_kws(&["INSERT", "INTO"]) {
            return self.execute_insert(sql, None, q).await;
        }
        self.execute_query(sql, q).await
    }

    async fn execute_query(self: &Arc<Self>, sql: &str, q: &QueryContext) -> Result<QueryOutput, QueryError> {
        let db = q.database.as_str();
        let mut c = Cursor::new(sql)?;
        if c.eat_kws(&["SHOW", "DATABASES"]) {
            let names: Vec<String> = self.tables().keys().cloned().collect();
            return Ok(names_output("name", names));
        }
        if c.eat_kws(&["SHOW", "TABLES"]) {
            let from = if c.eat_kws(&["FROM"]) || c.eat_kws(&["IN"]) { c.ident()? } else { db.to_string() };
            let names: Vec<String> =
                self.tables().get(&from).ok_or_else(|| unknown_database(&from))?.keys().cloned().collect();
            return Ok(names_output("name", names));
        }
        if c.eat_kws(&["SHOW", "CREATE"]) {
            c.eat_kws(&["TABLE"]);
            let (d, name) = c.qualified_name()?;
            let d = d.unwrap_or_else(|| db.to_string());
            let t = self.table(&d, &name)?;
            let mut create = t.create().clone();
            create.database = Some(d);
            return Ok(names_output("statement", vec![render_create(&create)]));
        }
        if c.eat_kws(&["DESCRIBE"]) || c.eat_kws(&["DESC"]) {
            c.eat_kws(&["TABLE"]);
            let (d, name) = c.qualified_name()?;
            let t = self.table(&d.unwrap_or_else(|| db.to_string()), &name)?;
            return Ok(describe(t.as_ref()));
        }
        let (text, clause) = split_settings(sql)?;
        let mut q = q.clone();
        if let Some(clause) = clause {
            q.settings.merge(&Settings::parse_assignments(&clause)?);
        }
        let run = async { self.planner.plan_select(&text, &q).await?.collect_metered(&q.stats).await };
        let limit = q.settings.u64("max_execution_time");
        let (schema, mut batches) = if limit > 0 {
            tokio::time::timeout(std::time::Duration::from_secs(limit), run).await.map_err(|_| QueryError {
                code: 159,
                name: "TIMEOUT_EXCEEDED",
                message: format!("Timeout exceeded: elapsed {limit} seconds, maximum: {limit} (max_execution_time)"),
            })??
        } else {
            run.await?
        };
        limit_result(&mut batches, &q.settings)?;
        Ok(QueryOutput::rows(schema, batches, None))
    }
}

/// The partition id a `PARTITION …` clause names; `None` for ALL.
fn names_output(column: &str, names: Vec<String>) -> QueryOutput {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(names))]);
    match batch {
        Ok(b) => QueryOutput::rows(schema, vec![b], None),
        Err(_) => QueryOutput::default(),
    }
}

fn describe(t: &query::table::Table) -> QueryOutput {
    let cols = &t.create().columns;
    let names = ["name", "type", "default_type", "default_expression", "comment", "codec_expression", "ttl_expression"];
    let schema = Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>()));
    let col = |f: &dyn Fn(&query::parse::ColumnDef) -> String| -> ArrayRef {
        Arc::new(StringArray::from(cols.iter().map(f).collect::<Vec<_>>()))
    };
    let arrays = vec![
        col(&|c| c.name.clone()),
        col(&|c| c.ty.to_string()),
        col(&|c| c.default.as_ref().map(|d| d.0.as_str().to_string()).unwrap_or_default()),
        col(&|c| c.default.as_ref().map(|d| d.1.clone()).unwrap_or_default()),
        col(&|c| c.comment.clone().unwrap_or_default()),
        col(&|c| c.codec.as_ref().map(|x| format!("CODEC{x}")).unwrap_or_default()),
        col(&|c| c.ttl.clone().unwrap_or_default()),
    ];
    match RecordBatch::try_new(schema.clone(), arrays) {
        Ok(b) => QueryOutput::rows(schema, vec![b], None),
        Err(_) => QueryOutput::default(),
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    if !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
    {
        s.to_string()
    } else {
        format!("`{}`", s.replace('`', "\\`"))
    }
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A CREATE TABLE statement in canonical form (stored in metadata/, shown by
/// SHOW CREATE TABLE).
/// The statement a table's metadata file holds: [`render_create`] with the
/// table's UUID (which SHOW CREATE TABLE leaves out, as ClickHouse does).
pub(crate) fn render_metadata(t: &query::parse::CreateTable) -> String {
    let text = render_create(t);
    let mut hidden = String::new();
    if let Some(u) = &t.uuid {
        hidden.push_str(&format!(" UUID '{u}'"));
    }
    if let Some(c) = &t.cluster {
        hidden.push_str(&format!(" ON CLUSTER {}", quote_str(c)));
    }
    match text.split_once('\n') {
        Some((head, rest)) if !hidden.is_empty() => format!("{head}{hidden}\n{rest}"),
        _ => text,
    }
}

pub(crate) fn render_create(t: &query::parse::CreateTable) -> String {
    let mut s = String::from("CREATE TABLE ");
    if let Some(d) = &t.database {
        s.push_str(&quote_ident(d));
        s.push('.');
    }
    s.push_str(&quote_ident(&t.name));
    s.push_str("\n(\n");
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut line = format!("    {} {}", quote_ident(&c.name), c.ty);
            if let Some((k, e)) = &c.default {
                line.push_str(&format!(" {} {e}", k.as_str()));
            }
            if let Some(x) = &c.comment {
                line.push_str(&format!(" COMMENT {}", quote_str(x)));
            }
            if let Some(x) = &c.codec {
                line.push_str(&format!(" CODEC{x}"));
            }
            if let Some(x) = &c.ttl {
                line.push_str(&format!(" TTL {x}"));
            }
            line
        })
        .collect();
    s.push_str(&cols.join(",\n"));
    s.push_str("\n)");
    if let Some(e) = &t.engine {
        s.push_str(&format!("\nENGINE = {}", e.name));
        if !e.args.is_empty() {
            s.push_str(&format!("({})", e.args.join(", ")));
        }
    }
    if let Some(p) = &t.partition_by {
        s.push_str(&format!("\nPARTITION BY {p}"));
    }
    if let Some(p) = &t.primary_key {
        s.push_str(&format!("\nPRIMARY KEY {p}"));
    }
    if let Some(o) = &t.order_by {
        s.push_str(&format!("\nORDER BY {o}"));
    }
    if let Some(x) = &t.ttl {
        s.push_str(&format!("\nTTL {x}"));
    }
    if !t.settings.is_empty() {
        let kv: Vec<String> = t.settings.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        s.push_str(&format!("\nSETTINGS {}", kv.join(", ")));
    }
    if let Some(c) = &t.comment {
        s.push_str(&format!("\nCOMMENT {}", quote_str(c)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_values_split_before_the_rows() {
        let sql = "INSERT INTO t (a, b) VALUES (1, 'x)'), (2, 'VALUES')";
        assert_eq!(split_insert_values(sql), Some(("INSERT INTO t (a, b) ", "VALUES (1, 'x)'), (2, 'VALUES')")));
        assert_eq!(split_insert_values(" insert into db.t values(1)"), Some((" insert into db.t ", "values(1)")));
        // A table named `values` is a name, not the keyword.
        assert_eq!(split_insert_values("INSERT INTO values VALUES (1)"), Some(("INSERT INTO values ", "VALUES (1)")));
        assert_eq!(
            split_insert_values("INSERT INTO db.values VALUES (1)"),
            Some(("INSERT INTO db.values ", "VALUES (1)"))
        );
        assert_eq!(split_insert_values("INSERT INTO TABLE `values` VALUES (1)").map(|x| x.1), Some("VALUES (1)"));
        for other in ["INSERT INTO t SELECT * FROM (VALUES (1))", "INSERT INTO t FORMAT Values (1)", "SELECT 1"] {
            assert_eq!(split_insert_values(other), None, "{other}");
        }
        assert_eq!(
            split_insert_format("INSERT INTO t FORMAT Values (1)"),
            Some(("INSERT INTO t FORMAT Values", "(1)"))
        );
    }
}
