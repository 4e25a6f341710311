//! Brokered TCP sessions (`protocol = "tcp"` targets), Boundary style.
//!
//! `authorize` admits a session through the one admission path (policy, four-level limits, MFA,
//! approvals) and leaves it `pending`, with a signed token naming it; `wgctl proxy` then opens
//! TLS connections to `[tcp] listen` (`front.rs`), each counted against the session's connection
//! limit and relayed to its host. One task per session (`supervise`) ends it: on expiration,
//! idleness, its last allowed connection closing, a cancel, a terminate, or shutdown — first
//! `canceling` while its connections close, then `terminated`, each state with its times.

pub mod front;
pub mod state;
pub mod token;

use state::Counts;
pub use state::{transition, Front, Refused, TcpLive, TcpState};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, Notify};
use wardengate_api as api;
use wardengate_protocols::session::{now_ms, ClientInfo, Control, Lifecycle, Login, Outcome};

use crate::broker::Gateway;
use crate::util::rfc3339;

/// The error of a refused authorization: HTTP status and message.
pub type AuthorizeError = (axum::http::StatusCode, String);

impl Gateway {
    /// `wgctl target authorize`: admit a TCP session for `user` and leave it pending.
    pub async fn tcp_authorize(
        self: &Arc<Self>,
        user: &str,
        target: &str,
        host_id: Option<&str>,
        client: std::net::SocketAddr,
    ) -> Result<api::Authorization, AuthorizeError> {
        use axum::http::StatusCode;
        let Some(front) = self.tcp.front.get() else {
            return Err((
                StatusCode::CONFLICT,
                "this gateway brokers no TCP sessions: its configuration has no [tcp] listen"
                    .into(),
            ));
        };
        // A wrong --host-id is refused before a session exists, to a person the policies let
        // reach the target (others learn nothing of its hosts: admission refuses them).
        if let (Some(wanted), Some(t)) = (host_id, self.reachable_tcp(user, target)) {
            pick_host(&t, Some(wanted))?;
        }
        let login = Login {
            user: user.to_string(),
            target: target.to_string(),
            account: None,
            waiting: None,
        };
        let info = ClientInfo {
            addr: client,
            version: "wgctl".into(),
        };
        let granted = self
            .admit_session(&login, "api-token", &info, api::Protocol::Tcp, |_, _, _| {
                Ok(())
            })
            .await
            .map_err(|d| {
                let status = match d.kind {
                    "unknown_target" | "wrong_protocol" | "unknown_user" => StatusCode::NOT_FOUND,
                    "concurrency" => StatusCode::TOO_MANY_REQUESTS,
                    "internal" | "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::FORBIDDEN,
                };
                (status, d.message)
            })?;
        let id = granted.link.shared.id.clone();
        // The target as admitted (a reload since cannot leave an admitted session unowned).
        let t = &granted.target;
        let (host_id, host) = match pick_host(t, host_id) {
            Ok(h) => h,
            Err(e) => {
                let message = e.1.clone();
                self.ended(
                    &id,
                    Outcome::Policy {
                        reason: "no_host",
                        message,
                    },
                );
                return Err(e);
            }
        };
        let limit = t
            .session_connection_limit
            .unwrap_or(crate::config::DEFAULT_CONNECTION_LIMIT);
        // The target's session_max_seconds, or the policy's max_lifespan when shorter.
        let mut life = Duration::from_secs(
            t.session_max_seconds
                .unwrap_or(crate::config::DEFAULT_MAX_SECONDS),
        );
        let lifespan = granted.admitted.settings().max_lifespan;
        if !lifespan.is_zero() {
            life = life.min(lifespan.get());
        }
        let created = now_ms();
        let expires_ms = created.saturating_add(life.as_millis() as u64);
        let idle = granted.admitted.settings().idle_timeout.get();
        let detail = api::TcpDetail {
            host_id: host_id.clone(),
            connection_limit: limit,
            connections: 0,
            open: 0,
            expiration: rfc3339(expires_ms),
            endpoint: front.endpoint.clone(),
            cert_sha256: front.cert_sha256.clone(),
            states: Vec::new(),
        };
        self.registry.update(&*self.store, &id, |r| {
            r.target_addr = host.clone();
            r.tcp = Some(detail);
            transition(r, api::SessionState::Pending, None);
        });
        let link = granted.link;
        let tap = link.tap.clone();
        let live = Arc::new(TcpLive {
            id: id.clone(),
            user: user.to_string(),
            target: target.to_string(),
            host_id: host_id.clone(),
            host: host.clone(),
            limit,
            expires_ms,
            counts: Mutex::new(Counts::default()),
            changed: Notify::new(),
            // Cut with the gateway's shutdown too.
            stop: front.shutdown.child_token(),
            shared: link.shared.clone(),
            tap: Mutex::new(link.tap),
        });
        self.tcp.insert(live.clone());
        // From here the session's own task owns it: whatever becomes of this request, the
        // session ends by one of its rules.
        tokio::spawn(supervise(self.clone(), live, link.control, idle));
        if let Some(tap) = &tap {
            let detail = json!({"user": user, "target": target, "host_id": host_id, "host": host,
                                "connection_limit": limit, "expiration": rfc3339(expires_ms)});
            tap.marker("session", detail.to_string()).await;
        }
        drop(tap);
        let claims = api::TokenClaims {
            sid: id.clone(),
            user: user.to_string(),
            target: target.to_string(),
            host_id: host_id.clone(),
            exp_ms: expires_ms,
            expiration: rfc3339(expires_ms),
            endpoint: front.endpoint.clone(),
            cert_sha256: front.cert_sha256.clone(),
            connection_limit: limit,
        };
        let token = front.key.sign(&claims);
        self.audit(
            "tcp.authorized",
            Some(user),
            Some(&id),
            json!({"target": target, "host_id": host_id, "host": host, "connection_limit": limit,
                   "expiration": rfc3339(expires_ms), "client": client.to_string()}),
        );
        Ok(api::Authorization {
            authorization_token: token,
            created_at: rfc3339(created),
            host_id,
            session_id: id,
            target_id: target.to_string(),
            kind: "tcp".into(),
            user_id: user.to_string(),
            expiration: rfc3339(expires_ms),
            connection_limit: limit,
            endpoint: front.endpoint.clone(),
        })
    }

