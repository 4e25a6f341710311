//! Small peers and data for tests: reproducible bytes, a slow TCP proxy, an echo server.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A TCP forwarder that waits `delay` before connecting each client to `upstream`: makes the
/// target leg slow to come up, to check that early keystrokes are buffered, not dropped.
pub fn delayed_proxy(upstream: String, delay: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(client) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    return;
                };
                pipe(client, server);
            });
        }
    });
    port
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || copy_close(a, b2));
    copy_close(b, a2);
    let _ = t.join();
}

fn copy_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A loopback TCP echo server; returns its port.
pub fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { continue };
            std::thread::spawn(move || {
                if let Ok(c2) = c.try_clone() {
                    copy_close(c, c2);
                }
            });
        }
    });
    port
}
