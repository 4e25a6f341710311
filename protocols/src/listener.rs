//! One accept loop for every listener (SSH, PostgreSQL, RDP, the API), and the gate in front of
//! it: every listener faces hostile clients, so a connection that has not authenticated yet holds
//! a [`PreAuth`] slot, counted per listener and per source address, and carries one deadline for
//! the whole pre-authentication phase.
//!
//! A connection over either cap is closed at once, before a byte is read: 200 stalled
//! connections from one address take that address's slots, not everyone's. Refusals are
//! counted, and reported once per source and burst through [`GateReport`] (the gateway audits
//! it), never once per connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of one listener before authentication.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// From accept to authenticated; then the connection is closed.
    pub auth_timeout: Duration,
    /// Connections not authenticated yet, on this listener.
    pub max_unauthenticated: usize,
    /// Connections not authenticated yet, from one source (an IPv4 address or an IPv6 /64).
    pub max_unauthenticated_per_source: usize,
}

/// A burst of refused connections from one source, reported once when it starts and once when
/// it ends (with the count).
#[derive(Debug, Clone)]
pub struct Refused {
    pub listener: &'static str,
    pub source: IpAddr,
    /// `per_source` or `listener`.
    pub cap: &'static str,
    pub limit: usize,
    /// Connections refused in this burst so far.
    pub refused: u64,
    /// `false` at the start of a burst, `true` for its summary.
    pub ended: bool,
}

/// Where the gate reports bursts of refusals (the gateway audits them).
pub type GateReport = Arc<dyn Fn(&Refused) + Send + Sync>;

/// Sources whose refusals are counted at once.
const MAX_BURSTS: usize = 65_536;

/// How long a source must be quiet for its burst of refusals to be over.
const BURST_QUIET: Duration = Duration::from_secs(10);

/// The key a source is counted under: IPv4 addresses one by one, IPv6 by /64 (one host usually
/// holds a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

#[derive(Clone, Copy)]
struct Burst {
    cap: &'static str,
    limit: usize,
    refused: u64,
    last: Instant,
}

#[derive(Default)]
struct GateState {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
    bursts: HashMap<IpAddr, Burst>,
    /// When ended bursts were last looked for.
    swept: Option<Instant>,
}

/// Sources the per-source cap does not hold back (the API's trusted proxies: one proxy's
/// connections carry many people's requests, which the API counts by the forwarded address).
/// The listener's cap still counts them.
pub type Exempt = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Counts the unauthenticated connections of one listener.
pub struct Gate {
    name: &'static str,
    limits: GateLimits,
    state: Mutex<GateState>,
    report: Option<GateReport>,
    exempt: Option<Exempt>,
}

impl Gate {
    pub fn new(name: &'static str, limits: GateLimits, report: Option<GateReport>) -> Arc<Gate> {
        Self::exempting(name, limits, report, None)
    }

    /// A gate whose per-source cap does not apply to the sources `exempt` names.
    pub fn exempting(
        name: &'static str,
        limits: GateLimits,
        report: Option<GateReport>,
        exempt: Option<Exempt>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            limits,
            state: Mutex::new(GateState::default()),
            report,
            exempt,
        })
    }

    pub fn limits(&self) -> GateLimits {
        self.limits
    }

    /// Unauthenticated connections now: (on the listener, from `ip`).
    pub fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.per_source.get(&source_key(ip)).copied().unwrap_or(0);
        (s.total, n)
    }

    /// A slot for a new connection from `peer`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<PreAuth> {
        let key = source_key(peer.ip());
        let exempt = self.exempt.as_ref().is_some_and(|f| f(peer.ip()));
        let mut reports = Vec::new();
        let slot = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Bursts that went quiet are over: report their totals. (At most once a second: a
            // flood of connections must not make every accept walk every burst.)
            if s.swept
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                s.swept = Some(now);
                let ended: Vec<IpAddr> = s
                    .bursts
                    .iter()
                    .filter(|(_, b)| now.duration_since(b.last) >= BURST_QUIET)
                    .map(|(ip, _)| *ip)
                    .collect();
                for ip in ended {
                    if let Some(b) = s.bursts.remove(&ip) {
                        reports.push(self.refused(ip, &b, true));
                    }
                }
            }
            let here = s.per_source.get(&key).copied().unwrap_or(0);
            // A full listener is one burst, whoever knocks (the unspecified address stands for
            // all of them), so many sources cannot each start one.
            let (over, key_of_burst) =
                if !exempt && here >= self.limits.max_unauthenticated_per_source {
                    (
                        Some(("per_source", self.limits.max_unauthenticated_per_source)),
                        key,
                    )
                } else if s.total >= self.limits.max_unauthenticated {
                    (
                        Some(("listener", self.limits.max_unauthenticated)),
                        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    )
                } else {
                    (None, key)
                };
            match over {
                // Past MAX_BURSTS sources refused at once, new ones are refused without a
                // record: memory stays bounded whatever the number of sources.
                Some(_)
                    if s.bursts.len() >= MAX_BURSTS && !s.bursts.contains_key(&key_of_burst) =>
                {
                    None
                }
                Some((cap, limit)) => {
                    let burst = s.bursts.entry(key_of_burst).or_insert(Burst {
                        cap,
                        limit,
                        refused: 0,
                        last: now,
                    });
                    burst.refused += 1;
                    burst.last = now;
                    if burst.refused == 1 {
                        let b = *burst;
                        reports.push(self.refused(key_of_burst, &b, false));
                    }
                    None
                }
                None => {
                    s.total += 1;
                    *s.per_source.entry(key).or_insert(0) += 1;
                    Some(PreAuth {
                        gate: Some(self.clone()),
                        key,
                        deadline: now + self.limits.auth_timeout,
                    })
                }
            }
        };
        if let Some(report) = &self.report {
            for r in &reports {
                report(r);
            }
        }
        slot
    }

    fn refused(&self, source: IpAddr, b: &Burst, ended: bool) -> Refused {
        Refused {
            listener: self.name,
            source,
            cap: b.cap,
            limit: b.limit,
            refused: b.refused,
            ended,
        }
    }

    fn release(&self, key: IpAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                s.per_source.remove(&key);
            }
        }
    }
}