    /// A connection of `live` was let in (`first`: the session becomes active) or ended: the
    /// record's counts follow.
    pub(crate) fn tcp_counted(&self, live: &TcpLive, first: bool) {
        let (accepted, open) = live.counts();
        self.registry.update(&*self.store, &live.id, |r| {
            if let Some(t) = r.tcp.as_mut() {
                t.connections = accepted;
                t.open = open;
            }
            if first {
                transition(r, api::SessionState::Active, None);
            }
        });
        if first {
            self.opened(&live.id);
        }
    }
}

impl Gateway {
    /// `target`, when it is a tcp target that a policy lets `user` reach.
    fn reachable_tcp(&self, user: &str, target: &str) -> Option<crate::config::Target> {
        let cfg = self.cfg();
        let login = Login {
            user: user.to_string(),
            target: target.to_string(),
            account: None,
            waiting: None,
        };
        let r = crate::admission::resolve(&cfg, &login, api::Protocol::Tcp).ok()?;
        let req = r.request(api::Protocol::Tcp);
        let fits = r.target.protocol == api::Protocol::Tcp
            && wardengate_policy::decide(&cfg.policies, &req).is_ok();
        fits.then(|| r.target.clone())
    }
}

/// The host a session goes to: the one `wanted` names (its id or its address), or one at random.
fn pick_host(
    t: &crate::config::Target,
    wanted: Option<&str>,
) -> Result<(String, String), AuthorizeError> {
    let set = t.host_set();
    match wanted {
        Some(w) => set
            .iter()
            .find(|(id, addr)| id == w || addr == w)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<String> = set.iter().map(|(i, a)| format!("{i} = {a}")).collect();
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    format!(
                        "target {} has no host '{}' (its hosts: {})",
                        t.name,
                        api::text::inert(w, api::text::MAX_NAME),
                        known.join(", ")
                    ),
                )
            }),
        None => {
            let i = (rand_index(set.len())).min(set.len().saturating_sub(1));
            set.get(i).cloned().ok_or((
                axum::http::StatusCode::CONFLICT,
                format!("target {} has no hosts", t.name),
            ))
        }
    }
}

