//! A cluster of real `shardhouse server` processes on loopback whose gRPC
//! links all run through [`Proxy`]s: node i's configuration names node j's
//! gRPC address as the proxy i→j, and each node listens on its own port.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;
use crate::proxy::Proxy;

/// One server process: its config, data and ports survive restarts.
pub struct Node {
    pub id: u64,
    pub http: u16,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    /// Starts the process and waits until it answers HTTP.
    pub fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .args(["server", "-c"])
            .arg(&self.config)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if matches!(http::post(self.http, "", "SELECT 1", b"", Duration::from_secs(2)), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        Err(format!(
            "node {} did not come up in 60 s ({}); its warnings and errors:\n{}\nits log ends:\n{}",
            self.id,
            match exited {
                Some(status) => format!("the process exited: {status}"),
                None => "the process is running".into(),
            },
            self.log_problems(40),
            self.log_tail(20)
        ))
    }

    /// The last `n` WARN and ERROR lines of the node's log, openraft's
    /// own left out (what the tail, full of election chatter, hides).
    pub fn log_problems(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> =
            text.lines().filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("openraft")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGSTOP: the process keeps its sockets and state but does nothing,
    /// as a node stuck in a long GC pause, swapping, or a frozen VM.
    pub fn pause(&mut self) {
        if self.signal("-STOP") {
            self.paused = true;
        }
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&mut self) {
        if self.paused {
            self.signal("-CONT");
            self.paused = false;
        }
    }

    fn signal(&self, sig: &str) -> bool {
        let Some(c) = &self.child else { return false };
        Command::new("kill").arg(sig).arg(c.id().to_string()).status().is_ok_and(|s| s.success())
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        self.paused = false;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the node is up and answers HTTP.
    pub fn answers(&self) -> bool {
        self.is_up() && matches!(http::post(self.http, "", "SELECT 1", b"", Duration::from_secs(5)), Ok((200, _)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The processes and the links between them.
pub struct ProcCluster {
    pub nodes: Vec<Node>,
    links: BTreeMap<(u64, u64), Proxy>,
}

/// A free port for a node to listen on across restarts, below Linux's
/// ephemeral range (32768-60999): a port taken from that range can be
/// handed to some outgoing connection while its node is down, and the
/// restarted node then cannot bind it.
///
/// The port is also claimed with a lock file held until the process exits:
/// two harness processes on one machine must never share a node port (a
/// node killed in one frees its port, the other could take it, and the
/// first cluster's nodes would then talk to the second's — seen as Raft
/// messages from terms no node of the cluster ever had).
pub fn free_port() -> Result<u16, String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static CLAIMED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let locks = std::env::temp_dir().join("shardhouse-test-ports");
    std::fs::create_dir_all(&locks).map_err(|e| format!("{}: {e}", locks.display()))?;
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(131)) % 12000) as u16;
        let Ok(claim) = std::fs::File::create(locks.join(port.to_string())) else { continue };
        if claim.try_lock().is_err() {
            continue; // another harness process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            CLAIMED.lock().unwrap_or_else(|p| p.into_inner()).push(claim);
            return Ok(port);
        }
    }
    Err("no free port below the ephemeral range".into())
}

impl ProcCluster {
    /// Starts `n` nodes of `bin` with data under `root`.
    pub fn start(bin: &Path, root: &Path, n: u64) -> Result<ProcCluster, String> {
        Self::start_with(bin, root, n, "")
    }

    /// Starts `n` nodes whose configuration also holds `extra` (TOML
    /// sections such as `[remote_servers.c]`).
    pub fn start_with(bin: &Path, root: &Path, n: u64, extra: &str) -> Result<ProcCluster, String> {
        let mut raft = BTreeMap::new();
        let mut http = BTreeMap::new();
        for i in 1..=n {
            raft.insert(i, free_port()?);
            http.insert(i, free_port()?);
        }
        let mut links = BTreeMap::new();
        for i in 1..=n {
            for j in (1..=n).filter(|j| *j != i) {
                let target = SocketAddr::from(([127, 0, 0, 1], raft[&j]));
                links.insert((i, j), Proxy::start(target).map_err(|e| e.to_string())?);
            }
        }
        let mut nodes = Vec::new();
        for i in 1..=n {
            let dir = root.join(format!("n{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let mut toml = format!(
                "[server]\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{}\"\n\n[cluster]\nnode_id = {i}\n\
                 raft_listen = \"127.0.0.1:{}\"\nheartbeat_ms = 50\nelection_timeout_ms = 300\n",
                dir.join("data").display(),
                http[&i],
                raft[&i],
            );
            for j in 1..=n {
                let port = if j == i { raft[&i] } else { links[&(i, j)].port };
                toml.push_str(&format!(
                    "[[cluster.nodes]]\nid = {j}\nraft = \"127.0.0.1:{port}\"\nhttp = \"127.0.0.1:{}\"\n",
                    http[&j]
                ));
            }
            toml.push_str(extra);
            let config = dir.join("shardhouse.toml");
            std::fs::write(&config, toml).map_err(|e| e.to_string())?;
            let mut node = Node {
                id: i,
                http: http[&i],
                bin: bin.to_path_buf(),
                config,
                log: dir.join("server.log"),
                child: None,
                paused: false,
            };
            node.start()?;
            nodes.push(node);
        }
        Ok(ProcCluster { nodes, links })
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[u64]) {
        for ((a, b), p) in &self.links {
            if side.contains(a) != side.contains(b) {
                p.set_blocked(true);
            }
        }
    }

    /// Makes every link between `side` and the other nodes a black hole,
    /// both ways: packets are dropped, calls time out.
    pub fn blackhole(&self, side: &[u64]) {
        for ((a, b), p) in &self.links {
            if side.contains(a) != side.contains(b) {
                p.set_blackholed(true);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for p in self.links.values() {
            p.set_blocked(false);
            p.set_blackholed(false);
        }
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// HTTP ports of all nodes, up or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.http).collect()
    }
}
