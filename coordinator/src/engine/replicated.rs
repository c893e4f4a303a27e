//! `ReplicatedMergeTree` (and the other `Replicated*MergeTree` engines): each
//! partition of the table is a Raft group, created when the partition first
//! receives data, on every node of the cluster or on `replication_factor`
//! of them. Inserts, merges, mutations and drops go through the group's log;
//! reads see this node's applied state, including every insert this node
//! acknowledged (read-your-writes, as on a ClickHouse replica).
//!
//! As in ClickHouse without `ON CLUSTER`, the table is created on each node
//! with the same statement; a node that lacks the table refuses to host its
//! groups until it is created there, then catches up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use replication::registry::Quorum;
use replication::{GroupSpec, Response};
use storage::Part;
use storage::mutation::MutationCommand;
use storage::partition::split_by_partition;

use super::{EngineKind, InsertOptions, MergeInfo, MutationInfo, MutationSync, OptimizeOptions, TableEngine};
use crate::cluster::Replication;
use crate::error::{EngineError, Result};

/// The shard of a logical cluster a table created `ON CLUSTER` holds on
/// this node: its groups are that shard's, on that shard's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlacement {
    /// 1-based, in the cluster's order.
    pub shard_num: usize,
    pub replicas: Vec<u64>,
}

/// A replicated table on this node.
#[derive(Debug)]
pub struct ReplicatedTable {
    table: Arc<storage::Table>,
    /// `db.table`: how peers name it.
    name: String,
    replication: Arc<Replication>,
    replication_factor: usize,
    settings: replication::replica::ReplicaSettings,
    merges_stopped: AtomicBool,
    /// Set for a table on a logical cluster's shard; else groups are
    /// placed over every node by rendezvous hashing.
    shard: Option<ShardPlacement>,
    /// When outdated parts and staging were last swept: at most once a
    /// second, so a thousand idle groups cost nothing between sweeps.
    swept: std::sync::Mutex<Option<std::time::Instant>>,
}

impl ReplicatedTable {
    /// The table `db.name`: its compiled definition and its table-level
    /// settings (`replication_factor`, the deduplication window, …).
    pub fn open(
        db: &str,
        name: &str,
        table: Arc<storage::Table>,
        table_settings: &[(String, String)],
        replication: Arc<Replication>,
        shard: Option<ShardPlacement>,
    ) -> Result<ReplicatedTable> {
        let mut settings = replication::replica::ReplicaSettings::default();
        let mut rf = 0;
        for (k, v) in table_settings {
            let v = v.trim();
            let bad = || EngineError::BadSetting { setting: k.clone(), value: v.to_string() };
            match k.as_str() {
                "replication_factor" => rf = v.parse().map_err(|_| bad())?,
                "replicated_deduplication_window" => {
                    settings.replicated_deduplication_window = v.parse().map_err(|_| bad())?
                }
                "replicated_deduplication_window_seconds" => {
                    settings.replicated_deduplication_window_seconds = v.parse().map_err(|_| bad())?
                }
                "execute_merges_on_single_replica_time_threshold" => {
                    settings.execute_merges_on_single_replica_time_threshold = v.parse().map_err(|_| bad())?
                }
                _ => {}
            }
        }
        Ok(ReplicatedTable {
            name: format!("{db}.{name}"),
            table,
            replication,
            replication_factor: rf,
            settings,
            merges_stopped: AtomicBool::new(false),
            shard,
            swept: std::sync::Mutex::new(None),
        })
    }

    /// The group of a partition: a stable hash of table and partition (and
    /// shard: each shard's partition is a group of its own).
    pub fn group_id(&self, partition_id: &str) -> u64 {
        match &self.shard {
            None => xxhash_rust::xxh3::xxh3_64(format!("{}\0{partition_id}", self.name).as_bytes()),
            Some(s) => {
                xxhash_rust::xxh3::xxh3_64(format!("{}\0{partition_id}\0shard{}", self.name, s.shard_num).as_bytes())
            }
        }
    }

    fn spec(&self, partition_id: &str) -> GroupSpec {
        let group = self.group_id(partition_id);
        GroupSpec {
            group,
            table: self.name.clone(),
            partition_id: partition_id.to_string(),
            members: match &self.shard {
                Some(s) => s.replicas.clone(),
                None => self.replication.members(group, self.replication_factor),
            },
            settings: self.settings.clone(),
        }
    }

