//! Failed-login accounting per source, network, user and (user, source) (see the module above).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::SecuritySection;
use wardengate_protocols::listener::source_key;

/// Failures of one key (a source, a user, a user from a source).
#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
    /// Attempts allowed and not yet judged (checks running): they count against the free
    /// failures, so parallel attempts cannot all slip through the moment a wait ends.
    pending: u32,
    pending_at: Instant,
    /// Attempts refused without a check in the current burst, and the last one's time.
    refused: u64,
    last_refused: Option<Instant>,
    /// The burst was reported (`auth.throttled`).
    reported: bool,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: 0,
            last: now,
            blocked_until: None,
            pending: 0,
            pending_at: now,
            refused: 0,
            last_refused: None,
            reported: false,
        }
    }
}

/// An attempt still pending after this long is taken as abandoned (its client left mid-check).
const PENDING_STALE: Duration = Duration::from_secs(60);

/// A burst of failed logins the audit must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleEvent {
    /// `auth.throttled` or `auth.throttle_ended`.
    pub kind: &'static str,
    /// `source`, `network` (an IPv6 /48), `user` or `user_source`.
    pub scope: &'static str,
    pub user: Option<String>,
    pub source: Option<IpAddr>,
    pub failures: u32,
    pub refused: u64,
    /// How long this key waits now, in whole seconds (start of a burst).
    pub wait_s: u64,
}

/// Most keys remembered per map; past it the oldest records go (an attacker spraying names
/// cannot grow the gateway's memory).
const MAX_KEYS: usize = 65_536;

struct Table<K> {
    map: HashMap<K, Record>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Table {
            map: HashMap::new(),
        }
    }

    fn blocked(&self, k: &K, now: Instant) -> bool {
        self.map
            .get(k)
            .and_then(|r| r.blocked_until)
            .is_some_and(|t| t > now)
    }

    /// Whether one more attempt fits: not waiting, and (past the free failures) none in flight.
    fn admits(&self, k: &K, now: Instant, l: &Limits, free: u32) -> bool {
        let Some(r) = self.map.get(k) else {
            return true;
        };
        if r.blocked_until.is_some_and(|t| t > now) {
            return false;
        }
        let failures = if now.duration_since(r.last) >= l.window {
            0
        } else {
            r.failures
        };
        let pending = if now.duration_since(r.pending_at) >= PENDING_STALE {
            0
        } else {
            r.pending
        };
        if failures >= free {
            pending == 0
        } else {
            failures + pending < free.max(1)
        }
    }

    fn failures(&self, k: &K, now: Instant, window: Duration) -> u32 {
        self.map
            .get(k)
            .filter(|r| now.duration_since(r.last) < window)
            .map_or(0, |r| r.failures)
    }

    fn entry(&mut self, k: &K, now: Instant, window: Duration) -> &mut Record {
        if self.map.len() >= MAX_KEYS && !self.map.contains_key(k) {
            self.evict(now, window);
        }
        self.map
            .entry(k.clone())
            .or_insert_with(|| Record::new(now))
    }

    fn start(&mut self, k: &K, now: Instant, window: Duration) {
        let r = self.entry(k, now, window);
        if now.duration_since(r.pending_at) >= PENDING_STALE {
            r.pending = 0;
        }
        r.pending += 1;
        r.pending_at = now;
    }

    fn settle(&mut self, k: &K) {
        if let Some(r) = self.map.get_mut(k) {
            r.pending = r.pending.saturating_sub(1);
        }
    }

    fn refuse(&mut self, k: &K, now: Instant) {
        if let Some(r) = self.map.get_mut(k) {
            r.refused += 1;
            r.last_refused = Some(now);
        }
    }

    /// Count a failure; `Some(wait)` when this failure starts (or extends) a wait.
    fn fail(&mut self, k: &K, now: Instant, s: &Limits, free: u32) -> Option<Duration> {
        let r = self.entry(k, now, s.window);
        if now.duration_since(r.last) >= s.window {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        if r.failures <= free {
            return None;
        }
        let doublings = (r.failures - free - 1).min(20);
        let wait = Duration::from_secs(1u64 << doublings).min(s.backoff_max);
        r.blocked_until = Some(now + wait);
        Some(wait)
    }

    fn evict(&mut self, now: Instant, window: Duration) {
        self.map.retain(|_, r| now.duration_since(r.last) < window);
        if self.map.len() >= MAX_KEYS {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, r)| r.last)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    free: u32,
    user_free: u32,
    backoff_max: Duration,
    window: Duration,
}

