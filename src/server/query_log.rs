//! `system.query_log`: the last queries this server ran (kept in memory,
//! newest last), each with its duration, rows and bytes read and written,
//! result size, CPU time, peak tracked memory and exception.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::error::Result;

use super::catalog::Server;

/// Entries kept (ClickHouse flushes to a table; this log is in memory).
const KEEP: usize = 10_000;
/// Longest query text kept.
const MAX_QUERY: usize = 16 << 10;

/// One finished query.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event_time_ms: i64,
    pub query_id: String,
    pub query: String,
    pub user: String,
    pub database: String,
    /// `QueryFinish`, `ExceptionBeforeStart` or `ExceptionWhileProcessing`.
    pub kind: &'static str,
    pub duration_ms: u64,
    pub read_rows: u64,
    pub read_bytes: u64,
    pub written_rows: u64,
    pub written_bytes: u64,
    pub result_rows: u64,
    pub result_bytes: u64,
    pub memory_usage: u64,
    pub cpu_time_us: u64,
    pub exception_code: i32,
    pub exception: String,
    /// Shards left out by `skip_unavailable_shards`, as `2,3`.
    pub skipped_shards: String,
}

/// The in-memory log.
#[derive(Debug, Default)]
pub struct QueryLog {
    entries: Mutex<VecDeque<Entry>>,
}

impl QueryLog {
    /// Appends an entry, dropping the oldest beyond the limit.
    pub fn push(&self, mut e: Entry) {
        if e.query.len() > MAX_QUERY {
            let mut cut = MAX_QUERY;
            while !e.query.is_char_boundary(cut) {
                cut -= 1;
            }
            e.query.truncate(cut);
        }
        let mut q = self.entries.lock().unwrap_or_else(|x| x.into_inner());
        q.push_back(e);
        while q.len() > KEEP {
            q.pop_front();
        }
    }

    fn snapshot(&self) -> Vec<Entry> {
        self.entries.lock().unwrap_or_else(|x| x.into_inner()).iter().cloned().collect()
    }
}

/// The `system.query_log` table as of now.
pub fn table(server: &Server) -> Result<Arc<dyn TableProvider>> {
    let rows = server.query_log.snapshot();
    let s = |f: &dyn Fn(&Entry) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let u =
        |f: &dyn Fn(&Entry) -> u64| -> ArrayRef { Arc::new(UInt64Array::from(rows.iter().map(f).collect::<Vec<_>>())) };
    let fields = vec![
        Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("type", DataType::Utf8, false),
        Field::new("query_id", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("current_database", DataType::Utf8, false),
        Field::new("query_duration_ms", DataType::UInt64, false),
        Field::new("read_rows", DataType::UInt64, false),
        Field::new("read_bytes", DataType::UInt64, false),
        Field::new("written_rows", DataType::UInt64, false),
        Field::new("written_bytes", DataType::UInt64, false),
        Field::new("result_rows", DataType::UInt64, false),
        Field::new("result_bytes", DataType::UInt64, false),
        Field::new("memory_usage", DataType::UInt64, false),
        Field::new("cpu_time_us", DataType::UInt64, false),
        Field::new("exception_code", DataType::Int32, false),
        Field::new("exception", DataType::Utf8, false),
        Field::new("skipped_shards", DataType::Utf8, false),
    ];
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(|e| e.event_time_ms).collect::<Vec<_>>())),
        s(&|e| e.kind.to_string()),
        s(&|e| e.query_id.clone()),
        s(&|e| e.query.clone()),
        s(&|e| e.user.clone()),
        s(&|e| e.database.clone()),
        u(&|e| e.duration_ms),
        u(&|e| e.read_rows),
        u(&|e| e.read_bytes),
        u(&|e| e.written_rows),
        u(&|e| e.written_bytes),
        u(&|e| e.result_rows),
        u(&|e| e.result_bytes),
        u(&|e| e.memory_usage),
        u(&|e| e.cpu_time_us),
        Arc::new(Int32Array::from(rows.iter().map(|e| e.exception_code).collect::<Vec<_>>())),
        s(&|e| e.exception.clone()),
        s(&|e| e.skipped_shards.clone()),
    ];
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
