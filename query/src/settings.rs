//! Query settings: ClickHouse's names and defaults, set from URL parameters,
//! a session's `SET`, and a query's `SETTINGS` clause (later wins). Settings
//! the server acts on are marked as applied; every other name is accepted and
//! ignored, as the HTTP interface promises.

use std::collections::BTreeMap;

use crate::error::QueryError;
use crate::parse::cursor::Cursor;
use crate::parse::lexer::Tok;

/// A known setting: name, default, type, description, and whether the server acts on it.
pub struct Known {
    pub name: &'static str,
    pub default: &'static str,
    pub ty: &'static str,
    pub description: &'static str,
    pub applied: bool,
}

const fn k(name: &'static str, default: &'static str, ty: &'static str, description: &'static str) -> Known {
    Known { name, default, ty, description, applied: true }
}

const fn ignored(name: &'static str, default: &'static str, ty: &'static str, description: &'static str) -> Known {
    Known { name, default, ty, description, applied: false }
}

/// The settings `system.settings` lists.
pub const KNOWN: &[Known] = &[
    k("max_threads", "0", "MaxThreads", "Threads a query runs on (0: one per core)"),
    k("readonly", "0", "UInt64", "1: only reads; 2: reads and SET"),
    k("max_query_size", "262144", "UInt64", "Longest query text accepted, in bytes"),
    k("max_result_rows", "0", "UInt64", "Most rows a result may have (0: no limit)"),
    k("result_overflow_mode", "throw", "OverflowMode", "throw or break when max_result_rows is exceeded"),
    k("max_execution_time", "0", "Seconds", "Longest a query may run, in seconds (0: no limit)"),
    k(
        "queue_max_wait_ms",
        "0",
        "Milliseconds",
        "How long a statement waits for a query slot when max_concurrent_queries are running",
    ),
    k("priority", "0", "UInt64", "Order of statements waiting for a slot: 1 first, larger later, 0 (none) last"),
    k(
        "distributed_ddl_task_timeout",
        "180",
        "Int64",
        "Seconds an ON CLUSTER statement waits for the catalog group's quorum and this node's apply",
    ),
    k("insert_deduplicate", "1", "Bool", "Deduplicate inserted blocks within the table's window"),
    k("insert_deduplication_token", "", "String", "Deduplicate by this token instead of the block's bytes"),
    k(
        "mutations_sync",
        "0",
        "UInt64",
        "ALTER DELETE/UPDATE: 0 returns once recorded, 1 waits for this replica's rewrite, 2 for every replica's",
    ),
    k("alter_sync", "2", "UInt64", "OPTIMIZE and ALTER wait for completion"),
    k("lightweight_deletes_sync", "2", "UInt64", "DELETE FROM: as mutations_sync (the rows are masked, not rewritten)"),
    k("output_format_json_quote_64bit_integers", "1", "Bool", "Quote 64-bit integers in JSON output"),
    k("input_format_null_as_default", "1", "Bool", "NULL into a non-Nullable column becomes the default"),
    ignored("max_block_size", "65409", "NonZeroUInt64", "Rows per block read from a table"),
    k("max_insert_block_size", "1048449", "UInt64", "Rows per block (and part) an insert is split into"),
    k(
        "insert_quorum",
        "0",
        "UInt64Auto",
        "Replicas that must apply an insert of a replicated table (0: majority commit; 'auto': majority; 'all')",
    ),
    k("insert_quorum_timeout", "600000", "UInt64", "Milliseconds an insert waits for its quorum"),
    k(
        "insert_distributed_one_random_shard",
        "0",
        "Bool",
        "Distributed tables without a sharding key: each block to one shard (by weight)",
    ),
    k(
        "distributed_foreground_insert",
        "1",
        "Bool",
        "Distributed inserts are acknowledged once every shard committed (always: there is no background spool)",
    ),
    k("insert_distributed_sync", "1", "Bool", "Alias of distributed_foreground_insert"),
    k(
        "load_balancing",
        "random",
        "LoadBalancing",
        "Which replica of a shard a Distributed read asks: random, in_order, nearest_hostname, first_or_random",
    ),
    k("prefer_localhost_replica", "1", "Bool", "Distributed reads ask this node's own replica of a shard first"),
    k(
        "optimize_skip_unused_shards",
        "0",
        "Bool",
        "Distributed reads whose WHERE pins the sharding key (k = c, k IN (…)) ask only the shards those rows go to",
    ),
    k(
        "distributed_group_by_no_merge",
        "0",
        "Bool",
        "Distributed reads: each shard aggregates completely and the initiator concatenates the shards' groups",
    ),
    k(
        "dialect",
        "clickhouse",
        "Dialect",
        "The SQL dialect of queries: clickhouse, or datafusion (what a Distributed query's initiator sends its shards)",
    ),
    k(
        "stage",
        "complete",
        "QueryStage",
        "How far a query runs: complete, or with_mergeable_state (partial aggregation states, as a shard sends them)",
    ),
    k(
        "skip_unavailable_shards",
        "0",
        "Bool",
        "Distributed reads: leave out a shard none of whose replicas answers instead of failing",
    ),
    k(
        "select_sequential_consistency",
        "0",
        "Bool",
        "Replicated tables: read after a read index from the group leader (no stale reads)",
    ),
    ignored("input_format_skip_unknown_fields", "1", "Bool", "Skip unknown JSONEachRow keys"),
    ignored("date_time_input_format", "basic", "DateTimeInputFormat", "How DateTime text is parsed"),
    ignored("date_time_output_format", "simple", "DateTimeOutputFormat", "YYYY-MM-DD hh:mm:ss"),
    ignored("session_timezone", "UTC", "Timezone", "The server time zone"),
    ignored("send_progress_in_http_headers", "0", "Bool", "X-ClickHouse-Progress headers"),
    ignored("wait_end_of_query", "0", "Bool", "Buffer the whole result before answering (always done)"),
    ignored("enable_http_compression", "0", "Bool", "Compress HTTP responses"),
    ignored("max_memory_usage", "0", "UInt64", "Memory limit of a query"),
];

