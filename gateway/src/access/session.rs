//! The life of an access session: start (grants, caps, the per-person limit, rules applied),
//! expiry on a timer, stop with a reason, and reconciliation at the gateway's start.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;
use wardengate_api::{self as api, AccessState, RuleState};
use wardengate_policy::{Dur, LimitDenial, Policy, Scope};
use wardengate_protocols::session::now_ms;

use super::backend::Op;
use super::book::Key;
use super::refusal::{refuse, AccessRefusal};
use crate::broker::Gateway;
use crate::config::{shown, Resource};
use crate::store::AccessRow;
use crate::util::rfc3339;

/// How a session ends.
pub(super) enum End {
    Expired { at_restart: bool },
    Cancelled { by: String, reason: String },
}

/// `s` as the store keeps it.
fn access_row(s: &api::AccessSession) -> anyhow::Result<AccessRow> {
    Ok(AccessRow {
        id: s.id.clone(),
        user: s.user.clone(),
        gateway: s.gateway.clone(),
        live: s.state.is_live(),
        // Held on to while a rule's removal failed, so that a restart tries it again.
        holds: s.state.is_live() || s.rules.iter().any(|r| r.state == RuleState::RevokeFailed),
        created_ms: s.created_ms,
        body: serde_json::to_string(s)?,
    })
}

/// The resources `user` (in `groups`) may open: each with the policy that grants it.
fn grants(cfg: &crate::config::Loaded, user: &str, groups: &[String]) -> Vec<(Resource, Policy)> {
    let mut out = Vec::new();
    for r in cfg.resources.values() {
        let tags = r.tag_pairs();
        let req = wardengate_policy::Request {
            user,
            groups,
            target: &r.name,
            target_tags: &tags,
            protocol: wardengate_policy::NETWORK,
            account: "-",
        };
        if let Ok(a) = wardengate_policy::decide(&cfg.policies, &req) {
            out.push((r.clone(), a.settings().clone()));
        }
    }
    out
}

