//! The session registry: every session this gateway brokers, live in memory and persisted in the
//! store, with its lifecycle (`requested → approved → active → closed`, or `denied` / `failed`).
//!
//! The relay updates per-session counters through `SessionShared` atomics; the registry's map is
//! touched only when a session starts or ends and when the API reads it, never per packet.

mod live;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wardengate_api as api;
use wardengate_protocols::session::{now_ms, Control, Outcome, SessionLink, SessionShared};

use crate::recording::SealWatch;
use crate::store::{SessionQuery, SessionRecord, Store};
use crate::util::rfc3339;
use wardengate_policy::{Admitted, Lease};
use wardengate_protocols::session::Tap;
use wardengate_protocols::shadow::ShadowHub;
use wardengate_protocols::ssh::ResumeTicket;

/// A session's control channel, made before admission so the recorder can use it.
pub fn control_channel() -> (mpsc::Sender<Control>, mpsc::Receiver<Control>) {
    // Room for shadow markers and notices beside a terminate or an eviction (`try_send`).
    mpsc::channel(64)
}

/// A handoff offered and not yet answered.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Tells this offer from a later one (the expiry timer checks it).
    pub serial: u64,
    pub to: String,
    pub by: String,
    pub reason: String,
    pub requested_ms: u64,
    pub expires_ms: u64,
}

impl Pending {
    pub fn to_api(&self) -> api::Handoff {
        api::Handoff {
            to: self.to.clone(),
            by: self.by.clone(),
            reason: self.reason.clone(),
            requested_at: rfc3339(self.requested_ms),
            expires_at: rfc3339(self.expires_ms),
        }
    }
}

/// What an observer needs of a live session.
pub struct Watch {
    pub hub: Arc<ShadowHub>,
    pub admitted: Admitted,
    pub record: SessionRecord,
    pub control: mpsc::Sender<Control>,
}

pub(crate) struct Live {
    pub(crate) record: Mutex<SessionRecord>,
    pub(crate) shared: Arc<SessionShared>,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) done: watch::Sender<bool>,
    pub(crate) seal: Option<SealWatch>,
    /// The session's concurrency slot, given back when it finishes.
    pub(crate) lease: Mutex<Option<Lease>>,
    pub(crate) cluster_lease: Mutex<Option<crate::store::ClusterLease>>,
    /// The policy that governs the session (merged with the new owner's after a handoff).
    pub(crate) admitted: Mutex<Admitted>,
    /// While paused: what a re-attaching connection needs.
    pub(crate) ticket: Mutex<Option<ResumeTicket>>,
    pub(crate) hub: Arc<ShadowHub>,
    pub(crate) handoff: Mutex<Option<Pending>>,
    /// Accepted by this user, who may now take it over with `ssh USER:sess_…`.
    pub(crate) handed_to: Mutex<Option<String>>,
}

/// What an admitted session brings to the registry besides its record.
pub struct NewSession {
    pub control: (mpsc::Sender<Control>, mpsc::Receiver<Control>),
    pub recording: Option<(Tap, SealWatch)>,
    pub lease: Lease,
    /// The session's slot in the cluster's count (a shared store only).
    pub cluster_lease: Option<crate::store::ClusterLease>,
    pub admitted: Admitted,
}

/// Why a registry operation could not be done; the API maps these to status codes.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no session {0}")]
    NotFound(String),
    #[error("session {0} is already {1}")]
    Conflict(String, String),
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

pub struct Registry {
    live: RwLock<HashMap<String, Arc<Live>>>,
}

