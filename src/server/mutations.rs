//! `KILL MUTATION WHERE …` and the settings mutation statements read.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::catalog::Server;
use super::execute::QueryOutput;
use query::error::QueryError;
use query::session::QueryContext;

/// A numeric setting of a statement: its own `SETTINGS` clause first, then
/// the query's (URL, session, defaults).
pub(super) fn statement_setting(q: &QueryContext, own: &[(String, String)], name: &str) -> u64 {
    match own.iter().rev().find(|(k, _)| k == name) {
        Some((_, v)) => v.parse().unwrap_or(0),
        None => q.settings.u64(name),
    }
}

/// The values of a result column as text.
fn strings(batch: &RecordBatch, i: usize) -> Result<Vec<String>, QueryError> {
    let col = arrow::compute::cast(batch.column(i), &DataType::Utf8)
        .map_err(|e| QueryError::bad_arguments(format!("system.mutations: {e}")))?;
    let col = col.as_any().downcast_ref::<StringArray>().map(|a| a.iter().map(|v| v.unwrap_or_default().to_string()));
    Ok(col.map(Iterator::collect).unwrap_or_default())
}

impl Server {
    /// `KILL MUTATION WHERE predicate`: the mutations of `system.mutations`
    /// the predicate selects are stopped (through the log on every replica
    /// of a replicated table); answers one row per mutation, as ClickHouse.
    pub(super) async fn kill_mutations(
        self: &Arc<Self>,
        predicate: &str,
        q: &QueryContext,
    ) -> Result<QueryOutput, QueryError> {
        let select = format!("SELECT database, table, mutation_id, command FROM system.mutations WHERE {predicate}");
        let found = self.execute_statement(&select, &[], q).await?;
        let mut rows: Vec<[String; 4]> = Vec::new();
        for b in &found.batches {
            let [d, t, id, cmd] = [strings(b, 0)?, strings(b, 1)?, strings(b, 2)?, strings(b, 3)?];
            for (((d, t), id), cmd) in d.into_iter().zip(t).zip(id).zip(cmd) {
                rows.push([d, t, id, cmd]);
            }
        }
        let mut killed = Vec::new();
        for row in rows {
            let t = self.table(&row[0], &row[1])?;
            let id = row[2].clone();
            if t.kill_mutation(&id).await? {
                killed.push(row);
            }
        }
        let names = ["kill_status", "database", "table", "mutation_id", "command"];
        let schema =
            Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>()));
        let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["waiting"; killed.len()]))];
        for c in 0..4 {
            cols.push(Arc::new(StringArray::from(killed.iter().map(|r| r[c].clone()).collect::<Vec<_>>())));
        }
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| QueryError::bad_arguments(e.to_string()))?;
        Ok(QueryOutput { schema: Some(schema), batches: vec![batch], format: None, written_rows: 0 })
    }
}