    /// The groups of this table hosted here.
    fn groups(&self) -> Vec<Arc<replication::registry::Group>> {
        match self.replication.started() {
            Some(n) => n.groups().into_iter().filter(|g| g.spec.table == self.name).collect(),
            None => Vec::new(),
        }
    }

    fn quorum(&self, opts: &InsertOptions, replicas: usize) -> Result<Quorum> {
        Ok(match opts.quorum.trim().trim_matches('\'') {
            "" | "0" | "1" => Quorum::Majority,
            "auto" => Quorum::Majority,
            "all" => Quorum::All,
            n => {
                let n: usize = n.parse().map_err(|_| EngineError::BadQuorum(n.to_string()))?;
                if n > replicas {
                    return Err(replication::ReplicationError::TooFewLiveReplicas { alive: replicas, needed: n }.into());
                }
                Quorum::Replicas(n)
            }
        })
    }

    /// Proposes a command to every group of the table hosted here; with
    /// `wait`, until every live replica has applied it (`alter_sync = 2`).
    /// Returns each group's mutation version, for a `Mutate`.
    async fn propose_all(
        &self,
        wait: bool,
        f: impl Fn(&GroupSpec) -> Option<replication::Command> + Send,
    ) -> Result<Vec<(Arc<replication::registry::Group>, i64)>> {
        let mut out = Vec::new();
        for g in self.groups() {
            if let Some(cmd) = f(&g.spec) {
                let group = g.spec.group;
                let r = self
                    .replication
                    .run(move |node| async move {
                        let r = node.propose(group, cmd).await?;
                        if wait {
                            node.wait_live_replicas(group, r.index, Duration::from_secs(300)).await?;
                        }
                        Ok::<_, replication::ReplicationError>(r)
                    })
                    .await??;
                if let Response::Mutation { version } = r.response {
                    out.push((g, version));
                }
            }
        }
        Ok(out)
    }

