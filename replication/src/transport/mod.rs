//! The transport: one tonic service per node multiplexing every group (the
//! group id travels in each request), one channel per peer shared by all
//! groups, and part bytes streamed in chunks with per-file CRC32s.

mod client;
mod identity;
mod parts;
mod server;

use std::collections::HashSet;
use std::sync::RwLock;

pub use client::{GroupNetwork, Peers, TransportFetcher};
pub use identity::{DEFAULT_CLUSTER, valid_cluster_name};
pub(crate) use server::serve;

use crate::NodeId;

#[allow(clippy::all, missing_docs)]
pub(crate) mod pb {
    tonic::include_proto!("shardhouse.raft");
}

/// Size of one streamed chunk of part bytes.
pub(crate) const CHUNK: usize = 1 << 20;
/// HTTP/2 flow-control windows. The 64 KiB default makes a part stream
/// wait for a window update every 64 KiB: pushing a part over loopback took
/// longer than writing and fsyncing it.
pub(crate) const STREAM_WINDOW: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW: u32 = 32 << 20;

/// Fault injection for tests of a cluster in one process: a blocked link
/// `(from, to)` makes every RPC from `from` to `to` fail as unreachable, as a
/// network partition would. Inert unless a test blocks something.
#[derive(Debug, Default)]
pub struct NetControl {
    blocked: RwLock<HashSet<(NodeId, NodeId)>>,
}

impl NetControl {
    /// Cuts the link from `from` to `to` (one direction).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).insert((from, to));
    }

    /// Cuts `node` off from every node in `others`, both directions.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        for &o in others {
            self.block(node, o);
            self.block(o, node);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.read().unwrap_or_else(|p| p.into_inner()).contains(&(from, to))
    }
}

/// Bytes of part files not transferred again because a fetch that broke
/// off was resumed (since the process started).
pub fn resumed_bytes() -> u64 {
    parts::RESUMED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}
