//! A TCP relay on loopback that can cut every connection it carries at
//! once, as a network blip or a load balancer's reset does, while it keeps
//! accepting new ones. Bytes pass through untouched (TLS included).

#![allow(clippy::disallowed_types)] // a test's relay, far from the serving path

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Relay {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    /// Both ends of every connection carried so far.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays connections on a free loopback port to `target`, on threads
    /// that live as long as the test process.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (counter, streams) = (accepted.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut held = streams.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                drop(held);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay {
            addr,
            accepted,
            open,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every connection carried so far; returns how many ends were
    /// still open (a shutdown of one already closed fails).
    pub fn cut(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        open.drain(..)
            .filter(|stream| stream.shutdown(Shutdown::Both).is_ok())
            .count()
    }
}

/// Copies `from` to `to` until either ends, then closes both ways.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(read) = from.read(&mut buffer) {
            if read == 0 || to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
