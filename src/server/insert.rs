//! INSERT: rows from a request body in a FORMAT, from plain VALUES (parsed as
//! text cells), or from a query planned on DataFusion; then split into
//! blocks of `max_insert_block_size` rows and handed to the table engine.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;

use super::catalog::Server;
use super::execute::{QueryOutput, blocking, st};
use query::error::QueryError;
use query::format::{self, Format};
use query::parse::cursor::Cursor;
use query::session::QueryContext;
use query::table::InsertOptions;

impl Server {
    /// `INSERT INTO t [(cols)] FORMAT f` with its rows in `data`, or
    /// `INSERT INTO t [(cols)] VALUES … / SELECT …` with `data` None.
    pub(super) async fn execute_insert(
        self: &Arc<Self>,
        sql: &str,
        data: Option<&[u8]>,
        q: &QueryContext,
    ) -> Result<QueryOutput, QueryError> {
        let db = q.database.as_str();
        // Rows after VALUES are read by the VALUES reader, never lexed.
        let (head, values) = match super::execute::split_insert_values(sql) {
            Some((head, values)) => (head, Some(values)),
            None => (sql, None),
        };
        let mut c = Cursor::new(head)?;
        {
            c.expect_kws(&["INSERT", "INTO"])?;
            c.eat_kws(&["TABLE"]);
            let (d, name) = c.qualified_name()?;
            let table = self.table(&d.unwrap_or_else(|| db.to_string()), &name)?;
            let mut columns = Vec::new();
            if c.eat_punct("(") {
                loop {
                    columns.push(c.ident()?);
                    if c.eat_punct(")") {
                        break;
                    }
                    c.expect_punct(",")?;
                }
            }
            let schema = table.storage().schema().clone();
            let target: SchemaRef = if columns.is_empty() {
                schema.clone()
            } else {
                let idx = columns
                    .iter()
                    .map(|n| schema.index_of(n).map_err(|_| st(storage::StorageError::NoSuchColumn(n.clone()))))
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(schema.project(&idx).map_err(|e| QueryError::bad_arguments(e.to_string()))?)
            };
            let batch = if c.eat_kws(&["FORMAT"]) {
                let fmt = Format::from_name(&c.ident()?)?;
                c.finish()?;
                query::metering::measured(&q.stats, || format::read(fmt, data.unwrap_or_default(), &target))?
            } else {
                let source = match values {
                    Some(v) => {
                        c.finish()?;
                        v.trim().to_string()
                    }
                    None => c.rest(),
                };
                let values = source.get(..6).filter(|w| w.eq_ignore_ascii_case("VALUES")).map(|_| &source[6..]);
                if let Some(batch) = values.and_then(|v| format::values::read_values(v, &target)) {
                    batch
                } else {
                    let frame = self.planner.plan(&source, q).await?;
                    let batches = frame.collect().await?;
                    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                    let mut cols: Vec<Vec<ArrayRef>> = vec![Vec::new(); target.fields().len()];
                    for b in &batches {
                        if b.num_columns() != target.fields().len() {
                            return Err(QueryError::arguments(format!(
                                "Number of columns doesn't match: the table expects {}, the query gives {}",
                                target.fields().len(),
                                b.num_columns()
                            )));
                        }
                        for (i, col) in b.columns().iter().enumerate() {
                            let f = target.field(i);
                            let opts = CastOptions { safe: false, ..Default::default() };
                            let cast = cast_with_options(col, f.data_type(), &opts).map_err(|e| QueryError {
                                code: 53,
                                name: "TYPE_MISMATCH",
                                message: format!(
                                    "Cannot convert value for column `{}` to {}: {e}",
                                    f.name(),
                                    f.data_type()
                                ),
                            })?;
                            cols[i].push(format::null_as_default(f, cast)?);
                        }
                    }
                    let arrays = cols
                        .into_iter()
                        .enumerate()
                        .map(|(i, parts)| {
                            if parts.is_empty() {
                                return format::default_column(target.field(i), 0);
                            }
                            let refs: Vec<&dyn arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
                            arrow::compute::concat(&refs).map_err(|e| QueryError::bad_arguments(e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    RecordBatch::try_new_with_options(
                        target.clone(),
                        arrays,
                        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
                    )
                    .map_err(|e| QueryError {
                        code: 53,
                        name: "TYPE_MISMATCH",
                        message: e.to_string(),
                    })?
                }
            };
            // Columns the INSERT leaves out take their defaults.
            let full = if columns.is_empty() {
                batch
            } else {
                let arrays = schema
                    .fields()
                    .iter()
                    .map(|f| match target.index_of(f.name()) {
                        Ok(i) => Ok(batch.column(i).clone()),
                        Err(_) => format::default_column(f, batch.num_rows()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                RecordBatch::try_new_with_options(
                    schema.clone(),
                    arrays,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )
                .map_err(|e| QueryError::bad_arguments(e.to_string()))?
            };
            let deduplicate = q.settings.bool("insert_deduplicate");
            let token = q.settings.get("insert_deduplication_token").filter(|t| !t.is_empty()).map(str::to_string);
            // Like ClickHouse, a big insert becomes blocks of max_insert_block_size
            // rows: each is sorted and written as its own parts (bounded memory
            // and sort cost) and deduplicated on its own.
            let block = (q.settings.u64("max_insert_block_size") as usize).max(1);
            let stats = q.stats.clone();
            let quorum = q.settings.get("insert_quorum").unwrap_or("0").to_string();
            let quorum_timeout_ms = q.settings.u64("insert_quorum_timeout");
            let one_random_shard = q.settings.bool("insert_distributed_one_random_shard");
            // The blocks' inserts are awaited from the threads below (not
            // runtime workers): the engine's work is measured on them.
            let handle = tokio::runtime::Handle::current();
            let rows = blocking(move || {
                query::metering::measured(&stats, || {
                    let starts: Vec<usize> = (0..full.num_rows().max(1)).step_by(block).collect();
                    let insert_block = |index: usize| {
                        let start = starts[index];
                        let len = block.min(full.num_rows() - start);
                        let opts = InsertOptions {
                            deduplicate,
                            token: token.clone(),
                            index,
                            quorum: quorum.clone(),
                            quorum_timeout_ms,
                            distributed_one_random_shard: one_random_shard,
                        };
                        handle.block_on(table.insert(&full.slice(start, len), &opts)).map_err(QueryError::from)
                    };
                    // Blocks are independent parts (each deduplicated on its
                    // own, as in ClickHouse): a bulk load sorts and writes
                    // them on every core at once. A failed block fails the
                    // INSERT; blocks already written stay, and a retry skips
                    // them when deduplication is on.
                    let threads = storage::cores().min(starts.len());
                    if threads <= 1 {
                        return (0..starts.len()).map(insert_block).sum::<Result<usize, QueryError>>();
                    }
                    let next = std::sync::atomic::AtomicUsize::new(0);
                    let failed = std::sync::atomic::AtomicBool::new(false);
                    std::thread::scope(|s| {
                        let workers: Vec<_> = (0..threads)
                            .map(|_| {
                                s.spawn(|| {
                                    // Each thread's CPU time counts for the query log.
                                    query::metering::measured(&stats, || {
                                        let mut rows = 0;
                                        loop {
                                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                            if i >= starts.len() || failed.load(std::sync::atomic::Ordering::Relaxed) {
                                                return Ok(rows);
                                            }
                                            match insert_block(i) {
                                                Ok(n) => rows += n,
                                                Err(e) => {
                                                    // No new blocks once one failed.
                                                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                                    return Err(e);
                                                }
                                            }
                                        }
                                    })
                                })
                            })
                            .collect();
                        let mut total = 0;
                        let mut first_err = None;
                        for w in workers {
                            match w.join() {
                                Ok(Ok(n)) => total += n,
                                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                                Err(_) => {
                                    first_err =
                                        first_err.or(Some(QueryError::bad_arguments("an insert thread panicked")))
                                }
                            }
                        }
                        first_err.map_or(Ok(total), Err)
                    })
                })
            })
            .await?;
            Ok(QueryOutput { written_rows: rows as u64, ..Default::default() })
        }
    }
}