/// How many more failures an IPv6 /48 gets than one of its /64s: a network that large is
/// one attacker's, not many users', and its /64s must not each start afresh.
const NETWORK_FACTOR: u32 = 8;

/// What one attempt is counted under: its network (an IPv6 /48), its source, and (user, source).
struct Keys {
    net: Option<IpAddr>,
    ip: IpAddr,
    pair: (String, IpAddr),
}

fn keys(user: &str, ip: IpAddr) -> Keys {
    let source = source_key(ip);
    Keys {
        net: network_key(ip),
        ip: source,
        pair: (user.to_string(), source),
    }
}

/// The /48 an IPv6 address is in (`None` for IPv4, counted per address).
fn network_key(ip: IpAddr) -> Option<IpAddr> {
    match source_key(ip) {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[3..].fill(0);
            Some(IpAddr::V6(seg.into()))
        }
        IpAddr::V4(_) => None,
    }
}

/// Failed-login accounting.
pub struct Throttle {
    limits: Limits,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    sources: Table<IpAddr>,
    networks: Table<IpAddr>,
    users: Table<String>,
    pairs: Table<(String, IpAddr)>,
}

impl Throttle {
    pub fn new(s: &SecuritySection) -> Throttle {
        Throttle {
            limits: Limits {
                free: s.failures_before_backoff,
                user_free: s.user_failures_before_backoff,
                backoff_max: s.backoff_max,
                window: s.failure_window,
            },
            state: Mutex::new(ThrottleState {
                sources: Table::new(),
                networks: Table::new(),
                users: Table::new(),
                pairs: Table::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May `user` (empty when the attempt names nobody, as an API token does) try from `ip`?
    /// An allowed attempt is in flight until [`record`](Self::record) (or
    /// [`abandon`](Self::abandon)) judges it; a refusal is counted towards the burst's summary.
    pub fn allow(&self, user: &str, ip: IpAddr) -> bool {
        let Keys { net, ip, pair } = keys(user, ip);
        let (now, l, mut s) = (Instant::now(), self.limits, self.lock());
        let by_source = !s.sources.admits(&ip, now, &l, l.free);
        let by_network = net.is_some_and(|n| s.networks.blocked(&n, now));
        let by_pair = !user.is_empty() && !s.pairs.admits(&pair, now, &l, l.free);
        let by_user = s.users.blocked(&pair.0, now) && s.pairs.failures(&pair, now, l.window) > 0;
        if !(by_source || by_network || by_pair || by_user) {
            s.sources.start(&ip, now, l.window);
            if !user.is_empty() {
                s.pairs.start(&pair, now, l.window);
            }
            return true;
        }
        if by_source {
            s.sources.refuse(&ip, now);
        }
        if let (true, Some(n)) = (by_network, net) {
            s.networks.refuse(&n, now);
        }
        if by_pair {
            s.pairs.refuse(&pair, now);
        }
        if by_user {
            s.users.refuse(&pair.0, now);
        }
        false
    }

    /// An allowed attempt that was never judged (the check could not run).
    pub fn abandon(&self, user: &str, ip: IpAddr) {
        let ip = source_key(ip);
        let mut s = self.lock();
        s.sources.settle(&ip);
        s.pairs.settle(&(user.to_string(), ip));
    }

    /// Count the outcome of a check. Returns the bursts that start now.
    pub fn record(&self, user: &str, ip: IpAddr, ok: bool) -> Vec<ThrottleEvent> {
        let Keys { net, ip, pair } = keys(user, ip);
        let (now, l, mut s) = (Instant::now(), self.limits, self.lock());
        s.sources.settle(&ip);
        s.pairs.settle(&pair);
        if ok {
            s.pairs.map.remove(&pair);
            return Vec::new();
        }
        let mut events = Vec::new();
        let mut note = |rec: Option<&mut Record>, wait: Option<Duration>, ev: ThrottleEvent| {
            if let (Some(r), Some(w)) = (rec, wait) {
                if !r.reported {
                    r.reported = true;
                    events.push(ThrottleEvent {
                        failures: r.failures,
                        wait_s: w.as_secs(),
                        ..ev
                    });
                }
            }
        };
        let base = ThrottleEvent {
            kind: "auth.throttled",
            scope: "source",
            user: None,
            source: Some(ip),
            failures: 0,
            refused: 0,
            wait_s: 0,
        };
        let w = s.sources.fail(&ip, now, &l, l.free);
        note(s.sources.map.get_mut(&ip), w, base.clone());
        if let Some(n) = net {
            let w = s
                .networks
                .fail(&n, now, &l, l.free.saturating_mul(NETWORK_FACTOR));
            note(
                s.networks.map.get_mut(&n),
                w,
                ThrottleEvent {
                    scope: "network",
                    source: Some(n),
                    ..base.clone()
                },
            );
        }
        if !user.is_empty() {
            let w = s.pairs.fail(&pair, now, &l, l.free);
            note(
                s.pairs.map.get_mut(&pair),
                w,
                ThrottleEvent {
                    scope: "user_source",
                    user: Some(user.to_string()),
                    ..base.clone()
                },
            );
            let w = s.users.fail(&pair.0, now, &l, l.user_free);
            note(
                s.users.map.get_mut(&pair.0),
                w,
                ThrottleEvent {
                    scope: "user",
                    user: Some(user.to_string()),
                    source: None,
                    ..base
                },
            );
        }
        events
    }

    /// Bursts that are over (the wait ran out, and neither a failure nor a refusal came for a
    /// minute): their summaries, and their records forgotten when old.
    pub fn sweep(&self) -> Vec<ThrottleEvent> {
        let now = Instant::now();
        let l = self.limits;
        let quiet = Duration::from_secs(60).min(l.window);
        let over = |r: &Record| {
            r.reported
                && r.blocked_until.is_none_or(|t| t <= now)
                && now.duration_since(r.last) >= quiet
                && r.last_refused
                    .is_none_or(|t| now.duration_since(t) >= quiet)
        };
        let summary = |scope, user: Option<String>, source: Option<IpAddr>, r: &mut Record| {
            let e = ThrottleEvent {
                kind: "auth.throttle_ended",
                scope,
                user,
                source,
                failures: r.failures,
                refused: r.refused,
                wait_s: 0,
            };
            r.reported = false;
            r.refused = 0;
            e
        };
        let mut s = self.lock();
        let mut out = Vec::new();
        for (ip, r) in s.sources.map.iter_mut().filter(|(_, r)| over(r)) {
            out.push(summary("source", None, Some(*ip), r));
        }
        for (ip, r) in s.networks.map.iter_mut().filter(|(_, r)| over(r)) {
            out.push(summary("network", None, Some(*ip), r));
        }
        for ((u, ip), r) in s.pairs.map.iter_mut().filter(|(_, r)| over(r)) {
            out.push(summary("user_source", Some(u.clone()), Some(*ip), r));
        }
        for (u, r) in s.users.map.iter_mut().filter(|(_, r)| over(r)) {
            out.push(summary("user", Some(u.clone()), None, r));
        }
        let keep = |r: &Record| {
            now.duration_since(r.last) < l.window
                || now.duration_since(r.pending_at) < PENDING_STALE
        };
        s.sources.map.retain(|_, r| keep(r));
        s.networks.map.retain(|_, r| keep(r));
        s.pairs.map.retain(|_, r| keep(r));
        s.users.map.retain(|_, r| keep(r));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(free: u32, user_free: u32) -> Throttle {
        Throttle::new(&SecuritySection {
            failures_before_backoff: free,
            user_failures_before_backoff: user_free,
            ..SecuritySection::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_waits_after_its_free_failures_and_others_do_not() {
        let t = throttle(3, 100);
        for _ in 0..3 {
            assert!(t.allow("alice", ip("10.0.0.9")));
            assert!(t.record("alice", ip("10.0.0.9"), false).is_empty());
        }
        let started = t.record("alice", ip("10.0.0.9"), false);
        assert_eq!(started.len(), 2, "source and user_source: {started:?}");
        assert!(started.iter().all(|e| e.kind == "auth.throttled"));
        assert!(!t.allow("alice", ip("10.0.0.9")), "the attacker waits");
        assert!(!t.allow("bob", ip("10.0.0.9")), "whatever name it tries");
        assert!(t.allow("alice", ip("10.0.0.1")), "the real alice does not");
        // More failures in the same burst are not reported again.
        assert!(t.record("alice", ip("10.0.0.9"), false).is_empty());
    }

    #[test]
    fn a_user_under_attack_stays_open_to_clean_sources() {
        let t = throttle(100, 4);
        for i in 0..5 {
            let src = ip(&format!("10.0.1.{i}"));
            assert!(t.allow("alice", src));
            t.record("alice", src, false);
        }
        assert!(
            !t.allow("alice", ip("10.0.1.2")),
            "a source that failed for alice waits"
        );
        assert!(t.allow("alice", ip("10.0.2.1")), "a new source may try");
        assert!(
            t.allow("bob", ip("10.0.1.2")),
            "other users are not affected"
        );
    }

    #[test]
    fn success_clears_the_pair_and_waits_double() {
        let t = throttle(1, 100);
        t.record("alice", ip("10.0.0.5"), false);
        t.record("alice", ip("10.0.0.5"), true);
        let mut s = t.lock();
        assert!(s.pairs.map.is_empty());
        let now = Instant::now();
        let l = t.limits;
        let k = ip("10.9.9.9");
        let waits: Vec<u64> = (0..5)
            .filter_map(|_| s.sources.fail(&k, now, &l, 1).map(|d| d.as_secs()))
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8]);
    }

    #[test]
    fn parallel_attempts_cannot_all_slip_through_when_a_wait_ends() {
        let t = throttle(3, 100);
        let ip = ip("10.0.0.8");
        // Within the free failures: as many in flight as failures remain.
        let allowed = (0..16).filter(|_| t.allow("alice", ip)).count();
        assert_eq!(allowed, 3);
        for _ in 0..3 {
            t.record("alice", ip, false);
        }
        // Past them (and past the wait): one at a time.
        std::thread::sleep(Duration::from_millis(1100));
        let allowed = (0..16).filter(|_| t.allow("bob", ip)).count();
        assert_eq!(allowed, 1);
        t.abandon("bob", ip);
        assert!(t.allow("bob", ip), "an abandoned attempt frees its place");
    }

    #[test]
    fn an_ipv6_network_cannot_start_afresh_from_each_of_its_64s() {
        let t = throttle(2, 1000);
        let mut refused = 0;
        for i in 0..200u32 {
            let a: IpAddr = format!("2001:db8:7:{:x}::1", i).parse().expect("ip");
            if t.allow("alice", a) {
                t.record("alice", a, false);
            } else {
                refused += 1;
            }
        }
        assert!(
            refused > 150,
            "the /48 is throttled as one: {refused} of 200 refused"
        );
        let elsewhere: IpAddr = "2001:db9::1".parse().expect("ip");
        assert!(t.allow("alice", elsewhere), "another /48 is not");
    }

    #[test]
    fn memory_is_bounded_under_a_name_spray() {
        let t = throttle(5, 5);
        for i in 0..(MAX_KEYS + 100) {
            t.record(&format!("user{i}"), ip("10.0.0.7"), false);
        }
        let s = t.lock();
        assert!(s.users.map.len() <= MAX_KEYS);
        assert!(s.pairs.map.len() <= MAX_KEYS);
    }
}
