//! Who an RPC is for: every request carries the cluster's name and the id
//! of the node it is addressed to, and a node refuses requests meant for
//! another cluster or another node. Without it, a node listed under a
//! wrong address (node 3's entry pointing at node 2) answers votes and
//! appends meant for node 3 as if it were node 3 — two votes from one
//! replica, and two leaders — and a node of a second cluster pointed at
//! ours would host and vote in our groups (Doris refuses such peers by
//! their cluster id).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::NodeId;

const CLUSTER: &str = "x-shardhouse-cluster";
const NODE: &str = "x-shardhouse-node";

/// The cluster name used when the configuration names none.
pub const DEFAULT_CLUSTER: &str = "shardhouse";

/// Whether `name` can be a cluster name: it travels as an HTTP/2 header.
pub fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The client side: stamps each request with the cluster and the addressee.
#[derive(Clone)]
pub(crate) struct Stamp {
    cluster: MetadataValue<Ascii>,
    to: MetadataValue<Ascii>,
}

/// `cluster` as a header value, made once per node (every RPC carries it).
pub(crate) fn cluster_header(cluster: &str) -> MetadataValue<Ascii> {
    // Checked at configuration (`valid_cluster_name`); an unusable name
    // falls back to one no server accepts, never to a panic.
    cluster.parse().unwrap_or_else(|_| MetadataValue::from_static("invalid"))
}

impl Stamp {
    pub(crate) fn new(cluster: &MetadataValue<Ascii>, to: NodeId) -> Stamp {
        Stamp { cluster: cluster.clone(), to: MetadataValue::from(to) }
    }
}

impl Interceptor for Stamp {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(CLUSTER, self.cluster.clone());
        req.metadata_mut().insert(NODE, self.to.clone());
        Ok(req)
    }
}

/// The server side: lets through requests for this cluster and this node.
#[derive(Clone)]
pub(crate) struct Check {
    cluster: Arc<str>,
    me: NodeId,
    /// When a refusal was last logged (ms since the epoch): a misconfigured
    /// peer retries every heartbeat, the log says so every 10 s.
    logged: Arc<AtomicU64>,
}

impl Check {
    pub(crate) fn new(cluster: &str, me: NodeId) -> Check {
        Check { cluster: cluster.into(), me, logged: Arc::default() }
    }

    fn refuse(&self, why: String) -> Status {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let last = self.logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self.logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(reason = %why, "refused a request from a peer");
        }
        Status::permission_denied(why)
    }
}

impl Interceptor for Check {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let md = req.metadata();
        let cluster = md.get(CLUSTER).and_then(|v| v.to_str().ok());
        let to = md.get(NODE).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<NodeId>().ok());
        if cluster != Some(&*self.cluster) {
            return Err(self.refuse(format!(
                "a request for cluster '{}' reached node {} of cluster '{}': check the [cluster] name and nodes of both configurations",
                cluster.unwrap_or("(none)"),
                self.me,
                self.cluster
            )));
        }
        if to != Some(self.me) {
            let to = to.map_or("(none)".to_string(), |t| t.to_string());
            return Err(self.refuse(format!(
                "a request for node {to} reached node {} at this address: the sender lists a wrong address for node {to}",
                self.me
            )));
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(cluster: &str, to: NodeId) -> Request<()> {
        Stamp::new(&cluster_header(cluster), to).call(Request::new(())).unwrap()
    }

    #[test]
    fn only_requests_for_this_cluster_and_node_pass() {
        let mut check = Check::new("prod", 2);
        assert!(check.call(stamped("prod", 2)).is_ok());
        let other = check.call(stamped("staging", 2)).unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied);
        assert!(other.message().contains("cluster 'staging'"), "{}", other.message());
        let misaddressed = check.call(stamped("prod", 3)).unwrap_err();
        assert!(misaddressed.message().contains("request for node 3 reached node 2"), "{}", misaddressed.message());
        assert!(check.call(Request::new(())).is_err(), "an unstamped request");
    }

    #[test]
    fn cluster_names_are_header_safe() {
        assert!(valid_cluster_name("prod-eu_1"));
        for bad in ["", "two words", "naïve", "a\nb"] {
            assert!(!valid_cluster_name(bad), "{bad:?}");
        }
    }
}
