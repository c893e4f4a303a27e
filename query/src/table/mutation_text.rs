//! A recorded mutation's statement text: parsed back into storage commands
//! (a one-node table re-reads its `mutation_*.txt` at start) and shown as
//! ClickHouse shows it in `system.mutations`.

use storage::mutation::MutationCommand;

use crate::error::QueryError;
use crate::parse::{AlterCommand, Statement, parse_statement};
use crate::plan::truthiness::condition_text;

/// Storage commands of an ALTER's mutation text (conditions with
/// ClickHouse truthiness).
pub fn mutation_commands(text: &str) -> Result<Vec<MutationCommand>, QueryError> {
    Ok(match parse_statement(text)? {
        Statement::Alter { commands, .. } => commands
            .into_iter()
            .filter_map(|c| match c {
                AlterCommand::Delete { predicate } => {
                    Some(MutationCommand::Delete { predicate: condition_text(&predicate) })
                }
                AlterCommand::Update { assignments, predicate } => {
                    Some(MutationCommand::Update { assignments, predicate: condition_text(&predicate) })
                }
                AlterCommand::DropPartition(_) => None,
            })
            .collect(),
        Statement::Delete { predicate, .. } => {
            vec![MutationCommand::LightweightDelete { predicate: condition_text(&predicate) }]
        }
        _ => return Err(QueryError::bad_arguments(format!("not a mutation: {text}"))),
    })
}

/// The commands of a recorded ALTER/DELETE as `system.mutations` shows them.
pub fn command_text(text: &str) -> String {
    let text = match crate::parse::split_settings(text) {
        Ok((head, _)) => head,
        Err(_) => text.to_string(),
    };
    let text = text.as_str();
    let Ok(mut c) = crate::parse::cursor::Cursor::new(text) else { return text.to_string() };
    if c.eat_kws(&["ALTER", "TABLE"]) && c.qualified_name().is_ok() {
        return c.rest();
    }
    if c.eat_kws(&["DELETE", "FROM"]) && c.qualified_name().is_ok() {
        let rest = c.rest();
        let cond = rest.strip_prefix("WHERE").or_else(|| rest.strip_prefix("where")).unwrap_or(&rest);
        return format!("UPDATE _row_exists = 0 WHERE{cond}");
    }
    text.to_string()
}