/// Filters for listing sessions.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// What the store selects (a tag's targets resolved by the caller into `targets_in`).
    pub query: SessionQuery,
    pub idle_gt_secs: Option<u64>,
    /// Only sessions someone is shadowing now.
    pub shadowed: bool,
    /// Only sessions this user owns or is offered (a non-operator's own token).
    pub visible_to: Option<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            live: RwLock::new(HashMap::new()),
        }
    }

    /// Register an admitted session; the returned link goes to the relay.
    pub async fn insert(
        &self,
        store: &dyn Store,
        record: SessionRecord,
        admission: NewSession,
    ) -> anyhow::Result<SessionLink> {
        store.session_insert(&record).await?;
        let (done, _) = watch::channel(false);
        let NewSession {
            control: (tx, rx),
            recording,
            lease,
            cluster_lease,
            admitted,
        } = admission;
        let (tap, seal) = recording.unzip();
        let shared = Arc::new(SessionShared::new(record.id.clone()));
        let hub = ShadowHub::new();
        let live = Arc::new(Live {
            record: Mutex::new(record.clone()),
            shared: shared.clone(),
            control: tx,
            done,
            seal,
            lease: Mutex::new(Some(lease)),
            cluster_lease: Mutex::new(cluster_lease),
            admitted: Mutex::new(admitted),
            ticket: Mutex::new(None),
            hub: hub.clone(),
            handoff: Mutex::new(None),
            handed_to: Mutex::new(None),
        });
        if let Ok(mut m) = self.live.write() {
            m.insert(record.id.clone(), live);
        }
        Ok(SessionLink {
            shared,
            control: rx,
            tap,
            hub,
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.live.read().ok().and_then(|m| m.get(id).cloned())
    }

    pub fn live_count(&self) -> usize {
        self.live.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Live sessions offered to `user` (a pending handoff), whoever owns them.
    pub fn offered_to(&self, user: &str) -> Vec<SessionRecord> {
        let lives: Vec<Arc<Live>> = self
            .live
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        lives
            .iter()
            .filter(|l| lock(&l.handoff).as_ref().is_some_and(|p| p.to == user))
            .map(|l| Self::snapshot(l))
            .collect()
    }

    pub fn live_ids(&self) -> Vec<String> {
        self.live
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Fold the live counters into the record.
    pub(crate) fn snapshot(live: &Live) -> SessionRecord {
        let mut r = lock(&live.record).clone();
        let (bin, bout) = live.shared.bytes();
        r.bytes_in = bin;
        r.bytes_out = bout;
        r.last_input_ms = live.shared.last_input_ms();
        r.channels = live.shared.channels();
        r.activity = live.shared.activity().map(str::to_string);
        if let Some(v) = live.shared.client_version() {
            r.client_version = v.to_string();
        }
        let (client, target) = live.shared.crypto();
        r.client_crypto = client.map(String::from).or(r.client_crypto);
        r.target_crypto = target.map(String::from).or(r.target_crypto);
        if let Some(p) = live.shared.pty() {
            r.pty_term = Some(p.term);
            r.pty_cols = p.cols;
            r.pty_rows = p.rows;
        }
        r.observers = live.hub.observers();
        r.handoff = lock(&live.handoff).as_ref().map(Pending::to_api);
        r.relay_latency = live.shared.relay_latency().map(|l| api::RelayLatency {
            samples: l.samples,
            p50_us: l.p50_us,
            p99_us: l.p99_us,
            max_us: l.max_us,
        });
        r
    }

    /// The target leg is up.
    pub fn activate(&self, store: &dyn Store, id: &str) -> Option<SessionRecord> {
        let live = self.get(id)?;
        if let Ok(mut r) = live.record.lock() {
            r.state = api::SessionState::Active;
        }
        let snap = Self::snapshot(&live);
        store.session_update_later(snap.clone());
        Some(snap)
    }

    fn set_state(
        &self,
        store: &dyn Store,
        id: &str,
        state: api::SessionState,
    ) -> Option<SessionRecord> {
        self.update(store, id, |r| r.state = state)
    }

    /// Change a live session's record with `f`, and persist it (queued).
    pub fn update(
        &self,
        store: &dyn Store,
        id: &str,
        f: impl FnOnce(&mut SessionRecord),
    ) -> Option<SessionRecord> {
        let live = self.get(id)?;
        if let Ok(mut r) = live.record.lock() {
            f(&mut r);
        }
        let snap = Self::snapshot(&live);
        store.session_update_later(snap.clone());
        Some(snap)
    }

    /// The client dropped; the session waits for a re-attach with `ticket`.
    pub fn pause(
        &self,
        store: &dyn Store,
        id: &str,
        ticket: ResumeTicket,
    ) -> Option<SessionRecord> {
        if let Some(live) = self.get(id) {
            if let Ok(mut t) = live.ticket.lock() {
                *t = Some(ticket);
            }
        }
        self.set_state(store, id, api::SessionState::Paused)
    }

    /// A paused session was re-attached.
    pub fn resume(&self, store: &dyn Store, id: &str) -> Option<SessionRecord> {
        self.set_state(store, id, api::SessionState::Active)
    }

    /// Take the resume ticket of `actor`'s paused session to `target` (as `account`), if any.
    pub fn take_ticket(&self, actor: &str, target: &str, account: &str) -> Option<ResumeTicket> {
        let all: Vec<Arc<Live>> = self.live.read().ok()?.values().cloned().collect();
        all.iter().find_map(|live| {
            let matches = live.record.lock().is_ok_and(|r| {
                r.actor == actor
                    && r.target == target
                    && r.account == account
                    && r.state == api::SessionState::Paused
            });
            if matches {
                live.ticket.lock().ok()?.take()
            } else {
                None
            }
        })
    }

    /// End a session by rule (concurrency eviction): the relay shows `message` and closes.
    pub fn end(&self, id: &str, reason: &'static str, message: String) -> bool {
        let Some(live) = self.get(id) else {
            return false;
        };
        live.control
            .try_send(Control::End { reason, message })
            .is_ok()
    }

    /// The session is over: persist its final state, give back its concurrency slot and wake
    /// anyone waiting for it. Returns the final record and the admitting policy.
    pub fn finish(
        &self,
        store: &dyn Store,
        id: &str,
        outcome: &Outcome,
    ) -> Option<(SessionRecord, Admitted)> {
        let live = self.live.write().ok().and_then(|mut m| m.remove(id))?;
        if let Ok(mut lease) = live.lease.lock() {
            lease.take();
        }
        if let Ok(mut lease) = live.cluster_lease.lock() {
            lease.take();
        }
        if let Ok(mut t) = live.ticket.lock() {
            t.take();
        }
        live.hub
            .end(&format!("the session ended ({})", outcome.reason()));
        let mut r = Self::snapshot(&live);
        r.observers.clear();
        r.handoff = None;
        r.ended_ms = Some(now_ms());
        r.channels = 0;
        r.end_reason = Some(outcome.reason().into());
        let state = match outcome {
            Outcome::TargetFailed(e) => {
                r.end_detail = Some(e.to_string());
                api::SessionState::Failed
            }
            Outcome::Error(msg) => {
                r.end_detail = Some(msg.clone());
                api::SessionState::Closed
            }
            Outcome::Terminated { by, reason } => {
                r.terminated_by = Some(by.clone());
                r.end_detail = Some(reason.clone());
                api::SessionState::Closed
            }
            Outcome::ClientDropped(msg) | Outcome::Policy { message: msg, .. } => {
                r.end_detail = Some(msg.clone());
                api::SessionState::Closed
            }
            Outcome::ClientExit | Outcome::TargetClosed | Outcome::Shutdown => {
                api::SessionState::Closed
            }
        };
        // A TCP session's last state is Boundary's `terminated`, whatever ended it.
        r.state = match r.protocol {
            api::Protocol::Tcp => api::SessionState::Terminated,
            _ => state,
        };
        // Queued before `done` is sent: whoever waits for `done` and then reads the store
        // (terminate) reads the final record.
        store.session_update_later(r.clone());
        let _ = live.done.send(true);
        let admitted = lock(&live.admitted).clone();
        Some((r, admitted))
    }

    /// Ask the owning relay to terminate the session, and wait (briefly) until it has.
    pub async fn terminate(
        &self,
        store: &dyn Store,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<SessionRecord, RegistryError> {
        let control = Control::Terminate {
            by: by.into(),
            reason: reason.into(),
        };
        self.stop(store, id, control).await
    }

    /// Send the owning relay `control` (a terminate, or an end by rule such as a cancel), and
    /// wait (briefly) until the session has ended and its recording is sealed.
    pub async fn stop(
        &self,
        store: &dyn Store,
        id: &str,
        control: Control,
    ) -> Result<SessionRecord, RegistryError> {
        let Some(live) = self.get(id) else {
            return Err(Self::not_live(store, id).await);
        };
        if let Ok(mut r) = live.record.lock() {
            // A TCP session's task moves it (canceling while connections close, with its span).
            if r.protocol != api::Protocol::Tcp {
                r.state = api::SessionState::Closing;
            }
        }
        let mut done = live.done.subscribe();
        let _ = live.control.send(control).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), done.wait_for(|d| *d)).await;
        // The recording seals once the relay has let go of it; the caller reports the seal.
        if let Some(mut seal) = live.seal.clone() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), seal.wait_for(|s| s.is_some())).await;
        }
        Ok(store
            .session_get(id)
            .await?
            .unwrap_or_else(|| Self::snapshot(&live)))
    }

    /// Ask every live session to end (graceful shutdown) and wait for them, up to `grace`.
    pub async fn drain(&self, grace: Duration) {
        let all: Vec<Arc<Live>> = self
            .live
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for live in &all {
            let mut done = live.done.subscribe();
            let _ = tokio::time::timeout(grace, done.wait_for(|d| *d)).await;
        }
    }

    /// The live session's record now (`None` once it has ended).
    pub fn live_record(&self, id: &str) -> Option<SessionRecord> {
        self.get(id).map(|live| Self::snapshot(&live))
    }

    /// The session's record, live or from the store.
    pub async fn record(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<SessionRecord, RegistryError> {
        if let Some(live) = self.get(id) {
            return Ok(Self::snapshot(&live));
        }
        store
            .session_get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.into()))
    }

    /// One page of sessions, newest first: the store's page with the live state of live
    /// sessions, less what only the live state can filter out (idle, shadowed, someone else's);
    /// how many sessions match after it, and the cursor of the next page.
    pub async fn list(&self, store: &dyn Store, f: &Filter) -> anyhow::Result<Page> {
        let now = now_ms();
        let page = store.session_list(&f.query).await?;
        let last = page.last().map(|r| (r.started_ms, r.id.clone()));
        let more = match &last {
            Some(c) if page.len() as u32 >= f.query.limit.max(1) => {
                store
                    .session_count(&SessionQuery {
                        before: Some(c.clone()),
                        ..f.query.clone()
                    })
                    .await?
            }
            _ => 0,
        };
        let mut out = Vec::new();
        for rec in page {
            let rec = match self.get(&rec.id) {
                Some(live) => Self::snapshot(&live),
                None => rec,
            };
            let mut rec = rec;
            if f.visible_to.is_some() {
                // A covert observer is not shown to the people being watched.
                rec.observers.retain(|o| o.banner != "covert");
            }
            if f.shadowed && rec.observers.is_empty() {
                continue;
            }
            if let Some(user) = &f.visible_to {
                let offered = rec.handoff.as_ref().is_some_and(|h| &h.to == user);
                if &rec.actor != user && !offered {
                    continue;
                }
            }
            if let Some(min) = f.idle_gt_secs {
                if rec.ended_ms.is_some() || idle_secs(&rec, now) <= min {
                    continue;
                }
            }
            out.push(rec);
        }
        Ok(Page {
            rows: out,
            more,
            next: (more > 0).then_some(last).flatten(),
        })
    }
}

