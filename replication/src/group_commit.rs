//! Group commit of small inserts (Doris's group commit, ClickHouse's async
//! inserts, but acknowledged only once durable): small blocks arriving at a
//! node for the same group while an entry of that group is being committed
//! wait, and then go together as one `Insert` — one entry, one part, one
//! dedup record per block. With one client nothing waits (the first block
//! is proposed at once); under concurrency the cost per insert of the log,
//! the part files on every replica and the merges of tiny parts is shared.
//!
//! Dedup stays per block: if any block id of an entry is inside the window,
//! applying it is a no-op on every replica ([`Response::BatchRejected`]); the
//! duplicates are answered as deduplicated and the rest proposed again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;

use crate::GroupId;
use crate::command::{INLINE_MAX_BYTES, Response};
use crate::error::{ReplicationError, Result};
use crate::registry::{GroupSpec, InsertOutcome, NodeInner, Quorum};

/// The most in-memory bytes of blocks one entry carries.
const MAX_BATCH_BYTES: usize = 4 * INLINE_MAX_BYTES as usize;

/// The most bytes of blocks waiting in one group's queue. While the group
/// cannot commit (no quorum) blocks would otherwise pile up in memory for
/// as long as clients keep sending; past this they are refused at once.
pub(crate) const MAX_QUEUE_BYTES: usize = 64 << 20;

/// Whether a block goes through group commit.
pub(crate) fn fits(batch: &RecordBatch) -> bool {
    batch.get_array_memory_size() <= MAX_BATCH_BYTES
}

/// A block waiting for its entry.
pub(crate) struct Pending {
    block_id: String,
    partition_value: Vec<String>,
    batch: RecordBatch,
    bytes: usize,
    reply: Option<tokio::sync::oneshot::Sender<Result<InsertOutcome>>>,
    queued_at: std::time::Instant,
}

impl Pending {
    pub(crate) fn new(block_id: String, partition_value: Vec<String>, batch: RecordBatch) -> Pending {
        let bytes = batch.get_array_memory_size();
        Pending { block_id, partition_value, batch, bytes, reply: None, queued_at: std::time::Instant::now() }
    }

    fn answer(&mut self, r: Result<InsertOutcome>) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(r);
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    /// Bytes of the blocks in `items`.
    bytes: usize,
    /// A task is committing this group's queue.
    flushing: bool,
}

/// The waiting blocks of every group on a node.
#[derive(Default)]
pub(crate) struct Queues {
    groups: Mutex<HashMap<GroupId, Queue>>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, Queue>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a block; true when no task flushes the group's queue yet (the
    /// caller starts one). Refused when the queue holds `limit` bytes.
    fn push(&self, group: GroupId, item: Pending, limit: usize) -> Result<bool> {
        let mut groups = self.lock();
        let q = groups.entry(group).or_default();
        if !q.items.is_empty() && q.bytes + item.bytes > limit {
            return Err(ReplicationError::QueueFull { group, bytes: q.bytes, limit });
        }
        q.bytes += item.bytes;
        q.items.push_back(item);
        Ok(!std::mem::replace(&mut q.flushing, true))
    }

    /// Takes the next entry's blocks: in arrival order, up to the size
    /// limit (at least one), never two with the same id (the second waits
    /// for the next entry, where it will be found a duplicate). Empty:
    /// the queue is drained and no longer flushing.
    fn take(&self, group: GroupId) -> Vec<Pending> {
        let mut groups = self.lock();
        let Some(q) = groups.get_mut(&group) else { return Vec::new() };
        let mut out: Vec<Pending> = Vec::new();
        let mut ids = HashSet::new();
        let mut bytes = 0;
        let mut rest = VecDeque::new();
        while let Some(p) = q.items.pop_front() {
            if !out.is_empty() && (bytes + p.bytes > MAX_BATCH_BYTES || ids.contains(&p.block_id)) {
                rest.push_back(p);
                continue;
            }
            bytes += p.bytes;
            ids.insert(p.block_id.clone());
            out.push(p);
        }
        q.items = rest;
        q.bytes -= bytes;
        if out.is_empty() {
            groups.remove(&group);
        }
        out
    }

    /// Puts blocks back at the head of the queue, keeping their order.
    fn requeue(&self, group: GroupId, items: Vec<Pending>) {
        let mut groups = self.lock();
        let q = groups.entry(group).or_default();
        for p in items.into_iter().rev() {
            q.bytes += p.bytes;
            q.items.push_front(p);
        }
    }
}

