//! Quiescing idle groups (TiKV's "hibernate regions"): a node hosting
//! thousands of groups must not spend a core on heartbeats and election
//! timers of groups nobody writes to.
//!
//! A group whose log has not moved for `idle_after` stops its Raft ticks: on
//! the leader once every follower has matched its log, on a follower while
//! its leader's node answers the per-node ping. Liveness is then one ping per
//! peer, not one heartbeat per group. A group wakes (ticks again) when its
//! log moves, when a proposal arrives, or when its leader's node stops
//! answering — then the followers' election timers run and elect a new one.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use crate::NodeId;
use crate::registry::{Group, NodeInner};

/// What the hibernation loop remembers of a group.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    last: Option<(Option<u64>, Option<u64>)>,
    since: Option<Instant>,
}

/// The few fields of a group's metrics the loop looks at.
struct View {
    leader: Option<NodeId>,
    last_log: Option<u64>,
    applied: Option<u64>,
    /// On a leader: every follower has matched the last log entry.
    followers_caught_up: bool,
}

impl View {
    fn of(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> View {
        let caught_up = m
            .replication
            .as_ref()
            .is_some_and(|r| r.values().all(|matched| matched.map(|x| x.index) == m.last_log_index));
        View {
            leader: m.current_leader,
            last_log: m.last_log_index,
            applied: m.last_applied.map(|l| l.index),
            followers_caught_up: caught_up,
        }
    }
}

/// Turns a group's ticks back on.
pub(crate) fn wake(g: &Group) {
    if g.quiesced.swap(false, std::sync::atomic::Ordering::SeqCst) {
        g.raft.runtime_config().tick(true);
    }
}

fn quiesce(g: &Group) {
    if !g.quiesced.swap(true, std::sync::atomic::Ordering::SeqCst) {
        g.raft.runtime_config().tick(false);
    }
}

/// Runs the loop until the node goes away.
pub(crate) fn spawn(node: Weak<NodeInner>, idle_after: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut activity: HashMap<u64, Activity> = HashMap::new();
        let period = (idle_after / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            tokio::time::sleep(period).await;
            let Some(node) = node.upgrade() else { break };
            if node.stopped() {
                break;
            }
            let groups = node.all_groups();
            // What the loop needs of each group's metrics, read through the
            // watch borrow: cloning a thousand `RaftMetrics` (each with its
            // replication map) every period was a visible share of an idle node.
            let views: Vec<View> = groups.iter().map(|g| View::of(&g.raft.metrics().borrow())).collect();
            let mut leaders: Vec<NodeId> = Vec::new();
            for v in &views {
                if let Some(l) = v.leader
                    && l != node.id
                    && !leaders.contains(&l)
                {
                    leaders.push(l);
                }
            }
            let pings = leaders.iter().map(|&l| {
                let peers = node.peers.clone();
                async move { (l, peers.ping(l, period).await) }
            });
            let alive: HashMap<NodeId, bool> = futures::future::join_all(pings).await.into_iter().collect();
            let now = Instant::now();
            // A set, not a scan of the groups per entry: O(groups), not O(groups²).
            let live: std::collections::HashSet<u64> = groups.iter().map(|g| g.spec.group).collect();
            activity.retain(|id, _| live.contains(id));
            for (g, v) in groups.iter().zip(views) {
                let a = activity.entry(g.spec.group).or_default();
                let state = (v.last_log, v.applied);
                if a.last != Some(state) {
                    a.last = Some(state);
                    a.since = Some(now);
                    wake(g);
                    continue;
                }
                let idle = a.since.is_some_and(|s| now.duration_since(s) >= idle_after);
                match v.leader {
                    Some(l) if l == node.id => {
                        if idle && v.followers_caught_up {
                            quiesce(g);
                        }
                    }
                    Some(l) => {
                        if alive.get(&l).copied().unwrap_or(false) {
                            if idle {
                                quiesce(g);
                            }
                        } else {
                            wake(g);
                        }
                    }
                    None => wake(g),
                }
            }
        }
    })
}
