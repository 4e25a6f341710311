//! The registry's side of live-session operations: observers (shadow), handoff offers, the
//! transfer of a session to a new owner, and takeover tickets.

use std::sync::Arc;

use wardengate_policy::{Admitted, Lease};
use wardengate_protocols::session::{now_ms, Control};
use wardengate_protocols::ssh::ResumeTicket;

use super::{lock, Live, Pending, Registry, RegistryError, Watch};
use crate::store::{SessionRecord, Store};
use crate::util::rfc3339;
use wardengate_api as api;

impl Registry {
    /// A live session, for an observer; `Err` when it is unknown or over.
    pub async fn watch(&self, store: &dyn Store, id: &str) -> Result<Watch, RegistryError> {
        let live = self.live_or_err(store, id).await?;
        let admitted = lock(&live.admitted).clone();
        Ok(Watch {
            hub: live.hub.clone(),
            admitted,
            record: Self::snapshot(&live),
            control: live.control.clone(),
        })
    }

    pub(crate) async fn live_or_err(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Arc<Live>, RegistryError> {
        match self.get(id) {
            Some(live) => Ok(live),
            None => Err(Self::not_live(store, id).await),
        }
    }

    /// Why `id` is not live: it ended (a conflict naming its state) or was never known.
    pub(crate) async fn not_live(store: &dyn Store, id: &str) -> RegistryError {
        match store.session_get(id).await {
            Ok(Some(r)) => RegistryError::Conflict(id.into(), r.state.to_string()),
            Ok(None) => RegistryError::NotFound(id.into()),
            Err(e) => e.into(),
        }
    }

    /// Offer the session to a new owner; `Conflict` when another offer is pending.
    pub async fn offer(
        &self,
        store: &dyn Store,
        id: &str,
        p: Pending,
    ) -> Result<(), RegistryError> {
        let live = self.live_or_err(store, id).await?;
        let mut h = lock(&live.handoff);
        if let Some(old) = h.as_ref().filter(|o| o.expires_ms > now_ms()) {
            return Err(RegistryError::Conflict(
                id.into(),
                format!("offered to {} (until {})", old.to, rfc3339(old.expires_ms)),
            ));
        }
        *h = Some(p);
        Ok(())
    }

    /// Take the pending offer (to answer it), if it is still `serial` when one is given.
    pub fn take_offer(&self, id: &str, serial: Option<u64>) -> Option<Pending> {
        let live = self.get(id)?;
        let mut h = lock(&live.handoff);
        if serial.is_some_and(|s| h.as_ref().is_some_and(|p| p.serial != s)) {
            return None;
        }
        h.take()
    }

    pub fn offer_of(&self, id: &str) -> Option<Pending> {
        let live = self.get(id)?;
        let p = lock(&live.handoff).clone();
        p
    }

    /// Run `f` on session `id`'s concurrency slot (`None` when it is not live).
    pub fn with_lease<R>(&self, id: &str, f: impl FnOnce(Option<&Lease>) -> R) -> Option<R> {
        let live = self.get(id)?;
        let l = lock(&live.lease);
        Some(f(l.as_ref()))
    }

    /// The session's governing admission now.
    pub fn admitted(&self, id: &str) -> Option<Admitted> {
        let live = self.get(id)?;
        let a = lock(&live.admitted).clone();
        Some(a)
    }

    /// Whether the live session is recorded.
    pub fn recorded(&self, id: &str) -> bool {
        self.get(id).is_some_and(|l| l.seal.is_some())
    }

    /// The session now belongs to `owner`, under `admitted` and holding `lease`.
    pub async fn transfer(
        &self,
        store: &dyn Store,
        id: &str,
        owner: &str,
        (admitted, decision): (Admitted, String),
        lease: Lease,
    ) -> Result<SessionRecord, RegistryError> {
        let live = self.live_or_err(store, id).await?;
        if let Ok(mut r) = live.record.lock() {
            let prev = std::mem::replace(&mut r.actor, owner.to_string());
            r.previous_owners = Some(match r.previous_owners.take() {
                Some(p) if !p.is_empty() => format!("{p},{prev}"),
                _ => prev,
            });
            r.policy = Some(admitted.policy().to_string());
            r.decision = Some(decision);
        }
        *lock(&live.admitted) = admitted;
        // The new owner's slot is held before the old owner's is given back.
        *lock(&live.lease) = Some(lease);
        // A ticket made for the old owner (a paused session) must not serve the new one; the
        // relay makes a new one when it takes the handoff in.
        lock(&live.ticket).take();
        *lock(&live.handed_to) = Some(owner.to_string());
        if self.get(id).is_none() {
            // It ended meanwhile: its final record is written; do not bring it back.
            return Err(RegistryError::Conflict(id.into(), "closed".into()));
        }
        let snap = Self::snapshot(&live);
        store.session_update(&snap).await?;
        Ok(snap)
    }

    /// The session waits for the new owner's connection (its relay has taken the handoff in).
    pub fn awaits_owner(&self, id: &str) -> bool {
        self.get(id).is_some_and(|l| lock(&l.ticket).is_some())
    }

    /// The paused session `id`, if it waits for `actor` (handed off to them).
    pub fn take_session_ticket(&self, id: &str, actor: &str) -> Option<ResumeTicket> {
        let live = self.get(id)?;
        // Only a session handed to this user (who stays its owner: a takeover that only ran a
        // command leaves the shell waiting for them again).
        if lock(&live.handed_to).as_deref() != Some(actor) {
            return None;
        }
        let ok = live
            .record
            .lock()
            .is_ok_and(|r| r.actor == actor && r.state == api::SessionState::Paused);
        if !ok {
            return None;
        }
        let t = live.ticket.lock().ok()?.take();
        t
    }

    /// Put back a ticket taken by [`take_session_ticket`](Self::take_session_ticket) whose
    /// connection was refused after all.
    pub fn untake_session_ticket(&self, id: &str, t: ResumeTicket) {
        if let Some(live) = self.get(id) {
            *lock(&live.ticket) = Some(t);
        }
    }

    /// Tell the relay of session `id` something (shadow markers, notices, a handoff).
    pub async fn control(&self, id: &str, c: Control) -> bool {
        let Some(live) = self.get(id) else {
            return false;
        };
        live.control.send(c).await.is_ok()
    }
}
