//! Network access sessions, EntryGuard style: `wgctl access start` allows the caller's address
//! on every network resource their policies grant, for a chosen time, and the gateway takes the
//! rules away again when the session expires or is stopped (`session.rs`). Rules are
//! reference-counted (`book.rs`): two sessions from one address share one rule, removed when
//! the last of them ends. Backends: nftables sets and the operator's programs (`backend.rs`).
//! Rules outlive a restart of the gateway: at start it removes the rules of sessions that ended
//! meanwhile and puts back the ones that went missing (`reconcile`).

pub mod backend;
pub mod book;
mod cluster;
mod explain;
mod lifecycle;
mod refusal;
mod session;
mod step_up;
mod view;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::http::HeaderMap;
use tokio::sync::Notify;
use wardengate_api as api;

pub use refusal::AccessRefusal;

/// The access sessions this gateway applies, and their rules.
#[derive(Default)]
pub struct AccessState {
    pub book: book::Book,
    /// Live sessions (pending, active, partial, expiring) by id.
    live: Mutex<HashMap<String, api::AccessSession>>,
    /// Wakes the expiry timer (a session started or ended).
    wake: Notify,
    /// Rules whose removal failed are being tried again (one sweep at a time).
    retrying: std::sync::atomic::AtomicBool,
}

impl AccessState {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, api::AccessSession>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An address or a network (`10.0.0.0/8`, `fd00::/8`), for `api.trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        if let Ok(n) = s.parse::<ipnet::IpNet>() {
            return Some(Cidr(n.trunc()));
        }
        s.parse::<IpAddr>()
            .ok()
            .map(|a| Cidr(a.to_canonical().into()))
    }
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// `[api] trusted_proxies`, parsed (the configuration was checked at load).
pub fn trusted(cfg: &crate::config::Loaded) -> Vec<Cidr> {
    cfg.config
        .api
        .trusted_proxies
        .iter()
        .filter_map(|p| Cidr::parse(p))
        .collect()
}

/// Most `X-Forwarded-For` entries read (a longer chain is refused, not truncated).
const MAX_FORWARDED: usize = 32;

/// The caller's address: the connection's peer, unless the peer is one of `trusted` proxies;
/// then the nearest address in `X-Forwarded-For` that is not a trusted proxy (read from the
/// right: what a client writes at the left is not believed past an untrusted hop).
pub fn client_address(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Result<IpAddr, String> {
    let peer = peer.ip().to_canonical();
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Ok(peer);
    }
    let mut hops = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let v = v
            .to_str()
            .map_err(|_| "X-Forwarded-For is not ASCII".to_string())?;
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if hops.len() == MAX_FORWARDED {
                return Err(format!(
                    "X-Forwarded-For lists more than {MAX_FORWARDED} addresses"
                ));
            }
            let ip: IpAddr = part.parse().map_err(|_| {
                format!(
                    "X-Forwarded-For entry '{}' is not an address",
                    api::text::inert(part, 64)
                )
            })?;
            hops.push(ip.to_canonical());
        }
    }
    if hops.is_empty() {
        // The proxy's own address would let in everyone behind it.
        return Err(format!(
            "the request came through the trusted proxy {peer} without X-Forwarded-For: the \
             proxy must say whom it forwards"
        ));
    }
    hops.iter()
        .rev()
        .find(|ip| !trusted.iter().any(|c| c.contains(**ip)))
        .copied()
        .ok_or_else(|| {
            "every address in X-Forwarded-For is a trusted proxy: nobody to let in".to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let trusted = [
            Cidr::parse("127.0.0.1").expect("addr"),
            Cidr::parse("10.0.0.0/8").expect("net"),
        ];
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.2.3".parse().expect("hv"),
        );
        let from = |p: &str| client_address(p.parse().expect("peer"), &h, &trusted);
        // Through two trusted hops: the first untrusted from the right.
        assert_eq!(
            from("127.0.0.1:5000"),
            Ok("198.51.100.7".parse().expect("ip"))
        );
        // From an untrusted peer the header is ignored.
        assert_eq!(from("192.0.2.1:5000"), Ok("192.0.2.1".parse().expect("ip")));
        // An IPv4-mapped peer is the IPv4 address.
        assert_eq!(
            client_address("[::ffff:192.0.2.1]:1".parse().expect("peer"), &h, &trusted),
            Ok("192.0.2.1".parse().expect("ip"))
        );
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", "not-an-ip".parse().expect("hv"));
        assert!(
            client_address("127.0.0.1:1".parse().expect("peer"), &bad, &trusted)
                .unwrap_err()
                .contains("not an address")
        );
        let long = vec!["203.0.113.1"; 40].join(",");
        let mut many = HeaderMap::new();
        many.append("x-forwarded-for", long.parse().expect("hv"));
        assert!(client_address("127.0.0.1:1".parse().expect("peer"), &many, &trusted).is_err());
        // No header from a trusted proxy, or only proxies in it: refused (the proxy's own
        // address would let in everyone behind it).
        assert!(client_address(
            "127.0.0.1:1".parse().expect("peer"),
            &HeaderMap::new(),
            &trusted
        )
        .unwrap_err()
        .contains("without X-Forwarded-For"));
        let mut proxies = HeaderMap::new();
        proxies.append("x-forwarded-for", "10.0.0.9, 10.1.1.1".parse().expect("hv"));
        assert!(
            client_address("127.0.0.1:1".parse().expect("peer"), &proxies, &trusted)
                .unwrap_err()
                .contains("every address")
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("fd00::/8")
            .expect("v6")
            .contains("fd12::1".parse().expect("ip")));
    }
}
