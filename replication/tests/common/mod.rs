//! The in-process cluster the replication tests share: real nodes (RocksDB
//! logs, tonic on loopback) with a controllable network.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use replication::registry::{InsertOutcome, Quorum};
use replication::transport::NetControl;
use replication::{GroupSpec, NodeConfig, ReplicationError, ReplicationNode, TableResolver};
use storage::{Engine, MergeTreeSettings, Table, TableDef};

pub struct Tables(HashMap<String, Arc<Table>>);

impl Tables {
    /// `db.t` as [`table`] defines it.
    pub fn with_test_table() -> Arc<Tables> {
        Arc::new(Tables([("db.t".to_string(), table())].into_iter().collect()))
    }
}

impl TableResolver for Tables {
    fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.0.get(name).cloned()
    }
}

pub fn table() -> Arc<Table> {
    let schema =
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Utf8, false)]));
    Table::new(TableDef {
        schema,
        engine: Engine::MergeTree,
        partition_by: None,
        order_by: vec!["k".into()],
        settings: MergeTreeSettings::default(),
    })
    .unwrap()
}

pub fn batch(block: i64, rows: i64) -> RecordBatch {
    let t = table();
    let k: Vec<i64> = (0..rows).map(|i| block * 1_000_000 + (rows - i)).collect();
    let v: Vec<String> = k.iter().map(|x| format!("v{x}")).collect();
    RecordBatch::try_new(t.schema().clone(), vec![Arc::new(Int64Array::from(k)), Arc::new(StringArray::from(v))])
        .unwrap()
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub struct Cluster {
    pub _dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub nodes: BTreeMap<u64, ReplicationNode>,
    pub net: Arc<NetControl>,
    pub tables: Arc<Tables>,
    pub snapshot_logs: u64,
    pub idle_after: Option<Duration>,
    /// The group's replication settings (its spec).
    pub settings: replication::replica::ReplicaSettings,
}

pub const GROUP: u64 = 7;

impl Cluster {
    pub async fn start(n: u64, snapshot_logs: u64) -> Cluster {
        Self::start_with(n, snapshot_logs, Default::default()).await
    }

    /// A cluster whose group has `settings`.
    pub async fn start_with(n: u64, snapshot_logs: u64, settings: replication::replica::ReplicaSettings) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs = (1..=n).map(|i| (i, free_port())).collect();
        let mut c = Cluster {
            root: dir.path().to_path_buf(),
            _dir: dir,
            addrs,
            nodes: BTreeMap::new(),
            net: Arc::new(NetControl::default()),
            tables: Tables::with_test_table(),
            snapshot_logs,
            idle_after: None,
            settings,
        };
        for i in 1..=n {
            c.start_node(i).await;
        }
        c
    }

    pub async fn start_node(&mut self, id: u64) {
        let mut cfg = NodeConfig::new(id, &self.root.join(format!("n{id}")), self.addrs[&id]);
        cfg.peers = self.addrs.iter().map(|(k, a)| (*k, a.to_string())).collect();
        cfg.heartbeat_ms = 50;
        cfg.election_timeout_ms = (200, 400);
        cfg.snapshot_logs = self.snapshot_logs;
        cfg.propose_timeout = Duration::from_secs(3);
        cfg.net = self.net.clone();
        cfg.idle_after = self.idle_after;
        let node = ReplicationNode::start(cfg, self.tables.clone()).await.unwrap();
        self.nodes.insert(id, node);
    }

    /// Stops a node abruptly: its groups and service go away; only what it
    /// synced survives to its restart.
    pub async fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    pub fn spec(&self) -> GroupSpec {
        GroupSpec {
            group: GROUP,
            table: "db.t".into(),
            partition_id: "all".into(),
            members: self.addrs.keys().copied().collect(),
            settings: self.settings.clone(),
        }
    }

    pub async fn insert(&self, via: u64, b: &RecordBatch, block_id: &str) -> Result<InsertOutcome, ReplicationError> {
        self.nodes[&via]
            .insert(&self.spec(), vec![], b.clone(), block_id.to_string(), Quorum::Majority, Duration::from_secs(5))
            .await
    }

    pub async fn leader(&self) -> Option<u64> {
        for n in self.nodes.values() {
            if let Some(g) = n.group(GROUP)
                && let Some(l) = g.raft.current_leader().await
                && self.nodes.contains_key(&l)
            {
                return Some(l);
            }
        }
        None
    }

    pub async fn wait_leader(&self) -> u64 {
        for _ in 0..200 {
            if let Some(l) = self.leader().await {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader elected");
    }

    /// Keys on a node's replica, in part order.
    /// The keys node `id` shows a reader: after its read-your-writes wait.
    pub async fn read_keys(&self, id: u64) -> Vec<i64> {
        self.nodes[&id].group(GROUP).expect("group hosted").read_your_writes().await;
        self.keys(id)
    }

    pub fn keys(&self, id: u64) -> Vec<i64> {
        let g = self.nodes[&id].group(GROUP).expect("group hosted");
        let mut out = Vec::new();
        for p in g.replica.snapshot() {
            for b in storage::part::reader::read_all(&p).unwrap() {
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                out.extend(col.values().iter().copied());
            }
        }
        out.sort_unstable();
        out
    }

    /// Part names and data checksums of a node's replica.
    pub fn parts(&self, id: u64) -> BTreeMap<String, u32> {
        let g = self.nodes[&id].group(GROUP).expect("group hosted");
        g.replica
            .snapshot()
            .iter()
            .map(|p| (p.name.to_string(), p.meta.files.get("data.parquet").map(|c| c.crc32).unwrap_or(0)))
            .collect()
    }

    /// Waits until every live node has applied the same index and holds
    /// byte-identical parts.
    pub async fn converge(&self) {
        let mut last = String::new();
        for _ in 0..400 {
            let mut states = Vec::new();
            for (id, n) in &self.nodes {
                let Some(g) = n.group(GROUP) else {
                    states.push((*id, None, BTreeMap::new()));
                    continue;
                };
                states.push((*id, g.replica.applied().0.map(|l| l.index), self.parts(*id)));
            }
            let first = &states[0];
            if first.1.is_some() && states.iter().all(|s| s.1 == first.1 && s.2 == first.2) {
                return;
            }
            last = format!("{states:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replicas did not converge: {last}");
    }

    /// Runs the leaders' merge and mutation assignment (a server's merge
    /// thread does it) until no live replica has a part left to rewrite
    /// for a live mutation and none is rewriting.
    pub async fn run_mutations(&self) {
        for _ in 0..1200 {
            for n in self.nodes.values() {
                let _ = n.assign_merges().await;
            }
            let done = self.nodes.values().all(|n| {
                n.group(GROUP).is_none_or(|g| !g.replica.has_mutation_work() && !g.replica.merges.rewriting())
            });
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mutations did not finish");
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

pub fn expected_keys(blocks: &BTreeSet<i64>, rows: i64) -> Vec<i64> {
    let mut v: Vec<i64> = blocks.iter().flat_map(|b| (1..=rows).map(move |i| b * 1_000_000 + i)).collect();
    v.sort_unstable();
    v
}
