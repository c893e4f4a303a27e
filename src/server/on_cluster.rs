//! `ON CLUSTER` statements: proposed to the cluster's metadata group by the
//! node they are issued on, run by every host of the named cluster as it
//! applies the entry (see `coordinator::ddl_log`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use coordinator::ddl_log::{DdlEntry, DdlError, DdlExecutor};
use query::error::QueryError;
use query::parse::cursor::Cursor;
use query::parse::on_cluster::OnCluster;
use query::session::QueryContext;

use super::catalog::Server;
use super::execute::QueryOutput;

/// ClickHouse's error for an unknown cluster.
fn no_cluster(name: &str) -> QueryError {
    QueryError { code: 701, name: "CLUSTER_DOESNT_EXIST", message: format!("Requested cluster '{name}' not found") }
}

/// A name that lives as long as the process: the few distinct error names
/// that come back from other nodes are kept once each.
fn static_name(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

impl Server {
    /// Whether this node is a host of `cluster`: a replica of one of its
    /// shards, or any node for the `[cluster]` name itself.
    pub(crate) fn hosts(&self, cluster: &str) -> Option<bool> {
        let me = self.replication.node_id();
        if cluster == self.replication.config().name {
            return Some(true);
        }
        self.remote_servers.get(cluster).map(|c| c.position_of(me).is_some())
    }

    /// Runs a statement issued `ON CLUSTER`: one entry of the metadata
    /// group, run here once this node applied it (this node's outcome is
    /// the answer; every other host of the cluster runs it too).
    pub(crate) async fn execute_on_cluster(
        self: &Arc<Self>,
        oc: OnCluster,
        q: &QueryContext,
    ) -> Result<QueryOutput, QueryError> {
        if self.hosts(&oc.cluster).is_none() {
            return Err(no_cluster(&oc.cluster));
        }
        let entry = DdlEntry {
            cluster: oc.cluster,
            database: q.database.clone(),
            sql: oc.local_sql,
            initiator: self.replication.node_id(),
        };
        let text = serde_json::to_string(&entry).map_err(|e| QueryError::bad_arguments(e.to_string()))?;
        let timeout = Duration::from_secs(q.settings.u64("distributed_ddl_task_timeout").max(1));
        self.replication.start().await?;
        let index = self.replication.propose_meta(text, timeout).await?;
        match self.ddl_log.outcome(index) {
            Some(Err(e)) => Err(QueryError { code: e.code, name: static_name(&e.name), message: e.message }),
            _ => Ok(QueryOutput::default()),
        }
    }

    /// Whether `entry` runs here: on every host of its cluster, except that
    /// a statement changing a replicated table's data (ALTER, OPTIMIZE,
    /// TRUNCATE) runs once per shard, since the shard's Raft groups already
    /// span its replicas (as ClickHouse runs these on one replica per
    /// shard): on the initiator in its own shard, on the first replica in
    /// the others (one that was down runs it when it is back).
    fn runs_here(&self, entry: &DdlEntry) -> bool {
        if self.hosts(&entry.cluster) != Some(true) {
            return false;
        }
        if !self.changes_replicated_data(entry) {
            return true;
        }
        let me = self.replication.node_id();
        let shard = self.remote_servers.get(&entry.cluster).and_then(|c| {
            let (s, _) = c.position_of(me)?;
            c.shards.get(s - 1).map(|s| s.replicas.clone())
        });
        match shard {
            Some(replicas) if !replicas.contains(&entry.initiator) => replicas.first() == Some(&me),
            _ => entry.initiator == me,
        }
    }

    fn changes_replicated_data(&self, entry: &DdlEntry) -> bool {
        let Ok(mut c) = Cursor::new(&entry.sql) else { return false };
        let data = c.eat_kws(&["ALTER", "TABLE"]) || c.eat_kws(&["OPTIMIZE", "TABLE"]) || c.eat_kws(&["TRUNCATE"]);
        if !data {
            return false;
        }
        c.eat_kws(&["TABLE"]);
        c.eat_kws(&["IF", "EXISTS"]);
        let Ok((db, name)) = c.qualified_name() else { return false };
        let db = db.unwrap_or_else(|| entry.database.clone());
        self.table(&db, &name).is_ok_and(|t| t.kind() == query::table::EngineKind::Replicated)
    }
}

/// The server as the metadata group's DDL executor.
pub(crate) struct ServerDdl(pub(crate) Weak<Server>);

impl DdlExecutor for ServerDdl {
    fn execute(&self, entry: &DdlEntry) -> Result<(), DdlError> {
        let Some(server) = self.0.upgrade() else { return Ok(()) };
        if !server.runs_here(entry) {
            return Ok(());
        }
        // Called on a blocking thread of the Raft runtime: the statement
        // runs as a task there and this thread waits for it.
        let handle = tokio::runtime::Handle::try_current().map_err(|e| DdlError {
            code: 49,
            name: "LOGICAL_ERROR".into(),
            message: format!("no runtime to run distributed DDL on: {e}"),
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (sql, db) = (entry.sql.clone(), entry.database.clone());
        handle.spawn(async move {
            let mut q = QueryContext::new(&db);
            q.from_ddl_log = true;
            let _ = tx.send(server.execute_in(&sql, &[], &mut q).await.map(|_| ()));
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DdlError { code: e.code, name: e.name.to_string(), message: e.message }),
            Err(_) => {
                Err(DdlError { code: 49, name: "LOGICAL_ERROR".into(), message: "the statement's task ended".into() })
            }
        }
    }
}
