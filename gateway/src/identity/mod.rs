//! Security keys (WebAuthn, verified by webauthn-rs) and the step-up they give.
//!
//! A person enrols a key, or proves they hold one, on the gateway's page `/mfa`, opened from a
//! one-time link: `wgctl mfa enroll` and `wgctl mfa prove` make one, and so does an admission
//! whose policy says `mfa = "webauthn"` (SSH shows it and waits; PostgreSQL and RDP put it in
//! their refusal). The link's ticket sits in the URL's fragment (browsers never send it), is
//! bound to the person and what it is for, expires after `[identity] link_ttl`, and is spent by
//! the ceremony it starts, whatever the outcome.
//!
//! A successful assertion leaves a *proof* (person, policy, key, time). Admission under a policy
//! with `mfa = "webauthn"` takes one: with `mfa_max_age = 0` (every session) an unspent proof at
//! most `[identity] proof_valid_for` old, spent by the session it admits; with `mfa_max_age > 0`
//! any proof of that age; `reconnect.mode = "reauth"` after a dropped session asks for a fresh
//! one whatever the age.

pub mod approvals;
pub mod approvals_cluster;
mod ceremony;
pub mod console;
pub mod cookie;
pub mod login;
pub mod state;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use wardengate_protocols::session::now_ms;
use webauthn_rs::prelude::{
    SecurityKeyAuthentication, SecurityKeyRegistration, Url, Webauthn, WebauthnBuilder,
};

use crate::config::IdentitySection;

pub use ceremony::{CeremonyError, NoLink};
pub(crate) use state::digest;

/// The most links waiting at once (the oldest is dropped first).
const MAX_CEREMONIES: usize = 1024;
/// Proofs are kept at most this long (the longest `mfa_max_age` that can use them).
const PROOF_KEPT: Duration = Duration::from_secs(24 * 3600);
const MAX_PROOFS: usize = 4096;

/// What a link is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// Register a new security key or passkey under this name.
    Enroll { name: String },
    /// Prove presence of an enrolled key: for one policy's sessions, or any (`None`).
    Prove { policy: Option<String> },
    /// The second factor of `wgctl login` with this code (no proof for sessions is left).
    SignIn { code: String },
}

/// The answer a link's waiter gets: `Ok` once proved, `Err` with the reason shown.
pub type Outcome = Option<Result<(), String>>;

/// A link handed out: where to open it and how to learn how it went.
pub struct Link {
    pub url: String,
    pub expires_in: Duration,
    pub done: watch::Receiver<Outcome>,
}

/// A proof of presence that admission can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub user: String,
    /// The policy it was made for; `None`: any.
    pub policy: Option<String>,
    /// The key's name, as its owner gave it.
    pub key: String,
    pub at_ms: u64,
    pub spent: bool,
}

/// A ceremony in progress: made by a link, started and finished by the page.
pub(crate) struct Pending {
    user: String,
    purpose: Purpose,
    expires: Instant,
    /// Set once the page has asked for the challenge.
    state: Option<State>,
    done: watch::Sender<Outcome>,
}

/// A started ceremony's state, kept in memory until the page answers.
pub(crate) enum State {
    Register(Box<SecurityKeyRegistration>),
    Assert(Box<SecurityKeyAuthentication>),
}

/// Links waiting to be used, and proofs waiting for their sessions.
#[derive(Default)]
pub struct Mfa {
    pending: Mutex<HashMap<String, Pending>>,
    proofs: Mutex<Vec<Proof>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The origin of the gateway's pages: `[identity] origin`, or `<scheme>://localhost:<api port>`.
pub fn origin(s: &IdentitySection, api_port: u16, scheme: &str) -> String {
    s.origin
        .clone()
        .unwrap_or_else(|| format!("{scheme}://localhost:{api_port}"))
        .trim_end_matches('/')
        .to_string()
}

/// The relying party as configured; `Err` says what is wrong with the configuration.
pub fn relying_party(s: &IdentitySection, api_port: u16, scheme: &str) -> Result<Webauthn, String> {
    let origin = origin(s, api_port, scheme);
    let url = Url::parse(&origin).map_err(|e| format!("origin '{origin}' is not a URL: {e}"))?;
    if url
        .host_str()
        .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok())
    {
        return Err(format!(
            "origin '{origin}' names an IP address; browsers refuse security keys there: use a \
             host name (http://localhost:{api_port} on this machine)"
        ));
    }
    WebauthnBuilder::new(&s.rp_id, &url)
        .and_then(|b| b.rp_name(&s.rp_name).build())
        .map_err(|e| {
            format!(
                "rp_id '{}' and origin '{origin}' do not fit together ({e}): the origin's host \
                 must be the rp_id or a host under it",
                s.rp_id
            )
        })
}

