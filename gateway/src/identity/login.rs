//! Operator sign-in for `wgctl login`, device-code style: wgctl asks for a login and shows a
//! link and a short code; the person opens the gateway's page `/login`, checks the code, gives
//! their password (argon2, throttled per person and source like every login) and touches their
//! security key; wgctl, polling with its secret device code, then receives a token that expires
//! after `[identity] operator_token_ttl`. Tokens are kept hashed in the store (a restart keeps
//! people signed in); `wgctl logout` revokes one.
//!
//! Sign-in needs an enrolled key: a person without one is told to enrol first (an administrator
//! can, with `wgctl mfa enroll --user NAME`). Sign-ins in progress live in memory (a restart
//! forgets them; people run `wgctl login` again). Audited: `login.started`, `login.failed` (with the reason), `login.succeeded`,
//! `login.revoked`.

use std::time::Duration;

use serde_json::json;
use wardengate_protocols::session::{now_ms, ClientInfo, Lifecycle, Verdict};

use super::state::{digest, LoginPending as Pending};
use super::{lock, Purpose};
use crate::broker::Gateway;

/// How long a login waits for the person (and its code stays usable).
pub const LOGIN_WINDOW: Duration = Duration::from_secs(600);
/// The most logins waiting at once, and from one source address.
const MAX_LOGINS: usize = 256;
const MAX_LOGINS_PER_SOURCE: usize = 4;
/// Letters of the code a person compares (no 0/O, 1/I).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn user_code() -> Result<String, String> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    let c: String = b
        .iter()
        .map(|x| CODE_ALPHABET[*x as usize % CODE_ALPHABET.len()] as char)
        .collect();
    Ok(format!("{}-{}", &c[..4], &c[4..]))
}

/// What `POST /api/v1/login/device` answers.
pub struct Started {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: Duration,
}

/// What wgctl's poll learns.
pub enum Poll {
    Waiting,
    Token {
        user: String,
        token: String,
        expires_ms: u64,
    },
    Unknown,
}

impl Gateway {
    /// wgctl (or the console's sign-in page, `console`) asks to sign in.
    pub fn login_start(
        &self,
        client: &std::net::SocketAddr,
        console: bool,
    ) -> Result<Started, String> {
        let device_code = crate::util::new_token().map_err(|e| e.to_string())?;
        let code = user_code()?;
        let now = now_ms();
        let mut p = lock(&self.logins.pending);
        p.retain(|_, l| l.expires_ms > now);
        if p.values().filter(|l| l.source == client.ip()).count() >= MAX_LOGINS_PER_SOURCE {
            return Err(format!(
                "{MAX_LOGINS_PER_SOURCE} sign-ins from this address are waiting already; finish \
                 one or try again in a few minutes"
            ));
        }
        if p.len() >= MAX_LOGINS {
            return Err("too many sign-ins are waiting; try again in a few minutes".into());
        }
        p.insert(
            digest(&device_code),
            Pending {
                source: client.ip(),
                user_code: code.clone(),
                expires_ms: now + LOGIN_WINDOW.as_millis() as u64,
                token: None,
                console: console.then(Default::default),
            },
        );
        drop(p);
        self.audit(
            "login.started",
            None,
            None,
            json!({"code": code, "client": client.to_string(), "console": console}),
        );
        Ok(Started {
            device_code,
            user_code: code,
            expires_in: LOGIN_WINDOW,
        })
    }

