//! A TCP proxy per directed pair of nodes: node A reaches node B's gRPC
//! port only through the proxy (A→B), so a test can cut the link — new
//! connections are closed at once and live ones are shut down — and heal it.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct State {
    target: SocketAddr,
    blocked: AtomicBool,
    stop: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
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
        let Ok(server) = TcpStream::connect_timeout(&st.target, Duration::from_secs(1)) else { continue };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
        {
            let mut live = st.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|s| s.peer_addr().is_ok());
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                live.push(a);
                live.push(b);
            }
        }
        std::thread::spawn(move || pump(client, server));
        std::thread::spawn(move || pump(s2, c2));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
