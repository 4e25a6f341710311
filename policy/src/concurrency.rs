//! Concurrency accounting at four levels: actor, target, policy and gateway pool.
//!
//! One [`Ledger`] per gateway holds every admitted session's [`Lease`]. Acquiring checks all four
//! levels and counts the session under one lock, so simultaneous attempts can never overshoot a
//! limit; dropping the lease releases it, so every exit path (normal end, error, panic unwinding,
//! a denial after admission) gives the slot back.
//!
//! At the actor level a limit may evict instead of deny: the actor's oldest session loses its
//! slot to the new one, and the caller terminates it (reason `concurrency`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Which level a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Actor,
    Target,
    Policy,
    Pool,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Actor => "actor",
            Scope::Target => "target",
            Scope::Policy => "policy",
            Scope::Pool => "pool",
        }
    }
}

/// A structured concurrency denial: a bot can tell "target at capacity" from "policy denied".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitDenial {
    pub scope: Scope,
    pub limit: u32,
    pub current: u32,
    /// The actor, target, policy or gateway pool that is at capacity.
    pub subject: String,
}

impl fmt::Display for LimitDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.scope {
            Scope::Actor => "user",
            Scope::Target => "target",
            Scope::Policy => "policy",
            Scope::Pool => "gateway pool",
        };
        write!(
            f,
            "{what} at capacity: {} {}/{}",
            self.subject, self.current, self.limit
        )
    }
}

/// What to do when the actor level is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    #[default]
    Deny,
    /// Terminate the actor's oldest session (reason `concurrency`) to make room.
    EvictOldest,
}

/// The limits that apply to one request, already resolved to the most specific configured value
/// at each level. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub actor: Option<u32>,
    pub target: Option<u32>,
    pub policy: Option<u32>,
    pub pool: Option<u32>,
    #[serde(rename = "on_limit")]
    pub on_actor_limit: OnLimit,
}

/// Whom a session counts against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub actor: &'a str,
    pub target: &'a str,
    pub policy: &'a str,
    pub pool: &'a str,
}

#[derive(Debug, Clone)]
struct Held {
    tag: String,
    actor: String,
    target: String,
    policy: String,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    held: HashMap<u64, Held>,
    actor: HashMap<String, u32>,
    target: HashMap<String, u32>,
    policy: HashMap<String, u32>,
    total: u32,
}

fn bump(map: &mut HashMap<String, u32>, key: &str, up: bool) {
    if up {
        *map.entry(key.to_string()).or_default() += 1;
    } else if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl State {
    fn count(map: &HashMap<String, u32>, key: &str) -> u32 {
        map.get(key).copied().unwrap_or(0)
    }

    fn add(&mut self, h: &Held, up: bool) {
        bump(&mut self.actor, &h.actor, up);
        bump(&mut self.target, &h.target, up);
        bump(&mut self.policy, &h.policy, up);
        self.total = if up {
            self.total + 1
        } else {
            self.total.saturating_sub(1)
        };
    }

    /// The first level at which one more session would exceed its limit, given that `freed` (an
    /// evicted lease) no longer counts.
    fn check(&self, s: &Subject<'_>, l: &Limits, freed: Option<&Held>) -> Option<LimitDenial> {
        // One less at a level when the evicted lease counted there.
        let freed_at =
            |of: fn(&Held) -> &str, key: &str| u32::from(freed.is_some_and(|h| of(h) == key));
        let counts = Counts {
            actor: Self::count(&self.actor, s.actor) - freed_at(|h| &h.actor, s.actor),
            target: Self::count(&self.target, s.target) - freed_at(|h| &h.target, s.target),
            policy: Self::count(&self.policy, s.policy) - freed_at(|h| &h.policy, s.policy),
            pool: self.total - u32::from(freed.is_some()),
        };
        first_full(&counts, s, l)
    }
}

/// The first level at which one more session would exceed its limit, given the current counts
/// (a cluster store counts its leases and asks this, as the ledger does).
pub fn first_full(c: &Counts, s: &Subject<'_>, l: &Limits) -> Option<LimitDenial> {
    let levels = [
        (Scope::Actor, l.actor, c.actor, s.actor),
        (Scope::Target, l.target, c.target, s.target),
        (Scope::Policy, l.policy, c.policy, s.policy),
        (Scope::Pool, l.pool, c.pool, s.pool),
    ];
    levels
        .into_iter()
        .find_map(|(scope, limit, current, subject)| {
            let limit = limit?;
            (current >= limit).then(|| LimitDenial {
                scope,
                limit,
                current,
                subject: subject.to_string(),
            })
        })
}

/// The gateway's count of admitted sessions.
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

/// One admitted session's slot; released when dropped.
#[derive(Debug)]
pub struct Lease {
    ledger: Arc<Ledger>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ledger.release(self.id);
    }
}