/// A uniformly random index below `n` (the operating system's randomness; 0 without it).
fn rand_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    if n == 0 || getrandom::getrandom(&mut b).is_err() {
        return 0;
    }
    (u64::from_le_bytes(b) % n as u64) as usize
}

/// The one task of a TCP session: waits for what ends it, then ends it.
async fn supervise(
    gw: Arc<Gateway>,
    live: Arc<TcpLive>,
    mut control: mpsc::Receiver<Control>,
    idle: Duration,
) {
    let expires = tokio::time::Instant::now()
        + Duration::from_millis(live.expires_ms.saturating_sub(now_ms()));
    let outcome = loop {
        let idle_ms = live.shared.idle_ms(now_ms());
        let idle_left = (idle.as_millis() as u64).saturating_sub(idle_ms);
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Terminate { by, reason }) => break Outcome::Terminated { by, reason },
                Some(Control::End { reason, message }) => break Outcome::Policy { reason, message },
                Some(_) => continue,
                None => break Outcome::Shutdown,
            },
            _ = tokio::time::sleep_until(expires) => break Outcome::Policy {
                reason: "expired",
                message: format!("the session reached its expiration ({})", rfc3339(live.expires_ms)),
            },
            _ = tokio::time::sleep(Duration::from_millis(idle_left)) => {
                if live.shared.idle_ms(now_ms()) >= idle.as_millis() as u64 {
                    break Outcome::Policy {
                        reason: "idle",
                        message: format!("no client data for {} (idle_timeout)", wardengate_recorder::time::human(idle)),
                    };
                }
            }
            // The gateway's shutdown (its child token, `stop`, is also cut by `finish`).
            _ = live.stop.cancelled() => break Outcome::Shutdown,
            _ = live.changed.notified() => {
                gw.tcp_counted(&live, false);
                if live.used_up() {
                    break Outcome::Policy {
                        reason: "connection_limit",
                        message: format!("every connection the session allows ({}) was made and closed", live.limit),
                    };
                }
            }
        }
    };
    finish(&gw, &live, outcome).await;
}

/// What the States history says a session ended with.
fn state_reason(o: &Outcome) -> String {
    match o {
        Outcome::Terminated { by, reason } => format!("terminated by {by}: {reason}"),
        other => other.reason().to_string(),
    }
}

/// End the session: `canceling` while connections close, then `terminated`.
async fn finish(gw: &Arc<Gateway>, live: &Arc<TcpLive>, outcome: Outcome) {
    let reason = state_reason(&outcome);
    let open = {
        let mut c = crate::registry::lock(&live.counts);
        c.ending = true;
        c.open
    };
    if open > 0 {
        gw.registry.update(&*gw.store, &live.id, |r| {
            transition(r, api::SessionState::Canceling, Some(&reason));
        });
    }
    live.stop.cancel();
    let wait = async {
        while live.counts().1 > 0 {
            live.changed.notified().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    let (accepted, open) = live.counts();
    let tap = crate::registry::lock(&live.tap).take();
    if let Some(tap) = tap {
        let detail = json!({"reason": outcome.reason(), "connections": accepted});
        // Dropping the last tap lets the recorder seal.
        tap.marker("end", detail.to_string()).await;
    }
    gw.registry.update(&*gw.store, &live.id, |r| {
        if let Some(t) = r.tcp.as_mut() {
            t.connections = accepted;
            t.open = open;
        }
        transition(r, api::SessionState::Terminated, Some(&reason));
    });
    gw.tcp.remove(&live.id);
    gw.ended(&live.id, outcome);
}