    /// Waits until each group's replica here (and with `AllReplicas` every
    /// live one) has rewritten every part its mutation applies to; fails
    /// when a rewrite failed here or the mutation was killed.
    async fn wait_mutation(
        &self,
        versions: &[(Arc<replication::registry::Group>, i64)],
        sync: MutationSync,
    ) -> Result<()> {
        for (g, version) in versions {
            let id = format!("{version:010}");
            loop {
                let applied = g.replica.applied().0.is_some_and(|l| l.index as i64 >= *version);
                let record = g.replica.mutations().into_iter().find(|m| m.version == *version);
                if record.as_ref().is_some_and(|m| m.killed) {
                    return Err(EngineError::MutationKilled { id });
                }
                if let Some(f) = g.replica.mutation_failure(*version) {
                    return Err(EngineError::MutationFailed { id, part: f.part, reason: f.reason });
                }
                if applied && record.is_some() && g.replica.parts_to_do(*version) == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if sync != MutationSync::AllReplicas {
                continue;
            }
            loop {
                let (group, version) = (g.spec.group, *version);
                let elsewhere = self
                    .replication
                    .run(move |node| async move {
                        node.parts_to_do_elsewhere(group, &[version], Duration::from_millis(500)).await
                    })
                    .await??;
                // A replica that does not answer is not waited for (as
                // ClickHouse waits for active replicas only).
                if elsewhere.iter().all(|(_, r)| r.as_ref().map_or(true, |todo| todo.iter().all(|n| *n == 0))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TableEngine for ReplicatedTable {
    fn kind(&self) -> EngineKind {
        EngineKind::Replicated
    }

    fn storage(&self) -> &Arc<storage::Table> {
        &self.table
    }

    async fn insert(&self, batch: &RecordBatch, opts: &InsertOptions) -> Result<usize> {
        let node = self.replication.start().await?;
        // Reads of the node's state below run here; everything that talks
        // to the group goes through `run`, on the Raft runtime.
        let mut inserts = Vec::new();
        for block in split_by_partition(&self.table, batch)? {
            let spec = self.spec(&block.partition_id);
            if let Some(g) = node.group(spec.group) {
                let active = g.replica.snapshot().len();
                if let Some(delay) =
                    storage::backpressure::check_insert(&block.partition_id, active, &self.table.def.settings)?
                {
                    tokio::time::sleep(delay).await;
                }
            }
            let block_id = match (&opts.token, opts.deduplicate && self.settings.replicated_deduplication_window > 0) {
                (_, false) => replication::staging::new_staged_id(node.id()),
                (Some(t), true) => storage::dedup::token_block_id(&format!("{t}\0{}", block.partition_id), opts.index),
                (None, true) => storage::dedup::block_id(&block.batch)?,
            };
            let quorum = self.quorum(opts, spec.members.len())?;
            let timeout = Duration::from_millis(opts.quorum_timeout_ms.max(1));
            let n = block.batch.num_rows();
            let replication = self.replication.clone();
            inserts.push(async move {
                let out = replication
                    .run(move |node| async move {
                        node.insert(&spec, block.value, block.batch, block_id, quorum, timeout).await
                    })
                    .await;
                (n, out)
            });
        }
        // Each partition is a Raft group of its own: a block spanning several
        // partitions replicates them all at once instead of one after another.
        // As in ClickHouse, partitions that committed stay committed when
        // another fails; a retry of the whole insert deduplicates them.
        let outcomes = futures::future::join_all(inserts).await;
        let mut rows = 0;
        let mut first_error = None;
        for (n, out) in outcomes {
            match out {
                Ok(Ok(out)) if matches!(out.response, Response::Inserted { .. }) => rows += n,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(EngineError::from(e));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    fn snapshot(&self) -> Vec<Arc<Part>> {
        self.groups().iter().flat_map(|g| g.replica.snapshot()).collect()
    }

    fn merge_step(&self) -> Result<bool> {
        if self.merges_stopped.load(Ordering::SeqCst) || self.replication.started().is_none() {
            return Ok(false);
        }
        let node = self.replication.node_blocking()?;
        let mut any = false;
        for g in self.groups() {
            // Checked before entering the runtime: most groups of a big node are idle.
            if g.is_quiesced() && !g.replica.has_mutation_work() {
                continue;
            }
            any |= self.replication.block_on(node.assign_merge(&g))??;
        }
        Ok(any)
    }

    async fn optimize(&self, opts: &OptimizeOptions) -> Result<()> {
        let mode = storage::ReduceMode { final_read: false, cleanup: opts.cleanup, deduplicate: opts.deduplicate };
        for g in self.groups() {
            if opts.partition_id.as_ref().is_some_and(|p| *p != g.spec.partition_id) {
                continue;
            }
            let (group, final_) = (g.spec.group, opts.final_);
            self.replication
                .run(move |node| async move {
                    let merges = node.optimize_indexes(group, final_, mode).await?;
                    // alter_sync = 2: every live replica has merged too.
                    if let Some(last) = merges.into_iter().max() {
                        node.wait_live_replicas(group, last, Duration::from_secs(300)).await?;
                    }
                    Ok::<_, replication::ReplicationError>(())
                })
                .await??;
        }
        Ok(())
    }

    async fn mutate(&self, commands: Vec<MutationCommand>, text: &str, sync: MutationSync) -> Result<()> {
        storage::mutation::validate(
            &self.table,
            &storage::mutation::Mutation { version: i64::MAX, commands: commands.clone() },
        )?;
        let ts = chrono::Utc::now().timestamp();
        let versions = self
            .propose_all(false, |_| {
                Some(replication::Command::Mutate { commands: commands.clone(), text: text.to_string(), ts })
            })
            .await?;
        if sync == MutationSync::Async {
            return Ok(());
        }
        self.wait_mutation(&versions, sync).await
    }

    async fn kill_mutation(&self, id: &str) -> Result<bool> {
        // The id names one group's record; the ALTER is the records with
        // its creation time and text in every group (see `mutations`).
        let groups = self.groups();
        let Some(key) = groups.iter().find_map(|g| {
            g.replica
                .mutations()
                .into_iter()
                .find(|m| !m.killed && format!("{:010}", m.version) == id)
                .map(|m| (m.create_time, m.text))
        }) else {
            return Ok(false);
        };
        for g in groups {
            for m in g.replica.mutations() {
                if !m.killed && (m.create_time, &m.text) == (key.0, &key.1) {
                    let kill = replication::Command::KillMutation { version: m.version };
                    let group = g.spec.group;
                    self.replication.run(move |node| async move { node.propose(group, kill).await }).await??;
                }
            }
        }
        Ok(true)
    }

    async fn drop_partition(&self, partition_id: &str) -> Result<()> {
        self.propose_all(true, |s| {
            (s.partition_id == partition_id)
                .then(|| replication::Command::DropPartition { partition_id: partition_id.to_string() })
        })
        .await
        .map(|_| ())
    }

    async fn truncate(&self) -> Result<()> {
        self.propose_all(true, |s| Some(replication::Command::DropPartition { partition_id: s.partition_id.clone() }))
            .await
            .map(|_| ())
    }

    fn set_merges_stopped(&self, stopped: bool) {
        self.merges_stopped.store(stopped, Ordering::SeqCst);
    }

    fn cleanup(&self) -> Result<()> {
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if swept.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(());
            }
            *swept = Some(std::time::Instant::now());
        }
        let grace = Duration::from_secs(self.table.def.settings.old_parts_lifetime_secs);
        for g in self.groups() {
            g.replica.cleanup(grace, Duration::from_secs(3600))?;
        }
        Ok(())
    }

    fn outdated(&self) -> Vec<Arc<Part>> {
        self.groups().iter().flat_map(|g| g.replica.outdated()).collect()
    }

    fn merges(&self) -> Vec<MergeInfo> {
        let mut out = Vec::new();
        for g in self.groups() {
            let parts = g.replica.snapshot();
            for (result, sources) in g.replica.merges.running() {
                let src: Vec<&Arc<Part>> = parts.iter().filter(|p| sources.contains(&p.name)).collect();
                out.push(MergeInfo {
                    partition_id: result.partition_id.clone(),
                    result_part_name: result.to_string(),
                    source_part_names: sources.iter().map(|s| s.to_string()).collect(),
                    is_mutation: replication::merge_jobs::is_rewrite(&sources),
                    total_size_bytes_compressed: src.iter().map(|p| p.meta.bytes_on_disk).sum(),
                    total_rows: src.iter().map(|p| p.meta.rows).sum(),
                    started: g.replica.merges.started(&result).unwrap_or_else(std::time::Instant::now),
                });
            }
        }
        out
    }

    async fn read_barrier(&self) -> Result<()> {
        for g in self.groups() {
            let group = g.spec.group;
            self.replication
                .run(move |node| async move { node.read_barrier(group, Duration::from_secs(10)).await })
                .await?
                .map_err(|e| EngineError::NotInQuorum(e.to_string()))?;
        }
        Ok(())
    }

    fn check_readable(&self) -> Result<()> {
        match self.groups().iter().find_map(|g| g.replica.broken.get().cloned()) {
            None => Ok(()),
            Some(msg) => Err(EngineError::Broken(msg)),
        }
    }

    async fn read_your_writes(&self) {
        for g in self.groups() {
            g.read_your_writes().await;
        }
    }

    fn mutations(&self) -> Vec<MutationInfo> {
        // One row per ALTER across this table's groups (each group numbers it
        // with its own log index), as ClickHouse shows one row per mutation;
        // progress is this replica's, as on a ClickHouse replica (`mutations_sync
        // = 2` is what waits for the others). Killed mutations are gone.
        let mut by_id: std::collections::BTreeMap<(i64, String), MutationInfo> = Default::default();
        for g in self.groups() {
            for m in g.replica.mutations().into_iter().filter(|m| !m.killed) {
                let todo = g.replica.parts_to_do_names(m.version);
                let e = by_id.entry((m.create_time, m.text.clone())).or_insert_with(|| MutationInfo {
                    mutation_id: format!("{:010}", m.version),
                    statement: m.text.clone(),
                    create_time: m.create_time,
                    block_number: m.version,
                    is_done: true,
                    ..Default::default()
                });
                e.block_number = e.block_number.max(m.version);
                e.parts_to_do += todo.len() as u64;
                e.is_done &= todo.is_empty();
                e.parts_to_do_names.extend(todo);
                if let Some(f) = g.replica.mutation_failure(m.version)
                    && f.time >= e.latest_fail_time
                {
                    e.latest_failed_part = f.part;
                    e.latest_fail_time = f.time;
                    e.latest_fail_reason = f.reason;
                }
            }
        }
        by_id.into_values().collect()
    }
}
