//! A TCP proxy per directed pair of nodes: node A reaches node B's gRPC
//! port only through the proxy (A→B), so a test can break the link and heal
//! it, in one of two ways:
//! - *cut*: new connections are closed at once and live ones are shut
//!   down (a peer restarting, a firewall that rejects);
//! - *black hole*: nothing is forwarded and nothing is closed — bytes wait
//!   in the proxy as dropped packets wait in TCP's retransmission queue, so
//!   calls time out instead of failing fast, and a healed link carries on
//!   the same connections (a firewall that drops, a switch that died).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct State {
    target: SocketAddr,
    blocked: AtomicBool,
    blackholed: AtomicBool,
    stop: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
}

impl State {
    /// Waits while the link is a black hole; false once the proxy stops.
    fn pass(&self) -> bool {
        while self.blackholed.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

/// One forwarding link.
pub struct Proxy {
    /// The loopback port the link listens on.
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            target,
            blocked: AtomicBool::new(false),
            blackholed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        std::thread::Builder::new().name(format!("proxy-{port}")).spawn(move || accept(listener, st))?;
        Ok(Proxy { port, state })
    }

    /// Cuts (`true`) or restores the link.
    pub fn set_blocked(&self, blocked: bool) {
        self.state.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            for s in self.state.live.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Makes the link a black hole (`true`) or lets it forward again.
    pub fn set_blackholed(&self, on: bool) {
        self.state.blackholed.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.set_blackholed(false);
        self.set_blocked(true);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(1));
    }
}

fn accept(listener: TcpListener, st: Arc<State>) {
    for conn in listener.incoming() {
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if st.blocked.load(Ordering::SeqCst) {
            continue; // dropped: the connection closes at once
        }
        let st = st.clone();
        // A connection made into a black hole waits (its SYN is lost) and
        // goes through once the link heals, unless the caller gave up.
        std::thread::spawn(move || connect(client, st));
    }
}

fn connect(client: TcpStream, st: Arc<State>) {
    if !st.pass() {
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&st.target, Duration::from_secs(1)) else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
    {
        let mut live = st.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|s| s.peer_addr().is_ok());
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            live.push(a);
            live.push(b);
        }
    }
    let st2 = st.clone();
    std::thread::spawn(move || pump(client, server, &st));
    std::thread::spawn(move || pump(s2, c2, &st2));
}

fn pump(mut from: TcpStream, mut to: TcpStream, st: &State) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read while the link is a black hole are held, not lost:
        // TCP would retransmit them once the path is back.
        if !st.pass() || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
