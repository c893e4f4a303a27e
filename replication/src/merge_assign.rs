//! Merge assignment: the group leader runs the storage merge selector and
//! proposes what it picks (`assign_merge`, `OPTIMIZE`); a merge's proposer
//! then proposes its result's checksums for every replica to compare.

use std::time::Duration;

use openraft::LogId;

use crate::command::{Command, Response};
use crate::error::{ReplicationError, Result};
use crate::registry::{Group, InsertOutcome, NodeInner, ReplicationNode};
use crate::{GroupId, NodeId};

/// After a merge proposal failed (it may still commit): no new selection
/// until everything in the log now has applied here.
fn fence_merges(g: &Group) {
    let (term, last) = {
        let m = g.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.last_log_index.unwrap_or(0))
    };
    let mut fence = g.merge_fence.lock().unwrap_or_else(|p| p.into_inner());
    *fence = if fence.0 == term { (term, fence.1.max(last)) } else { (term, last) };
}

/// Whether a leader in `term` must not choose a merge yet. It needs to have
/// applied an entry of its own term (then it applied every entry an earlier
/// term committed: merges already in the log are running, not candidates),
/// and, after a failed merge proposal of this term, everything that was in
/// the log then. A fence from an earlier term is moot once the first rule
/// holds: its proposal either applied already or was truncated for good —
/// and its index may never be reached (the log can be shorter after a
/// truncation), which would stop the group's merges until enough new writes.
fn merge_fenced(term: u64, applied: Option<LogId<NodeId>>, fence: (u64, u64)) -> bool {
    let Some(applied) = applied else { return true };
    applied.leader_id.term != term || (fence.0 == term && applied.index < fence.1)
}

impl ReplicationNode {
    /// One round of merge assignment: on each group this node leads, run the
    /// merge selector and propose what it picks. Returns how many merges were
    /// proposed.
    pub async fn assign_merges(&self) -> Result<usize> {
        let mut n = 0;
        for g in self.groups() {
            n += usize::from(self.assign_merge(&g).await?);
        }
        Ok(n)
    }

    /// Merge assignment for one group: when this node leads it and the
    /// group is awake, proposes the merge the selector picks. A quiesced
    /// group had no writes since its last selection found nothing (a pick
    /// would have woken it), so it is skipped; leadership is read from
    /// metrics, not asked of the group, so an idle group stays asleep.
    pub async fn assign_merge(&self, g: &Group) -> Result<bool> {
        if (g.is_quiesced() && !g.replica.has_mutation_work())
            || g.raft.metrics().borrow().current_leader != Some(self.inner.id)
        {
            return Ok(false);
        }
        let _selecting = g.merge_lock.lock().await;
        {
            // Sources must not be parts a merge already in the log takes: a
            // merge over them finds them gone on every replica (see
            // `Replica::skip`). Merges applied here are running (not
            // candidates); a new leader has applied every earlier term's
            // entry once it applied one of its own term (its first entry).
            let m = g.raft.metrics();
            let m = m.borrow();
            let fence = *g.merge_fence.lock().unwrap_or_else(|p| p.into_inner());
            if merge_fenced(m.current_term, m.last_applied, fence) {
                return Ok(false);
            }
        }
        let s = &g.replica.table.def.settings;
        let settings = storage::merge::selector::SelectorSettings {
            max_parts_to_merge_at_once: s.max_parts_to_merge_at_once,
            max_total_bytes: s.max_bytes_to_merge_at_max_space_in_pool,
            ..Default::default()
        };
        let mut assigned = false;
        if let Some(names) = storage::merge::selector::select_merge(&g.replica.merge_candidates(), &settings) {
            let sources = names.iter().map(|n| n.to_string()).collect();
            let merger = self.single_replica_merger(g);
            let merge = Command::Merge { sources, mode: Default::default(), merger };
            self.propose_and_check(g.spec.group, merge).await.inspect_err(|_| fence_merges(g))?;
            assigned = true;
        }
        // Chosen after the merge applied here: its sources are busy now.
        if let Some((part, version)) = g.replica.next_part_to_mutate() {
            let mutate = Command::MutatePart { part, version };
            self.propose_and_check(g.spec.group, mutate).await.inspect_err(|_| fence_merges(g))?;
            assigned = true;
        }
        Ok(assigned)
    }

