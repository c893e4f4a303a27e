//! `CREATE TABLE` in ClickHouse's syntax, and its storage definition.

use std::sync::Arc;

use arrow::datatypes::Schema;
use storage::{Engine, MergeTreeSettings, TableDef};

use super::cursor::{Cursor, split_key};
use super::types::{ChType, parse_type_tokens};
use crate::error::QueryError;

/// How a column's default is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultKind {
    Default,
    Materialized,
    Alias,
    Ephemeral,
}

impl DefaultKind {
    /// As `DESCRIBE` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultKind::Default => "DEFAULT",
            DefaultKind::Materialized => "MATERIALIZED",
            DefaultKind::Alias => "ALIAS",
            DefaultKind::Ephemeral => "EPHEMERAL",
        }
    }
}

/// One column of a CREATE TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ChType,
    pub default: Option<(DefaultKind, String)>,
    pub comment: Option<String>,
    pub codec: Option<String>,
    pub ttl: Option<String>,
}

/// `ENGINE = Name(args)`, arguments as expression text.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    pub name: String,
    pub args: Vec<String>,
}

/// A parsed `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreateTable {
    pub database: Option<String>,
    pub name: String,
    pub if_not_exists: bool,
    pub or_replace: bool,
    pub columns: Vec<ColumnDef>,
    pub engine: Option<EngineSpec>,
    pub partition_by: Option<String>,
    pub order_by: Option<String>,
    pub primary_key: Option<String>,
    pub ttl: Option<String>,
    pub settings: Vec<(String, String)>,
    pub comment: Option<String>,
    /// `CREATE TABLE t2 AS [db.]t`: copy the structure of another table.
    pub as_table: Option<(Option<String>, String)>,
    /// `CREATE TABLE t … AS SELECT …`.
    pub as_select: Option<String>,
    /// `CREATE TABLE t UUID '…'`: the table's stable id, which names its
    /// data directory (`store/<uuid>`), so a RENAME moves no data.
    pub uuid: Option<String>,
    /// `ON CLUSTER c` of a table created on a cluster: kept in its metadata
    /// (not in SHOW CREATE) so a Replicated table's groups are placed on
    /// the replicas of this node's shard of `c`.
    pub cluster: Option<String>,
}

const CLAUSES: &[&str] = &["PARTITION", "ORDER", "PRIMARY", "SAMPLE", "TTL", "SETTINGS", "COMMENT", "AS", "ENGINE"];
const COLUMN_CLAUSES: &[&str] =
    &["DEFAULT", "MATERIALIZED", "ALIAS", "EPHEMERAL", "COMMENT", "CODEC", "TTL", "NULL", "NOT"];

pub use coordinator::engine::EngineKind;

impl CreateTable {
    /// The table's [`EngineKind`]: decided by its engine's name, in this one place.
    pub fn engine_kind(&self) -> EngineKind {
        match &self.engine {
            Some(e) if e.name.starts_with("Replicated") => EngineKind::Replicated,
            Some(e) if e.name == "Distributed" => EngineKind::Distributed,
            _ => EngineKind::Local,
        }
    }

    /// `Distributed(cluster, database, table[, sharding_key])`'s arguments:
    /// names unquoted, the key as expression text.
    pub fn distributed_args(&self) -> Result<(String, String, String, Option<String>), QueryError> {
        let spec = self.engine.as_ref().ok_or_else(|| QueryError::bad_arguments("ENGINE is required"))?;
        let name = |s: &str| {
            let s = s.trim();
            let unq = s.strip_prefix('\'').and_then(|x| x.strip_suffix('\''));
            let unq = unq.or_else(|| s.strip_prefix('`').and_then(|x| x.strip_suffix('`')));
            unq.unwrap_or(s).to_string()
        };
        match spec.args.as_slice() {
            [c, d, t] => Ok((name(c), name(d), name(t), None)),
            [c, d, t, k] => Ok((name(c), name(d), name(t), Some(k.trim().to_string()))),
            _ => Err(QueryError {
                code: 42,
                name: "NUMBER_OF_ARGUMENTS_DOESNT_MATCH",
                message: "Storage Distributed requires from 3 to 5 parameters: cluster, database, table[, sharding_key[, policy]]"
                    .into(),
            }),
        }
    }
}

