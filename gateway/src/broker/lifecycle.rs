//! The session lifecycle every protocol reports to: users, password checks and their throttling,
//! refusals, a session's start, notices and end, each audited.

use serde_json::json;
use wardengate_policy::ReconnectMode;
use wardengate_protocols::error::TargetError;
use wardengate_protocols::session::{now_ms, Lifecycle, Outcome, UserAuth, Verdict};
use wardengate_protocols::ssh::ClientInfo;

use super::Gateway;

impl Lifecycle for Gateway {
    fn user(&self, name: &str) -> Option<UserAuth> {
        self.cfg().users.get(name).map(|u| UserAuth {
            keys: u.keys.clone(),
            has_password: u.password_hash.is_some(),
            scram: u.scram.clone(),
            nt_hash: u.nt_hash,
        })
    }

    async fn check_password(
        &self,
        user: &str,
        password: &str,
        client: &ClientInfo,
        usable: bool,
    ) -> Verdict {
        let ip = client.addr.ip();
        if !self.throttle.allow(user, ip) {
            return Verdict::Refused;
        }
        let phc = usable
            .then(|| {
                self.cfg()
                    .users
                    .get(user)
                    .and_then(|u| u.password_hash.clone())
            })
            .flatten();
        match self.passwords.verify(phc, password).await {
            Ok(ok) => {
                self.attempt_result(user, client, ok);
                if ok {
                    Verdict::Ok
                } else {
                    Verdict::Wrong
                }
            }
            Err(_) => {
                self.throttle.abandon(user, ip);
                tracing::warn!(%ip, "password check refused: every check was busy for password_queue_timeout");
                Verdict::Refused
            }
        }
    }

    fn attempt_allowed(&self, user: &str, client: &ClientInfo) -> bool {
        self.throttle.allow(user, client.addr.ip())
    }

    fn attempt_abandoned(&self, user: &str, client: &ClientInfo) {
        self.throttle.abandon(user, client.addr.ip());
    }

    fn attempt_result(&self, user: &str, client: &ClientInfo, ok: bool) {
        let events = self.throttle.record(user, client.addr.ip(), ok);
        self.audit_throttle("login", events);
    }

    fn refused(&self, login: &str, client: &ClientInfo, kind: &str, message: &str) {
        use wardengate_api::text::{inert, MAX_NAME};
        // A login is a name: cut where names are cut, before anything is stored.
        let login = inert(login, MAX_NAME);
        let user = login.split([':', '#']).next().unwrap_or(&login);
        self.audit(
            "auth.failed",
            Some(user),
            None,
            json!({"login": login, "reason": kind, "message": message, "client": client.addr.to_string()}),
        );
    }

    fn opened(&self, session: &str) {
        if let Some(r) = self.registry.activate(&*self.store, session) {
            self.audit(
                "session.start",
                Some(&r.actor),
                Some(session),
                json!({"protocol": r.protocol, "target": r.target, "target_addr": r.target_addr, "account": r.account, "client": r.client_addr, "client_version": r.client_version, "client_crypto": r.client_crypto, "target_crypto": r.target_crypto}),
            );
        }
    }

    fn notice(&self, session: &str, kind: &str, detail: serde_json::Value) {
        let actor = self.registry.live_record(session).map(|r| r.actor);
        self.audit(kind, actor.as_deref(), Some(session), detail);
    }

    fn ended(&self, session: &str, outcome: Outcome) {
        if let Outcome::TargetFailed(TargetError::SecretRejected {
            target,
            account,
            detail,
        }) = &outcome
        {
            // Someone changed the account's secret on the target (through a session, or
            // directly): every session through the gateway now fails, and whoever changed it can
            // log in around the gateway. The operators must hear of it.
            let r = self.registry.live_record(session);
            tracing::error!(%target, %account, "the target rejected the vault's secret: {detail}");
            self.audit(
                "vault.secret_rejected",
                r.as_ref().map(|r| r.actor.as_str()),
                Some(session),
                json!({"target": target, "account": account, "account_ref": r.as_ref().map(|r| r.account_ref.clone()), "detail": detail}),
            );
        }
        if let Some((r, admitted)) = self.registry.finish(&*self.store, session, &outcome) {
            let reconnect = admitted.settings().reconnect;
            if matches!(outcome, Outcome::ClientDropped(_))
                && reconnect.mode != ReconnectMode::Strict
            {
                if let Ok(mut d) = self.drops.lock() {
                    let now = now_ms();
                    let until = now + reconnect.grace.get().as_millis() as u64;
                    d.retain(|_, x| x.until > now);
                    let dropped = super::Dropped {
                        session: r.id.clone(),
                        until,
                        at: now,
                    };
                    d.insert((r.actor.clone(), r.target.clone()), dropped);
                }
            }
            self.audit(
                "session.end",
                Some(&r.actor),
                Some(session),
                json!({"state": r.state, "reason": r.end_reason, "detail": r.end_detail, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out, "policy": r.policy}),
            );
        }
    }
}
