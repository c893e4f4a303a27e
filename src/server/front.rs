//! The first steps of every query: the session's settings and database,
//! `max_query_size`, parameter substitution, `readonly`, and the session
//! statements `SET` and `USE`, before the statement itself runs.

use std::sync::Arc;

use super::catalog::{Server, unknown_database};
use super::execute::{QueryOutput, split_insert_format};
use query::error::QueryError;
use query::params;
use query::parse::cursor::Cursor;
use query::session::QueryContext;
use query::settings::Settings;

fn readonly_error() -> QueryError {
    QueryError { code: 164, name: "READONLY", message: "Cannot execute query in readonly mode".into() }
}

/// Whether a statement only reads.
fn is_read(sql: &str) -> bool {
    let first = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    ["SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
        || sql.trim_start().starts_with('(')
}

impl Server {
    /// Runs one request's statement (and the rest of its body, `data`) in
    /// the context `q`, and records it in `system.query_log`.
    pub async fn execute_in(
        self: &Arc<Self>,
        sql: &str,
        data: &[u8],
        q: &mut QueryContext,
    ) -> Result<QueryOutput, QueryError> {
        let started = std::time::Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let r = self.run_in(sql, data, q).await;
        use std::sync::atomic::Ordering::Relaxed;
        let st = &q.stats;
        let (result_rows, result_bytes) = match &r {
            Ok(o) => (
                o.batches.iter().map(|b| b.num_rows() as u64).sum(),
                o.batches.iter().map(|b| b.get_array_memory_size() as u64).sum(),
            ),
            Err(_) => (0, 0),
        };
        let written_rows = r.as_ref().map(|o| o.written_rows).unwrap_or(0);
        self.query_log.push(super::query_log::Entry {
            event_time_ms: now_ms,
            query_id: q.query_id.clone(),
            query: sql.trim().to_string(),
            user: q.user.clone(),
            database: q.database.clone(),
            kind: match &r {
                Ok(_) => "QueryFinish",
                Err(_) if st.cpu_ns.load(Relaxed) == 0 && st.read_rows.load(Relaxed) == 0 => "ExceptionBeforeStart",
                Err(_) => "ExceptionWhileProcessing",
            },
            duration_ms: started.elapsed().as_millis() as u64,
            read_rows: st.read_rows.load(Relaxed),
            read_bytes: st.read_bytes.load(Relaxed),
            written_rows,
            written_bytes: if written_rows > 0 { data.len() as u64 } else { 0 },
            result_rows,
            result_bytes,
            memory_usage: st.peak_memory.load(Relaxed) as u64,
            cpu_time_us: st.cpu_ns.load(Relaxed) / 1000,
            exception_code: r.as_ref().err().map(|e| e.code as i32).unwrap_or(0),
            exception: r.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
            skipped_shards: st.skipped_shards_text(),
        });
        r
    }

    async fn run_in(self: &Arc<Self>, sql: &str, data: &[u8], q: &mut QueryContext) -> Result<QueryOutput, QueryError> {
        let mut merged = self.default_settings.clone();
        if let Some(session) = &q.session {
            let st = session.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(db) = &st.database {
                q.database = db.clone();
            }
            merged.merge(&st.settings);
        }
        merged.merge(&q.settings);
        q.settings = merged;
        // Held until the statement is done; statements applied from the
        // catalog group are the cluster's, not a client's, and never wait.
        let _slot = if q.from_ddl_log {
            None
        } else {
            let wait = std::time::Duration::from_millis(q.settings.u64("queue_max_wait_ms"));
            Some(self.admission.enter(q.settings.u64("priority"), wait).await?)
        };
        // Inline INSERT rows are data, not query text: they neither count
        // towards max_query_size nor hold parameters.
        let (head, rest) = match split_insert_format(sql) {
            Some((head, _)) => (head, &sql[head.len()..]),
            None => (sql, ""),
        };
        let max = q.settings.u64("max_query_size") as usize;
        if max > 0 && head.len() > max {
            return Err(QueryError {
                code: 62,
                name: "SYNTAX_ERROR",
                message: format!("Max query size exceeded: {} bytes, max_query_size is {max}", head.len()),
            });
        }
        let substituted;
        let sql = if head.contains('{') {
            substituted = format!("{}{rest}", params::substitute(head, &q.params)?);
            substituted.as_str()
        } else {
            sql
        };
        let readonly = q.settings.u64("readonly");
        let head = super::execute::split_insert_values(head).map_or(head, |(h, _)| h);
        let mut c = Cursor::new(head)?;
        if c.eat_kws(&["SET"]) {
            if readonly == 1 {
                return Err(readonly_error());
            }
            let assigned = Settings::parse_assignments(&c.rest())?;
            if let Some(session) = &q.session {
                session.lock().unwrap_or_else(|e| e.into_inner()).settings.merge(&assigned);
            }
            return Ok(QueryOutput::default());
        }
        if c.eat_kws(&["USE"]) {
            let db = c.ident()?;
            c.finish()?;
            if !self.tables().contains_key(&db) {
                return Err(unknown_database(&db));
            }
            if let Some(session) = &q.session {
                session.lock().unwrap_or_else(|e| e.into_inner()).database = Some(db);
            }
            return Ok(QueryOutput::default());
        }
        if readonly > 0 && !is_read(head) {
            return Err(readonly_error());
        }
        self.execute_statement(sql, data, q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_reads() {
        for s in ["SELECT 1", " with x as (select 1) select * from x", "SHOW TABLES", "DESC t", "(SELECT 1)"] {
            assert!(is_read(s), "{s}");
        }
        for s in ["INSERT INTO t VALUES (1)", "DROP TABLE t", "ALTER TABLE t DELETE WHERE 1", "OPTIMIZE TABLE t"] {
            assert!(!is_read(s), "{s}");
        }
    }
}
