//! Reference-counted allow rules: one rule per (resource, address), held by every live session
//! that asked for it. It is applied when its first holder comes and removed when its last one
//! goes; operations on one rule run one at a time, different rules in parallel.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wardengate_api::RuleState;

use futures_util::StreamExt;

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
    op: Arc<tokio::sync::Mutex<()>>,
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

    /// Lock every rule of `items` (in key order, so two sessions never wait on each other).
    /// The entries are held with their locks, so the sweep of unused entries cannot drop one
    /// while it is in use.
    async fn lock_all(
        &self,
        items: &[(Resource, Key)],
    ) -> Vec<(Arc<Entry>, tokio::sync::OwnedMutexGuard<()>)> {
        let mut keys: Vec<&Key> = items.iter().map(|(_, k)| k).collect();
        keys.sort();
        keys.dedup();
        let mut locked = Vec::with_capacity(keys.len());
        for k in keys {
            let e = self.entry(k);
            let guard = e.op.clone().lock_owned().await;
            locked.push((e, guard));
        }
        locked
    }

    /// `session` holds each rule of `items`: applied now (its first holder), or shared (in place
    /// already for another session). One result per item, in order.
    pub async fn acquire_all(
        &self,
        items: &[(Resource, Key)],
        session: &str,
        timeout: Duration,
    ) -> Vec<Result<RuleState, String>> {
        let _locked = self.lock_all(items).await;
        let mut out: Vec<Result<RuleState, String>> = vec![Ok(RuleState::Shared); items.len()];
        let mut todo = Vec::new();
        for (i, (_, key)) in items.iter().enumerate() {
            let e = self.entry(key);
            let mut s = lock(&e.slot);
            if s.present && !s.holders.is_empty() {
                s.holders.insert(session.to_string());
            } else {
                todo.push(i);
            }
        }
        for (i, done) in run_all(items, &todo, Op::Apply, session, timeout).await {
            let e = self.entry(&items[i].1);
            let mut s = lock(&e.slot);
            out[i] = match done {
                Ok(()) => {
                    s.present = true;
                    s.holders.insert(session.to_string());
                    s.last = session.to_string();
                    Ok(RuleState::Applied)
                }
                Err(e) => Err(e),
            };
        }
        out
    }

    /// `session` no longer holds the rules of `items`: each released (another session still
    /// holds it) or removed (it was the last). A failed removal leaves an [`Orphan`].
    pub async fn release_all(
        &self,
        items: &[(Resource, Key)],
        session: &str,
        timeout: Duration,
    ) -> Vec<Result<RuleState, String>> {
        let _locked = self.lock_all(items).await;
        let mut out: Vec<Result<RuleState, String>> = vec![Ok(RuleState::Released); items.len()];
        let mut todo = Vec::new();
        for (i, (_, key)) in items.iter().enumerate() {
            let e = self.entry(key);
            let mut s = lock(&e.slot);
            s.holders.remove(session);
            s.last = session.to_string();
            if s.holders.is_empty() {
                todo.push(i);
            }
        }
        for (i, done) in run_all(items, &todo, Op::Revoke, session, timeout).await {
            let e = self.entry(&items[i].1);
            // A session that came while the removal ran applies it again after this.
            lock(&e.slot).present = done.is_err();
            out[i] = done.map(|_| RuleState::Revoked);
        }
        out
    }

    /// At start: `session` held the rule before the restart (whether it is still in place is
    /// for [`Book::ensure`] to find out).
    pub fn adopt(&self, key: &Key, session: &str) {
        let e = self.entry(key);
        let mut s = lock(&e.slot);
        s.holders.insert(session.to_string());
        s.last = session.to_string();
    }

    /// At start: a rule whose removal failed before the restart (`session` held it last): in
    /// place, nobody holding it, so the timer tries to remove it again.
    pub fn orphan(&self, key: &Key, session: &str) {
        let e = self.entry(key);
        let mut s = lock(&e.slot);
        s.present = true;
        s.last = session.to_string();
    }

    /// `session` no longer holds the rule here, and it is not removed (a session on another
    /// gateway still holds it, or another gateway took the session over).
    pub fn let_go(&self, key: &Key, session: &str) {
        let e = self.entry(key);
        let mut s = lock(&e.slot);
        s.holders.remove(session);
        if s.holders.is_empty() {
            s.present = false;
        }
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
        // A command resource without `check` cannot tell: its apply runs again (idempotent),
        // and only a rule found missing counts as put back.
        let blind = r.backend == crate::config::BackendKind::Command && r.check.is_empty();
        let there = match blind {
            true => false,
            false => backend::run(r, Op::Check, key.ip, &last, timeout).await?,
        };
        if !there {
            backend::run(r, Op::Apply, key.ip, &last, timeout).await?;
        }
        lock(&e.slot).present = true;
        Ok(!there && !blind)
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
        // Dropped only when nobody else has the entry or is working on it (the map's lock is
        // held, so nobody can take it now).
        rules.retain(|_, e| {
            let s = lock(&e.slot);
            Arc::strong_count(e) > 1
                || e.op.try_lock().is_err()
                || s.present
                || !s.holders.is_empty()
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

/// Rules applied or removed at once (besides a namespace's nftables rules, which go in one
/// batch).
const PARALLEL: usize = 16;

/// Run `op` for `items[todo]`: the nftables rules of one namespace in one batch (each alone if
/// the batch fails, to learn which), the others one by one, several at once.
async fn run_all(
    items: &[(Resource, Key)],
    todo: &[usize],
    op: Op,
    session: &str,
    timeout: Duration,
) -> Vec<(usize, Result<(), String>)> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_ns: std::collections::BTreeMap<Option<String>, Vec<usize>> = Default::default();
    for &i in todo {
        match items[i].0.backend {
            crate::config::BackendKind::Nftables => {
                by_ns.entry(items[i].0.netns.clone()).or_default().push(i)
            }
            crate::config::BackendKind::Command => groups.push(vec![i]),
        }
    }
    groups.extend(by_ns.into_values());
    let one = |i: usize| async move {
        let (r, key) = &items[i];
        (
            i,
            backend::run(r, op, key.ip, session, timeout)
                .await
                .map(|_| ()),
        )
    };
    futures_util::stream::iter(groups)
        .map(|g| async move {
            if g.len() > 1 {
                let ops: Vec<(&Resource, IpAddr)> =
                    g.iter().map(|&i| (&items[i].0, items[i].1.ip)).collect();
                match backend::nft_batch(&ops, op, timeout).await {
                    Ok(()) => return g.into_iter().map(|i| (i, Ok(()))).collect::<Vec<_>>(),
                    Err(backend::BatchError::TimedOut(e)) => {
                        return g
                            .into_iter()
                            .map(|i| (i, Err(e.clone())))
                            .collect::<Vec<_>>()
                    }
                    Err(backend::BatchError::Refused(_)) => {}
                }
            }
            let mut out = Vec::with_capacity(g.len());
            for i in g {
                out.push(one(i).await);
            }
            out
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect()
}
