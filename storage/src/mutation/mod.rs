//! Mutations: `ALTER TABLE … DELETE WHERE` / `UPDATE c = e WHERE` rewrite parts
//! into `<name>_<version>`; lightweight `DELETE FROM … WHERE` adds rows to a
//! part's row mask instead. Only parts whose data version is below a
//! mutation's version are affected; pending mutations apply in order in one
//! rewrite; a part no row of which changes is carried over by hard link.

mod columns;
mod rewrite;

pub use rewrite::{mutate_part, validate};

use crate::part::Part;

/// One command of a mutation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MutationCommand {
    /// `ALTER TABLE t DELETE WHERE predicate`.
    Delete { predicate: String },
    /// `ALTER TABLE t UPDATE col = expr, … WHERE predicate`; every assignment
    /// sees the row as it was before this command.
    Update { assignments: Vec<(String, String)>, predicate: String },
    /// `DELETE FROM t WHERE predicate`: masks rows; the next merge drops them.
    LightweightDelete { predicate: String },
}

/// A mutation with its version (the log index of its entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub version: i64,
    pub commands: Vec<MutationCommand>,
}

/// The mutations a part still needs, in version order.
pub fn pending_for<'a>(part: &Part, mutations: &'a [Mutation]) -> Vec<&'a Mutation> {
    let dv = part.name.data_version();
    let mut v: Vec<&Mutation> = mutations.iter().filter(|m| m.version > dv).collect();
    v.sort_by_key(|m| m.version);
    v
}