/// A page of sessions.
pub struct Page {
    pub rows: Vec<SessionRecord>,
    /// Sessions matching the store's filters after this page.
    pub more: u64,
    /// Where the next page starts (after this `(started_ms, id)`).
    pub next: Option<(u64, String)>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn idle_secs(r: &SessionRecord, now: u64) -> u64 {
    let end = r.ended_ms.unwrap_or(now);
    end.saturating_sub(r.last_input_ms.unwrap_or(r.started_ms)) / 1000
}

pub fn to_api(r: &SessionRecord) -> api::Session {
    let r = &r.inert();
    api::Session {
        id: r.id.clone(),
        state: r.state,
        protocol: r.protocol,
        actor: r.actor.clone(),
        client_addr: r.client_addr.clone(),
        client_location: r.client_location.clone(),
        client_version: r.client_version.clone(),
        client_crypto: r.client_crypto.clone(),
        target_crypto: r.target_crypto.clone(),
        target: r.target.clone(),
        target_addr: r.target_addr.clone(),
        account: r.account.clone(),
        account_ref: r.account_ref.clone(),
        policy: r.policy.clone(),
        pty: r.pty_term.as_ref().map(|t| api::Pty {
            term: t.clone(),
            cols: r.pty_cols,
            rows: r.pty_rows,
        }),
        gateway: r.gateway.clone(),
        started_at: rfc3339(r.started_ms),
        ended_at: r.ended_ms.map(rfc3339),
        last_input_at: r.last_input_ms.map(rfc3339),
        idle_secs: idle_secs(r, now_ms()),
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        channels: r.channels,
        activity: r.activity.clone(),
        end_reason: r.end_reason.clone(),
        end_detail: r.end_detail.clone(),
        terminated_by: r.terminated_by.clone(),
        decision: r
            .decision
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
        linked_session: r.linked_session.clone(),
        recording: None,
        observers: r
            .observers
            .iter()
            .map(|o| api::Observer {
                name: o.name.clone(),
                banner: o.banner.clone(),
                since: rfc3339(o.since_ms),
            })
            .collect(),
        handoff: r.handoff.clone(),
        relay_latency: r.relay_latency,
        previous_owners: r
            .previous_owners
            .as_deref()
            .map(|p| {
                p.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        tcp: r.tcp.clone(),
    }
}
