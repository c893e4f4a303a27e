//! The client side: one lazily connected channel per peer, shared by every
//! group; openraft's network traits per group; part push and fetch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::NetControl;
use super::identity::Stamp;
use super::pb::raft_transport_client::RaftTransportClient;
use super::pb::{BlockRequest, FetchPartRequest, GroupRequest};
use crate::command::Command;
use crate::error::{ReplicationError, Result};
use crate::registry::{GroupSpec, InsertOutcome};
use crate::staging::Staged;
use crate::state_machine::PartFetcher;
use crate::{GroupId, NodeId, TypeConfig};

/// Largest message accepted: a batch of entries or a snapshot chunk.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// The peers of this node and one channel to each.
#[derive(Debug)]
pub struct Peers {
    me: NodeId,
    /// The cluster's name, sent with every request (see `identity`).
    pub(crate) cluster: String,
    cluster_header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    addrs: RwLock<BTreeMap<NodeId, String>>,
    channels: Mutex<HashMap<NodeId, (String, Channel)>>,
    net: Arc<NetControl>,
    /// Peers whose last connection attempt failed: until the instant, calls
    /// to them answer Unreachable at once instead of each waiting for its own
    /// connect timeout (a dead node would otherwise cost every group that
    /// has it as a member a connection attempt per heartbeat).
    down: Mutex<HashMap<NodeId, Down>>,
}

/// A peer known to be down.
#[derive(Debug, Clone, Copy)]
struct Down {
    until: Instant,
    backoff: Duration,
}

