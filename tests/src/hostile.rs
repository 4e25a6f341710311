//! What an attacker does, for the hardening tests: connections from another loopback address
//! (127.0.0.2, so the real user on 127.0.0.1 is a different source), password guesses with a
//! russh client, stalled handshakes, and the gateway's memory as the kernel counts it.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client;

use crate::russh_client::AcceptAnyHostKey;

/// The attacker's source address.
pub const ATTACKER: &str = "127.0.0.2";

/// A runtime for the async clients of one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A TCP connection to 127.0.0.1:`port` from `source` (any port).
pub async fn tcp_from(source: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(source.parse().expect("ip"), 0))?;
    s.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// A blocking TCP connection from `source`.
pub fn std_tcp_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt.block_on(tcp_from(source, port))?.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// How a password attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Accepted,
    Rejected,
    /// The connection failed or was closed before an answer.
    Closed,
}

/// One SSH connection from `source` trying `password` for `login` (password method).
pub async fn ssh_password(source: &str, port: u16, login: &str, password: &str) -> Attempt {
    let Ok(tcp) = tcp_from(source, port).await else {
        return Attempt::Closed;
    };
    let cfg = Arc::new(client::Config::default());
    let Ok(mut h) = client::connect_stream(cfg, tcp, AcceptAnyHostKey).await else {
        return Attempt::Closed;
    };
    let r = h.authenticate_password(login, password).await;
    let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
    match r {
        Ok(a) if a.success() => Attempt::Accepted,
        Ok(_) => Attempt::Rejected,
        Err(_) => Attempt::Closed,
    }
}

/// An SSH connection from `source` that completes key exchange and then says nothing more.
pub async fn ssh_after_kex(
    source: &str,
    port: u16,
) -> anyhow::Result<client::Handle<AcceptAnyHostKey>> {
    let tcp = tcp_from(source, port).await?;
    let cfg = Arc::new(client::Config {
        inactivity_timeout: None,
        ..Default::default()
    });
    Ok(client::connect_stream(cfg, tcp, AcceptAnyHostKey).await?)
}

/// The gateway process's resident memory now and at its peak, in MiB (VmRSS, VmHWM).
pub fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Wait until `stream` is closed by the other side (a read returns 0 or a reset), up to
/// `limit`; how long it took, or `None` if it was still open then. Data read meanwhile (a
/// banner) is skipped.
pub fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::{ErrorKind, Read};
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}