/// The rules of `s` that `pick` takes: each with its resource and key, and its index in
/// `s.rules`; those whose resource is no longer configured come apart, answered at once.
#[allow(clippy::type_complexity)]
fn rules_of(
    s: &api::AccessSession,
    ip: IpAddr,
    cfg: &crate::config::Loaded,
    pick: impl Fn(&api::AccessRule) -> bool,
) -> (
    Vec<(Resource, Key)>,
    Vec<usize>,
    Vec<(usize, Result<RuleState, String>)>,
) {
    let (mut items, mut at, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in s.rules.iter().enumerate().filter(|(_, r)| pick(r)) {
        match cfg.resources.get(&r.resource) {
            Some(res) => {
                items.push((res.clone(), Key::new(&r.resource, ip)));
                at.push(i);
            }
            None => gone.push((i, Err("the resource is no longer configured".into()))),
        }
    }
    (items, at, gone)
}

impl Gateway {
    /// What `user` may pick: the offered durations within the deployment's cap and every
    /// granting policy's, shortest first, and the default (the configured one, or the longest
    /// offered below it, or the shortest).
    pub fn access_offer(&self, user: &str) -> (Vec<Dur>, Option<Dur>) {
        let cfg = self.cfg();
        let a = &cfg.config.access;
        let groups = cfg
            .users
            .get(user)
            .map(|p| p.groups.clone())
            .unwrap_or_default();
        let caps = grants(&cfg, user, &groups);
        let mut offered: Vec<Dur> = a
            .durations
            .iter()
            .filter(|d| **d <= a.max_duration)
            .filter(|d| {
                caps.iter()
                    .all(|(_, p)| p.max_session_duration.is_zero() || **d <= p.max_session_duration)
            })
            .copied()
            .collect();
        offered.sort();
        let wanted = a.default_duration();
        let default = offered
            .iter()
            .rev()
            .find(|d| **d <= wanted)
            .or(offered.first())
            .copied();
        (offered, default)
    }

    /// `wgctl access start`: allow `addr` on every resource `user`'s policies grant, for
    /// `duration` (one of `[access] durations`; absent: the default).
    pub async fn access_start(
        self: &Arc<Self>,
        user: &str,
        addr: IpAddr,
        duration: Option<&str>,
    ) -> Result<api::AccessSession, AccessRefusal> {
        let cfg = self.cfg();
        let settings = &cfg.config.access;
        let Some(person) = cfg.users.get(user) else {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("{user} is not a person: an access session is for someone, with their own token"),
            ));
        };
        let d = match duration {
            // The default, or the longest the person may have below it.
            None => self
                .access_offer(user)
                .1
                .unwrap_or_else(|| settings.default_duration()),
            Some(s) => Dur(wardengate_policy::duration::parse(s)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?),
        };
        let offered = settings
            .durations
            .iter()
            .map(|d| shown(*d))
            .collect::<Vec<_>>()
            .join(", ");
        if !settings.durations.contains(&d) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} is not an offered duration: choose one of {offered}",
                    shown(d)
                ),
            ));
        }
        let deny = |message: String, detail: serde_json::Value| {
            self.audit(
                "access.denied",
                Some(user),
                None,
                json!({"address": addr.to_string(), "duration": shown(d), "message": message, "detail": detail}),
            );
            refuse(StatusCode::FORBIDDEN, message)
        };
        if d > settings.max_duration {
            return Err(deny(
                format!(
                    "{} is longer than this deployment allows: [access] max_duration is {}",
                    shown(d),
                    shown(settings.max_duration)
                ),
                json!({"limit": "access.max_duration", "max": shown(settings.max_duration)}),
            ));
        }
        let grants = grants(&cfg, user, &person.groups);
        if grants.is_empty() {
            let why = match cfg.resources.is_empty() {
                true => "this gateway has no network resources ([[resources]])".to_string(),
                false => format!(
                    "no policy grants {user} a network resource (a policy with protocols = \
                     [\"network\"] and the resource in resources or resource_tags)"
                ),
            };
            return Err(deny(why, json!({"reason": "no_permission"})));
        }
        if let Some((r, p)) = grants
            .iter()
            .find(|(_, p)| !p.max_session_duration.is_zero() && d > p.max_session_duration)
        {
            let cap = shown(p.max_session_duration);
            return Err(deny(
                format!(
                    "{} is longer than policy '{}' allows for resource {}: its \
                     max_session_duration is {cap}",
                    shown(d),
                    p.name,
                    r.name,
                ),
                json!({"limit": "max_session_duration", "policy": p.name, "max": cap}),
            ));
        }
        // Approvals, then a security key, where granting policies ask for them: before
        // anything is counted or applied.
        let id = crate::util::new_id("acc_");
        let refused = |refusal: AccessRefusal, reason: &str| {
            self.audit(
                "access.denied",
                Some(user),
                None,
                json!({"address": addr.to_string(), "duration": shown(d), "message": refusal.message,
                       "detail": {"reason": reason}}),
            );
            refusal
        };
        let approvals = self
            .access_approvals(user, &grants, addr, &id)
            .await
            .map_err(|r| refused(r, "approval_required"))?;
        let proof = self
            .access_second_factor(user, &grants, addr)
            .await
            .map_err(|r| refused(r, "mfa_required"))?;
        let created = now_ms();
        let expires = created.saturating_add(d.get().as_millis() as u64);
        let mut s = api::AccessSession {
            id,
            user: user.to_string(),
            address: addr.to_string(),
            state: AccessState::Pending,
            duration: shown(d),
            created_at: rfc3339(created),
            expires_at: rfc3339(expires),
            ended_at: None,
            reason: None,
            cancelled_by: None,
            gateway: self.name.clone(),
            rules: grants
                .iter()
                .map(|(r, p)| api::AccessRule {
                    resource: r.name.clone(),
                    backend: r.backend.name().into(),
                    address: addr.to_string(),
                    state: RuleState::Pending,
                    error: None,
                    holders: 0,
                    applied_at: None,
                    revoked_at: None,
                    policy: p.name.clone(),
                })
                .collect(),
            created_ms: created,
            expires_ms: expires,
            mfa: proof.as_ref().map(|p| format!("webauthn ({})", p.key)),
            approval: super::step_up::approvals_shown(&approvals),
        };
        // Counted and recorded in one step of the store (across the cluster on PostgreSQL): two
        // starts at once cannot both pass the limit.
        let row = access_row(&s).map_err(|e| self.store_down(e))?;
        let max = settings.max_sessions_per_user;
        match self.store.access_insert_limited(row, max).await {
            Err(e) => return Err(self.store_down(e)),
            Ok(Err(current)) => {
                let d = LimitDenial {
                    scope: Scope::Actor,
                    limit: max.unwrap_or(0),
                    current,
                    subject: user.to_string(),
                };
                let message = format!(
                    "wardengate: {d} (access.max_sessions_per_user); stop one with `wgctl access \
                     stop ID --reason ...` or wait until it expires"
                );
                self.audit(
                    "access.denied",
                    Some(user),
                    None,
                    json!({"address": addr.to_string(), "reason": "concurrency", "limit": d, "message": message}),
                );
                return Err(AccessRefusal {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message,
                    limit: Some(d),
                    asks: None,
                });
            }
            Ok(Ok(())) => {
                self.access.live().insert(s.id.clone(), s.clone());
                for (request, _) in &approvals {
                    self.approval_used(request, &s.id);
                }
            }
        }
        self.audit(
            "access.requested",
            Some(user),
            Some(&s.id),
            json!({"address": s.address, "duration": s.duration, "expires": s.expires_at,
                   "resources": s.rules.iter().map(|r| r.resource.clone()).collect::<Vec<_>>(),
                   "mfa": s.mfa, "approval": s.approval}),
        );
        self.access_apply(&mut s, &cfg).await;
        let applied = s.rules.iter().filter(|r| r.state.held()).count();
        s.state = match applied {
            0 => AccessState::Failed,
            n if n == s.rules.len() => AccessState::Active,
            _ => AccessState::Partial,
        };
        if s.state == AccessState::Failed {
            s.ended_at = Some(rfc3339(now_ms()));
            s.reason = Some("no rule could be applied".into());
            self.access.live().remove(&s.id);
        } else {
            self.access.live().insert(s.id.clone(), s.clone());
        }
        if let Err(e) = self.access_keep(&s).await {
            tracing::error!(access = %s.id, "cannot record the access session: {e:#}");
        }
        let kind = match s.state {
            AccessState::Failed => "access.failed",
            _ => "access.started",
        };
        self.audit(
            kind,
            Some(user),
            Some(&s.id),
            json!({"state": s.state, "address": s.address, "expires": s.expires_at,
                   "applied": applied, "rules": s.rules.len()}),
        );
        self.access.wake.notify_one();
        Ok(self.access_view(s))
    }

    fn store_down(&self, e: anyhow::Error) -> AccessRefusal {
        tracing::error!("access sessions: the store failed: {e:#}");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway cannot reach its store, so no access session can start; try again in a \
             moment"
                .into(),
        )
    }

    /// Apply every pending rule of `s` (several at once), each audited.
    pub(super) async fn access_apply(
        &self,
        s: &mut api::AccessSession,
        cfg: &crate::config::Loaded,
    ) {
        let Ok(ip) = s.address.parse::<IpAddr>() else {
            return;
        };
        let (items, at, mut results) = rules_of(s, ip, cfg, |r| r.state == RuleState::Pending);
        let timeout = cfg.config.access.command_timeout();
        let done = self.access.book.acquire_all(&items, &s.id, timeout).await;
        results.extend(at.into_iter().zip(done));
        self.access_outcomes(s, ip, results, Op::Apply);
    }

    /// Each rule's outcome of `op` on record in `s`, and audited (`access.rule.<state>`).
    fn access_outcomes(
        &self,
        s: &mut api::AccessSession,
        ip: IpAddr,
        results: Vec<(usize, Result<RuleState, String>)>,
        op: Op,
    ) {
        for (i, result) in results {
            let rule = &mut s.rules[i];
            let error = match result {
                Ok(st) => {
                    rule.state = st;
                    rule.error = None;
                    match st {
                        RuleState::Applied | RuleState::Shared => {
                            rule.applied_at = Some(rfc3339(now_ms()))
                        }
                        RuleState::Revoked => rule.revoked_at = Some(rfc3339(now_ms())),
                        _ => {}
                    }
                    None
                }
                Err(e) => {
                    rule.state = match op {
                        Op::Apply => RuleState::Failed,
                        _ => RuleState::RevokeFailed,
                    };
                    rule.error = Some(e.clone());
                    Some(e)
                }
            };
            let key = Key::new(&rule.resource, ip);
            self.audit(
                &format!("access.rule.{}", rule.state.name()),
                Some(&s.user),
                Some(&s.id),
                json!({"resource": rule.resource, "backend": rule.backend, "address": rule.address,
                       "holders": self.access.book.holders(&key), "error": error}),
            );
        }
    }

    /// `wgctl access stop`: end a live session now, its rules removed (or released).
    pub async fn access_stop(
        self: &Arc<Self>,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<api::AccessSession, AccessRefusal> {
        self.audit(
            "access.stop_requested",
            Some(by),
            Some(id),
            json!({"by": by, "reason": reason}),
        );
        let end = End::Cancelled {
            by: by.to_string(),
            reason: reason.to_string(),
        };
        self.access_end(id, end).await
    }

    /// End a live session: `EXPIRING` while its rules go, then `EXPIRED` or `CANCELLED`.
    pub(super) async fn access_end(
        self: &Arc<Self>,
        id: &str,
        end: End,
    ) -> Result<api::AccessSession, AccessRefusal> {
        let s = self.access_begin_end(id, &end)?;
        Ok(self.access_finish_end(s, end).await)
    }

    /// The first step of an end, at once under the lock: `EXPIRING`, so that nothing else picks
    /// the session again.
    pub(super) fn access_begin_end(
        &self,
        id: &str,
        end: &End,
    ) -> Result<api::AccessSession, AccessRefusal> {
        {
            let mut live = self.access.live();
            let Some(s) = live.get_mut(id) else {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    format!("access session {id} is not live on gateway {}", self.name),
                ));
            };
            match s.state {
                AccessState::Active | AccessState::Partial => {}
                AccessState::Pending => {
                    return Err(refuse(
                        StatusCode::CONFLICT,
                        format!(
                            "access session {id} is still applying its rules; stop it in a moment"
                        ),
                    ))
                }
                other => {
                    return Err(refuse(
                        StatusCode::CONFLICT,
                        format!("access session {id} is already {other}"),
                    ))
                }
            }
            s.state = AccessState::Expiring;
            match end {
                End::Expired { .. } => s.reason = Some("expired".into()),
                End::Cancelled { by, reason } => {
                    s.reason = Some(format!("cancelled by {by}: {reason}"));
                    s.cancelled_by = Some(by.clone());
                }
            }
            Ok(s.clone())
        }
    }

    /// The rest of an end: its rules removed or released, then `EXPIRED` or `CANCELLED`.
    pub(super) async fn access_finish_end(
        self: &Arc<Self>,
        mut s: api::AccessSession,
        end: End,
    ) -> api::AccessSession {
        let id = s.id.clone();
        if let Err(e) = self.access_keep(&s).await {
            tracing::error!(access = %id, "cannot record the access session: {e:#}");
        }
        self.access_revoke(&mut s).await;
        s.state = match s.cancelled_by {
            Some(_) => AccessState::Cancelled,
            None => AccessState::Expired,
        };
        s.ended_at = Some(rfc3339(now_ms()));
        if let End::Expired { at_restart: true } = end {
            s.reason =
                Some("expired while the gateway was down (rules removed at its start)".into());
        }
        self.access.live().remove(&id);
        if let Err(e) = self.access_keep(&s).await {
            tracing::error!(access = %id, "cannot record the access session: {e:#}");
        }
        let kind = match s.state {
            AccessState::Cancelled => "access.cancelled",
            _ => "access.expired",
        };
        self.audit(
            kind,
            Some(&s.user),
            Some(&s.id),
            json!({"state": s.state, "reason": s.reason, "address": s.address, "by": s.cancelled_by}),
        );
        self.access.wake.notify_one();
        self.access_view(s)
    }

    /// Let go of every rule `s` holds: removed when it was the last holder, each audited.
    async fn access_revoke(&self, s: &mut api::AccessSession) {
        let cfg = self.cfg();
        let Ok(ip) = s.address.parse::<IpAddr>() else {
            return;
        };
        let (items, at, mut results) = rules_of(s, ip, &cfg, |r| {
            r.state.held() || r.state == RuleState::Revoking
        });
        for (i, gone) in &mut results {
            // Nothing here can remove it any more.
            self.access
                .book
                .forget(&Key::new(&s.rules[*i].resource, ip));
            *gone = Err("the resource is no longer configured: remove the rule by hand".into());
        }
        // A shared rule another gateway's live session holds is released here, not removed.
        let elsewhere = self.access_held_elsewhere(&items).await;
        let (mut mine, mut mine_at) = (Vec::new(), Vec::new());
        for (item, i) in items.into_iter().zip(at) {
            if elsewhere.contains(&item.1) {
                self.access.book.let_go(&item.1, &s.id);
                results.push((i, Ok(RuleState::Released)));
            } else {
                mine.push(item);
                mine_at.push(i);
            }
        }
        let timeout = cfg.config.access.command_timeout();
        let done = self.access.book.release_all(&mine, &s.id, timeout).await;
        results.extend(mine_at.into_iter().zip(done));
        self.access_outcomes(s, ip, results, Op::Revoke);
    }

    /// Keep `s` in the store.
    pub(super) async fn access_keep(&self, s: &api::AccessSession) -> anyhow::Result<()> {
        self.store.access_put(access_row(s)?).await
    }
}
