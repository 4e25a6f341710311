//! Reference-counted allow rules: one rule per (resource, address), held by every live session
//! that asked for it. It is applied when its first holder comes and removed when its last one
//! goes; operations on one rule run one at a time, different rules in parallel.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wardengate_api::RuleState;

use super::backend::{self, Op};
use crate::config::Resource;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub ip: IpAddr,
}

impl Key {
    pub fn new(resource: &str, ip: IpAddr) -> Key {
        Key {
            resource: resource.to_string(),
            ip: ip.to_canonical(),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    holders: BTreeSet<String>,
    /// The rule is (believed) in place on the resource.
    present: bool,
    /// The last session that held it (whose record says how its removal went).
    last: String,
}

#[derive(Default)]
struct Entry {
    /// Held across a backend call: one operation per rule at a time.
    op: tokio::sync::Mutex<()>,
    slot: Mutex<Slot>,
}

/// Every rule this gateway manages.
#[derive(Default)]
pub struct Book {
    rules: Mutex<HashMap<Key, Arc<Entry>>>,
}

/// A rule whose removal failed after its last holder left: tried again until it goes.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub key: Key,
    pub last: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Book {
    fn entry(&self, key: &Key) -> Arc<Entry> {
        lock(&self.rules).entry(key.clone()).or_default().clone()
    }

    /// How many live sessions hold the rule.
    pub fn holders(&self, key: &Key) -> u32 {
        let e = lock(&self.rules).get(key).cloned();
        e.map_or(0, |e| lock(&e.slot).holders.len() as u32)
    }

    /// `session` holds the rule: applied now (first holder), or shared (in place already).
    pub async fn acquire(
        &self,
        r: &Resource,
        key: &Key,
        session: &str,
        timeout: Duration,
    ) -> Result<RuleState, String> {
        let e = self.entry(key);
        let _op = e.op.lock().await;
        {
            let mut s = lock(&e.slot);
            if s.present && !s.holders.is_empty() {
                s.holders.insert(session.to_string());
                return Ok(RuleState::Shared);
            }
        }
        backend::run(r, Op::Apply, key.ip, session, timeout).await?;
        let mut s = lock(&e.slot);
        s.present = true;
        s.holders.insert(session.to_string());
        s.last = session.to_string();
        Ok(RuleState::Applied)
    }

    /// `session` no longer holds the rule: released (others still do), or removed (it was the
    /// last). A failed removal leaves an [`Orphan`].
    pub async fn release(
        &self,
        r: &Resource,
        key: &Key,
        session: &str,
        timeout: Duration,
    ) -> Result<RuleState, String> {
        let e = self.entry(key);
        let _op = e.op.lock().await;
        {
            let mut s = lock(&e.slot);
            s.holders.remove(session);
            s.last = session.to_string();
            if !s.holders.is_empty() {
                return Ok(RuleState::Released);
            }
        }
        let done = backend::run(r, Op::Revoke, key.ip, session, timeout).await;
        let mut s = lock(&e.slot);
        // A session that came while the removal ran applies it again after this.
        s.present = done.is_err();
        done.map(|_| RuleState::Revoked)
    }

    /// At start: `session` held the rule before the restart (whether it is still in place is
    /// for [`Book::ensure`] to find out).
    pub fn adopt(&self, key: &Key, session: &str) {
        let e = self.entry(key);
        let mut s = lock(&e.slot);
        s.holders.insert(session.to_string());
        s.last = session.to_string();
    }

    /// Every rule held now, with its holders.
    pub fn held(&self) -> Vec<(Key, Vec<String>)> {
        let all: Vec<(Key, Arc<Entry>)> = lock(&self.rules)
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        all.into_iter()
            .filter_map(|(k, e)| {
                let s = lock(&e.slot);
                (!s.holders.is_empty()).then(|| (k, s.holders.iter().cloned().collect()))
            })
            .collect()
    }

    /// Put a held rule back if it is missing (deleted by hand, a reboot): `Ok(true)` when it
    /// had to be applied again.
    pub async fn ensure(&self, r: &Resource, key: &Key, timeout: Duration) -> Result<bool, String> {
        let e = self.entry(key);
        let _op = e.op.lock().await;
        let last = lock(&e.slot).last.clone();
        let there = backend::run(r, Op::Check, key.ip, &last, timeout).await?;
        if !there {
            backend::run(r, Op::Apply, key.ip, &last, timeout).await?;
        }
        lock(&e.slot).present = true;
        Ok(!there)
    }

    /// A held rule that cannot be put back: its holders let go of it.
    pub fn forget(&self, key: &Key) {
        if let Some(e) = lock(&self.rules).get(key) {
            let mut s = lock(&e.slot);
            s.holders.clear();
            s.present = false;
        }
    }

    /// Rules in place that nobody holds (their removal failed); rules nobody holds or uses any
    /// more are dropped from the book.
    pub fn orphans(&self) -> Vec<Orphan> {
        let mut rules = lock(&self.rules);
        // Nobody else has the entry (the map's lock is held, so nobody can take it now).
        rules.retain(|_, e| {
            let s = lock(&e.slot);
            Arc::strong_count(e) > 1 || s.present || !s.holders.is_empty()
        });
        rules
            .iter()
            .filter_map(|(k, e)| {
                let s = lock(&e.slot);
                (s.present && s.holders.is_empty()).then(|| Orphan {
                    key: k.clone(),
                    last: s.last.clone(),
                })
            })
            .collect()
    }

    /// Try to remove an orphan again; `Ok(false)` when someone holds it now.
    pub async fn retry(&self, r: &Resource, o: &Orphan, timeout: Duration) -> Result<bool, String> {
        let e = self.entry(&o.key);
        let _op = e.op.lock().await;
        if !lock(&e.slot).holders.is_empty() {
            return Ok(false);
        }
        backend::run(r, Op::Revoke, o.key.ip, &o.last, timeout).await?;
        lock(&e.slot).present = false;
        Ok(true)
    }
}
