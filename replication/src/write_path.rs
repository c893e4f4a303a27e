//! The write path of a node's groups: proposing a command (forwarded to
//! the leader when this node does not lead), and inserting a block —
//! staged or inline, through group commit for small ones — with its quorum.

use std::time::Duration;

use arrow::array::RecordBatch;
use openraft::error::{ClientWriteError, RaftError};
use storage::part::writer::Durability;

use crate::command::Command;
use crate::error::{ReplicationError, Result};
use crate::registry::{GroupSpec, InsertOutcome, NodeInner, Quorum, ReplicationNode, chrono_secs, majority, raft_err};
use crate::{GroupId, NodeId};

impl ReplicationNode {
    /// Proposes a command to the group's leader (forwarding when that is
    /// another node) and returns its outcome and log index.
    pub async fn propose(&self, group: GroupId, cmd: Command) -> Result<InsertOutcome> {
        self.inner.propose(group, cmd).await
    }

    /// The replicated insert of one block of one partition: stage here, push
    /// to the other members, propose once a majority holds it durably, and
    /// wait as `quorum` says. Small blocks with the default quorum go through
    /// group commit — the leader's, when another node leads: concurrent ones
    /// to the same group share one entry and one part.
    pub async fn insert(
        &self,
        spec: &GroupSpec,
        partition_value: Vec<String>,
        batch: RecordBatch,
        block_id: String,
        quorum: Quorum,
        quorum_timeout: Duration,
    ) -> Result<InsertOutcome> {
        let needed = match quorum {
            Quorum::Majority => majority(spec.members.len()),
            Quorum::Replicas(n) => n.max(majority(spec.members.len())),
            Quorum::All => spec.members.len(),
        };
        if needed > spec.members.len() {
            return Err(ReplicationError::TooFewLiveReplicas { alive: spec.members.len(), needed });
        }
        self.ensure_group(spec).await?;
        let t0 = std::time::Instant::now();
        let out = if quorum == Quorum::Majority && crate::group_commit::fits(&batch) {
            crate::forward::submit(&self.inner, spec, block_id, partition_value, batch).await?
        } else {
            self.inner.insert_blocks(spec, partition_value, batch, vec![block_id], quorum, needed).await?
        };
        if quorum != Quorum::Majority {
            self.wait_applied(spec, out.index, needed, quorum_timeout).await?;
        }
        if let Some(g) = self.inner.group(spec.group) {
            g.acknowledged(out.index);
        }
        tracing::debug!(group = spec.group, ms = t0.elapsed().as_secs_f64() * 1e3, "insert committed");
        Ok(out)
    }
}

