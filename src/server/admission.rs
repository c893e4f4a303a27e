//! Query slots: a node runs at most `max_concurrent_queries` statements at
//! once (`[server]`; 0: no limit). A statement over the limit waits up to
//! its `queue_max_wait_ms` for a slot and then fails with
//! TOO_MANY_SIMULTANEOUS_QUERIES; waiting statements get slots by
//! `priority` (1 first, larger later, 0 — no priority — last) and, within
//! one priority, in arrival order. Shards' sub-queries of a Distributed
//! read arrive as statements too and count on the node that runs them, so
//! one heavy dashboard cannot starve small point queries of every slot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use query::error::QueryError;
use tokio::sync::oneshot;

/// A waiting statement: lower key first.
type Waiter = (Reverse<(u64, u64)>, WaiterTx);

struct WaiterTx(oneshot::Sender<()>);

impl PartialEq for WaiterTx {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for WaiterTx {}
impl PartialOrd for WaiterTx {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WaiterTx {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[derive(Default)]
struct State {
    running: usize,
    seq: u64,
    waiting: BinaryHeap<Waiter>,
}

/// The node's query slots.
#[derive(Clone)]
pub(crate) struct Admission {
    max: usize,
    state: Arc<Mutex<State>>,
}

/// A held slot, given back (to the best waiter) when dropped.
pub(crate) struct Slot(Option<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.release();
        }
    }
}

fn too_many(running: usize, max: usize, waited: Duration) -> QueryError {
    QueryError {
        code: 202,
        name: "TOO_MANY_SIMULTANEOUS_QUERIES",
        message: format!(
            "Too many simultaneous queries. Maximum: {max} ({running} running; waited {} ms, queue_max_wait_ms)",
            waited.as_millis()
        ),
    }
}

impl Admission {
    /// Slots for `max` statements at once (0: no limit).
    pub(crate) fn new(max: usize) -> Admission {
        Admission { max, state: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot, waiting up to `wait` behind statements of a better
    /// `priority` (0: none, after every numbered one).
    pub(crate) async fn enter(&self, priority: u64, wait: Duration) -> Result<Slot, QueryError> {
        if self.max == 0 {
            return Ok(Slot(None));
        }
        let rx = {
            let mut s = self.lock();
            if s.running < self.max && s.waiting.is_empty() {
                s.running += 1;
                return Ok(Slot(Some(self.clone())));
            }
            if wait.is_zero() {
                return Err(too_many(s.running, self.max, wait));
            }
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let key = (if priority == 0 { u64::MAX } else { priority }, s.seq);
            s.waiting.push((Reverse(key), WaiterTx(tx)));
            rx
        };
        let mut rx = rx;
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(())) => Ok(Slot(Some(self.clone()))),
            _ => {
                rx.close();
                if rx.try_recv().is_ok() {
                    // Handed a slot just as the wait ran out: pass it on.
                    self.release();
                }
                let mut s = self.lock();
                s.waiting.retain(|(_, tx)| !tx.0.is_closed());
                let running = s.running;
                drop(s);
                Err(too_many(running, self.max, wait))
            }
        }
    }

    fn release(&self) {
        let mut s = self.lock();
        // Hand the slot straight to the best waiter still waiting.
        while let Some((_, tx)) = s.waiting.pop() {
            if tx.0.send(()).is_ok() {
                return;
            }
        }
        s.running -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_go_by_priority_then_arrival_and_waiting_is_bounded() {
        let a = Admission::new(1);
        let held = a.enter(0, Duration::ZERO).await.unwrap();
        let e = a.enter(0, Duration::ZERO).await.err().unwrap();
        assert_eq!(e.code, 202);
        let e = a.enter(5, Duration::from_millis(50)).await.err().unwrap();
        assert!(e.message.contains("waited 50 ms"), "{}", e.message);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, prio) in [("none", 0), ("low", 9), ("high", 1), ("low2", 9)] {
            let (a, order) = (a.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = a.enter(prio, Duration::from_secs(10)).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "low", "low2", "none"]);
        assert_eq!(a.lock().running, 0);
        let unlimited = Admission::new(0);
        let _many: Vec<Slot> = futures_all(&unlimited).await;
    }

    async fn futures_all(a: &Admission) -> Vec<Slot> {
        let mut v = Vec::new();
        for _ in 0..100 {
            v.push(a.enter(0, Duration::ZERO).await.unwrap());
        }
        v
    }
}