/// A connection's place among the unauthenticated ones: released when the connection
/// authenticates ([`authenticated`](Self::authenticated)) or ends (drop).
pub struct PreAuth {
    gate: Option<Arc<Gate>>,
    key: IpAddr,
    deadline: Instant,
}

impl PreAuth {
    /// When the pre-authentication phase must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The configured pre-authentication time, for messages.
    pub fn timeout(&self) -> Duration {
        self.gate
            .as_ref()
            .map(|g| g.limits.auth_timeout)
            .unwrap_or_default()
    }

    /// The connection proved who it is: it no longer counts as unauthenticated.
    pub fn authenticated(&mut self) {
        if let Some(g) = self.gate.take() {
            g.release(self.key);
        }
    }

    /// A slot that counts nothing, for connections made outside a listener (tests).
    pub fn unlimited(timeout: Duration) -> PreAuth {
        PreAuth {
            gate: None,
            key: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            deadline: Instant::now() + timeout,
        }
    }

    /// `fut`, unless the pre-authentication deadline passes first (`None`).
    pub async fn within<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.deadline, fut).await.ok()
    }
}

impl Drop for PreAuth {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// `socket`, and a second handle on the same connection that can shut it down from outside:
/// for a protocol library that runs the connection in a task of its own (russh), the one way
/// to end a connection that never authenticated.
pub fn with_kill_switch(socket: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = socket.into_std()?;
    let kill = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, kill))
}

/// Accept connections on `listener` until `shutdown`, passing each one that the gate admits to
/// `serve` in a task of `tracker`'s. Connections over a cap are closed at once.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    gate: Arc<Gate>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, PreAuth) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => match gate.admit(peer) {
                    Some(slot) => {
                        // Everything logged about this connection, from before authentication to
                        // its end, names the listener and the peer (the session's span, once
                        // admitted, adds the session id, protocol, actor and target).
                        let span = tracing::info_span!("conn", listener = gate.name, %peer);
                        tracker.spawn(tracing::Instrument::instrument(serve(socket, peer, slot), span));
                    }
                    // Closing at once: a SYN flood of stalled clients costs a file descriptor
                    // for microseconds, not a slot for the whole auth timeout.
                    None => drop(socket),
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = gate.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> GateLimits {
        GateLimits {
            auth_timeout: Duration::from_secs(30),
            max_unauthenticated: total,
            max_unauthenticated_per_source: per,
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40000)
    }

    #[tokio::test]
    async fn per_source_cap_leaves_room_for_others() {
        let seen = Arc::new(Mutex::new(Vec::<Refused>::new()));
        let sink = seen.clone();
        let gate = Gate::new(
            "ssh",
            limits(100, 3),
            Some(Arc::new(move |r: &Refused| {
                sink.lock().expect("lock").push(r.clone())
            })),
        );
        let held: Vec<PreAuth> = (0..3)
            .map(|_| gate.admit(peer("127.0.0.2")).expect("under the cap"))
            .collect();
        for _ in 0..200 {
            assert!(gate.admit(peer("127.0.0.2")).is_none());
        }
        let other = gate.admit(peer("127.0.0.1"));
        assert!(other.is_some(), "another source still gets a slot");
        assert_eq!(gate.counts("127.0.0.2".parse().expect("ip")), (4, 3));
        // One report for the burst, not 200.
        let reports = seen.lock().expect("lock").clone();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].cap, "per_source");
        drop(held);
        assert_eq!(gate.counts("127.0.0.2".parse().expect("ip")), (1, 0));
    }

    #[tokio::test]
    async fn listener_cap_and_release_on_authentication() {
        let gate = Gate::new("postgres", limits(2, 10), None);
        let mut a = gate.admit(peer("10.0.0.1")).expect("a");
        let _b = gate.admit(peer("10.0.0.2")).expect("b");
        assert!(gate.admit(peer("10.0.0.3")).is_none(), "listener full");
        a.authenticated();
        assert!(gate.admit(peer("10.0.0.3")).is_some(), "a slot came back");
        drop(a); // releasing twice must not free a second slot
        assert_eq!(gate.counts("10.0.0.1".parse().expect("ip")).0, 1);
    }

    #[test]
    fn ipv6_counts_by_prefix() {
        let a = source_key("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = source_key("2001:db8:1:2:bbbb::2".parse().expect("ip"));
        let c = source_key("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = source_key("::ffff:192.0.2.7".parse().expect("ip"));
        assert_eq!(mapped, "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }
}
