//! Access sessions across time: the expiry timer (whether or not anyone calls the API), the
//! retry of rules whose removal failed, and reconciliation at the gateway's start.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wardengate_api::{self as api, AccessState, RuleState};
use wardengate_protocols::session::now_ms;

use super::book::Key;
use super::session::End;
use crate::broker::Gateway;
use crate::store::AccessQuery;
use crate::util::rfc3339;

/// The longest the timer sleeps without looking (a new expiry wakes it sooner).
const LOOK_EVERY: Duration = Duration::from_secs(30);

impl Gateway {
    /// At start, before the API answers: take back this gateway's live sessions. Rules of
    /// sessions that ended while it was down are removed; rules of live ones are checked and
    /// put back where missing; rules a crash left half-applied are applied.
    pub async fn access_reconcile(self: &Arc<Self>) {
        let Some(sessions) = self.access_held_by(&self.name).await else {
            return;
        };
        self.access_take_back(sessions, "missing at the gateway's start")
            .await;
    }

    /// The sessions of `gateway` that may hold rules (live, or a removal failed).
    pub(super) async fn access_held_by(&self, gateway: &str) -> Option<Vec<api::AccessSession>> {
        let q = AccessQuery {
            gateway: Some(gateway.to_string()),
            holding_only: true,
            limit: u32::MAX,
            ..Default::default()
        };
        let rows = match self.store.access_list(q).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the access sessions of {gateway}: {e:#}");
                return None;
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_str::<api::AccessSession>(&row.body) {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(access = %row.id, "unreadable access session left as it is: {e}")
                }
            }
        }
        Some(out)
    }

    /// Take `sessions` in hand (this gateway's at its start, or a lost gateway's it took over):
    /// those that ended meanwhile let go of their rules, the rules of live ones are checked and
    /// put back where missing (`why` says when), and half-applied ones are applied.
    pub(super) async fn access_take_back(
        self: &Arc<Self>,
        sessions: Vec<api::AccessSession>,
        why: &str,
    ) {
        let now = now_ms();
        let mut keep = Vec::new();
        let mut ended = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for mut s in sessions {
            let Ok(ip) = s.address.parse::<IpAddr>() else {
                continue;
            };
            if !s.state.is_live() {
                // Over, but a rule's removal failed: tried again by the timer.
                for r in s
                    .rules
                    .iter()
                    .filter(|r| r.state == RuleState::RevokeFailed)
                {
                    self.access.book.orphan(&Key::new(&r.resource, ip), &s.id);
                }
                continue;
            }
            let over = s.state == AccessState::Expiring || s.expires_ms <= now;
            if over {
                // Rules a crash left half-applied may be in place: removed too (a removal of
                // what is not there is no error).
                for r in s.rules.iter_mut().filter(|r| r.state == RuleState::Pending) {
                    r.state = RuleState::Revoking;
                }
            }
            for r in s
                .rules
                .iter()
                .filter(|r| r.state.held() || r.state == RuleState::Revoking)
            {
                let key = Key::new(&r.resource, ip);
                self.access.book.adopt(&key, &s.id);
                keys.insert(key);
            }
            match over {
                true => ended.push(s),
                false => keep.push(s),
            }
        }
        // Sessions that ended meanwhile let go of their rules first (removed where nobody
        // else holds them).
        for mut s in ended {
            // Live again for a moment, whatever state the stop left it in, so it can end.
            s.state = AccessState::Active;
            let by = s.cancelled_by.clone();
            let reason = s.reason.clone();
            self.access.live().insert(s.id.clone(), s.clone());
            let end = match by {
                Some(by) => End::Cancelled {
                    by,
                    reason: reason
                        .as_deref()
                        .and_then(|r| r.split_once(": ").map(|x| x.1.to_string()))
                        .unwrap_or_default(),
                },
                None => End::Expired { at_restart: true },
            };
            let _ = self.access_end(&s.id, end).await;
        }
        // Every rule live sessions hold: still there? Put back if not.
        let cfg = self.cfg();
        let timeout = cfg.config.access.command_timeout();
        let mut lost: Vec<(Key, String)> = Vec::new();
        for (key, holders) in self.access.book.held() {
            if !keys.contains(&key) {
                continue;
            }
            let Some(r) = cfg.resources.get(&key.resource) else {
                lost.push((key, "the resource is no longer configured".into()));
                continue;
            };
            match self.access.book.ensure(r, &key, timeout).await {
                Ok(true) => self.audit(
                    "access.rule.reapplied",
                    None,
                    holders.first().map(String::as_str),
                    json!({"resource": key.resource, "address": key.ip.to_string(), "sessions": holders,
                           "why": why}),
                ),
                Ok(false) => {}
                Err(e) => lost.push((key, e)),
            }
        }
        for (key, e) in &lost {
            self.access.book.forget(key);
            self.audit(
                "access.rule.failed",
                None,
                None,
                json!({"resource": key.resource, "address": key.ip.to_string(), "error": e,
                       "why": format!("could not be put back ({why})")}),
            );
        }
        for mut s in keep {
            let Ok(ip) = s.address.parse::<IpAddr>() else {
                continue;
            };
            for r in &mut s.rules {
                if let Some((_, e)) = lost.iter().find(|(k, _)| *k == Key::new(&r.resource, ip)) {
                    r.state = RuleState::Failed;
                    r.error = Some(e.clone());
                }
            }
            self.access_apply(&mut s, &cfg).await;
            let held = s.rules.iter().filter(|r| r.state.held()).count();
            s.state = match held {
                0 => AccessState::Failed,
                n if n == s.rules.len() => AccessState::Active,
                _ => AccessState::Partial,
            };
            if s.state == AccessState::Failed {
                s.ended_at = Some(rfc3339(now_ms()));
                s.reason = Some(format!("no rule could be put back ({why})"));
            } else {
                self.access.live().insert(s.id.clone(), s.clone());
            }
            if let Err(e) = self.access_keep(&s).await {
                tracing::error!(access = %s.id, "cannot record the access session: {e:#}");
            }
        }
        self.access.wake.notify_one();
    }

    /// Ends sessions when their time is up, whether or not anyone calls the API, and tries
    /// again to remove rules whose removal failed.
    pub async fn access_timer(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut last_retry = tokio::time::Instant::now();
        loop {
            let next = self
                .access
                .live()
                .values()
                .filter(|s| matches!(s.state, AccessState::Active | AccessState::Partial))
                .map(|s| s.expires_ms)
                .min();
            let retry_every = self.cfg().config.access.retry_every.get();
            let wait = next
                .map(|n| Duration::from_millis(n.saturating_sub(now_ms())))
                .unwrap_or(LOOK_EVERY)
                .min(LOOK_EVERY)
                .min(retry_every);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.access.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            let now = now_ms();
            let due: Vec<String> = self
                .access
                .live()
                .values()
                .filter(|s| {
                    matches!(s.state, AccessState::Active | AccessState::Partial)
                        && s.expires_ms <= now
                })
                .map(|s| s.id.clone())
                .collect();
            // Each marked EXPIRING here (so the next look does not pick it again), its rules
            // removed in a task of its own (a slow backend delays nobody else's expiry).
            for id in due {
                let end = End::Expired { at_restart: false };
                if let Ok(s) = self.access_begin_end(&id, &end) {
                    let gw = self.clone();
                    tokio::spawn(async move { gw.access_finish_end(s, end).await });
                }
            }
            if last_retry.elapsed() >= retry_every
                && !self
                    .access
                    .retrying
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                last_retry = tokio::time::Instant::now();
                let gw = self.clone();
                tokio::spawn(async move {
                    gw.access_retry_orphans().await;
                    gw.access
                        .retrying
                        .store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
    }

    /// Rules whose removal failed: try again; the session that held them last is updated.
    async fn access_retry_orphans(&self) {
        let cfg = self.cfg();
        let timeout = cfg.config.access.command_timeout();
        for o in self.access.book.orphans() {
            let Some(r) = cfg.resources.get(&o.key.resource) else {
                continue;
            };
            match self.access.book.retry(r, &o, timeout).await {
                Ok(true) => {
                    self.audit(
                        "access.rule.revoked",
                        None,
                        Some(&o.last),
                        json!({"resource": o.key.resource, "address": o.key.ip.to_string(), "retried": true}),
                    );
                    if let Ok(Some(mut s)) = self.access_get(&o.last).await {
                        for rule in s.rules.iter_mut().filter(|x| {
                            x.resource == o.key.resource && x.state == RuleState::RevokeFailed
                        }) {
                            rule.state = RuleState::Revoked;
                            rule.error = None;
                            rule.revoked_at = Some(rfc3339(now_ms()));
                        }
                        let _ = self.access_keep(&s).await;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(resource = %o.key.resource, address = %o.key.ip, "still cannot remove the rule: {e}")
                }
            }
        }
    }
}
