//! The metadata group (issue 19's catalog group): every node applies every
//! entry in order — voters and learners, a node that was down once it is
//! back (from the log or a snapshot) — and an entry without a quorum of
//! voters fails within its timeout instead of applying anywhere.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replication::ReplicationError;
use replication::meta_group::{MetaApplier, voters_of};

use crate::common::*;

/// Applies entries to a list kept in a file with the index applied.
struct FileApplier {
    path: PathBuf,
    state: Mutex<(u64, Vec<String>)>,
}

impl FileApplier {
    fn open(dir: &Path) -> Arc<FileApplier> {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("applied.json");
        let state = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Arc::new(FileApplier { path, state: Mutex::new(state) })
    }

    fn entries(&self) -> Vec<String> {
        self.state.lock().unwrap().1.clone()
    }

    fn save(&self, s: &(u64, Vec<String>)) {
        std::fs::write(&self.path, serde_json::to_vec(s).unwrap()).unwrap();
    }
}

impl MetaApplier for FileApplier {
    fn applied_index(&self) -> u64 {
        self.state.lock().unwrap().0
    }

    fn apply(&self, index: u64, entry: &str) -> Result<String, String> {
        let mut s = self.state.lock().unwrap();
        if index <= s.0 {
            return Ok("again".into());
        }
        s.0 = index;
        if entry.starts_with("bad") {
            self.save(&s);
            return Err(format!("{entry} refused"));
        }
        s.1.push(entry.to_string());
        self.save(&s);
        Ok(format!("applied {entry}"))
    }

    fn snapshot(&self) -> Result<String, String> {
        serde_json::to_string(&*self.state.lock().unwrap()).map_err(|e| e.to_string())
    }

    fn install(&self, index: u64, state: &str) -> Result<(), String> {
        let mut new: (u64, Vec<String>) = serde_json::from_str(state).map_err(|e| e.to_string())?;
        new.0 = new.0.max(index);
        self.save(&new);
        *self.state.lock().unwrap() = new;
        Ok(())
    }
}

async fn start_meta(c: &Cluster, id: u64, nodes: &[u64]) -> Arc<FileApplier> {
    let applier = FileApplier::open(&c.root.join(format!("applier{id}")));
    c.nodes[&id].start_meta(nodes.to_vec(), applier.clone()).await.unwrap();
    applier
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn voters_are_the_lowest_five_ids() {
    assert_eq!(voters_of(&[9, 3, 1, 7, 5, 2, 8]), vec![1, 2, 3, 5, 7]);
    assert_eq!(voters_of(&[4]), vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_applies_every_entry_including_one_that_was_down() {
    // 3 nodes; a small snapshot interval so the returning node also gets a
    // snapshot rather than only the log.
    let mut c = Cluster::start(3, 4).await;
    let nodes = [1, 2, 3];
    let mut appliers = Vec::new();
    for id in nodes {
        appliers.push(start_meta(&c, id, &nodes).await);
    }
    let (_, reply) = c.nodes[&2].propose_meta("create a".into(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply, Ok("applied create a".to_string()));
    let (_, reply) = c.nodes[&3].propose_meta("bad b".into(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply, Err("bad b refused".to_string()), "an entry's outcome is the applier's");
    for a in &appliers {
        wait_for("every node to apply", || a.entries() == ["create a"]).await;
    }
    c.kill(3).await;
    for i in 0..10 {
        let (_, r) = c.nodes[&1].propose_meta(format!("e{i}"), Duration::from_secs(10)).await.unwrap();
        assert!(r.is_ok());
    }
    c.start_node(3).await;
    let back = FileApplier::open(&c.root.join("applier3"));
    assert_eq!(back.entries(), ["create a"], "node 3 was down for the rest");
    c.nodes[&3].start_meta(nodes.to_vec(), back.clone()).await.unwrap();
    let want: Vec<String> = std::iter::once("create a".to_string()).chain((0..10).map(|i| format!("e{i}"))).collect();
    wait_for("the returning node to catch up", || back.entries() == want).await;
    for a in &appliers[..2] {
        assert_eq!(a.entries(), want);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_of_voters_an_entry_fails_in_time_and_applies_nowhere() {
    let c = Cluster::start(3, 1000).await;
    let nodes = [1, 2, 3];
    let mut appliers = Vec::new();
    for id in nodes {
        appliers.push(start_meta(&c, id, &nodes).await);
    }
    c.nodes[&1].propose_meta("first".into(), Duration::from_secs(10)).await.unwrap().1.unwrap();
    for a in &appliers {
        wait_for("every node to apply", || a.entries() == ["first"]).await;
    }
    // Node 1 alone: no quorum whoever leads.
    c.net.isolate(1, &[2, 3]);
    let t0 = std::time::Instant::now();
    let err = c.nodes[&1].propose_meta("lonely".into(), Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, ReplicationError::MetaTimeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(6), "gave up after {:?}", t0.elapsed());
    assert_eq!(appliers[0].entries(), ["first"], "nothing applied on the cut-off node");
    // The majority side goes on; the cut-off node catches up after heal.
    c.nodes[&2].propose_meta("majority".into(), Duration::from_secs(10)).await.unwrap().1.unwrap();
    c.net.heal();
    for a in &appliers {
        wait_for("convergence after heal", || a.entries().last().map(String::as_str) == Some("majority")).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sixth_node_follows_as_a_learner_and_does_not_count_for_the_quorum() {
    let mut c = Cluster::start(6, 1000).await;
    let nodes = [1, 2, 3, 4, 5, 6];
    let mut appliers = Vec::new();
    for id in nodes {
        appliers.push(start_meta(&c, id, &nodes).await);
    }
    c.nodes[&6].propose_meta("via the learner".into(), Duration::from_secs(10)).await.unwrap().1.unwrap();
    for a in &appliers {
        wait_for("every node, the learner too", || a.entries() == ["via the learner"]).await;
    }
    // Two voters and the learner down: three of five voters still commit.
    for id in [4, 5, 6] {
        c.kill(id).await;
    }
    c.nodes[&1].propose_meta("three of five".into(), Duration::from_secs(10)).await.unwrap().1.unwrap();
    c.start_node(6).await;
    let back = FileApplier::open(&c.root.join("applier6"));
    c.nodes[&6].start_meta(nodes.to_vec(), back.clone()).await.unwrap();
    wait_for("the learner to catch up", || back.entries() == ["via the learner", "three of five"]).await;
    // A third voter down: no quorum, the learner notwithstanding.
    c.kill(3).await;
    let err = c.nodes[&1].propose_meta("two of five".into(), Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, ReplicationError::MetaTimeout { .. }), "{err:?}");
    c.shutdown().await;
}
