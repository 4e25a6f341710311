//! Console sessions, Kibana's model: signing in to the operator console (password, and a
//! security key where the person has one or a role says `require_mfa`) gives the browser an
//! encrypted, HttpOnly, SameSite=Strict cookie (`identity/cookie.rs`) and the store a record. The
//! cookie holds a random secret sealed with XChaCha20-Poly1305 under `console.key` (data
//! directory, 0600); the record holds the secret's sha256. Both must be there and match: a
//! cookie without its record (invalidated, expired, cleaned up) or a record without its cookie
//! is signed out.
//!
//! `[console] idle_timeout` slides with each request the person makes (the live stream does
//! not count), `lifespan` is absolute, `cleanup_interval` removes expired records, and
//! `max_sessions` per person invalidates the oldest when one more signs in. Audited:
//! `console.signed_in`, `console.signed_out`, `console.expired`, `console.evicted`,
//! `console.invalidated`.

use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};
use wardengate_protocols::session::now_ms;

use super::lock;
use super::state::digest;
use crate::broker::Gateway;
use crate::store::ConsoleSessionRow;

/// The idle expiry is written back once it would move by this much (each request would be a
/// store write), or by a tenth of the idle timeout when that is shorter.
const SLIDE_EVERY_MS: u64 = 5_000;
/// Longest user agent kept with a session.
const MAX_AGENT: usize = 160;

