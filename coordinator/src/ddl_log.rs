//! Distributed DDL (`… ON CLUSTER c …`), as ClickHouse's DDL queue but in
//! the cluster's metadata Raft group: the statement (with `ON CLUSTER`
//! removed, and a CREATE TABLE's UUID fixed by the initiator) is one entry
//! of the group's log, and every node that hosts cluster `c` runs it when
//! it applies the entry — in log order, a node that was down when it comes
//! back. Without a quorum of the group's voters the statement is applied
//! nowhere and the initiator gets ClickHouse's distributed DDL timeout.
//!
//! This module is the applier: it runs each entry through the server's
//! [`DdlExecutor`] and keeps, in `<data>/ddl_log.json`, the index applied
//! and every entry (DDL is rare; a snapshot of the group is this list,
//! replayed from where a node stands).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use replication::NodeId;
use replication::meta_group::MetaApplier;

/// One `ON CLUSTER` statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlEntry {
    /// The cluster named in `ON CLUSTER`.
    pub cluster: String,
    /// The initiator's current database.
    pub database: String,
    /// The statement as each node runs it.
    pub sql: String,
    /// The node the statement was issued on.
    pub initiator: NodeId,
}

/// A statement's failure on a node, as a ClickHouse error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlError {
    pub code: u32,
    pub name: String,
    pub message: String,
}

/// What runs an applied statement on this node (the server).
pub trait DdlExecutor: Send + Sync + 'static {
    /// Runs `entry` here if this node is a host of its cluster (and, for
    /// statements a replicated table needs once, only on the initiator).
    /// Called on a blocking thread, in log order.
    fn execute(&self, entry: &DdlEntry) -> Result<(), DdlError>;
}

/// Version of `ddl_log.json`.
const FORMAT: u32 = 1;

/// Outcomes kept for initiators to read after their entry applied.
const KEEP_OUTCOMES: usize = 1000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    format: u32,
    applied: u64,
    entries: Vec<(u64, DdlEntry)>,
}

/// The applier of the metadata group's DDL entries on one node.
pub struct DdlLog {
    path: PathBuf,
    state: Mutex<State>,
    outcomes: Mutex<BTreeMap<u64, Result<(), DdlError>>>,
    executor: OnceLock<Arc<dyn DdlExecutor>>,
}

impl DdlLog {
    /// Opens the log kept in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<DdlLog>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("ddl_log.json");
        let state = match std::fs::read(&path) {
            Ok(b) => {
                let s: State = serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?;
                if s.format != FORMAT {
                    return Err(format!("{}: format {} is not {FORMAT}", path.display(), s.format));
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State { format: FORMAT, ..Default::default() },
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Arc::new(DdlLog { path, state: Mutex::new(state), outcomes: Default::default(), executor: OnceLock::new() }))
    }

    /// Sets what runs the statements; before the metadata group starts.
    pub fn set_executor(&self, e: Arc<dyn DdlExecutor>) {
        let _ = self.executor.set(e);
    }

    /// This node's outcome of the entry at `index`, once applied here.
    pub fn outcome(&self, index: u64) -> Option<Result<(), DdlError>> {
        self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).get(&index).cloned()
    }

    /// Every entry applied, with its index.
    pub fn entries(&self) -> Vec<(u64, DdlEntry)> {
        self.lock().entries.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, s: &State) -> Result<(), String> {
        let bytes = serde_json::to_vec(s).map_err(|e| e.to_string())?;
        crate::catalog::write_atomic(&self.path, &bytes).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn run(&self, index: u64, entry: &DdlEntry) -> Result<(), DdlError> {
        let out = match self.executor.get() {
            Some(x) => x.execute(entry),
            None => {
                Err(DdlError { code: 49, name: "LOGICAL_ERROR".into(), message: "no DDL executor on this node".into() })
            }
        };
        if let Err(e) = &out {
            tracing::warn!(index, sql = %entry.sql, error = %e.message, "distributed DDL failed here");
        }
        let mut o = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        o.insert(index, out.clone());
        while o.len() > KEEP_OUTCOMES {
            o.pop_first();
        }
        out
    }
}

impl MetaApplier for DdlLog {
    fn applied_index(&self) -> u64 {
        self.lock().applied
    }