impl Mfa {
    /// A one-time link for `user`, valid for `ttl`, to the page at `origin`.
    pub fn issue(
        &self,
        user: &str,
        purpose: Purpose,
        origin: &str,
        ttl: Duration,
    ) -> Result<Link, String> {
        let ticket = crate::util::new_token().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let (tx, rx) = watch::channel(None);
        crate::util::insert_expiring(
            &mut lock(&self.pending),
            ticket.clone(),
            Pending {
                user: user.to_string(),
                purpose,
                expires: now + ttl,
                state: None,
                done: tx,
            },
            MAX_CEREMONIES,
            |p| p.expires,
        );
        Ok(Link {
            url: format!("{origin}/mfa#ticket={ticket}"),
            expires_in: ttl,
            done: rx,
        })
    }

    /// Record a proof (after a verified assertion).
    fn prove(&self, proof: Proof) {
        let now = now_ms();
        let mut p = lock(&self.proofs);
        p.retain(|x| now.saturating_sub(x.at_ms) < PROOF_KEPT.as_millis() as u64);
        if p.len() >= MAX_PROOFS {
            p.remove(0);
        }
        p.push(proof);
    }

    /// A proof that admits `user` under `policy`: see the module's text. With max age 0, or
    /// `since` (a reauth: made after that time), an unspent proof at most `window` old, spent.
    pub fn take(
        &self,
        user: &str,
        policy: &str,
        max_age: Duration,
        since: Option<u64>,
        window: Duration,
    ) -> Option<Proof> {
        let now = now_ms();
        let fits = |p: &Proof, age: Duration| {
            p.user == user
                && p.policy.as_deref().is_none_or(|x| x == policy)
                && now.saturating_sub(p.at_ms) <= age.as_millis() as u64
                && since.is_none_or(|t| p.at_ms > t)
        };
        let mut proofs = lock(&self.proofs);
        if since.is_some() || max_age.is_zero() {
            let p = proofs
                .iter_mut()
                .rev()
                .find(|p| !p.spent && fits(p, window))?;
            p.spent = true;
            return Some(p.clone());
        }
        proofs.iter().rev().find(|p| fits(p, max_age)).cloned()
    }

    /// Forget `user`'s proofs (their keys were reset).
    pub fn forget(&self, user: &str) {
        lock(&self.proofs).retain(|p| p.user != user);
    }
}

/// What `session show` prints for the second factor: stored in the decision.
pub fn decision(proof: &Proof, started_ms: u64) -> Value {
    json!({
        "method": "webauthn",
        "key": proof.key,
        "proved_ms": proof.at_ms,
        "before_start_ms": started_ms.saturating_sub(proof.at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(user: &str, policy: Option<&str>, age_ms: u64) -> Proof {
        Proof {
            user: user.into(),
            policy: policy.map(String::from),
            key: "YubiKey".into(),
            at_ms: now_ms() - age_ms,
            spent: false,
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_proof_for_every_session_is_spent_by_the_first() {
        let m = Mfa::default();
        m.prove(proof("alice", Some("prod"), 1000));
        let take = |user: &str, policy: &str| m.take(user, policy, Duration::ZERO, None, MIN);
        assert!(take("bob", "prod").is_none());
        assert!(take("alice", "other").is_none());
        assert!(take("alice", "prod").is_some());
        assert!(take("alice", "prod").is_none());
    }

    #[test]
    fn a_proof_older_than_the_window_or_max_age_admits_nothing() {
        let m = Mfa::default();
        m.prove(proof("alice", None, 120_000));
        let take = |age: Duration, since: Option<u64>| m.take("alice", "prod", age, since, MIN);
        assert!(take(Duration::ZERO, None).is_none());
        assert!(take(MIN, None).is_none());
        // Within max_age, the same proof serves several sessions.
        let hour = Duration::from_secs(3600);
        assert!(take(hour, None).is_some());
        assert!(take(hour, None).is_some());
        // A reauth wants one made after the drop whatever max_age says, once.
        let dropped = now_ms() - 1000;
        assert!(take(hour, Some(dropped)).is_none());
        m.prove(proof("alice", Some("prod"), 0));
        assert!(take(hour, Some(dropped)).is_some());
        assert!(take(hour, Some(dropped)).is_none());
    }

    #[test]
    fn the_relying_party_refuses_an_ip_origin_and_a_foreign_host() {
        let mut s = IdentitySection::default();
        assert!(relying_party(&s, 8080, "http").is_ok());
        s.origin = Some("http://127.0.0.1:8080".into());
        let e = relying_party(&s, 8080, "http").err().unwrap_or_default();
        assert!(e.contains("IP address"), "{e}");
        s.origin = Some("https://gw.example.com".into());
        let e = relying_party(&s, 8080, "http").err().unwrap_or_default();
        assert!(e.contains("do not fit together"), "{e}");
        s.rp_id = "example.com".into();
        assert!(relying_party(&s, 8080, "http").is_ok());
    }
}
