//! What the identity layer keeps while the gateway runs (approval requests, sign-ins and their
//! tokens), apart from the code that acts on it (`impl Gateway` in `approvals.rs`, `login.rs`),
//! so that the `Gateway` can own it without the files importing each other round.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use wardengate_api as api;
use wardengate_policy::Approval;

use super::Outcome;

/// What the store keeps of a request (the rest is the running gateway's: the waiter's channel,
/// the waiting session rows).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Kept {
    pub(crate) wire: api::ApprovalRequest,
    pub(crate) approval: Approval,
    pub(crate) expires_ms: u64,
    pub(crate) valid_until_ms: Option<u64>,
    pub(crate) waited: bool,
    /// The gateway that holds it (and its waiter): in a cluster, decisions are sent there.
    #[serde(default)]
    pub(crate) gateway: String,
}

impl Request {
    /// Its JSON for the store, held by `gateway`.
    pub(crate) fn kept(&self, gateway: &str) -> String {
        serde_json::to_string(&Kept {
            wire: self.wire.clone(),
            approval: self.approval.clone(),
            expires_ms: self.expires_ms,
            valid_until_ms: self.valid_until_ms,
            waited: self.waited,
            gateway: gateway.to_string(),
        })
        .unwrap_or_default()
    }
}

/// One request and the answer its waiter (an SSH login) listens for.
pub(crate) struct Request {
    pub(crate) wire: api::ApprovalRequest,
    pub(crate) approval: Approval,
    pub(crate) expires_ms: u64,
    pub(crate) valid_until_ms: Option<u64>,
    /// An SSH login waits on it: when it lets go, the request is withdrawn.
    pub(crate) waited: bool,
    pub(crate) done: watch::Sender<Outcome>,
    /// The `awaiting_approval` sessions of the SSH logins waiting on it: each ends `denied`
    /// with the request's reason, or goes on as the session the approval admits.
    pub(crate) rows: Vec<crate::store::SessionRecord>,
}

/// The requests of this gateway.
#[derive(Default)]
pub struct Approvals(pub(crate) Mutex<Vec<Request>>);

/// A login waiting for its person.
pub(crate) struct LoginPending {
    pub(crate) source: std::net::IpAddr,
    pub(crate) user_code: String,
    pub(crate) expires_ms: u64,
    /// Set once the person passed password and key.
    pub(crate) token: Option<(String, String, u64)>,
    /// A console sign-in (the page itself waits, and gets a console session, not a token).
    pub(crate) console: Option<ConsoleSignIn>,
}

/// What a console sign-in learned on its way.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsoleSignIn {
    /// The person, once password (and key, where needed) passed.
    pub(crate) user: Option<String>,
    /// `password` or `password+webauthn`.
    pub(crate) provider: &'static str,
}

/// Logins in progress and the tokens they gave.
#[derive(Default)]
pub struct Logins {
    /// By the hash of the device code (wgctl's secret). (The tokens they give are kept in the
    /// store: `operator_tokens`.)
    pub(crate) pending: Mutex<HashMap<[u8; 32], LoginPending>>,
}

pub(crate) fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.trim().as_bytes()).into()
}