impl NodeInner {
    /// Stages, replicates and proposes one block holding the rows of the
    /// inserted blocks `block_ids` (more than one: a group commit).
    pub(crate) async fn insert_blocks(
        &self,
        spec: &GroupSpec,
        partition_value: Vec<String>,
        batch: RecordBatch,
        block_ids: Vec<String>,
        quorum: Quorum,
        needed: usize,
    ) -> Result<InsertOutcome> {
        let group = self.group(spec.group).ok_or(ReplicationError::NoSuchGroup(spec.group))?;
        let replica = group.replica.clone();
        let pid = spec.partition_id.clone();
        // A small block rides in its log entry: written here without fsync,
        // durable once the entry is, and never pushed to staging areas.
        let small = batch.get_array_memory_size() as u64 <= 4 * crate::command::INLINE_MAX_BYTES;
        let t0 = std::time::Instant::now();
        // A small block is encoded in memory and rides in its entry; a larger
        // one is written to staging without fsync and synced below while it
        // is pushed to the peers, which sync their copies meanwhile.
        let (staged, inline) = tokio::task::spawn_blocking(move || -> Result<_> {
            if small {
                let max = crate::command::INLINE_MAX_BYTES;
                let value = partition_value.clone();
                if let Some((staged, inline)) = crate::staging::encode_inline(&replica, &pid, value, &batch, max)? {
                    return Ok((staged, Some(inline)));
                }
            }
            let staged = crate::staging::stage_block(&replica, &pid, partition_value, &batch, Durability::Deferred)?;
            Ok((staged, None))
        })
        .await
        .map_err(raft_err)??;
        let staged_at = t0.elapsed();
        let mut holders = vec![self.id];
        if inline.is_some() && quorum != Quorum::Majority {
            // As ClickHouse: a quorum that cannot be reached fails up front.
            let others = spec.members.iter().copied().filter(|m| *m != self.id);
            let pings = others.map(|m| {
                let peers = self.peers.clone();
                async move { peers.ping(m, Duration::from_millis(500)).await }
            });
            let alive = 1 + futures::future::join_all(pings).await.into_iter().filter(|a| *a).count();
            if alive < needed {
                let _ = std::fs::remove_dir_all(group.replica.staging_dir().join(&staged.staged_id));
                return Err(ReplicationError::TooFewLiveReplicas { alive, needed });
            }
        }
        if inline.is_none() {
            let others: Vec<NodeId> = spec.members.iter().copied().filter(|m| *m != self.id).collect();
            let pushes = others.iter().map(|&m| {
                let peers = self.peers.clone();
                let staged = staged.clone();
                let g = spec.group;
                async move { (m, peers.push_part(m, g, &staged).await) }
            });
            let (dir, staging) = (staged.part_dir.clone(), group.replica.staging_dir());
            // With the staging directory's own entry, made by `stage_block`.
            let local = tokio::task::spawn_blocking(move || storage::part::writer::sync_part(&dir, &[&staging]));
            let (pushed, synced) = futures::future::join(futures::future::join_all(pushes), local).await;
            if let Err(e) = synced.map_err(raft_err).and_then(|r| r.map_err(ReplicationError::from)) {
                let _ = std::fs::remove_dir_all(group.replica.staging_dir().join(&staged.staged_id));
                return Err(e);
            }
            for (m, r) in pushed {
                match r {
                    Ok(()) => holders.push(m),
                    Err(e) => tracing::warn!(group = spec.group, node = m, error = %e, "staging push failed"),
                }
            }
            if holders.len() < majority(spec.members.len()) || (quorum != Quorum::Majority && holders.len() < needed) {
                let _ = std::fs::remove_dir_all(group.replica.staging_dir().join(&staged.staged_id));
                return Err(ReplicationError::TooFewLiveReplicas { alive: holders.len(), needed });
            }
        }
        let pushed_at = t0.elapsed();
        fail::fail_point!("insert:after-stage", |_| Err(ReplicationError::Raft("failpoint insert:after-stage".into())));
        let mut ids = block_ids.into_iter();
        let block_id = ids.next().unwrap_or_default();
        let cmd = Command::Insert {
            block_id,
            batched: ids.collect(),
            staged_id: staged.staged_id.clone(),
            partition_id: spec.partition_id.clone(),
            rows: staged.rows,
            files: staged.files.clone(),
            holders,
            ts: chrono_secs(),
            inline,
        };
        let out = self.propose(spec.group, cmd).await;
        tracing::debug!(
            group = spec.group,
            stage_ms = staged_at.as_secs_f64() * 1e3,
            push_ms = (pushed_at - staged_at).as_secs_f64() * 1e3,
            commit_ms = (t0.elapsed() - pushed_at).as_secs_f64() * 1e3,
            "insert phases"
        );
        out
    }

    /// Proposes on the local Raft when it leads, else forwards to the leader;
    /// retries while there is no leader, for up to 10 seconds.
    pub(crate) async fn propose(&self, group: GroupId, cmd: Command) -> Result<InsertOutcome> {
        let g = self.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        crate::hibernate::wake(&g);
        let deadline = tokio::time::Instant::now() + self.propose_timeout;
        let mut submitted = false;
        loop {
            let leader = g.raft.current_leader().await;
            let attempt: std::result::Result<(), String> = match leader {
                Some(l) if l == self.id => {
                    submitted = true;
                    // A leader cut off from its majority never commits; the
                    // outcome is then unknown, and a retry (same block id) safe.
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match tokio::time::timeout(left, g.raft.client_write(cmd.clone())).await {
                        Ok(Ok(r)) => return Ok(InsertOutcome { response: r.data, index: r.log_id.index }),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                            Err("leadership moved".to_string())
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("not committed in time: the leader may have lost its majority".to_string()),
                    }
                }
                Some(l) => {
                    submitted = true;
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match self.peers.propose(l, group, &cmd, left.max(Duration::from_millis(100))).await {
                        Ok(out) => return Ok(out),
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => Err("no leader elected".to_string()),
            };
            if let Err(reason) = attempt {
                if tokio::time::Instant::now() >= deadline {
                    return Err(if submitted {
                        ReplicationError::UnknownStatus(reason)
                    } else {
                        ReplicationError::NoLeader { group, reason }
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