/// First and longest pause before a peer known to be down is tried again.
const DOWN_FIRST: Duration = Duration::from_millis(100);
const DOWN_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
    Propose,
    Create,
    Applied,
    Ping,
    ReadIndex,
    PartsToDo,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Peers {
    pub(crate) fn new(me: NodeId, cluster: &str, addrs: BTreeMap<NodeId, String>, net: Arc<NetControl>) -> Self {
        Peers {
            me,
            cluster: cluster.to_string(),
            cluster_header: super::identity::cluster_header(cluster),
            addrs: RwLock::new(addrs),
            channels: Mutex::new(HashMap::new()),
            net,
            down: Mutex::new(HashMap::new()),
        }
    }

    /// A node's gRPC address.
    pub fn addr(&self, node: NodeId) -> Option<String> {
        self.addrs.read().unwrap_or_else(|p| p.into_inner()).get(&node).cloned()
    }

    pub(crate) fn set_addr(&self, node: NodeId, addr: String) {
        self.addrs.write().unwrap_or_else(|p| p.into_inner()).insert(node, addr);
    }

    fn client(&self, to: NodeId) -> Result<RaftTransportClient<InterceptedService<Channel, Stamp>>> {
        if self.net.is_blocked(self.me, to) || self.net.is_blocked(to, self.me) {
            return Err(ReplicationError::Unreachable { node: to, reason: "link cut".into() });
        }
        if let Some(d) = self.down.lock().unwrap_or_else(|p| p.into_inner()).get(&to)
            && Instant::now() < d.until
        {
            let reason = format!("known to be down, next try in {:?}", d.until - Instant::now());
            return Err(ReplicationError::Unreachable { node: to, reason });
        }
        let addr = self.addr(to).ok_or(ReplicationError::Unreachable { node: to, reason: "no address".into() })?;
        let mut ch = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match ch.get(&to) {
            Some((a, c)) if *a == addr => c.clone(),
            _ => {
                let c = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| ReplicationError::Unreachable { node: to, reason: e.to_string() })?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .initial_stream_window_size(super::STREAM_WINDOW)
                    .initial_connection_window_size(super::CONNECTION_WINDOW)
                    .connect_lazy();
                ch.insert(to, (addr, c.clone()));
                c
            }
        };
        Ok(RaftTransportClient::with_interceptor(channel, Stamp::new(&self.cluster_header, to))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Records the outcome of a call to `to`: a failure to reach it at all
    /// (tonic's Unavailable: connection refused or reset) marks it down for
    /// a backoff that doubles while it stays down; anything else clears it.
    fn observe(&self, to: NodeId, status: Option<&tonic::Status>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match status {
            Some(s) if s.code() == tonic::Code::Unavailable => {
                let backoff = down.get(&to).map(|d| (d.backoff * 2).min(DOWN_MAX)).unwrap_or(DOWN_FIRST);
                down.insert(to, Down { until: Instant::now() + backoff, backoff });
            }
            _ => {
                down.remove(&to);
            }
        }
    }

    fn status_err(to: NodeId, s: tonic::Status) -> ReplicationError {
        match s.code() {
            tonic::Code::NotFound => ReplicationError::NoSuchGroup(0),
            _ => ReplicationError::Unreachable { node: to, reason: s.message().to_string() },
        }
    }

    async fn unary(
        &self,
        to: NodeId,
        rpc: Rpc,
        group: GroupId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let mut c = self.client(to)?;
        let mut req = tonic::Request::new(GroupRequest { group, payload });
        req.set_timeout(timeout);
        let fut = async {
            match rpc {
                Rpc::Append => c.append_entries(req).await,
                Rpc::Vote => c.vote(req).await,
                Rpc::Snapshot => c.install_snapshot(req).await,
                Rpc::Propose => c.propose(req).await,
                Rpc::Create => c.create_group(req).await,
                Rpc::Applied => c.applied(req).await,
                Rpc::Ping => c.ping(req).await,
                Rpc::ReadIndex => c.read_index(req).await,
                Rpc::PartsToDo => c.parts_to_do(req).await,
            }
        };
        match self.answer(to, timeout, fut).await {
            Ok(r) => Ok(r.payload),
            Err(ReplicationError::NoSuchGroup(_)) => Err(ReplicationError::NoSuchGroup(group)),
            Err(e) => Err(e),
        }
    }

    /// The reply of a call to `to` given `timeout`, recording whether `to`
    /// could be reached (see [`Peers::observe`]).
    async fn answer<T>(
        &self,
        to: NodeId,
        timeout: Duration,
        call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(r)) => {
                self.observe(to, None);
                Ok(r.into_inner())
            }
            Ok(Err(s)) => {
                self.observe(to, Some(&s));
                Err(Self::status_err(to, s))
            }
            Err(_) => Err(ReplicationError::Unreachable { node: to, reason: format!("timed out after {timeout:?}") }),
        }
    }

    /// Asks `to` to host the group.
    pub(crate) async fn create_group(&self, to: NodeId, spec: &GroupSpec) -> Result<()> {
        let payload = serde_json::to_vec(spec).map_err(|e| ReplicationError::Corrupted(e.to_string()))?;
        let reply = self.unary(to, Rpc::Create, spec.group, payload, Duration::from_secs(5)).await?;
        let r: std::result::Result<(), String> = json(&reply)?;
        r.map_err(|e| ReplicationError::Unreachable { node: to, reason: e })
    }

    /// Proposes on `to`, which should be the group's leader.
    pub(crate) async fn propose(
        &self,
        to: NodeId,
        group: GroupId,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<InsertOutcome> {
        let payload = serde_json::to_vec(cmd).map_err(|e| ReplicationError::Corrupted(e.to_string()))?;
        let reply = self.unary(to, Rpc::Propose, group, payload, timeout).await?;
        let r: std::result::Result<(crate::Response, u64), String> = json(&reply)?;
        r.map(|(response, index)| InsertOutcome { response, index }).map_err(ReplicationError::Raft)
    }

    /// The group's applied index on `to`.
    pub(crate) async fn applied(&self, to: NodeId, group: GroupId) -> Result<Option<u64>> {
        let reply = self.unary(to, Rpc::Applied, group, Vec::new(), Duration::from_secs(2)).await?;
        json(&reply)
    }

    /// The read index of `group` from its leader `to`.
    pub(crate) async fn read_index(&self, to: NodeId, group: GroupId, timeout: Duration) -> Result<Option<u64>> {
        let reply = self.unary(to, Rpc::ReadIndex, group, Vec::new(), timeout).await?;
        let r: std::result::Result<Option<u64>, String> = json(&reply)?;
        r.map_err(|e| ReplicationError::NoLeader { group, reason: e })
    }

    /// Parts `to` still has to rewrite for each of `versions` in `group`.
    pub(crate) async fn parts_to_do(
        &self,
        to: NodeId,
        group: GroupId,
        versions: &[i64],
        timeout: Duration,
    ) -> Result<Vec<u64>> {
        let payload = serde_json::to_vec(versions).map_err(|e| ReplicationError::Corrupted(e.to_string()))?;
        json(&self.unary(to, Rpc::PartsToDo, group, payload, timeout).await?)
    }

    /// Hands a small block to `to`'s group commit (`to` should lead its
    /// group); the outer error is a call that got no answer.
    pub(crate) async fn insert_block(
        &self,
        to: NodeId,
        req: BlockRequest,
        timeout: Duration,
    ) -> Result<crate::forward::WireOutcome> {
        let mut c = self.client(to)?;
        let mut req = tonic::Request::new(req);
        req.set_timeout(timeout);
        json(&self.answer(to, timeout, c.insert_block(req)).await?.payload)
    }

    /// Whether `to` answers within `timeout`.
    pub(crate) async fn ping(&self, to: NodeId, timeout: Duration) -> bool {
        self.unary(to, Rpc::Ping, 0, Vec::new(), timeout).await.is_ok()
    }

    /// Streams a staged block into `to`'s staging area; returns once `to`
    /// has it durably.
    pub(crate) async fn push_part(&self, to: NodeId, group: GroupId, staged: &Staged) -> Result<()> {
        let mut c = self.client(to)?;
        let dir_name = staged.part_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let label = format!("{}/{dir_name}", staged.staged_id);
        let stream = super::parts::stream_part(group, label, staged.part_dir.clone(), Default::default());
        let stream = futures::StreamExt::filter_map(stream, |c| async move { c.ok() });
        let fut = c.push_part(stream);
        match tokio::time::timeout(Duration::from_secs(60), fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(Self::status_err(to, s)),
            Err(_) => Err(ReplicationError::Unreachable { node: to, reason: "push timed out".into() }),
        }
    }

    /// The openraft network of one group.
    pub(crate) fn network(self: &Arc<Self>, spec: GroupSpec) -> GroupNetwork {
        GroupNetwork { peers: self.clone(), spec: Arc::new(spec) }
    }
}