/// URL parameters of the HTTP interface that are not settings.
pub const NOT_SETTINGS: &[&str] = &[
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "user",
    "password",
    "quota_key",
    "compress",
    "decompress",
    "buffer_size",
    "client_protocol_version",
];

fn bad(name: &str, value: &str, want: &str) -> QueryError {
    QueryError {
        code: 27,
        name: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        message: format!("Cannot parse value '{value}' of setting {name}: expected {want}"),
    }
}

/// Settings that differ from their defaults.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// Sets a value, checking it when the setting is one the server acts on.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), QueryError> {
        if let Some(k) = KNOWN.iter().find(|k| k.name == name)
            && k.applied
        {
            let expected = match k.ty {
                "UInt64" | "MaxThreads" | "Seconds" | "Milliseconds"
                    if value != "auto" && value.parse::<u64>().is_err() =>
                {
                    Some("an unsigned integer")
                }
                "Bool" if !matches!(value.to_ascii_lowercase().as_str(), "0" | "1" | "true" | "false") => {
                    Some("0, 1, true or false")
                }
                "OverflowMode" if value != "throw" && value != "break" => Some("throw or break"),
                "LoadBalancing" if coordinator::engine::distributed::LoadBalancing::parse(value).is_none() => {
                    Some("random, in_order, nearest_hostname or first_or_random")
                }
                "Dialect" if value != "clickhouse" && value != "datafusion" => Some("clickhouse or datafusion"),
                "QueryStage" if value != "complete" && value != "with_mergeable_state" => {
                    Some("complete or with_mergeable_state")
                }
                "UInt64Auto" if value != "auto" && value != "all" && value.parse::<u64>().is_err() => {
                    Some("an unsigned integer, auto or all")
                }
                _ => None,
            };
            if let Some(want) = expected {
                return Err(bad(name, value, want));
            }
        }
        self.values.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Every URL parameter that is a setting.
    pub fn from_params<'a>(params: impl Iterator<Item = (&'a String, &'a String)>) -> Result<Settings, QueryError> {
        let mut s = Settings::default();
        for (k, v) in params {
            if !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("param_") {
                s.set(k, v)?;
            }
        }
        Ok(s)
    }

    /// Applies `other` on top of these.
    pub fn merge(&mut self, other: &Settings) {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    /// The value, or the default of a known setting.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).or_else(|| KNOWN.iter().find(|k| k.name == name).map(|k| k.default))
    }

    /// A numeric setting (0 when unset or `auto`).
    pub fn u64(&self, name: &str) -> u64 {
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// A boolean setting.
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name).map(|v| v.to_ascii_lowercase()).as_deref(), Some("1" | "true"))
    }

    /// Whether this value was set (differs from the default).
    pub fn changed(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Parses `name = value, …` (a SETTINGS clause or a SET statement body).
    pub fn parse_assignments(text: &str) -> Result<Settings, QueryError> {
        let mut c = Cursor::new(text)?;
        let mut s = Settings::default();
        loop {
            let name = c.ident()?;
            c.expect_punct("=")?;
            let negative = c.eat_punct("-");
            let value = match c.peek().map(|t| t.tok.clone()) {
                Some(Tok::Str(v)) | Some(Tok::Number(v)) | Some(Tok::Word(v)) => {
                    c.pos += 1;
                    if negative { format!("-{v}") } else { v }
                }
                _ => return Err(c.error("setting value")),
            };
            s.set(&name, &value)?;
            if !c.eat_punct(",") {
                break;
            }
        }
        c.finish()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validates_and_layers() {
        let mut s =
            Settings::parse_assignments("max_threads = 1, result_overflow_mode = 'break', foo_bar = x").unwrap();
        assert_eq!(s.u64("max_threads"), 1);
        assert_eq!(s.get("result_overflow_mode"), Some("break"));
        assert_eq!(s.get("foo_bar"), Some("x"));
        assert_eq!(s.u64("max_query_size"), 262144);
        assert!(!s.changed("readonly"));
        let over = Settings::parse_assignments("max_threads = 4").unwrap();
        s.merge(&over);
        assert_eq!(s.u64("max_threads"), 4);
        assert_eq!(Settings::parse_assignments("readonly = 'yes'").unwrap_err().code, 27);
        assert_eq!(Settings::parse_assignments("max_threads 1").unwrap_err().code, 62);
        // Unknown settings are accepted whatever their value.
        assert!(Settings::parse_assignments("some_future_setting = 'anything'").is_ok());
    }
}
