//! Statements shardhouse parses itself; everything else (SELECT, INSERT,
//! SHOW, DESCRIBE, …) is passed on as text for sqlparser and DataFusion.

use super::create::{CreateTable, parse_create_table};
use super::cursor::Cursor;
use crate::error::QueryError;

/// `[db.]table`.
pub type TableName = (Option<String>, String);

/// A partition named in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSpec {
    /// `PARTITION <expr>`: the partition key's value.
    Value(String),
    /// `PARTITION ID 'id'`.
    Id(String),
    /// `PARTITION ALL`.
    All,
}

/// One command of an `ALTER TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterCommand {
    Delete { predicate: String },
    Update { assignments: Vec<(String, String)>, predicate: String },
    DropPartition(PartitionSpec),
}

/// A statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateDatabase {
        name: String,
        if_not_exists: bool,
    },
    CreateTable(Box<CreateTable>),
    DropDatabase {
        name: String,
        if_exists: bool,
    },
    DropTable {
        table: TableName,
        if_exists: bool,
    },
    TruncateTable {
        table: TableName,
        if_exists: bool,
    },
    RenameTable {
        pairs: Vec<(TableName, TableName)>,
    },
    Alter {
        table: TableName,
        commands: Vec<AlterCommand>,
        settings: Vec<(String, String)>,
    },
    /// `DELETE FROM t WHERE …` (lightweight delete).
    Delete {
        table: TableName,
        predicate: String,
        settings: Vec<(String, String)>,
    },
    Optimize {
        table: TableName,
        partition: Option<PartitionSpec>,
        final_: bool,
        deduplicate: bool,
        cleanup: bool,
    },
    /// `SYSTEM STOP MERGES [t]` (`start = false`) / `SYSTEM START MERGES [t]`.
    SystemMerges {
        start: bool,
        table: Option<TableName>,
    },
    KillMutation {
        predicate: String,
    },
    CheckTable {
        table: TableName,
        partition: Option<PartitionSpec>,
    },
    /// Anything else, verbatim.
    Other(String),
}

/// Parses one statement.
pub fn parse_statement(sql: &str) -> Result<Statement, QueryError> {
    let mut c = Cursor::new(sql)?;
    if c.at_end() {
        return Err(QueryError::syntax("Empty query"));
    }
    let st = if c.eat_kws(&["CREATE"]) {
        let or_replace = c.eat_kws(&["OR", "REPLACE"]);
        if c.eat_kws(&["DATABASE"]) {
            let if_not_exists = c.eat_kws(&["IF", "NOT", "EXISTS"]);
            let name = c.ident()?;
            if c.eat_kws(&["ENGINE"]) {
                c.eat_punct("=");
                c.ident()?;
                if c.eat_punct("(") {
                    c.expect_punct(")")?;
                }
            }
            Statement::CreateDatabase { name, if_not_exists }
        } else if c.eat_kws(&["TABLE"]) {
            Statement::CreateTable(Box::new(parse_create_table(&mut c, or_replace)?))
        } else {
            return Ok(Statement::Other(sql.trim().to_string()));
        }
    } else if c.eat_kws(&["DROP"]) {
        if c.eat_kws(&["DATABASE"]) {
            let if_exists = c.eat_kws(&["IF", "EXISTS"]);
            let name = c.ident()?;
            c.eat_kws(&["SYNC"]);
            Statement::DropDatabase { name, if_exists }
        } else if c.eat_kws(&["TABLE"]) {
            let if_exists = c.eat_kws(&["IF", "EXISTS"]);
            let table = c.qualified_name()?;
            c.eat_kws(&["SYNC"]);
            Statement::DropTable { table, if_exists }
        } else {
            return Ok(Statement::Other(sql.trim().to_string()));
        }
    } else if c.eat_kws(&["TRUNCATE"]) {
        c.eat_kws(&["TABLE"]);
        let if_exists = c.eat_kws(&["IF", "EXISTS"]);
        Statement::TruncateTable { table: c.qualified_name()?, if_exists }
    } else if c.eat_kws(&["RENAME", "TABLE"]) {
        let mut pairs = Vec::new();
        loop {
            let from = c.qualified_name()?;
            c.expect_kws(&["TO"])?;
            pairs.push((from, c.qualified_name()?));
            if !c.eat_punct(",") {
                break;
            }
        }
        Statement::RenameTable { pairs }
    } else if c.eat_kws(&["ALTER", "TABLE"]) {
        alter(&mut c)?
    } else if c.eat_kws(&["DELETE", "FROM"]) {
        let table = c.qualified_name()?;
        c.expect_kws(&["WHERE"])?;
        let predicate = c.expr_text(&["SETTINGS"])?;
        Statement::Delete { table, predicate, settings: settings(&mut c)? }
    } else if c.eat_kws(&["OPTIMIZE", "TABLE"]) {
        let table = c.qualified_name()?;
        let partition = if c.eat_kws(&["PARTITION"]) { Some(partition(&mut c)?) } else { None };
        let final_ = c.eat_kws(&["FINAL"]);
        let deduplicate = c.eat_kws(&["DEDUPLICATE"]);
        if deduplicate && c.peek_kws(&["BY"]) {
            return Err(QueryError::bad_arguments("OPTIMIZE … DEDUPLICATE BY is not supported yet"));
        }
        let cleanup = c.eat_kws(&["CLEANUP"]);
        if cleanup && !final_ {
            return Err(QueryError::bad_arguments("CLEANUP is allowed only with FINAL"));
        }
        Statement::Optimize { table, partition, final_, deduplicate, cleanup }
    } else if c.eat_kws(&["SYSTEM"]) {
        let start = if c.eat_kws(&["STOP", "MERGES"]) {
            false
        } else if c.eat_kws(&["START", "MERGES"]) {
            true
        } else {
            return Err(c.error("STOP MERGES or START MERGES"));
        };
        let table = if c.at_end() { None } else { Some(c.qualified_name()?) };
        Statement::SystemMerges { start, table }
    } else if c.eat_kws(&["KILL", "MUTATION"]) {
        c.expect_kws(&["WHERE"])?;
        let predicate = c.expr_text(&["SYNC", "ASYNC", "TEST"])?;
        let _ = c.eat_kws(&["SYNC"]) || c.eat_kws(&["ASYNC"]) || c.eat_kws(&["TEST"]);
        Statement::KillMutation { predicate }
    } else if c.eat_kws(&["CHECK", "TABLE"]) {
        let table = c.qualified_name()?;
        let partition = if c.eat_kws(&["PARTITION"]) { Some(partition(&mut c)?) } else { None };
        Statement::CheckTable { table, partition }
    } else {
        return Ok(Statement::Other(sql.trim().to_string()));
    };
    c.finish()?;
    Ok(st)
}