/// A granted lease, and the session (by tag) evicted to make room for it, if any.
#[derive(Debug)]
pub struct Granted {
    pub lease: Lease,
    pub evicted: Option<String>,
}

/// Current counts, for the API and `policy explain`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub actor: u32,
    pub target: u32,
    pub policy: u32,
    pub pool: u32,
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent counts (every update is a few
        // integer operations), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a session tagged `tag` against `subject`, or say which level is full.
    pub fn acquire(
        self: &Arc<Self>,
        tag: &str,
        subject: Subject<'_>,
        limits: &Limits,
    ) -> Result<Granted, LimitDenial> {
        let mut st = self.lock();
        let mut evict = None;
        if let Some(denial) = st.check(&subject, limits, None) {
            let oldest = (denial.scope == Scope::Actor
                && limits.on_actor_limit == OnLimit::EvictOldest)
                .then(|| {
                    st.held
                        .iter()
                        .filter(|(_, h)| h.actor == subject.actor)
                        .min_by_key(|(id, _)| **id)
                        .map(|(id, _)| *id)
                })
                .flatten();
            let Some(oldest) = oldest else {
                return Err(denial);
            };
            if let Some(d) = st.check(&subject, limits, st.held.get(&oldest)) {
                return Err(d);
            }
            evict = Some(oldest);
        }
        let evicted = evict.and_then(|id| st.held.remove(&id)).map(|h| {
            st.add(&h, false);
            h.tag
        });
        Ok(Granted {
            lease: self.hold(&mut st, tag, &subject),
            evicted,
        })
    }

    /// Count a session tagged `tag` against `subject` (already checked).
    fn hold(self: &Arc<Self>, st: &mut State, tag: &str, subject: &Subject<'_>) -> Lease {
        let held = Held {
            tag: tag.to_string(),
            actor: subject.actor.to_string(),
            target: subject.target.to_string(),
            policy: subject.policy.to_string(),
        };
        st.add(&held, true);
        st.next += 1;
        let id = st.next;
        st.held.insert(id, held);
        Lease {
            ledger: self.clone(),
            id,
        }
    }

    /// A session changes hands: a slot for `subject`, counted as if the session's `old` slot
    /// were already free (the caller drops `old` once the new owner holds this one).
    pub fn transfer(
        self: &Arc<Self>,
        old: &Lease,
        tag: &str,
        subject: Subject<'_>,
        limits: &Limits,
    ) -> Result<Lease, LimitDenial> {
        let mut st = self.lock();
        let prev = st.held.get(&old.id).cloned();
        if let Some(d) = st.check(&subject, limits, prev.as_ref()) {
            return Err(d);
        }
        Ok(self.hold(&mut st, tag, &subject))
    }

    fn release(&self, id: u64) {
        let mut st = self.lock();
        if let Some(h) = st.held.remove(&id) {
            st.add(&h, false);
        }
    }

    pub fn counts(&self, subject: Subject<'_>) -> Counts {
        let st = self.lock();
        Counts {
            actor: State::count(&st.actor, subject.actor),
            target: State::count(&st.target, subject.target),
            policy: State::count(&st.policy, subject.policy),
            pool: st.total,
        }
    }

    pub fn total(&self) -> u32 {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subj<'a>(actor: &'a str, target: &'a str, policy: &'a str) -> Subject<'a> {
        Subject {
            actor,
            target,
            policy,
            pool: "gw-1",
        }
    }

    #[test]
    #[rustfmt::skip] // one case a line reads as the table it is
    fn each_level_denies_with_its_numbers() {
        let one = Some(1);
        let cases = [
            (Limits { actor: one, ..Default::default() }, Scope::Actor, "alice"),
            (Limits { target: one, ..Default::default() }, Scope::Target, "web-01"),
            (Limits { policy: one, ..Default::default() }, Scope::Policy, "sre"),
            (Limits { pool: one, ..Default::default() }, Scope::Pool, "gw-1"),
        ];
        let alice = subj("alice", "web-01", "sre");
        for (limits, scope, subject) in cases {
            let ledger = Ledger::new();
            let _first = ledger.acquire("s1", alice, &limits).expect("first fits");
            let d = ledger.acquire("s2", alice, &limits).expect_err("second exceeds");
            assert_eq!(
                d,
                LimitDenial {
                    scope,
                    limit: 1,
                    current: 1,
                    subject: subject.into()
                }
            );
        }
        let d = LimitDenial {
            scope: Scope::Target,
            limit: 5,
            current: 5,
            subject: "web-01.prod".into(),
        };
        assert_eq!(d.to_string(), "target at capacity: web-01.prod 5/5");
    }

    #[test]
    fn dropping_a_lease_releases_every_level() {
        let ledger = Ledger::new();
        let limits = Limits {
            actor: Some(1),
            target: Some(1),
            policy: Some(1),
            pool: Some(1),
            ..Default::default()
        };
        let s = subj("alice", "web-01", "sre");
        let lease = ledger.acquire("s1", s, &limits).expect("fits");
        drop(lease);
        assert_eq!(ledger.counts(s), Counts::default());
        ledger.acquire("s2", s, &limits).expect("fits again");
    }

    #[test]
    fn evict_oldest_takes_the_oldest_slot_of_that_actor() {
        let ledger = Ledger::new();
        let limits = Limits {
            actor: Some(2),
            on_actor_limit: OnLimit::EvictOldest,
            ..Default::default()
        };
        let alice = subj("alice", "t", "p");
        let _bob = ledger.acquire("b1", subj("bob", "t", "p"), &limits);
        let a1 = ledger.acquire("a1", alice, &limits).expect("a1");
        let _a2 = ledger.acquire("a2", alice, &limits).expect("a2");
        let g = ledger.acquire("a3", alice, &limits).expect("a3 evicts");
        assert_eq!(g.evicted.as_deref(), Some("a1"));
        assert_eq!(ledger.counts(alice).actor, 2);
        // The evicted lease's own drop later is a no-op.
        drop(a1);
        assert_eq!(ledger.counts(alice).actor, 2);
        // Eviction never lets another level overshoot.
        let tight = Limits {
            actor: Some(1),
            pool: Some(3),
            on_actor_limit: OnLimit::EvictOldest,
            ..Default::default()
        };
        let ledger = Ledger::new();
        let carol = subj("carol", "t", "p");
        let _x = ledger.acquire("x", carol, &tight).expect("x");
        let g = ledger.acquire("y", carol, &tight).expect("y evicts x");
        assert_eq!(g.evicted.as_deref(), Some("x"));
    }

    #[test]
    fn simultaneous_attempts_never_exceed_a_limit() {
        let ledger = Ledger::new();
        let limits = Limits {
            target: Some(5),
            ..Default::default()
        };
        let barrier = Arc::new(std::sync::Barrier::new(100));
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let (ledger, barrier) = (ledger.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let actor = format!("u{i}");
                    ledger
                        .acquire(&actor, subj(&actor, "web-01", "p"), &limits)
                        .ok()
                })
            })
            .collect();
        let granted: Vec<_> = handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect();
        assert_eq!(granted.len(), 5);
        drop(granted);
        assert_eq!(ledger.total(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8, u8, u8),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, 0u8..3, 0u8..2).prop_map(|(a, t, p)| Op::Acquire(a, t, p)),
            2 => (0usize..16).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Whatever the order of acquisitions and releases, the counts equal the leases held,
        /// no level exceeds its limit (evict-oldest included), and all-released is zero.
        #[test]
        fn accounting_matches_held_leases(
            ops in proptest::collection::vec(op(), 1..80),
            actor in proptest::option::of(0u32..3),
            target in proptest::option::of(0u32..4),
            policy in proptest::option::of(0u32..5),
            pool in proptest::option::of(0u32..6),
            evict in any::<bool>(),
        ) {
            let limits = Limits { actor, target, policy, pool,
                on_actor_limit: if evict { OnLimit::EvictOldest } else { OnLimit::Deny } };
            let ledger = Ledger::new();
            let names = ["a", "b", "c"];
            let mut held: Vec<(String, (usize, usize, usize), Lease)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Acquire(a, t, p) => {
                        let (a, t, p) = (a as usize, t as usize, p as usize);
                        let tag = format!("s{n}");
                        if let Ok(g) = ledger.acquire(&tag, subj(names[a], names[t], names[p]), &limits) {
                            if let Some(ev) = g.evicted {
                                let at = held.iter().position(|h| h.0 == ev);
                                prop_assert!(at.is_some(), "evicted an unknown session");
                                if let Some(at) = at { held.remove(at); }
                            }
                            held.push((tag, (a, t, p), g.lease));
                        }
                    }
                    Op::Release(i) => {
                        if !held.is_empty() {
                            let i = i % held.len();
                            held.remove(i);
                        }
                    }
                }
                for (k, name) in names.iter().enumerate() {
                    let s = subj(name, name, name);
                    let c = ledger.counts(s);
                    let want = |f: fn(&(usize, usize, usize)) -> usize| held.iter().filter(|h| f(&h.1) == k).count() as u32;
                    prop_assert_eq!(c.actor, want(|x| x.0));
                    prop_assert_eq!(c.target, want(|x| x.1));
                    prop_assert_eq!(c.policy, want(|x| x.2));
                    if let Some(l) = actor { prop_assert!(c.actor <= l); }
                    if let Some(l) = target { prop_assert!(c.target <= l); }
                    if let Some(l) = policy { prop_assert!(c.policy <= l); }
                }
                prop_assert_eq!(ledger.total(), held.len() as u32);
                if let Some(l) = pool { prop_assert!(ledger.total() <= l); }
            }
            held.clear();
            prop_assert_eq!(ledger.total(), 0);
        }
    }
}