fn json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| ReplicationError::Corrupted(format!("bad reply from a peer: {e}")))
}

/// Fetches parts over the transport.
pub struct TransportFetcher {
    pub(crate) peers: Arc<Peers>,
}

#[async_trait::async_trait]
impl PartFetcher for TransportFetcher {
    async fn fetch(&self, group: GroupId, from: NodeId, want: &str, dest: &Path) -> Result<()> {
        let mut c = self.peers.client(from)?;
        let (resume_label, resume_offsets) = super::parts::resume_point(dest).unwrap_or_default();
        let req =
            FetchPartRequest { group, table: String::new(), part: want.to_string(), resume_label, resume_offsets };
        let stream = match tokio::time::timeout(Duration::from_secs(10), c.fetch_part(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            // The peer has neither the part nor one covering it (nor the
            // group): unlike a peer that cannot be asked, a definite answer.
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
                return Err(ReplicationError::PartNotFound { node: from, part: want.to_string() });
            }
            Ok(Err(s)) => return Err(Peers::status_err(from, s)),
            Err(_) => return Err(ReplicationError::Unreachable { node: from, reason: "fetch timed out".into() }),
        };
        std::fs::create_dir_all(dest).map_err(|e| ReplicationError::io(dest, e))?;
        super::parts::receive_part(stream, dest).await.map(|_| ())
    }
}

/// openraft's network factory for one group.
pub struct GroupNetwork {
    peers: Arc<Peers>,
    spec: Arc<GroupSpec>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> GroupClient {
        GroupClient { peers: self.peers.clone(), spec: self.spec.clone(), target }
    }
}