/// Parses the part of a CREATE TABLE after `CREATE [OR REPLACE] TABLE`.
pub(super) fn parse_create_table(c: &mut Cursor<'_>, or_replace: bool) -> Result<CreateTable, QueryError> {
    let mut t = CreateTable { or_replace, ..Default::default() };
    t.if_not_exists = c.eat_kws(&["IF", "NOT", "EXISTS"]);
    let (db, name) = c.qualified_name()?;
    t.database = db;
    t.name = name;
    if c.eat_kws(&["UUID"]) {
        t.uuid = Some(c.string()?);
    }
    if c.eat_kws(&["ON", "CLUSTER"]) {
        t.cluster = Some(if matches!(c.peek().map(|t| &t.tok), Some(crate::parse::lexer::Tok::Str(_))) {
            c.string()?
        } else {
            c.ident()?
        });
    }
    if c.eat_punct("(") {
        loop {
            if c.peek_kws(&["INDEX"]) || c.peek_kws(&["PROJECTION"]) || c.peek_kws(&["CONSTRAINT"]) {
                return Err(QueryError::bad_arguments(format!(
                    "{} in CREATE TABLE is not supported yet",
                    c.peek().map(|t| &c.src[t.start..t.end]).unwrap_or_default()
                )));
            }
            if c.eat_kws(&["PRIMARY", "KEY"]) {
                t.primary_key = Some(c.expr_text(&[])?);
            } else {
                t.columns.push(column(c)?);
            }
            if c.eat_punct(")") {
                break;
            }
            c.expect_punct(",")?;
        }
    } else if c.eat_kws(&["AS"]) && !c.peek_kws(&["SELECT"]) && !c.peek_kws(&["WITH"]) {
        t.as_table = Some(c.qualified_name()?);
    }
    while !c.at_end() {
        if c.eat_kws(&["ENGINE"]) {
            c.eat_punct("=");
            let name = c.ident()?;
            let mut args = Vec::new();
            if c.eat_punct("(") && !c.eat_punct(")") {
                loop {
                    args.push(c.expr_text(&[])?);
                    if c.eat_punct(")") {
                        break;
                    }
                    c.expect_punct(",")?;
                }
            }
            t.engine = Some(EngineSpec { name, args });
        } else if c.eat_kws(&["PARTITION", "BY"]) {
            t.partition_by = Some(c.expr_text(CLAUSES)?);
        } else if c.eat_kws(&["ORDER", "BY"]) {
            t.order_by = Some(c.expr_text(CLAUSES)?);
        } else if c.eat_kws(&["PRIMARY", "KEY"]) {
            t.primary_key = Some(c.expr_text(CLAUSES)?);
        } else if c.eat_kws(&["SAMPLE", "BY"]) {
            return Err(QueryError::bad_arguments("SAMPLE BY is not supported yet"));
        } else if c.eat_kws(&["TTL"]) {
            t.ttl = Some(c.expr_text(&["SETTINGS", "COMMENT", "AS"])?);
        } else if c.eat_kws(&["SETTINGS"]) {
            loop {
                let k = c.ident()?;
                c.expect_punct("=")?;
                let v = c.expr_text(&["COMMENT", "AS"])?;
                t.settings.push((k, v.trim_matches('\'').to_string()));
                if !c.eat_punct(",") {
                    break;
                }
            }
        } else if c.eat_kws(&["COMMENT"]) {
            t.comment = Some(c.string()?);
        } else if c.eat_kws(&["AS"]) {
            t.as_select = Some(c.rest());
        } else {
            return Err(c.error("ENGINE, PARTITION BY, ORDER BY, PRIMARY KEY, TTL, SETTINGS, COMMENT or AS"));
        }
    }
    if t.columns.is_empty() && t.as_table.is_none() && t.as_select.is_none() {
        return Err(QueryError::bad_arguments("Table must have at least one column"));
    }
    Ok(t)
}