fn sid_hash(secret: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// Who asks to invalidate, and which sessions (Kibana's `_invalidate`).
#[derive(Debug, Clone)]
pub enum Match {
    All,
    Username(String),
}

impl Gateway {
    /// Whether a role of `user` asks for a security key at console sign-in.
    pub(crate) fn requires_mfa(&self, user: &str) -> bool {
        let cfg = self.cfg();
        let groups = cfg
            .users
            .get(user)
            .map(|u| u.groups.clone())
            .unwrap_or_default();
        cfg.config.roles.iter().any(|r| {
            r.require_mfa
                && r.members.iter().any(|m| match m.strip_prefix("group:") {
                    Some(g) => groups.iter().any(|x| x == g),
                    None => m == user,
                })
        })
    }

    /// A console sign-in passed its last step.
    pub(crate) fn console_proved(
        &self,
        code: &str,
        user: &str,
        provider: &'static str,
    ) -> Result<(), String> {
        let mut p = lock(&self.logins.pending);
        let l = p
            .values_mut()
            .find(|l| l.user_code == code && l.console.is_some())
            .ok_or("the sign-in expired meanwhile; sign in again")?;
        l.console = Some(super::state::ConsoleSignIn {
            user: Some(user.to_string()),
            provider,
        });
        Ok(())
    }

    /// The sign-in page exchanges its grant (the secret it started with) for a console session,
    /// once: the record is stored, the person's oldest sessions over `max_sessions` go, and the
    /// cookie's value comes back.
    pub async fn console_open(
        &self,
        grant: &str,
        source: std::net::SocketAddr,
        user_agent: &str,
    ) -> Result<(ConsoleSessionRow, String), String> {
        const NOT_YET: &str = "this sign-in is unknown, expired or not finished; sign in again";
        let signed = {
            let mut p = lock(&self.logins.pending);
            let key = digest(grant);
            let done = p.get(&key).and_then(|l| {
                let c = l.console.as_ref()?;
                Some((c.user.clone()?, c.provider, l.expires_ms > now_ms()))
            });
            match done {
                Some((user, provider, true)) => {
                    p.remove(&key);
                    (user, provider)
                }
                _ => return Err(NOT_YET.into()),
            }
        };
        let (user, provider) = signed;
        let cfg = self.cfg();
        let c = &cfg.config.console;
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
        let now = now_ms();
        let ms = |d: std::time::Duration| (!d.is_zero()).then(|| now + d.as_millis() as u64);
        let row = ConsoleSessionRow {
            id: crate::util::new_id("cs_"),
            sid_hash: sid_hash(&secret),
            username: user.clone(),
            provider: provider.into(),
            csrf: crate::util::new_token().map_err(|e| e.to_string())?,
            created_ms: now,
            idle_expires_ms: ms(c.idle_timeout),
            lifespan_expires_ms: ms(c.lifespan),
            source: source.ip().to_string(),
            user_agent: wardengate_api::text::inert(user_agent, MAX_AGENT).into_owned(),
        };
        let cookie = self.console_key.seal(&secret).map_err(|e| e.to_string())?;
        let (mine, gone): (Vec<_>, Vec<_>) = self
            .store
            .console_list(Some(&user))
            .await
            .map_err(|e| format!("internal error: {e:#}"))?
            .into_iter()
            .partition(|r| r.expired(now).is_none());
        // Expired ones do not count against max_sessions: they go as expired.
        self.console_expire(
            gone.into_iter()
                .filter_map(|r| r.expired(now).map(|why| (r, why)))
                .collect(),
        )
        .await;
        let over = (mine.len() + 1).saturating_sub(c.max_sessions as usize);
        let evicted: Vec<ConsoleSessionRow> = mine.into_iter().take(over).collect();
        if !evicted.is_empty() {
            let ids = evicted.iter().map(|s| s.id.clone()).collect();
            self.store
                .console_remove(ids)
                .await
                .map_err(|e| format!("internal error: {e:#}"))?;
            for s in &evicted {
                self.audit(
                    "console.evicted",
                    Some(&user),
                    None,
                    json!({"console_session": s.id, "max_sessions": c.max_sessions,
                           "by": row.id}),
                );
            }
        }
        self.store
            .console_put(row.clone())
            .await
            .map_err(|e| format!("internal error: {e:#}"))?;
        self.audit(
            "console.signed_in",
            Some(&user),
            None,
            json!({"console_session": row.id, "provider": provider, "client": row.source,
                   "idle_expires_ms": row.idle_expires_ms,
                   "lifespan_expires_ms": row.lifespan_expires_ms}),
        );
        Ok((row, cookie))
    }

    /// The console session a cookie belongs to, if both halves are there and it has not
    /// expired (an expired one is removed and audited). `slide`: a request of the person's, which
    /// moves the idle expiry.
    pub async fn console_session(&self, cookie: &str, slide: bool) -> Option<ConsoleSessionRow> {
        let secret = self.console_key.open_value(cookie)?;
        let mut row = match self.store.console_get(&sid_hash(&secret)).await {
            Ok(r) => r?,
            Err(e) => {
                tracing::error!("cannot read console sessions: {e:#}");
                return None;
            }
        };
        let now = now_ms();
        if let Some(why) = row.expired(now) {
            self.console_expire(vec![(row, why)]).await;
            return None;
        }
        let idle = self.cfg().config.console.idle_timeout;
        if slide && !idle.is_zero() {
            let idle_ms = idle.as_millis() as u64;
            let next = now + idle_ms;
            let step = SLIDE_EVERY_MS.min(idle_ms / 10);
            if row.idle_expires_ms.is_none_or(|t| next >= t + step) {
                row.idle_expires_ms = Some(next);
                if let Err(e) = self.store.console_put(row.clone()).await {
                    tracing::warn!("cannot extend a console session: {e:#}");
                }
            }
        }
        Some(row)
    }

    async fn console_expire(&self, rows: Vec<(ConsoleSessionRow, &'static str)>) {
        if rows.is_empty() {
            return;
        }
        let ids = rows.iter().map(|(r, _)| r.id.clone()).collect();
        if let Err(e) = self.store.console_remove(ids).await {
            tracing::warn!("cannot remove expired console sessions: {e:#}");
            return;
        }
        for (r, why) in rows {
            self.audit(
                "console.expired",
                Some(&r.username),
                None,
                json!({"console_session": r.id, "reason": why}),
            );
        }
    }

    /// Remove the records that expired (every `[console] cleanup_interval`), and the `wgctl
    /// login` tokens that did.
    pub async fn console_cleanup(&self) {
        let now = now_ms();
        if let Err(e) = self.store.token_purge(now).await {
            tracing::warn!("cannot purge expired operator tokens: {e:#}");
        }
        match self.store.console_list(None).await {
            Ok(all) => {
                let gone = all
                    .into_iter()
                    .filter_map(|r| r.expired(now).map(|why| (r, why)))
                    .collect();
                self.console_expire(gone).await;
            }
            Err(e) => tracing::warn!("console cleanup: {e:#}"),
        }
    }

    /// Console sessions, oldest first, the expired left out.
    pub async fn console_sessions(&self) -> Result<Vec<ConsoleSessionRow>> {
        let now = now_ms();
        Ok(self
            .store
            .console_list(None)
            .await?
            .into_iter()
            .filter(|r| r.expired(now).is_none())
            .collect())
    }

    /// Invalidate the sessions that match (`who` asked, `reason` audited); how many went.
    pub async fn console_invalidate(&self, m: &Match, who: &str, why: &str) -> Result<usize> {
        let rows = match m {
            Match::All => self.store.console_list(None).await?,
            Match::Username(u) => self.store.console_list(Some(u)).await?,
        };
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let n = self.store.console_remove(ids).await?;
        for r in &rows {
            self.audit(
                "console.invalidated",
                Some(who),
                None,
                json!({"console_session": r.id, "username": r.username, "reason": why}),
            );
        }
        Ok(n)
    }

    /// The person signs out: their record goes.
    pub async fn console_sign_out(&self, row: &ConsoleSessionRow) {
        if let Err(e) = self.store.console_remove(vec![row.id.clone()]).await {
            tracing::warn!("cannot remove a console session: {e:#}");
        }
        self.audit(
            "console.signed_out",
            Some(&row.username),
            None,
            json!({"console_session": row.id}),
        );
    }
}