/// How long a Raft RPC may take. openraft gives every AppendEntries the
/// heartbeat interval (50 ms); one carrying a catching-up follower's batch
/// of entries (small inserts ride in them: megabytes) could not be shipped,
/// written and fsynced in that time under load, was retried forever, and the
/// follower — never hearing from the leader in time — kept calling elections
/// it could not win: a livelock that kept a restarted node behind for good.
fn rpc_timeout(option: &RPCOption, carries_entries: bool, payload_bytes: usize) -> Duration {
    let ttl = option.hard_ttl().max(Duration::from_millis(50));
    if !carries_entries {
        return ttl;
    }
    // 20 MB/s: far below loopback or LAN speed, fsync included.
    ttl.max(Duration::from_secs(1)) + Duration::from_millis(payload_bytes as u64 / 20_000)
}

/// openraft's network to one peer for one group.
pub struct GroupClient {
    peers: Arc<Peers>,
    spec: Arc<GroupSpec>,
    target: NodeId,
}

impl GroupClient {
    /// Sends one Raft RPC; a peer that does not host the group yet (it was
    /// down when the group was created) is asked to create it, then retried.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
        carries_entries: bool,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let payload = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let timeout = rpc_timeout(option, carries_entries, payload.len());
        let mut reply = self.peers.unary(self.target, rpc, self.spec.group, payload.clone(), timeout).await;
        if let Err(ReplicationError::NoSuchGroup(_)) = reply {
            if let Err(e) = self.peers.create_group(self.target, &self.spec).await {
                return Err(RPCError::Unreachable(Unreachable::new(&Msg(e.to_string()))));
            }
            reply = self.peers.unary(self.target, rpc, self.spec.group, payload, timeout).await;
        }
        let bytes = reply.map_err(|e| RPCError::Unreachable(Unreachable::new(&Msg(e.to_string()))))?;
        let r: std::result::Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GroupClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let carries_entries = !rpc.entries.is_empty();
        self.call(Rpc::Append, &rpc, &option, carries_entries).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc, &option, false).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower far behind got its catch-up batches with the 50 ms
    /// heartbeat timeout and never caught up (jepsen: "node 3 did not come
    /// up"); heartbeats keep the short timeout.
    #[test]
    fn regression_catch_up_appends_get_time_for_their_payload() {
        let hb = RPCOption::new(Duration::from_millis(50));
        assert_eq!(rpc_timeout(&hb, false, 200), Duration::from_millis(50));
        assert!(rpc_timeout(&hb, true, 200) >= Duration::from_secs(1));
        assert!(rpc_timeout(&hb, true, 40 << 20) > Duration::from_secs(2));
    }

    /// Regression guard for the down cache: a peer that refused a connection
    /// is answered Unreachable without a new attempt until its backoff ends.
    /// (Issue 18: this test assumed its first two calls ran within 100 ms;
    /// it now moves the entry's deadline instead of racing the clock.)
    #[tokio::test]
    async fn a_peer_that_refused_is_known_down_until_its_backoff_ends() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addrs = [(2, format!("127.0.0.1:{port}"))].into_iter().collect();
        let peers = Peers::new(1, crate::transport::DEFAULT_CLUSTER, addrs, Default::default());
        let reason = |r: Result<Vec<u8>>| match r {
            Err(ReplicationError::Unreachable { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        let set_until = |until: Instant| peers.down.lock().unwrap().get_mut(&2).unwrap().until = until;
        let first = peers.unary(2, Rpc::Ping, 0, Vec::new(), Duration::from_secs(2)).await;
        assert!(!reason(first).contains("known to be down"));
        assert_eq!(peers.down.lock().unwrap()[&2].backoff, DOWN_FIRST);
        set_until(Instant::now() + Duration::from_secs(3600));
        let second = peers.unary(2, Rpc::Ping, 0, Vec::new(), Duration::from_secs(2)).await;
        assert!(reason(second).contains("known to be down"));
        set_until(Instant::now());
        let third = peers.unary(2, Rpc::Ping, 0, Vec::new(), Duration::from_secs(2)).await;
        assert!(!reason(third).contains("known to be down"), "tried again after the backoff");
        let d = peers.down.lock().unwrap()[&2];
        assert_eq!(d.backoff, DOWN_FIRST * 2, "the backoff doubles while the peer stays down");
    }
}
