//! The statement-level parser for ClickHouse DDL and administrative
//! statements (DESIGN.md §6): one place, tested statement by statement.

pub mod lexer;
pub mod types;
