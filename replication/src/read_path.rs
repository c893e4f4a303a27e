//! The read path of a node's groups: read barriers for sequentially
//! consistent reads, read-your-writes on the node that acknowledged an
//! insert, and waiting for replicas to apply an entry (quorum inserts,
//! `alter_sync`, `mutations_sync`), plus the queue and progress views.

use std::time::Duration;

use crate::command::Command;
use crate::error::{ReplicationError, Result};
use crate::log_store::MetaTag;
use crate::registry::{Group, GroupSpec, READ_YOUR_WRITES_WAIT, ReplicationNode, raft_err};
use crate::{GroupId, NodeId};

impl Group {
    pub(crate) fn applied_at_least(&self, index: u64) -> bool {
        self.replica.applied().0.is_some_and(|l| l.index >= index)
    }

    /// Whether a read here would wait in [`Group::read_your_writes`].
    pub fn read_fence_pending(&self) -> bool {
        let fence = self.ack_fence.load(std::sync::atomic::Ordering::Acquire);
        fence != 0 && !self.applied_at_least(fence)
    }

    /// Read-your-writes on the node that took an insert, as a ClickHouse
    /// replica shows the parts it wrote: a read here first waits until this
    /// replica applied every insert it acknowledged. The insert itself is
    /// acknowledged once committed and applied on the leader; making it
    /// also wait for this follower's apply (it learns the commit on the
    /// leader's next AppendEntries, behind its own fsync) put a follower's
    /// fsync in every forwarded insert's latency (see
    /// `benches/results/DECISIONS.md`), while a read that follows an
    /// insert rarely finds anything left to wait for. Bounded: a replica
    /// cut off right after the commit serves its applied state and drops
    /// the fence (it lags, as any replica may), so it does not stall every
    /// read.
    pub async fn read_your_writes(&self) {
        use std::sync::atomic::Ordering;
        let fence = self.ack_fence.load(Ordering::Acquire);
        if fence == 0 || self.applied_at_least(fence) {
            return;
        }
        let wait = self.raft.wait(Some(READ_YOUR_WRITES_WAIT));
        if let Err(e) = wait.applied_index_at_least(Some(fence), "read your writes").await {
            tracing::debug!(group = self.spec.group, fence, error = %e, "read before this replica applied an insert it acknowledged");
            let _ = self.ack_fence.compare_exchange(fence, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Notes an insert acknowledged here at `index`.
    pub(crate) fn acknowledged(&self, index: u64) {
        if !self.applied_at_least(index) {
            self.ack_fence.fetch_max(index, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl ReplicationNode {
    /// `mutations_sync = 2` / `alter_sync = 2`: waits until every member that
    /// answers a ping has applied `index` (as ClickHouse waits for active
    /// replicas); a member that stops answering is not waited for.
    pub async fn wait_live_replicas(&self, group: GroupId, index: u64, timeout: Duration) -> Result<()> {
        let g = self.inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        let deadline = tokio::time::Instant::now() + timeout;
        for &m in &g.spec.members {
            loop {
                let applied = if m == self.inner.id {
                    g.replica.applied().0.map(|l| l.index)
                } else if !self.inner.peers.ping(m, Duration::from_millis(300)).await {
                    break;
                } else {
                    self.inner.peers.applied(m, group).await.ok().flatten()
                };
                if applied.is_some_and(|a| a >= index) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ReplicationError::UnknownStatus(format!(
                        "replica {m} did not apply entry {index} of group {group} in {timeout:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Waits until `needed` members have applied `index`.
    pub async fn wait_applied(&self, spec: &GroupSpec, index: u64, needed: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut n = 0;
            for &m in &spec.members {
                let applied = if m == self.inner.id {
                    self.inner.group(spec.group).and_then(|g| g.replica.applied().0).map(|l| l.index)
                } else {
                    self.inner.peers.applied(m, spec.group).await.ok().flatten()
                };
                if applied.is_some_and(|a| a >= index) {
                    n += 1;
                }
            }
            if n >= needed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::UnknownStatus(format!(
                    "the insert committed at index {index} but only {n} of the {needed} replicas required applied it in time"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Parts each other member of `group` still has to rewrite for each of
    /// `versions` (mutations), or why it could not tell.
    pub async fn parts_to_do_elsewhere(
        &self,
        group: GroupId,
        versions: &[i64],
        timeout: Duration,
    ) -> Result<Vec<(NodeId, std::result::Result<Vec<u64>, String>)>> {
        let g = self.inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        let asks = g.spec.members.iter().copied().filter(|m| *m != self.inner.id).map(|m| {
            let peers = self.inner.peers.clone();
            async move { (m, peers.parts_to_do(m, group, versions, timeout).await.map_err(|e| e.to_string())) }
        });
        Ok(futures::future::join_all(asks).await)
    }

    /// A read barrier (`select_sequential_consistency = 1`): returns once this
    /// replica has applied everything committed before the call, as the
    /// group's leader confirms with a quorum (a read index). Fails, rather
    /// than allow a stale read, when no leader with a quorum answers in `timeout`.
    pub async fn read_barrier(&self, group: GroupId, timeout: Duration) -> Result<()> {
        let g = self.inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        crate::hibernate::wake(&g);
        let deadline = tokio::time::Instant::now() + timeout;
        let no_leader = |reason: String| ReplicationError::NoLeader { group, reason };
        let index = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(no_leader("no leader confirmed a read index in time".into()));
            }
            match g.raft.current_leader().await {
                Some(l) if l == self.inner.id => match tokio::time::timeout(left, g.raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => tracing::debug!(group, error = %e, "read index on the leader"),
                    Err(_) => return Err(no_leader("the leader could not reach a quorum".into())),
                },
                Some(l) => match self.inner.peers.read_index(l, group, left).await {
                    Ok(i) => break i,
                    Err(e) => tracing::debug!(group, error = %e, "read index from the leader"),
                },
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(index) = index else { return Ok(()) };
        while g.replica.applied().0.is_none_or(|a| a.index < index) {
            if tokio::time::Instant::now() >= deadline {
                return Err(no_leader(format!("this replica did not apply up to the read index {index} in time")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Entries of a group's log this replica has not applied yet (its
    /// replication queue), oldest first.
    pub async fn pending_entries(&self, group: GroupId) -> Result<Vec<(u64, Command)>> {
        use openraft::RaftLogReader;
        let g = self.inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        let from = g.replica.applied().0.map(|l| l.index + 1).unwrap_or(0);
        let mut log = self.inner.db.group(group);
        let entries = log.try_get_log_entries(from..).await.map_err(raft_err)?;
        Ok(entries
            .into_iter()
            .filter_map(|e| match e.payload {
                openraft::EntryPayload::Normal(c) => Some((e.log_id.index, c)),
                _ => None,
            })
            .collect())
    }

    /// The group's commit index as this node last persisted it.
    pub fn committed(&self, group: GroupId) -> Option<u64> {
        let v = self.inner.db.get_meta(group, MetaTag::Committed).ok()??;
        let c: Option<openraft::LogId<NodeId>> = crate::log_store::decode(&v).ok()?;
        c.map(|l| l.index)
    }
}