    /// Proposes a merge or part mutation and returns once it applied here;
    /// its checksums are proposed in the background once the result is in
    /// place, so assignment never waits for a long merge or rewrite (merges
    /// of other parts and the next part's rewrite would wait behind it).
    async fn propose_and_check(&self, group: GroupId, cmd: Command) -> Result<()> {
        let out = self.inner.propose(group, cmd).await?;
        let Response::Merged { part, .. } = out.response else { return Ok(()) };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = check_result(&inner, group, &part).await {
                tracing::debug!(group, part, error = %e, "merge result check not proposed");
            }
        });
        Ok(())
    }

    /// This node, when the group's table merges on a single replica.
    fn single_replica_merger(&self, g: &Group) -> Option<NodeId> {
        (g.replica.settings.execute_merges_on_single_replica_time_threshold > 0).then_some(self.inner.id)
    }

    /// `OPTIMIZE`: proposes the merges the optimize selector picks in a group.
    pub async fn optimize(&self, group: GroupId, final_: bool, mode: storage::ReduceMode) -> Result<usize> {
        Ok(self.optimize_indexes(group, final_, mode).await?.len())
    }

    /// `OPTIMIZE`, returning the log index of each merge it proposed.
    pub async fn optimize_indexes(&self, group: GroupId, final_: bool, mode: storage::ReduceMode) -> Result<Vec<u64>> {
        let g = self.inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
        let _selecting = g.merge_lock.lock().await;
        // Every merge already in the log applied here first (running, so
        // not candidates): see `assign_merge`.
        self.read_barrier(group, Duration::from_secs(30)).await?;
        let cands = g.replica.merge_candidates();
        let picks = storage::merge::selector::select_optimize(
            &cands,
            None,
            final_,
            g.replica.table.def.settings.max_parts_to_merge_at_once,
        );
        let mut out = Vec::new();
        let merger = self.single_replica_merger(&g);
        for names in picks {
            let sources = names.iter().map(|n| n.to_string()).collect();
            let merge = Command::Merge { sources, mode, merger };
            out.push(self.merge(group, merge).await.inspect_err(|_| fence_merges(&g))?.index);
        }
        Ok(out)
    }

    /// Proposes a merge; once this replica's result is in place (merges run
    /// in the background), proposes its checksums, which every replica
    /// compares with its own result (merges must be byte-identical). The
    /// returned index is the check's: a replica that applied it has merged.
    pub async fn merge(&self, group: GroupId, merge: Command) -> Result<InsertOutcome> {
        let out = self.inner.propose(group, merge).await?;
        let Response::Merged { part, .. } = &out.response else { return Ok(out) };
        Ok(check_result(&self.inner, group, part).await?.unwrap_or(out))
    }
}

/// Waits until this replica's result `part` of a merge or part mutation is
/// in place and proposes its checksums; `None` when the result never came
/// (refused, given up, or already merged further).
async fn check_result(inner: &NodeInner, group: GroupId, part: &str) -> Result<Option<InsertOutcome>> {
    let g = inner.group(group).ok_or(ReplicationError::NoSuchGroup(group))?;
    let name: storage::PartName = part.parse()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    let files = loop {
        let covering = g.replica.snapshot().into_iter().find(|p| p.name.contains(&name));
        match covering {
            Some(p) if p.name == name => break p.meta.files.clone(),
            Some(_) => return Ok(None),
            // Neither in place nor running: its swap was refused.
            None if !g.replica.is_merging(part) => return Ok(None),
            None if tokio::time::Instant::now() >= deadline => return Ok(None),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let check = Command::CheckPart { part: part.to_string(), files, source: inner.id };
    inner.propose(group, check).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn a_leader_merges_once_it_applied_its_own_term_and_its_fence() {
        assert!(merge_fenced(3, None, (0, 0)));
        assert!(merge_fenced(3, applied(2, 10), (0, 0)), "nothing of its own term applied yet");
        assert!(!merge_fenced(3, applied(3, 10), (0, 0)));
        assert!(merge_fenced(3, applied(3, 10), (3, 12)), "a failed proposal of this term may still commit");
        assert!(!merge_fenced(3, applied(3, 12), (3, 12)));
    }

    #[test]
    fn regression_a_fence_from_an_earlier_term_does_not_stop_merges() {
        // Leader in term 2 with a log up to 20 when a merge proposal failed;
        // it lost leadership, its uncommitted tail was truncated, and it leads
        // again in term 4 from a shorter log: index 20 may be far off.
        assert!(!merge_fenced(4, applied(4, 15), (2, 20)));
    }
}
