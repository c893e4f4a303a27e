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
            let mut leaders: Vec<NodeId> = Vec::new();
            let metrics: Vec<_> = groups.iter().map(|g| g.raft.metrics().borrow().clone()).collect();
            for m in &metrics {
                if let Some(l) = m.current_leader
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
            activity.retain(|id, _| groups.iter().any(|g| g.spec.group == *id));
            for (g, m) in groups.iter().zip(metrics) {
                let a = activity.entry(g.spec.group).or_default();
                let state = (m.last_log_index, m.last_applied.map(|l| l.index));
                if a.last != Some(state) {
                    a.last = Some(state);
                    a.since = Some(now);
                    wake(g);
                    continue;
                }
                let idle = a.since.is_some_and(|s| now.duration_since(s) >= idle_after);
                match m.current_leader {
                    Some(l) if l == node.id => {
                        let caught_up = m
                            .replication
                            .as_ref()
                            .is_some_and(|r| r.iter().all(|(_, matched)| matched.map(|x| x.index) == m.last_log_index));
                        if idle && caught_up {
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
