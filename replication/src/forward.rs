//! Small blocks a follower receives go to the group leader's group commit.
//!
//! With each node batching only its own clients' blocks, a group had one
//! stream of entries per node: three times the entries, parts and merges of
//! one stream, and a follower's block waited for its node's previous entry
//! and then a forwarded proposal anyway. Sending every insert to the leader
//! costs one small RPC, which the forwarded proposal cost already (the
//! measurement: `benches/results/DECISIONS.md`).
//!
//! A forward that gets no answer (the leader died or is cut off) falls back
//! to this node's own group commit with the same block id: if the leader did
//! commit the block, the dedup window makes the retry a no-op.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::command::Response;
use crate::error::{ReplicationError, Result};
use crate::group_commit::Pending;
use crate::registry::{GroupSpec, InsertOutcome, NodeInner};
use crate::transport::pb::BlockRequest;

/// How a leader's failure of a forwarded block crosses the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    TooFewLiveReplicas { alive: usize, needed: usize },
    UnknownStatus(String),
    NoLeader { group: u64, reason: String },
    Other(String),
    QueueFull { group: u64, bytes: usize, limit: usize },
}

impl From<&ReplicationError> for WireError {
    fn from(e: &ReplicationError) -> Self {
        match e {
            ReplicationError::TooFewLiveReplicas { alive, needed } => {
                WireError::TooFewLiveReplicas { alive: *alive, needed: *needed }
            }
            ReplicationError::UnknownStatus(s) => WireError::UnknownStatus(s.clone()),
            ReplicationError::NoLeader { group, reason } => {
                WireError::NoLeader { group: *group, reason: reason.clone() }
            }
            ReplicationError::QueueFull { group, bytes, limit } => {
                WireError::QueueFull { group: *group, bytes: *bytes, limit: *limit }
            }
            e => WireError::Other(e.to_string()),
        }
    }
}

impl WireError {
    fn into_error(self, leader: NodeId) -> ReplicationError {
        match self {
            WireError::TooFewLiveReplicas { alive, needed } => ReplicationError::TooFewLiveReplicas { alive, needed },
            WireError::UnknownStatus(s) => ReplicationError::UnknownStatus(s),
            WireError::NoLeader { group, reason } => ReplicationError::NoLeader { group, reason },
            WireError::Other(s) => ReplicationError::Raft(format!("leader {leader}: {s}")),
            WireError::QueueFull { group, bytes, limit } => ReplicationError::QueueFull { group, bytes, limit },
        }
    }
}

/// The reply of `InsertBlock`.
pub(crate) type WireOutcome = std::result::Result<(Response, u64), WireError>;

/// The group commit of one small block: the leader's when another node
/// leads and answers, else this node's.
pub(crate) async fn submit(
    inner: &Arc<NodeInner>,
    spec: &GroupSpec,
    block_id: String,
    partition_value: Vec<String>,
    batch: RecordBatch,
) -> Result<InsertOutcome> {
    let leader = match inner.group(spec.group) {
        Some(g) => g.raft.current_leader().await.filter(|l| *l != inner.id),
        None => None,
    };
    if let Some(leader) = leader {
        let req = BlockRequest {
            group: spec.group,
            block_id: block_id.clone(),
            partition_value: partition_value.clone(),
            ipc: encode(&batch)?,
        };
        let start = Instant::now();
        // The leader's own proposal gives up after `propose_timeout`.
        let timeout = inner.propose_timeout + Duration::from_secs(5);
        match inner.peers.insert_block(leader, req, timeout).await {
            Ok(Ok((response, index))) => {
                inner.forwarded.fetch_add(1, Ordering::Relaxed);
                return Ok(InsertOutcome { response, index });
            }
            Ok(Err(e)) => return Err(e.into_error(leader)),
            Err(e) if start.elapsed() >= inner.propose_timeout => {
                return Err(ReplicationError::UnknownStatus(format!("leader {leader} did not answer: {e}")));
            }
            Err(e) => {
                tracing::debug!(group = spec.group, leader, error = %e, "forwarding a block failed; committing it here");
            }
        }
    }
    crate::group_commit::submit(inner, spec, Pending::new(block_id, partition_value, batch)).await
}

/// On the leader: a forwarded block joins this node's group commit.
pub(crate) async fn serve(inner: &Arc<NodeInner>, spec: &GroupSpec, req: BlockRequest) -> Result<WireOutcome> {
    let batch = decode(&req.ipc)?;
    let item = Pending::new(req.block_id, req.partition_value, batch);
    Ok(match crate::group_commit::submit(inner, spec, item).await {
        Ok(out) => Ok((out.response, out.index)),
        Err(e) => Err(WireError::from(&e)),
    })
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let err = |e: arrow::error::ArrowError| ReplicationError::Corrupted(format!("encoding a block to forward: {e}"));
    let mut buf = Vec::with_capacity(batch.get_array_memory_size());
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).map_err(err)?;
    w.write(batch).map_err(err)?;
    w.finish().map_err(err)?;
    drop(w);
    Ok(buf)
}

/// The one block of a forwarded IPC stream; a peer's bytes, so any flaw is
/// an error, never a panic.
fn decode(bytes: &[u8]) -> Result<RecordBatch> {
    let err = |e: arrow::error::ArrowError| ReplicationError::Corrupted(format!("a forwarded block: {e}"));
    let mut r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(err)?;
    let batch = r.next().ok_or_else(|| ReplicationError::Corrupted("a forwarded block holds no rows".into()))?;
    let batch = batch.map_err(err)?;
    if r.next().is_some() {
        return Err(ReplicationError::Corrupted("a forwarded block holds more than one batch".into()));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn a_block_survives_the_wire_and_garbage_is_an_error() {
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            ("v", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
        ])
        .unwrap();
        let bytes = encode(&batch).unwrap();
        assert_eq!(decode(&bytes).unwrap(), batch);
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode(b"not arrow").is_err());
    }

    #[test]
    fn errors_keep_their_kind_across_the_wire() {
        let e = ReplicationError::TooFewLiveReplicas { alive: 1, needed: 2 };
        let wire: WireError = serde_json::from_slice(&serde_json::to_vec(&WireError::from(&e)).unwrap()).unwrap();
        assert!(matches!(wire.into_error(2), ReplicationError::TooFewLiveReplicas { alive: 1, needed: 2 }));
        let e = ReplicationError::UnknownStatus("x".into());
        assert!(matches!(WireError::from(&e).into_error(2), ReplicationError::UnknownStatus(_)));
        let e = ReplicationError::QueueFull { group: 3, bytes: 10, limit: 8 };
        assert!(matches!(WireError::from(&e).into_error(2), ReplicationError::QueueFull { group: 3, .. }));
    }
}
