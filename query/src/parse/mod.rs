//! The statement-level parser for ClickHouse DDL and administrative
//! statements (DESIGN.md §6): one place, tested statement by statement.
//! Expressions, column types and SELECT bodies are kept as the user wrote
//! them and handed on to the type parser, DataFusion or sqlparser.

pub mod create;
pub mod cursor;
pub mod lexer;
pub mod statement;
pub mod types;

pub use create::{ColumnDef, CreateTable, DefaultKind, EngineSpec};
pub use statement::{AlterCommand, PartitionSpec, Statement, parse_statement};
pub use types::{ChType, parse_type};