/// Queues a small block of `spec`'s group and waits for the entry that
/// carries it to commit and apply here.
pub(crate) async fn submit(inner: &Arc<NodeInner>, spec: &GroupSpec, mut item: Pending) -> Result<InsertOutcome> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    item.reply = Some(tx);
    if inner.group_commit.push(spec.group, item, MAX_QUEUE_BYTES)? {
        // A task of its own: the caller that started it must not wait for
        // everyone queued behind it.
        tokio::spawn(flush(inner.clone(), spec.clone()));
    }
    rx.await.map_err(|_| ReplicationError::UnknownStatus("the group commit of this insert was abandoned".into()))?
}

/// Commits the group's queue entry by entry until it is empty.
async fn flush(inner: Arc<NodeInner>, spec: GroupSpec) {
    loop {
        let items = inner.group_commit.take(spec.group);
        if items.is_empty() {
            return;
        }
        let requeue = commit(&inner, &spec, items).await;
        if !requeue.is_empty() {
            inner.group_commit.requeue(spec.group, requeue);
        }
    }
}

/// Commits one entry holding `items`, answers their callers, and returns
/// the blocks to propose again (those of a rejected entry that were not
/// duplicates).
async fn commit(inner: &Arc<NodeInner>, spec: &GroupSpec, mut items: Vec<Pending>) -> Vec<Pending> {
    let batch = if items.len() == 1 {
        Ok(items[0].batch.clone())
    } else {
        let schema = items[0].batch.schema();
        arrow::compute::concat_batches(&schema, items.iter().map(|p| &p.batch))
    };
    let batch = match batch {
        Ok(b) => b,
        Err(e) => {
            // Blocks of different shapes (a table altered in between): alone.
            tracing::debug!(group = spec.group, error = %e, "group commit: blocks do not concatenate");
            let mut first = items.remove(0);
            let one = first.batch.clone();
            let r = propose(inner, spec, first.partition_value.clone(), one, vec![first.block_id.clone()]).await;
            first.answer(r);
            return items;
        }
    };
    let ids: Vec<String> = items.iter().map(|p| p.block_id.clone()).collect();
    let value = items[0].partition_value.clone();
    let waited = items.iter().map(|p| p.queued_at.elapsed()).max().unwrap_or_default();
    tracing::debug!(group = spec.group, blocks = items.len(), wait_ms = waited.as_secs_f64() * 1e3, "group commit");
    match propose(inner, spec, value, batch, ids).await {
        Ok(InsertOutcome { response: Response::BatchRejected { duplicates }, index }) => {
            let mut again = Vec::new();
            for mut p in items {
                if duplicates.contains(&p.block_id) {
                    let block_id = p.block_id.clone();
                    p.answer(Ok(InsertOutcome { response: Response::Deduplicated { block_id }, index }));
                } else {
                    again.push(p);
                }
            }
            again
        }
        Ok(out) => {
            for p in &mut items {
                p.answer(Ok(out.clone()));
            }
            Vec::new()
        }
        Err(e) => {
            for p in &mut items {
                p.answer(Err(e.duplicate()));
            }
            Vec::new()
        }
    }
}

async fn propose(
    inner: &Arc<NodeInner>,
    spec: &GroupSpec,
    value: Vec<String>,
    batch: RecordBatch,
    ids: Vec<String>,
) -> Result<InsertOutcome> {
    let needed = crate::registry::majority(spec.members.len());
    inner.insert_blocks(spec, value, batch, ids, Quorum::Majority, needed).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn block(id: &str, rows: i64) -> Pending {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap();
        Pending::new(id.into(), vec![], batch)
    }

    /// Issue 18: a group's commit queue grew without bound while the group
    /// could not commit (no quorum). It is bounded in bytes: past the bound
    /// a block is refused at once with a clear error, and taking an entry's
    /// blocks frees their room.
    #[test]
    fn regression_the_commit_queue_is_bounded_in_bytes() {
        let q = Queues::default();
        let one = block("b0", 1000).bytes;
        let limit = 3 * one;
        assert!(q.push(7, block("b0", 1000), limit).unwrap(), "the first block starts the flush");
        assert!(!q.push(7, block("b1", 1000), limit).unwrap());
        assert!(!q.push(7, block("b2", 1000), limit).unwrap());
        let err = q.push(7, block("b3", 1000), limit).unwrap_err();
        assert!(matches!(err, ReplicationError::QueueFull { group: 7, .. }), "{err}");
        assert!(q.push(8, block("c0", 1000), limit).is_ok(), "another group has its own room");
        assert_eq!(q.take(7).len(), 3);
        assert!(q.push(7, block("b3", 1000), limit).is_ok(), "an entry taken frees its room");
    }
}
