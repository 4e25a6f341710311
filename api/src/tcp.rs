//! Brokered TCP sessions (`protocol = "tcp"` targets), Boundary style: authorize, then a local
//! proxy that carries any client's connections over TLS to the gateway's `[tcp] listen`.

use serde::{Deserialize, Serialize};

use crate::SessionState;

/// `POST /api/v1/targets/{name}/authorize`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthorizeRequest {
    /// One host of the target's host set (`hosts`), by its id (`h1`, `h2`, ... in the order
    /// listed, or the address itself); absent: one picked at random.
    #[serde(default)]
    pub host_id: Option<String>,
}

/// A new `pending` session and the token that lets `wgctl proxy` use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Authorization {
    pub authorization_token: String,
    pub created_at: String,
    pub host_id: String,
    pub session_id: String,
    pub target_id: String,
    /// `tcp`.
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: String,
    pub expiration: String,
    /// Connections the session may carry; -1: unlimited.
    pub connection_limit: i64,
    /// Where `wgctl proxy` connects (the gateway's `[tcp]` listener).
    pub endpoint: String,
}

/// One state of a TCP session's life and when it held: `pending`, `active`, `canceling`,
/// `terminated` (with the reason it ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateSpan {
    pub state: SessionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// What a TCP session has beyond every session's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TcpDetail {
    pub host_id: String,
    /// -1: unlimited.
    pub connection_limit: i64,
    /// Connections accepted so far.
    pub connections: u32,
    /// Connections open now.
    #[serde(default)]
    pub open: u32,
    pub expiration: String,
    /// The `[tcp]` listener the session's token names, and the sha256 of its certificate:
    /// `wgctl proxy` checks its token against these (read through the API it trusts) before
    /// it sends anything to that listener.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub cert_sha256: String,
    /// Every state the session went through, oldest first.
    pub states: Vec<StateSpan>,
}

/// What the authorization token says (its first part, base64url JSON; the second part is the
/// gateway's signature over it). `wgctl proxy` reads it to know where to connect and which
/// certificate to expect; only the gateway can tell whether it is genuine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The session.
    pub sid: String,
    /// Who it was authorized for.
    pub user: String,
    pub target: String,
    pub host_id: String,
    /// Unix milliseconds after which the token is refused.
    pub exp_ms: u64,
    /// The same, RFC 3339 (for people).
    pub expiration: String,
    /// The gateway's `[tcp]` listener, `host:port`.
    pub endpoint: String,
    /// sha256 (hex) of the listener's TLS certificate (DER): the proxy accepts no other.
    pub cert_sha256: String,
    pub connection_limit: i64,
}

/// The first line `wgctl proxy` sends on each TLS connection (JSON, then `\n`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpHello {
    /// The authorization token.
    pub authz: String,
    /// The person's own API token (`wgctl login`): the session must be theirs.
    pub token: String,
}

/// The gateway's one-line answer (JSON, then `\n`); after `ok`, the connection carries the
/// client's bytes to the host and back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpReply {
    pub ok: bool,
    /// The connection's number in the session (from 1), when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u32>,
    /// Why not, for programs: `not_authorized`, `malformed_token`, `forged_token`,
    /// `expired_token`, `foreign_token`, `session_ended`, `session_ending`,
    /// `connection_limit`, `connect_failed`, `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why not, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Prefix of authorization tokens.
pub const TOKEN_PREFIX: &str = "wgtcp_";

/// The claims of an authorization token, unverified (for `wgctl proxy`).
pub fn token_claims(token: &str) -> Option<TokenClaims> {
    use base64::Engine;
    let body = token.trim().strip_prefix(TOKEN_PREFIX)?;
    let (claims, _sig) = body.split_once('.')?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}