    /// The person a `wgctl login` token belongs to, while it is valid.
    pub async fn token_user(&self, token_hash: &[u8; 32]) -> Option<String> {
        match self
            .store
            .token_user(&hex::encode(token_hash), now_ms())
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::error!("cannot read operator tokens: {e:#}");
                None
            }
        }
    }

    /// The person whose own token (`users.api_token_sha256`, or a `wgctl login` token) hashes
    /// to `d`, if any (the admin and named automation tokens are nobody's).
    pub async fn person_of(&self, d: &[u8; 32]) -> Option<String> {
        use subtle::ConstantTimeEq;
        let signed_in = self.token_user(d).await;
        let cfg = self.cfg();
        cfg.users
            .values()
            .filter(|u| {
                u.api_token.is_some_and(|t| bool::from(t.ct_eq(d)))
                    || signed_in.as_deref() == Some(u.name.as_str())
            })
            .last()
            .map(|u| u.name.clone())
    }

    /// The person a presented token belongs to (see [`Self::person_of`]).
    pub async fn person(&self, token: &str) -> Option<String> {
        self.person_of(&digest(token.trim())).await
    }

    /// Revoke a `wgctl login` token; its person when it was valid.
    pub async fn token_revoke(&self, token: &str) -> Option<String> {
        match self
            .store
            .token_remove(&hex::encode(digest(token)), now_ms())
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::error!("cannot revoke an operator token: {e:#}");
                None
            }
        }
    }

    /// wgctl polls with its device code.
    pub fn login_poll(&self, device_code: &str) -> Poll {
        let now = now_ms();
        let mut p = lock(&self.logins.pending);
        let key = digest(device_code);
        match p.get(&key) {
            Some(l) if l.console.is_some() => Poll::Unknown,
            Some(l) if l.expires_ms <= now => {
                p.remove(&key);
                Poll::Unknown
            }
            Some(l) if l.token.is_some() => match p.remove(&key).and_then(|l| l.token) {
                Some((user, token, expires_ms)) => Poll::Token {
                    user,
                    token,
                    expires_ms,
                },
                None => Poll::Unknown,
            },
            Some(_) => Poll::Waiting,
            None => Poll::Unknown,
        }
    }

    /// The page's first step: the code the person read, their name and password. Answers the
    /// security-key ticket the page then runs the ceremony with; `None` for a console sign-in
    /// of a person with no key who needs none (the password was enough). Every refusal is the
    /// same text.
    pub async fn login_password(
        &self,
        code: &str,
        user: &str,
        password: &str,
        client: std::net::SocketAddr,
    ) -> Result<Option<String>, String> {
        const REFUSED: &str =
            "sign-in refused: the code, the name or the password is wrong, or the code has expired";
        let code = code.trim().to_ascii_uppercase();
        let (known, console) = {
            let now = now_ms();
            let p = lock(&self.logins.pending);
            let l = p
                .values()
                .find(|l| l.user_code == code && l.expires_ms > now && l.token.is_none());
            (l.is_some(), l.is_some_and(|l| l.console.is_some()))
        };
        let info = ClientInfo {
            addr: client,
            version: "wgctl login".into(),
        };
        let user = user.trim();
        // The same pool and throttle as every protocol's login, and the dummy hash for an unknown
        // user or code, so every answer takes the same time.
        let verdict = self.check_password(user, password, &info, known).await;
        if !known || verdict != Verdict::Ok {
            let why = if !known {
                "unknown or expired code"
            } else {
                "wrong password or user"
            };
            if verdict != Verdict::Refused {
                self.audit(
                    "login.failed",
                    Some(user),
                    None,
                    json!({"reason": why, "client": client.to_string()}),
                );
            }
            return Err(REFUSED.into());
        }
        let keys = self
            .store
            .key_list(Some(user))
            .await
            .map_err(|e| format!("internal error: {e:#}"))?;
        if keys.is_empty() && console && !self.requires_mfa(user) {
            self.console_proved(&code, user, "password")?;
            return Ok(None);
        }
        if keys.is_empty() {
            self.audit(
                "login.failed",
                Some(user),
                None,
                json!({"reason": "no security key enrolled", "client": client.to_string()}),
            );
            return Err(format!(
                "{user} has no security key enrolled: signing in needs one (an administrator \
                 runs `wgctl mfa enroll --user {user}` and gives you the link)"
            ));
        }
        let ttl = self.cfg().config.identity.link_ttl;
        let link = self
            .mfa
            .issue(
                user,
                Purpose::SignIn { code: code.clone() },
                &self.page_origin(),
                ttl,
            )
            .map_err(|e| format!("internal error: {e}"))?;
        let ticket = link
            .url
            .rsplit_once("#ticket=")
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        Ok(Some(ticket))
    }

    /// The key was touched for sign-in `code`: the waiting wgctl gets its token (a console
    /// sign-in, its session).
    pub(crate) async fn login_proved(&self, user: &str, code: &str) -> Result<(), String> {
        if lock(&self.logins.pending)
            .values()
            .any(|l| l.user_code == code && l.console.is_some())
        {
            return self.console_proved(code, user, "password+webauthn");
        }
        let ttl = self.cfg().config.identity.operator_token_ttl;
        let token = crate::util::new_token().map_err(|e| e.to_string())?;
        let expires_ms = now_ms() + ttl.as_millis() as u64;
        {
            let mut p = lock(&self.logins.pending);
            let l = p
                .values_mut()
                .find(|l| l.user_code == code && l.token.is_none())
                .ok_or("the sign-in expired meanwhile; run wgctl login again")?;
            l.token = Some((user.to_string(), token.clone(), expires_ms));
        }
        self.store
            .token_put(&hex::encode(digest(&token)), user, expires_ms)
            .await
            .map_err(|e| format!("internal error: cannot keep the token: {e:#}"))?;
        self.audit(
            "login.succeeded",
            Some(user),
            None,
            json!({"code": code, "expires_ms": expires_ms}),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_short_and_unambiguous() {
        let c = user_code().expect("code");
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
        assert!(c
            .chars()
            .filter(|c| *c != '-')
            .all(|c| CODE_ALPHABET.contains(&(c as u8))));
        assert_ne!(user_code().expect("code"), c);
    }
}
