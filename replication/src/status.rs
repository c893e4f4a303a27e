//! What a group's status shows outside this crate (system tables): plain
//! values, so no openraft type leaves the replication crate.

use crate::NodeId;
use crate::registry::Group;

/// A group's Raft state on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// The node this one believes leads the group.
    pub leader: Option<NodeId>,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub term: u64,
    pub last_log_index: u64,
    pub last_applied: u64,
    /// The last log index the latest snapshot covers.
    pub snapshot_index: u64,
    /// The last log index purged from the log.
    pub purged_index: u64,
    /// On the leader, how many members have acknowledged an entry of its
    /// term, itself included; `None` elsewhere.
    pub acknowledging: Option<u64>,
}

impl Group {
    /// This node's view of the group's Raft state.
    pub fn status(&self) -> GroupStatus {
        let m = self.raft.metrics();
        let m = m.borrow();
        GroupStatus {
            leader: m.current_leader,
            state: format!("{:?}", m.state),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            acknowledging: m
                .replication
                .as_ref()
                .map(|r| 1 + r.iter().filter(|(id, l)| **id != m.id && l.is_some()).count() as u64),
        }
    }
}