    fn apply(&self, index: u64, entry: &str) -> Result<String, String> {
        if index <= self.applied_index() {
            return Ok(String::new());
        }
        let parsed: Result<DdlEntry, _> = serde_json::from_str(entry);
        // Run first, record after: a crash in between runs it again at
        // restart, where CREATE finds the table there and DROP finds it gone.
        let out = match &parsed {
            Ok(e) => self.run(index, e).map_err(|e| serde_json::to_string(&e).unwrap_or(e.message)),
            Err(e) => Err(format!("bad DDL entry: {e}")),
        };
        let mut s = self.lock();
        s.applied = index;
        if let Ok(e) = parsed {
            s.entries.push((index, e));
        }
        self.save(&s)?;
        out.map(|()| String::new())
    }

    fn snapshot(&self) -> Result<String, String> {
        serde_json::to_string(&*self.lock()).map_err(|e| e.to_string())
    }

    fn install(&self, index: u64, state: &str) -> Result<(), String> {
        let theirs: State = serde_json::from_str(state).map_err(|e| e.to_string())?;
        let mine = self.applied_index();
        // What this node missed, in order: what it would have applied from
        // the log had the log not been purged.
        for (i, e) in theirs.entries.iter().filter(|(i, _)| *i > mine) {
            let _ = self.run(*i, e);
        }
        let mut s = self.lock();
        s.applied = index.max(theirs.applied).max(mine);
        s.entries = theirs.entries;
        self.save(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record(Mutex<Vec<String>>);

    impl DdlExecutor for Record {
        fn execute(&self, entry: &DdlEntry) -> Result<(), DdlError> {
            self.0.lock().unwrap().push(entry.sql.clone());
            if entry.sql.starts_with("BAD") {
                return Err(DdlError { code: 62, name: "SYNTAX_ERROR".into(), message: "bad".into() });
            }
            Ok(())
        }
    }

    fn entry(sql: &str) -> String {
        serde_json::to_string(&DdlEntry {
            cluster: "c".into(),
            database: "default".into(),
            sql: sql.into(),
            initiator: 1,
        })
        .unwrap()
    }

    #[test]
    fn entries_run_once_in_order_and_survive_a_restart_and_a_snapshot_replays_what_was_missed() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(Record(Mutex::new(Vec::new())));
        let log = DdlLog::open(dir.path()).unwrap();
        log.set_executor(rec.clone());
        assert!(log.apply(1, &entry("CREATE a")).is_ok());
        let err = log.apply(2, &entry("BAD")).unwrap_err();
        assert!(err.contains("SYNTAX_ERROR"), "{err}");
        assert_eq!(log.outcome(2).unwrap().unwrap_err().code, 62);
        assert!(log.apply(2, &entry("BAD")).is_ok(), "an index applied before changes nothing");
        let snap = log.snapshot().unwrap();
        drop(log);
        let log = DdlLog::open(dir.path()).unwrap();
        log.set_executor(rec.clone());
        assert_eq!(log.applied_index(), 2);
        assert_eq!(rec.0.lock().unwrap().clone(), ["CREATE a", "BAD"]);
        // Another node behind at 1 installs a snapshot taken at 3.
        let other_dir = tempfile::tempdir().unwrap();
        let other = DdlLog::open(other_dir.path()).unwrap();
        let rec2 = Arc::new(Record(Mutex::new(Vec::new())));
        other.set_executor(rec2.clone());
        other.apply(1, &entry("CREATE a")).unwrap();
        log.apply(3, &entry("DROP a")).unwrap();
        let _ = snap;
        other.install(3, &log.snapshot().unwrap()).unwrap();
        assert_eq!(rec2.0.lock().unwrap().clone(), ["CREATE a", "BAD", "DROP a"]);
        assert_eq!(other.applied_index(), 3);
        assert_eq!(other.entries().len(), 3);
    }
}