fn column(c: &mut Cursor<'_>) -> Result<ColumnDef, QueryError> {
    let name = c.ident()?;
    let mut pos = c.pos;
    let mut ty = parse_type_tokens(&c.toks, &mut pos)?;
    c.pos = pos;
    let mut col = ColumnDef { name, ty: ty.clone(), default: None, comment: None, codec: None, ttl: None };
    loop {
        if c.eat_kws(&["NOT", "NULL"]) {
            continue;
        } else if c.eat_kws(&["NULL"]) {
            ty = ChType::Nullable(Box::new(ty));
            col.ty = ty.clone();
        } else if let Some(kind) = [
            ("DEFAULT", DefaultKind::Default),
            ("MATERIALIZED", DefaultKind::Materialized),
            ("ALIAS", DefaultKind::Alias),
            ("EPHEMERAL", DefaultKind::Ephemeral),
        ]
        .into_iter()
        .find_map(|(k, kind)| c.eat_kws(&[k]).then_some(kind))
        {
            col.default = Some((kind, c.expr_text(COLUMN_CLAUSES)?));
        } else if c.eat_kws(&["COMMENT"]) {
            col.comment = Some(c.string()?);
        } else if c.eat_kws(&["CODEC"]) {
            let start = c.pos;
            c.expect_punct("(")?;
            c.expr_text(&[])?;
            while c.eat_punct(",") {
                c.expr_text(&[])?;
            }
            c.expect_punct(")")?;
            col.codec = Some(c.src[c.toks[start].start..c.toks[c.pos - 1].end].to_string());
        } else if c.eat_kws(&["TTL"]) {
            col.ttl = Some(c.expr_text(COLUMN_CLAUSES)?);
        } else {
            return Ok(col);
        }
    }
}

/// MergeTree settings shardhouse accepts from ClickHouse DDL without acting on
/// them (their job is done differently here, or not needed).
const IGNORED_SETTINGS: &[&str] = &[
    "index_granularity_bytes",
    "min_bytes_for_wide_part",
    "min_rows_for_wide_part",
    "storage_policy",
    "enable_mixed_granularity_parts",
    "allow_nullable_key",
    "merge_with_ttl_timeout",
    "ttl_only_drop_parts",
    "replicated_deduplication_window",
    "enable_block_number_column",
    "enable_block_offset_column",
    "min_age_to_force_merge_seconds",
    "compress_marks",
    "compress_primary_key",
];

fn setting_number<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, QueryError> {
    v.trim().parse().map_err(|_| QueryError::bad_arguments(format!("Setting {k} cannot take the value '{v}'")))
}

/// Applies `SETTINGS k = v` of a CREATE TABLE; unknown names are an error, as
/// in ClickHouse.
pub fn apply_settings(s: &mut MergeTreeSettings, settings: &[(String, String)]) -> Result<(), QueryError> {
    for (k, v) in settings {
        match k.as_str() {
            "index_granularity" => s.index_granularity = setting_number(k, v)?,
            "parts_to_delay_insert" => s.parts_to_delay_insert = setting_number(k, v)?,
            "parts_to_throw_insert" => s.parts_to_throw_insert = setting_number(k, v)?,
            "max_delay_to_insert" => s.max_delay_to_insert_ms = setting_number::<u64>(k, v)? * 1000,
            "max_parts_to_merge_at_once" => s.max_parts_to_merge_at_once = setting_number(k, v)?,
            "non_replicated_deduplication_window" => s.non_replicated_deduplication_window = setting_number(k, v)?,
            "max_bytes_to_merge_at_max_space_in_pool" => {
                s.max_bytes_to_merge_at_max_space_in_pool = setting_number(k, v)?
            }
            "old_parts_lifetime" => s.old_parts_lifetime_secs = setting_number(k, v)?,
            "row_group_size" => s.row_group_size = setting_number(k, v)?,
            "zstd_level" => s.zstd_level = setting_number(k, v)?,
            "compression_codec" => {
                s.codec = match v.trim().trim_matches('\'').to_ascii_lowercase().as_str() {
                    "lz4" => storage::table::PartCodec::Lz4,
                    "zstd" => storage::table::PartCodec::Zstd,
                    other => {
                        return Err(QueryError::bad_arguments(format!(
                            "Setting compression_codec cannot take the value '{other}': lz4 or zstd"
                        )));
                    }
                }
            }
            // Replication settings: read by the replicated table, validated here.
            "replication_factor"
            | "replicated_deduplication_window"
            | "execute_merges_on_single_replica_time_threshold" => {
                setting_number::<u64>(k, v)?;
            }
            "replicated_deduplication_window_seconds" => {
                setting_number::<i64>(k, v)?;
            }
            k if IGNORED_SETTINGS.contains(&k) => {}
            k => return Err(QueryError::unknown_setting(k)),
        }
    }
    if s.index_granularity == 0 || s.row_group_size == 0 {
        return Err(QueryError::bad_arguments("index_granularity and row_group_size must be positive"));
    }
    if s.parts_to_delay_insert > s.parts_to_throw_insert {
        return Err(QueryError::bad_arguments("parts_to_delay_insert must not exceed parts_to_throw_insert"));
    }
    Ok(())
}

