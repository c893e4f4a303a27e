//! Fetching part bytes from peers, kept out of the applied state
//! ([`Replica`]): a command that needs a part this replica lacks (a block
//! staged elsewhere, the sources of a merge) is fetched here and applied
//! again, and a merge whose result a peer makes is fetched from it, falling
//! back to merging here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{ReplicationError, Result};
use crate::merge_exec::PeerMerge;
use crate::replica::{Missing, Replica};
use crate::{GroupId, NodeId};

/// Fetches part bytes from peers (implemented by the transport).
#[async_trait::async_trait]
pub trait PartFetcher: Send + Sync + 'static {
    /// Streams the staged block `want` (a staging id) or the active part
    /// covering `want` (a part name) of `group` from node `from` into a new
    /// subdirectory of `dest`, checking every file's checksum.
    async fn fetch(&self, group: GroupId, from: NodeId, want: &str, dest: &Path) -> Result<()>;
}

/// Rounds of every member answering that it has no such part after which a
/// merge result is taken not to exist (about 10 s with the backoff).
const GIVE_UP_ROUNDS: u32 = 10;

/// Fetches what a command needs, from each candidate in turn, retrying
/// with backoff until one succeeds: a command cannot be skipped. The
/// one exception is a merge result no member has (see
/// [`Missing::may_not_exist`]): `None` once every member said so for
/// [`GIVE_UP_ROUNDS`] rounds in a row.
pub(crate) async fn fetch_missing(
    replica: &Replica,
    fetcher: &dyn PartFetcher,
    members: &[NodeId],
    missing: &Missing,
    set_error: impl Fn(Option<String>),
) -> Option<PathBuf> {
    let mut from = missing.from.clone();
    for m in members {
        if *m != replica.node && !from.contains(m) {
            from.push(*m);
        }
    }
    // One directory per part across attempts: a transfer that broke off
    // resumes where it stopped (the sender skips the bytes kept, if it
    // sends the same part).
    let dest = replica.parts_dir().join(format!("tmp_fetch_{}", missing.part));
    let mut backoff = Duration::from_millis(20);
    let mut round = 0u64;
    let mut nowhere = 0u32;
    loop {
        round += 1;
        let mut all_said_no = !from.is_empty();
        for node in &from {
            let wants = missing.staged_id.iter().cloned().chain([missing.part.to_string()]);
            for want in wants {
                match fetcher.fetch(replica.group, *node, &want, &dest).await {
                    Ok(()) => {
                        set_error(None);
                        return Some(dest.clone());
                    }
                    Err(e) => {
                        if matches!(e, ReplicationError::Corrupted(_) | ReplicationError::Storage(_)) {
                            // What was kept does not check out: start over.
                            let _ = std::fs::remove_dir_all(&dest);
                        }
                        all_said_no &= matches!(e, ReplicationError::PartNotFound { .. });
                        let msg = format!("fetching {want} from node {node}: {e}");
                        // A fetch that keeps failing holds up the group's
                        // log (at startup: the node): say so where an
                        // operator looks, without flooding the log.
                        if round == 5 || round.is_multiple_of(30) {
                            tracing::warn!(group = replica.group, round, "{msg}; retrying");
                        } else {
                            tracing::debug!(group = replica.group, "{msg}");
                        }
                        set_error(Some(msg));
                    }
                }
            }
        }
        nowhere = if all_said_no { nowhere + 1 } else { 0 };
        if missing.may_not_exist && nowhere >= GIVE_UP_ROUNDS {
            let _ = std::fs::remove_dir_all(&dest);
            set_error(None);
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Starts fetching the results of the merges a peer makes that applying
/// just started (merging here when there is no runtime to fetch on).
pub(crate) fn spawn_peer_merges(replica: &Arc<Replica>, fetcher: &Arc<dyn PartFetcher>) {
    for m in replica.take_peer_merges() {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(fetch_merge(replica.clone(), fetcher.clone(), m));
            }
            Err(_) => replica.spawn_local_merge(m.result, m.names, m.parts, m.mode),
        }
    }
}

/// Waits for `from`'s result of a merge, polling it with backoff, and
/// swaps it in; merges here instead once the threshold has passed, when
/// a command waits for this merge, or when `from` has already merged the
/// result further (its covering part cannot replace our sources), or
/// when a live mutation still has to rewrite the sources.
async fn fetch_merge(replica: Arc<Replica>, fetcher: Arc<dyn PartFetcher>, m: PeerMerge) {
    let PeerMerge { from, result, names, parts, mode } = m;
    let this = replica;
    let threshold = Duration::from_secs(this.settings.execute_merges_on_single_replica_time_threshold);
    let start = Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0u64;
    loop {
        if this.stopped.load(Ordering::SeqCst) {
            // Still pending in the persisted state: resumed at restart.
            this.merges.finish(&result);
            return;
        }
        // A mutation waiting for these parts would wait for the peer too.
        if this.merges.is_urgent() || start.elapsed() >= threshold || this.mutation_needs(&names) {
            break;
        }
        attempt += 1;
        let dest = this.parts_dir().join(format!("tmp_fetch_merge_{result}_{attempt}"));
        match fetcher.fetch(this.group, from, &result.to_string(), &dest).await {
            Ok(()) => {
                let (me, res, srcs, d) = (this.clone(), result.clone(), names.clone(), dest.clone());
                let done = tokio::task::spawn_blocking(move || {
                    let part = me.adopt_fetched_merge(&d, &res);
                    let _ = std::fs::remove_dir_all(&d);
                    match part? {
                        Some(p) => {
                            me.swap_in_merge(&srcs, p);
                            Ok(true)
                        }
                        None => Ok::<_, crate::ReplicationError>(false),
                    }
                })
                .await;
                match done {
                    Ok(Ok(true)) => {
                        this.merges.fetched.fetch_add(1, Ordering::Relaxed);
                        this.merges.finish(&result);
                        return;
                    }
                    Ok(Ok(false)) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(group = this.group, part = %result, error = %e, "fetched merge result unusable")
                    }
                    Err(e) => {
                        tracing::warn!(group = this.group, part = %result, error = %e, "fetched merge result task")
                    }
                }
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dest);
                tracing::debug!(group = this.group, part = %result, node = from, error = %e, "merge result not there yet");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    tracing::debug!(group = this.group, part = %result, "merging here instead of fetching");
    this.spawn_local_merge(result, names, parts, mode);
}
