//! The operator console's wire types: signing in (password, then a security key where
//! needed), who is signed in, and Kibana-shaped console-session management.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/console/login`: the sign-in page's first step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsoleLoginRequest {
    pub user: String,
    pub password: String,
}

/// The password passed: the page keeps `grant` (its secret) and, when `ticket` is set, runs
/// the security-key ceremony with it before it opens the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleLoginStarted {
    pub grant: String,
    pub ticket: Option<String>,
    /// Where the console must be opened for security keys to answer (`[identity] origin`).
    pub origin: String,
}

/// `POST /api/v1/console/session`: exchange the grant for the session cookie.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsoleOpenRequest {
    pub grant: String,
}

/// `GET /api/v1/console/me`: who the console is signed in as, what they may do, and the
/// token every state-changing request carries in `X-CSRF-Token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleMe {
    pub user: String,
    /// Permission names (`session.terminate`, …).
    pub can: Vec<String>,
    /// Empty when the caller used a bearer token (no cookie, no CSRF).
    pub csrf: String,
    pub console_session: Option<String>,
    pub idle_expires_ms: Option<u64>,
    pub lifespan_expires_ms: Option<u64>,
    pub gateway: String,
}

/// One console session, as `GET /api/v1/console-sessions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleSession {
    pub id: String,
    pub username: String,
    pub provider: String,
    pub created_ms: u64,
    pub idle_expires_ms: Option<u64>,
    pub lifespan_expires_ms: Option<u64>,
    pub source: String,
    pub user_agent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleSessionList {
    pub sessions: Vec<ConsoleSession>,
}

/// `{"username": "bob"}` in an `_invalidate` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsoleSessionQuery {
    pub username: Option<String>,
}

/// `POST /api/v1/console-sessions/_invalidate`, Kibana's shape: `{"match": "all"}` or
/// `{"match": "query", "query": {"username": "bob"}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsoleInvalidateRequest {
    #[serde(rename = "match")]
    pub match_: String,
    pub query: Option<ConsoleSessionQuery>,
    /// Why (audited); optional.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleInvalidated {
    pub total: usize,
}

/// One moment of a session's timeline: an audit event about it (policy decision, security-key
/// challenge, approvals, shadow attach and detach, handoff, terminate, the recording sealed) or
/// a marker its recording holds (idle warnings, pauses, the end).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    pub at_ms: u64,
    /// Time into the session, `HH:MM:SS`.
    pub offset: String,
    /// `audit` or `recording`.
    pub source: String,
    pub kind: String,
    pub actor: Option<String>,
    /// One line for people.
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timeline {
    pub session: String,
    pub entries: Vec<TimelineEntry>,
}

/// A saved view of the sessions list: the console's filters as a query string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SavedQuery {
    pub name: String,
    /// `protocol=ssh&target_tag=env%3Dprod` (keys: target_tag, protocol, policy, actor, state,
    /// idle_gt, shadowed).
    pub query: String,
    pub pinned: bool,
}

/// `PUT /api/v1/console/queries/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SavedQueryRequest {
    pub query: String,
    #[serde(default)]
    pub pinned: bool,
}
