//! What a gateway keeps of its TCP sessions: the live ones and their connections, the
//! listener's token key, and each session's state history (`transition`). No `Gateway` here, so
//! that the `Gateway` can hold it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wardengate_api as api;
use wardengate_protocols::session::{now_ms, SessionShared, Tap};

use super::token;
use crate::store::SessionRecord;
use crate::util::rfc3339;

/// What the `[tcp]` listener tells tokens: where it is, which certificate it shows, and the key
/// tokens are signed with.
pub struct Front {
    pub key: token::TokenKey,
    pub endpoint: String,
    pub cert_sha256: String,
    /// The gateway's shutdown: every TCP session ends with it (reason `gateway_shutdown`).
    pub shutdown: CancellationToken,
}

/// The live TCP sessions of this gateway, and its listener once bound.
#[derive(Default)]
pub struct TcpState {
    sessions: Mutex<HashMap<String, Arc<TcpLive>>>,
    pub front: OnceLock<Front>,
    /// Personal tokens (their sha256) that named a person lately, and when.
    vouched: Mutex<HashMap<[u8; 32], std::time::Instant>>,
}

/// How long a token that named a person skips the throttle's in-flight count.
const VOUCHED_FOR: Duration = Duration::from_secs(600);
/// Most tokens remembered so (a full map is emptied: they are counted again).
const MAX_VOUCHED: usize = 4096;

impl TcpState {
    /// Whether the token hashing to `d` named a person within [`VOUCHED_FOR`].
    pub fn vouched(&self, d: &[u8; 32]) -> bool {
        crate::registry::lock(&self.vouched)
            .get(d)
            .is_some_and(|at| at.elapsed() < VOUCHED_FOR)
    }
    pub fn vouch(&self, d: [u8; 32]) {
        let mut m = crate::registry::lock(&self.vouched);
        if m.len() >= MAX_VOUCHED {
            m.clear();
        }
        m.insert(d, std::time::Instant::now());
    }
    pub fn forget(&self, d: &[u8; 32]) {
        crate::registry::lock(&self.vouched).remove(d);
    }

    pub fn get(&self, id: &str) -> Option<Arc<TcpLive>> {
        crate::registry::lock(&self.sessions).get(id).cloned()
    }
    pub(crate) fn insert(&self, live: Arc<TcpLive>) {
        crate::registry::lock(&self.sessions).insert(live.id.clone(), live);
    }
    pub(crate) fn remove(&self, id: &str) {
        crate::registry::lock(&self.sessions).remove(id);
    }
}

#[derive(Default)]
pub(crate) struct Counts {
    /// Connections counted against the limit.
    pub(crate) accepted: u32,
    pub(crate) open: u32,
    pub(crate) ending: bool,
    /// The last connection number given (never reused, even for a connection given back).
    pub(crate) seq: u32,
    /// A connection reached its host: the session is active.
    pub(crate) active: bool,
}

/// A live TCP session: its host and limits, its connections, and what ends them.
pub struct TcpLive {
    pub id: String,
    pub user: String,
    pub target: String,
    pub host_id: String,
    pub host: String,
    /// -1: unlimited.
    pub limit: i64,
    pub expires_ms: u64,
    pub(crate) counts: Mutex<Counts>,
    /// A connection closed (a permit is kept when nobody waits).
    pub(crate) changed: Notify,
    /// Cuts every connection of the session.
    pub stop: CancellationToken,
    pub shared: Arc<SessionShared>,
    /// The recording; taken (and so sealed) when the session ends.
    pub(crate) tap: Mutex<Option<Tap>>,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Every connection the session allows has been made.
    Limit(i64),
    /// The session is ending.
    Ending,
}

impl TcpLive {
    /// Count a new connection against the limit: its number (from 1, never reused).
    pub fn open(&self) -> Result<u32, Refused> {
        let mut c = crate::registry::lock(&self.counts);
        if c.ending {
            return Err(Refused::Ending);
        }
        if self.limit >= 0 && i64::from(c.accepted) >= self.limit {
            return Err(Refused::Limit(self.limit));
        }
        c.accepted += 1;
        c.open += 1;
        c.seq += 1;
        Ok(c.seq)
    }

    /// A connection reached its host: whether the session becomes active by it (the first
    /// time, unless it is ending).
    pub fn activate(&self) -> bool {
        let mut c = crate::registry::lock(&self.counts);
        let first = !c.active && !c.ending;
        c.active |= first;
        first
    }

    /// A connection is over.
    pub fn closed(&self) {
        let mut c = crate::registry::lock(&self.counts);
        c.open = c.open.saturating_sub(1);
        drop(c);
        self.changed.notify_one();
    }

    /// A counted connection that never reached its host: it does not count.
    pub fn uncount(&self) {
        let mut c = crate::registry::lock(&self.counts);
        c.open = c.open.saturating_sub(1);
        c.accepted = c.accepted.saturating_sub(1);
        drop(c);
        self.changed.notify_one();
    }

    /// (accepted so far, open now).
    pub fn counts(&self) -> (u32, u32) {
        let c = crate::registry::lock(&self.counts);
        (c.accepted, c.open)
    }

    pub fn tap(&self) -> Option<Tap> {
        crate::registry::lock(&self.tap).clone()
    }

    /// Every allowed connection was made and none is open: the session has nothing left to do.
    pub(crate) fn used_up(&self) -> bool {
        let c = crate::registry::lock(&self.counts);
        self.limit >= 0 && i64::from(c.accepted) >= self.limit && c.open == 0
    }
}

/// Move a TCP session's record to `state`: the current state's span ends now, the new one starts.
pub fn transition(r: &mut SessionRecord, state: api::SessionState, reason: Option<&str>) {
    r.state = state;
    let Some(t) = r.tcp.as_mut() else {
        return;
    };
    if t.states.last().is_some_and(|s| s.state == state) {
        return;
    }
    let now = rfc3339(now_ms());
    if let Some(last) = t.states.last_mut() {
        last.end_time.get_or_insert_with(|| now.clone());
    }
    let reason = reason.map(|r| api::text::inert(r, api::text::MAX_TEXT).into_owned());
    t.states.push(api::StateSpan {
        state,
        reason,
        start_time: now,
        end_time: None,
    });
}
