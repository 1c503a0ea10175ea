//! A counting TCP proxy on 127.0.0.1: every byte between a client and a server passes through
//! it and is counted per direction, HTTP headers included. The same instrument measures our
//! sync and the peer's replication, so bytes per household compare like with like.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;

#[derive(Debug, Default)]
struct Counters {
    /// Client to server.
    up: AtomicU64,
    /// Server to client.
    down: AtomicU64,
    connections: AtomicU64,
}

/// Bytes counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    pub up: u64,
    pub down: u64,
    pub connections: u64,
}

impl std::ops::Sub for Bytes {
    type Output = Bytes;

    fn sub(self, earlier: Bytes) -> Bytes {
        Bytes {
            up: self.up - earlier.up,
            down: self.down - earlier.down,
            connections: self.connections - earlier.connections,
        }
    }
}

/// A proxy to one upstream address, serving until the process ends.
#[derive(Clone, Debug)]
pub struct Proxy {
    counters: Arc<Counters>,
    pub url: String,
}

impl Proxy {
    /// Proxies `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let target: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("{upstream} is not http://IP:PORT"))?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let url = format!("http://{}", listener.local_addr()?);
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let up = Arc::clone(&shared);
                let down = Arc::clone(&shared);
                std::thread::spawn(move || pump(client, server, &up.up));
                std::thread::spawn(move || pump(server2, client2, &down.down));
            }
        });
        Ok(Proxy { counters, url })
    }

    pub fn bytes(&self) -> Bytes {
        Bytes {
            up: self.counters.up.load(Ordering::SeqCst),
            down: self.counters.down.load(Ordering::SeqCst),
            connections: self.counters.connections.load(Ordering::SeqCst),
        }
    }
}

/// Copies `from` to `to`, counting, until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Counted before it is forwarded, so a reply the client has read is counted.
                counter.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
