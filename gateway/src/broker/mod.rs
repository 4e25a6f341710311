//! The `Gateway`: everything a running gateway owns, and its implementation of the protocol
//! contract — the lifecycle every protocol reports to (`lifecycle`), SSH (`ssh`), PostgreSQL
//! (`postgres`) and RDP (`rdp`) — each step audited.

mod admit;
mod lifecycle;
pub mod postgres;
pub mod rdp;
mod ssh;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::json;
use wardengate_policy::Ledger;

use crate::audit::checkpoints::{self, Checkpoints};
use crate::config::Loaded;
use crate::registry::Registry;
use crate::store::Store;
use crate::vault::Vault;

/// A session that ended by a dropped connection, for the reconnect that may follow.
pub(crate) struct Dropped {
    pub session: String,
    /// When its policy's reconnect grace ends (ms).
    pub until: u64,
    /// When the connection dropped (ms).
    pub at: u64,
}

/// Everything a running gateway owns.
pub struct Gateway {
    pub name: String,
    /// The configuration; replaced whole by a reload (live sessions keep what admitted them).
    cfg: RwLock<Arc<Loaded>>,
    pub store: Arc<dyn Store>,
    pub vault: Vault,
    pub registry: Registry,
    pub recordings: crate::recording::Recordings,
    pub ledger: Arc<Ledger>,
    /// The bounded pool of password checks.
    pub passwords: crate::guard::PasswordChecker,
    /// Failed-login accounting per source and user (SSH, PostgreSQL, RDP).
    pub throttle: crate::guard::Throttle,
    /// The same for API tokens, kept apart: users failing to log in from an operator's network
    /// must not lock the operators out of the API, nor the other way round.
    pub api_throttle: crate::guard::Throttle,
    /// Where clients connect from (`[geoip] database`), when configured.
    pub geoip: Option<crate::geoip::GeoIp>,
    /// PostgreSQL cancel requests per source.
    pub cancels: crate::guard::CancelGuard,
    /// When the audit chain head is signed next.
    pub(crate) checkpoints: Checkpoints,
    /// Sessions that ended by a dropped connection, by (actor, target): a reconnect within the
    /// policy's grace is linked to them. The session, the end of the grace, when it dropped.
    pub(crate) drops: Mutex<HashMap<(String, String), Dropped>>,
    /// Security-key links waiting to be used, and proofs waiting for their sessions.
    pub mfa: crate::identity::Mfa,
    /// Sessions waiting for approval, and approvals not used yet.
    pub approvals: crate::identity::state::Approvals,
    /// `wgctl login` in progress, and the tokens it gave.
    pub logins: crate::identity::state::Logins,
    /// The key console cookies are sealed with (`console.key` in the data directory).
    pub console_key: crate::identity::cookie::CookieKey,
    /// The port the API listens on (the configured one, or the one picked for port 0): the
    /// default origin of the gateway's pages.
    pub api_port: u16,
    /// The cluster's key and the client that reaches the other gateways (none alone).
    pub peers: crate::cluster::peers::Peers,
    /// Live brokered-TCP sessions and the `[tcp]` listener's token key.
    pub tcp: crate::tcp::state::TcpState,
    /// Network access sessions this gateway applies, and their reference-counted rules.
    pub access: crate::access::AccessState,
}

impl Gateway {
    pub async fn new(
        cfg: Loaded,
        store: Arc<dyn Store>,
        vault: Vault,
        recordings: crate::recording::Recordings,
    ) -> Gateway {
        let sec = &cfg.config.security;
        let passwords =
            crate::guard::PasswordChecker::start(sec.password_checks, sec.password_queue_timeout);
        let throttle = crate::guard::Throttle::new(sec);
        let api_throttle = crate::guard::Throttle::new(sec);
        let api_port = cfg.config.api.listen.port();
        let checkpoints = Checkpoints::new(
            cfg.config.audit.checkpoint_every,
            recordings.dir.join("audit-checkpoints.jsonl"),
            checkpoints::merged(
                store.checkpoints().await.unwrap_or_default(),
                checkpoints::read_file(&recordings.dir.join("audit-checkpoints.jsonl")),
            )
            .last()
            .map_or(0, |c| c.seq),
        );
        Gateway {
            geoip: None,
            cancels: crate::guard::CancelGuard::new(sec.cancel_requests_per_second),
            checkpoints,
            passwords,
            throttle,
            api_throttle,
            name: cfg.config.gateway.name.clone(),
            cfg: RwLock::new(Arc::new(cfg)),
            store,
            vault,
            registry: Registry::new(),
            recordings,
            ledger: Ledger::new(),
            drops: Mutex::new(HashMap::new()),
            mfa: crate::identity::Mfa::default(),
            approvals: Default::default(),
            logins: Default::default(),
            console_key: crate::identity::cookie::CookieKey::ephemeral(),
            api_port,
            peers: crate::cluster::peers::Peers::none(),
            tcp: Default::default(),
            access: Default::default(),
        }
    }

    /// The current configuration.
    pub fn cfg(&self) -> Arc<Loaded> {
        self.cfg
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn set_cfg(&self, cfg: Loaded) {
        let mut w = self.cfg.write().unwrap_or_else(|p| p.into_inner());
        *w = Arc::new(cfg);
    }

    /// Target names carrying `key=value`.
    pub fn targets_with_tag(&self, tag: &str) -> Vec<String> {
        let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
        self.cfg()
            .targets
            .values()
            .filter(|t| t.tags.get(k).is_some_and(|tv| tv == v))
            .map(|t| t.name.clone())
            .collect()
    }

    /// Sessions a previous run left open (crash, kill -9) are marked failed at start.
    pub async fn recover(&self) {
        match self.store.sessions_open_on(&self.name).await {
            Ok(rows) => {
                for mut r in rows {
                    r.state = wardengate_api::SessionState::Failed;
                    if r.protocol == wardengate_api::Protocol::Tcp {
                        let ended = wardengate_api::SessionState::Terminated;
                        crate::tcp::state::transition(&mut r, ended, Some("gateway_restart"));
                    }
                    r.ended_ms = Some(wardengate_protocols::session::now_ms());
                    r.end_reason = Some("gateway_restart".into());
                    r.end_detail = Some("the gateway stopped while the session was open".into());
                    if self.store.session_update(&r).await.is_ok() {
                        self.audit(
                            "session.end",
                            Some(&r.actor),
                            Some(&r.id),
                            json!({"reason": "gateway_restart", "state": r.state}),
                        );
                    }
                }
            }
            Err(e) => tracing::error!("cannot recover sessions: {e:#}"),
        }
    }
}