fn partition(c: &mut Cursor<'_>) -> Result<PartitionSpec, QueryError> {
    if c.eat_kws(&["ID"]) {
        return Ok(PartitionSpec::Id(c.string()?));
    }
    if c.eat_kws(&["ALL"]) {
        return Ok(PartitionSpec::All);
    }
    Ok(PartitionSpec::Value(c.expr_text(&["FINAL", "DEDUPLICATE", "CLEANUP", "SETTINGS"])?))
}

fn settings(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    if c.eat_kws(&["SETTINGS"]) {
        loop {
            let k = c.ident()?;
            c.expect_punct("=")?;
            out.push((k, c.expr_text(&[])?.trim_matches('\'').to_string()));
            if !c.eat_punct(",") {
                break;
            }
        }
    }
    Ok(out)
}

fn alter(c: &mut Cursor<'_>) -> Result<Statement, QueryError> {
    let table = c.qualified_name()?;
    if c.eat_kws(&["ON", "CLUSTER"]) {
        c.ident()?;
    }
    let mut commands = Vec::new();
    loop {
        if c.eat_kws(&["DELETE", "WHERE"]) {
            commands.push(AlterCommand::Delete { predicate: c.expr_text(&["SETTINGS"])? });
        } else if c.eat_kws(&["UPDATE"]) {
            let mut assignments = Vec::new();
            loop {
                let col = c.ident()?;
                c.expect_punct("=")?;
                assignments.push((col, c.expr_text(&["WHERE"])?));
                if !c.eat_punct(",") {
                    break;
                }
            }
            c.expect_kws(&["WHERE"])?;
            commands.push(AlterCommand::Update { assignments, predicate: c.expr_text(&["SETTINGS"])? });
        } else if c.eat_kws(&["DROP", "PARTITION"]) {
            commands.push(AlterCommand::DropPartition(partition(c)?));
        } else {
            return Err(c.error("DELETE WHERE, UPDATE or DROP PARTITION"));
        }
        if !c.eat_punct(",") {
            break;
        }
    }
    Ok(Statement::Alter { table, commands, settings: settings(c)? })
}
