//! PostgreSQL CancelRequests per source (see the module above).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wardengate_protocols::listener::source_key;

/// Sources remembered at once.
const MAX_KEYS: usize = 65_536;

/// PostgreSQL CancelRequests per source: a token bucket of `rate` per second (each request may
/// guess a backend key), and counts of what was dropped or named no session, summarised by
/// [`CancelGuard::sweep`] instead of a log line per request.
pub struct CancelGuard {
    rate: f64,
    state: Mutex<HashMap<IpAddr, CancelSource>>,
}

#[derive(Debug, Clone)]
struct CancelSource {
    tokens: f64,
    last: Instant,
    dropped: u64,
    unknown: u64,
}

/// A source that sent cancel requests beyond the limit, or many with unknown keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelFlood {
    pub source: IpAddr,
    pub dropped: u64,
    pub unknown: u64,
}

impl CancelGuard {
    pub fn new(per_second: u32) -> CancelGuard {
        CancelGuard {
            rate: f64::from(per_second.max(1)),
            state: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, CancelSource>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a cancel request from `ip` be looked up now?
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= MAX_KEYS && !m.contains_key(&source_key(ip)) {
            m.retain(|_, s| now.duration_since(s.last) < Duration::from_secs(60));
            if m.len() >= MAX_KEYS {
                return false;
            }
        }
        let s = m.entry(source_key(ip)).or_insert(CancelSource {
            tokens: self.rate,
            last: now,
            dropped: 0,
            unknown: 0,
        });
        s.tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * self.rate).min(self.rate);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            s.dropped += 1;
            false
        }
    }

    /// A cancel request from `ip` named no live session.
    pub fn unknown(&self, ip: IpAddr) {
        if let Some(s) = self.lock().get_mut(&source_key(ip)) {
            s.unknown += 1;
        }
    }

    /// Sources that were dropped or sent 10 or more unknown keys since the last sweep (counts
    /// reset); idle sources are forgotten.
    pub fn sweep(&self) -> Vec<CancelFlood> {
        let now = Instant::now();
        let mut m = self.lock();
        let out = m
            .iter_mut()
            .filter(|(_, s)| s.dropped > 0 || s.unknown >= 10)
            .map(|(ip, s)| {
                let f = CancelFlood {
                    source: *ip,
                    dropped: s.dropped,
                    unknown: s.unknown,
                };
                s.dropped = 0;
                s.unknown = 0;
                f
            })
            .collect();
        m.retain(|_, s| now.duration_since(s.last) < Duration::from_secs(60));
        out
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;

    #[test]
    fn a_source_gets_its_rate_and_is_summarised() {
        let g = CancelGuard::new(5);
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        let allowed = (0..50).filter(|_| g.allow(ip)).count();
        assert!((5..=6).contains(&allowed), "{allowed}");
        for _ in 0..12 {
            g.unknown(ip);
        }
        let other: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(g.allow(other), "another source has its own bucket");
        let s = g.sweep();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].dropped as usize, s[0].unknown), (50 - allowed, 12));
        assert!(g.sweep().is_empty(), "counts reset");
    }
}
