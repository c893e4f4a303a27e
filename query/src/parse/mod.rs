//! The statement-level parser for ClickHouse DDL and administrative
//! statements (DESIGN.md §6): one place, tested statement by statement.
//! Expressions, column types and SELECT bodies are kept as the user wrote
//! them and handed on to the type parser, DataFusion or sqlparser.

pub mod create;
pub mod cursor;
pub mod lexer;
pub mod on_cluster;
pub mod statement;
pub mod types;

pub use create::{ColumnDef, CreateTable, DefaultKind, EngineKind, EngineSpec};
pub use statement::{AlterCommand, PartitionSpec, Statement, parse_statement};
pub use types::{ChType, parse_type};

use crate::error::QueryError;
use cursor::Cursor;

/// Splits a trailing `SETTINGS name = value, …` off a SELECT.
pub fn split_settings(sql: &str) -> Result<(String, Option<String>), QueryError> {
    let c = Cursor::new(sql)?;
    let mut depth = 0i32;
    for (i, t) in c.toks.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        } else if depth == 0
            && t.is_kw("SETTINGS")
            && i > 0
            && !c.toks[i - 1].is_punct(".")
            && c.toks.get(i + 2).is_some_and(|t| t.is_punct("="))
        {
            // `SETTINGS name = value, …` — not a table or column named settings.
            let head = sql[..c.toks[i - 1].end].to_string();
            let clause = sql[c.toks[i].end..c.toks[c.toks.len() - 1].end].to_string();
            return Ok((head, Some(clause)));
        }
    }
    Ok((sql.to_string(), None))
}