fn plain_name(arg: &str) -> String {
    arg.trim().trim_matches('`').trim_matches('"').to_string()
}

/// The storage engine an `ENGINE = …` clause names. `Replicated*MergeTree`
/// is accepted as its plain counterpart with the ZooKeeper path and replica
/// name dropped: every shardhouse table is replicated through Raft.
pub fn engine(spec: &EngineSpec) -> Result<Engine, QueryError> {
    let (name, args): (&str, &[String]) = match spec.name.strip_prefix("Replicated") {
        Some(base) if base.ends_with("MergeTree") => (base, if spec.args.len() >= 2 { &spec.args[2..] } else { &[] }),
        _ => (spec.name.as_str(), &spec.args),
    };
    let arity = |max: usize| -> Result<(), QueryError> {
        if args.len() > max {
            Err(QueryError::arguments(format!("{} takes at most {max} arguments, got {}", spec.name, args.len())))
        } else {
            Ok(())
        }
    };
    Ok(match name {
        "MergeTree" => {
            arity(0)?;
            Engine::MergeTree
        }
        "ReplacingMergeTree" => {
            arity(2)?;
            Engine::Replacing {
                version: args.first().map(|a| plain_name(a)),
                is_deleted: args.get(1).map(|a| plain_name(a)),
            }
        }
        "SummingMergeTree" => {
            arity(1)?;
            let columns = match args.first() {
                Some(a) => Some(split_key(a)?.into_iter().map(|c| plain_name(&c)).collect()),
                None => None,
            };
            Engine::Summing { columns }
        }
        "AggregatingMergeTree" => {
            arity(0)?;
            Engine::Aggregating
        }
        "CollapsingMergeTree" => {
            if args.len() != 1 {
                return Err(QueryError::arguments(
                    "CollapsingMergeTree requires exactly one argument: the sign column",
                ));
            }
            Engine::Collapsing { sign: plain_name(&args[0]) }
        }
        other => return Err(QueryError::unknown_engine(other)),
    })
}

impl CreateTable {
    /// The Arrow schema of the declared columns (ALIAS and EPHEMERAL columns
    /// are not stored).
    pub fn schema(&self) -> Arc<Schema> {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .filter(|c| !matches!(c.default, Some((DefaultKind::Alias | DefaultKind::Ephemeral, _))))
                .map(|c| c.ty.field(&c.name))
                .collect::<Vec<_>>(),
        ))
    }

    /// The storage definition, checked by compiling it (unknown columns and
    /// functions in keys are errors here).
    pub fn table_def(&self) -> Result<TableDef, QueryError> {
        let spec = self.engine.as_ref().ok_or_else(|| QueryError::bad_arguments("ENGINE is required"))?;
        if spec.name == "Distributed" {
            // No data here: the columns, for reads and for routing inserts.
            self.distributed_args()?;
            let def = TableDef {
                schema: self.schema(),
                engine: Engine::MergeTree,
                partition_by: None,
                order_by: vec![],
                settings: MergeTreeSettings::default(),
            };
            storage::Table::new(def.clone()).map_err(|e| QueryError::storage(&e))?;
            return Ok(def);
        }
        let engine = engine(spec)?;
        let order_by = match (&self.order_by, &self.primary_key) {
            (Some(o), _) => split_key(o)?,
            (None, Some(p)) => split_key(p)?,
            (None, None) => {
                return Err(QueryError::bad_arguments(format!(
                    "Storage {} requires ORDER BY or PRIMARY KEY clause",
                    spec.name
                )));
            }
        };
        if let Some(pk) = &self.primary_key {
            let pk = split_key(pk)?;
            if pk.len() > order_by.len() || pk.iter().zip(&order_by).any(|(a, b)| a != b) {
                return Err(QueryError::bad_arguments(format!(
                    "Primary key must be a prefix of the sorting key, but the primary key is ({}) and the sorting key is ({})",
                    pk.join(", "),
                    order_by.join(", ")
                )));
            }
        }
        let mut settings = MergeTreeSettings::default();
        apply_settings(&mut settings, &self.settings)?;
        let def =
            TableDef { schema: self.schema(), engine, partition_by: self.partition_by.clone(), order_by, settings };
        storage::Table::new(def.clone()).map_err(|e| QueryError::storage(&e))?;
        Ok(def)
    }
}
