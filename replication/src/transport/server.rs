//! The server side: every RPC names its group; a group this node does not
//! host answers NOT_FOUND (the caller may then ask it to create the group).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::client::MAX_MESSAGE;
use super::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use super::pb::{BlockRequest, FetchPartRequest, GroupReply, GroupRequest, PartChunk, PushReply};
use crate::registry::{Group, GroupSpec, NodeInner};

struct Service {
    node: Arc<NodeInner>,
}

/// Starts serving on `listener` until `stop` fires.
pub(crate) fn serve(
    node: Arc<NodeInner>,
    listener: tokio::net::TcpListener,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let check = super::identity::Check::new(&node.peers.cluster, node.id);
    let svc = RaftTransportServer::new(Service { node })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, check);
    let incoming = incoming(listener);
    tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(super::STREAM_WINDOW)
            .initial_connection_window_size(super::CONNECTION_WINDOW)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop.await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "raft transport server stopped");
        }
    })
}

/// The accepted connections of `listener`, with Nagle's algorithm off. The
/// builder's `tcp_nodelay` applies only to listeners tonic binds itself:
/// accepted sockets had Nagle on, and a small reply held back until the ACK
/// of the previous one (delayed up to 40 ms) stalled forwarded proposals and
/// appends.
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<GroupReply>, Status> {
    serde_json::to_vec(v)
        .map(|payload| Response::new(GroupReply { payload }))
        .map_err(|e| Status::internal(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(b).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

impl Service {
    fn group(&self, group: u64) -> Result<Arc<Group>, Status> {
        self.node.group(group).ok_or_else(|| Status::not_found(format!("group {group} is not hosted here")))
    }

    /// The Raft of a data group or of the metadata group.
    fn raft(&self, group: u64) -> Result<crate::Raft, Status> {
        if group == crate::meta_group::META_GROUP {
            let meta = self.node.meta.read().unwrap_or_else(|p| p.into_inner()).clone();
            return meta
                .map(|m| m.raft.clone())
                .ok_or_else(|| Status::not_found("the metadata group is not started here"));
        }
        Ok(self.group(group)?.raft.clone())
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<PartChunk, Status>> + Send>>;

#[tonic::async_trait]
impl RaftTransport for Service {
    async fn append_entries(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        reply(&self.raft(r.group)?.append_entries(parse(&r.payload)?).await)
    }

    async fn vote(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        reply(&self.raft(r.group)?.vote(parse(&r.payload)?).await)
    }

    async fn install_snapshot(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        reply(&self.raft(r.group)?.install_snapshot(parse(&r.payload)?).await)
    }

    async fn propose(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        let cmd: crate::Command = parse(&r.payload)?;
        if r.group == crate::meta_group::META_GROUP {
            let raft = self.raft(r.group)?;
            let out = raft.client_write(cmd).await.map(|w| (w.data, w.log_id.index)).map_err(|e| e.to_string());
            return reply(&out);
        }
        let g = self.group(r.group)?;
        crate::hibernate::wake(&g);
        // Only the local Raft: forwarding again could bounce between nodes.
        let out = g.raft.client_write(cmd).await.map(|w| (w.data, w.log_id.index)).map_err(|e| e.to_string());
        reply(&out)
    }

    async fn insert_block(&self, req: Request<BlockRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        let g = self.group(r.group)?;
        // Not forwarded again: the proposal of the entry carrying it is.
        let out = crate::forward::serve(&self.node, &g.spec, r).await;
        reply(&out.map_err(|e| Status::invalid_argument(e.to_string()))?)
    }

    async fn create_group(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        let spec: GroupSpec = parse(&r.payload)?;
        let out = self.node.create_local(spec).await.map(|_| ()).map_err(|e| e.to_string());
        reply(&out)
    }

    async fn applied(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let group = req.into_inner().group;
        if group == crate::meta_group::META_GROUP {
            let raft = self.raft(group)?;
            let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
            return reply(&applied);
        }
        let g = self.group(group)?;
        reply(&g.replica.applied().0.map(|l| l.index))
    }

    async fn read_index(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let g = self.group(req.into_inner().group)?;
        crate::hibernate::wake(&g);
        let out = g.raft.ensure_linearizable().await.map(|l| l.map(|x| x.index)).map_err(|e| e.to_string());
        reply(&out)
    }

    async fn parts_to_do(&self, req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        let r = req.into_inner();
        let g = self.group(r.group)?;
        let versions: Vec<i64> =
            serde_json::from_slice(&r.payload).map_err(|e| Status::invalid_argument(format!("versions: {e}")))?;
        reply(&versions.iter().map(|v| g.replica.parts_to_do(*v)).collect::<Vec<u64>>())
    }

    async fn ping(&self, _req: Request<GroupRequest>) -> Result<Response<GroupReply>, Status> {
        Ok(Response::new(GroupReply { payload: Vec::new() }))
    }

    async fn push_part(&self, req: Request<Streaming<PartChunk>>) -> Result<Response<PushReply>, Status> {
        let mut stream = req.into_inner();
        // The first chunk names the group; everything goes to a temp
        // directory, renamed into staging only once complete and verified.
        let first = match futures::StreamExt::next(&mut stream).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e),
            None => return Err(Status::invalid_argument("empty part stream")),
        };
        let g = self.group(first.group)?;
        let staged_id = first.part.split('/').next().unwrap_or_default().to_string();
        let staging = g.replica.staging_dir();
        let tmp = staging.join(format!("tmp_push_{staged_id}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Status::internal(e.to_string()))?;
        let all = futures::StreamExt::chain(futures::stream::iter([Ok(first)]), stream);
        let received = super::parts::receive_part(Box::pin(all), &tmp).await;
        // Blocking file work goes off the runtime's workers, which carry
        // every group's Raft traffic.
        let result = match received {
            Ok((_, part_dir)) => tokio::task::spawn_blocking(move || {
                let size: u64 = std::fs::read_dir(&part_dir)
                    .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                    .unwrap_or(0);
                let target = staging.join(&staged_id);
                let moved = std::fs::rename(tmp.join(&staged_id), &target)
                    .and_then(|_| std::fs::File::open(&staging)?.sync_all())
                    .map_err(|e| crate::ReplicationError::io(&target, e));
                let _ = std::fs::remove_dir_all(&tmp);
                moved.map(|_| size)
            })
            .await
            .unwrap_or_else(|e| Err(crate::ReplicationError::Raft(format!("push task: {e}")))),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        };
        match result {
            Ok(bytes) => Ok(Response::new(PushReply { bytes })),
            Err(e) => Err(Status::data_loss(e.to_string())),
        }
    }

    type FetchPartStream = ChunkStream;

    async fn fetch_part(&self, req: Request<FetchPartRequest>) -> Result<Response<Self::FetchPartStream>, Status> {
        let r = req.into_inner();
        let g = self.group(r.group)?;
        let dir = match g.replica.find_for_fetch(&r.part) {
            Some(d) => d,
            // Not a "no": the part will be there once the merge ends.
            None if g.replica.is_merging(&r.part) => {
                return Err(Status::failed_precondition(format!("part {} is being merged", r.part)));
            }
            None => return Err(Status::not_found(format!("no part {} in group {}", r.part, r.group))),
        };
        let label = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let skip = if r.resume_label == label { r.resume_offsets } else { Default::default() };
        Ok(Response::new(Box::pin(super::parts::stream_part(r.group, label, dir, skip))))
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn regression_accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
