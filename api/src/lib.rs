//! Wire types of the Wardengate REST API (`/api/v1`).
//!
//! The gateway serves these and `wgctl` (and later the web console) consumes them; both sides
//! share this crate so a field renamed on one side is a compile error on the other.
#![forbid(unsafe_code)]

mod access;
mod console;
mod identity;
pub mod table;
mod tcp;
pub mod text;
pub mod time;

pub use access::*;
pub use console::*;
pub use identity::*;
pub use tcp::*;

use serde::{Deserialize, Serialize};

/// Lifecycle states of a session (see ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The first state of every session.
    #[default]
    Requested,
    AwaitingApproval,
    Approved,
    Opened,
    Active,
    Idle,
    Paused,
    Closing,
    Closed,
    Denied,
    Failed,
    /// A TCP session authorized and not yet used.
    Pending,
    /// A TCP session ending: its connections are being closed.
    Canceling,
    /// A TCP session that has ended.
    Terminated,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Requested => "requested",
            SessionState::AwaitingApproval => "awaiting_approval",
            SessionState::Approved => "approved",
            SessionState::Opened => "opened",
            SessionState::Active => "active",
            SessionState::Idle => "idle",
            SessionState::Paused => "paused",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
            SessionState::Denied => "denied",
            SessionState::Failed => "failed",
            SessionState::Pending => "pending",
            SessionState::Canceling => "canceling",
            SessionState::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requested" => SessionState::Requested,
            "awaiting_approval" => SessionState::AwaitingApproval,
            "approved" => SessionState::Approved,
            "opened" => SessionState::Opened,
            "active" => SessionState::Active,
            "idle" => SessionState::Idle,
            "paused" => SessionState::Paused,
            "closing" => SessionState::Closing,
            "closed" => SessionState::Closed,
            "denied" => SessionState::Denied,
            "failed" => SessionState::Failed,
            "pending" => SessionState::Pending,
            "canceling" => SessionState::Canceling,
            "terminated" => SessionState::Terminated,
            _ => return None,
        })
    }

    /// A session in a terminal state can no longer be terminated.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Closed
                | SessionState::Denied
                | SessionState::Failed
                | SessionState::Terminated
        )
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocols the gateway brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Ssh,
    Postgres,
    Rdp,
    /// Any TCP service, through `wgctl proxy` (Boundary style).
    Tcp,
    /// A network access session's allow rules (no session carries it; an approval request
    /// for one does).
    Network,
}

impl Protocol {
    /// The protocols of sessions (`network` is not one: access sessions are apart).
    pub const ALL: [Protocol; 4] = [
        Protocol::Ssh,
        Protocol::Postgres,
        Protocol::Rdp,
        Protocol::Tcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Postgres => "postgres",
            Protocol::Rdp => "rdp",
            Protocol::Tcp => "tcp",
            Protocol::Network => "network",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The terminal attached to a session, if the client asked for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// One brokered session, as `GET /api/v1/sessions/{id}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    pub id: String,
    pub state: SessionState,
    pub protocol: Protocol,
    pub actor: String,
    pub client_addr: String,
    /// Where the client address is, from the operator's GeoIP database (`London, GB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_location: Option<String>,
    pub client_version: String,
    /// The cipher (and MAC, unless the cipher is AEAD) the client leg negotiated (SSH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_crypto: Option<String>,
    /// The same for the target leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_crypto: Option<String>,
    pub target: String,
    pub target_addr: String,
    /// Target account name; the secret is referenced by `account_ref`, never included.
    pub account: String,
    /// Vault reference of the account's secret (a name, never the secret).
    pub account_ref: String,
    pub policy: Option<String>,
    pub pty: Option<Pty>,
    pub gateway: String,
    /// RFC 3339 timestamps.
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Time of the last meaningful input (keystrokes, client data), RFC 3339.
    pub last_input_at: Option<String>,
    /// Seconds since the last meaningful input (or since start when there was none).
    pub idle_secs: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub channels: u32,
    /// What a live database session is doing: `idle`, `active`, `idle in transaction` or
    /// `idle in transaction (aborted)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// Why the session ended (`client_exit`, `terminated`, `target_closed`, ...).
    pub end_reason: Option<String>,
    /// Free text: the operator's reason for a terminate, the error of a failed session.
    pub end_detail: Option<String>,
    pub terminated_by: Option<String>,
    /// The admission decision: the admitting policy, its source and settings and the limits that
    /// applied, or for a denial the reason (and `limit` {scope, limit, current, subject} when a
    /// concurrency limit refused it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<serde_json::Value>,
    /// The earlier session this one continues (a reconnect after a dropped connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_session: Option<String>,
    /// The session's sealed recording, once sealed.
    #[serde(default)]
    pub recording: Option<RecordingSummary>,
    /// Operators watching the live session now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observers: Vec<Observer>,
    /// A handoff offered and not yet accepted, declined or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// How long the gateway takes to pass the target's data on to the client (live RDP
    /// sessions): from a read on the target's connection to the write to the client, flushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_latency: Option<RelayLatency>,
    /// Earlier owners, oldest first (the session was handed off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_owners: Vec<String>,
    /// A TCP session's host, connection limit, expiration and state history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpDetail>,
}

/// An operator watching a session (`wgctl session shadow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Observer {
    pub name: String,
    /// `visible` (the owner was shown a banner) or `covert`.
    pub banner: String,
    pub since: String,
}

/// A pending handoff of a session to a new owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Handoff {
    pub to: String,
    pub by: String,
    pub reason: String,
    pub requested_at: String,
    pub expires_at: String,
}

/// `POST /api/v1/sessions/{id}/handoff`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HandoffRequest {
    pub to: String,
    pub reason: Option<String>,
}

/// Percentiles of the relay's added latency, in microseconds (within 19 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayLatency {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// `POST /api/v1/sessions/{id}/shadow/browser`: a one-time link to the browser shadow page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShadowLink {
    /// Open it in a browser; the ticket in its fragment is spent when the page connects.
    pub url: String,
    pub expires_in_secs: u64,
    /// Who the audit log will name as the observer.
    pub observer: String,
}

/// `POST /api/v1/recordings/{id}/replay/browser`: how to play a desktop recording.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayRequest {
    /// 1.0 is real time (0.1 to 64).
    pub speed: Option<f64>,
    /// Start this far into the recording.
    pub from_ms: Option<u64>,
}

/// One line of the shadow stream (`GET /api/v1/sessions/{id}/shadow`, newline-delimited JSON).
/// `data` is base64 of terminal output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShadowEvent {
    /// First line: who watches what, and how the owner was told.
    Attached {
        session: String,
        observer: String,
        /// `visible` or `covert`.
        banner: String,
        /// Session time at attach, `HH:MM:SS`.
        at: String,
        protocol: String,
        actor: String,
        target: String,
    },
    /// The whole screen (clear the terminal, then write it).
    Screen {
        data: String,
        cols: u16,
        rows: u16,
    },
    /// Terminal output to write (what changed since the last frame).
    Output {
        data: String,
    },
    /// A query-log line (PostgreSQL sessions).
    Line {
        text: String,
    },
    Notice {
        text: String,
    },
    /// A desktop (RDP) session's picture or what changed in it: base64 of PNG rectangles, laid
    /// out as the WebSocket's binary messages (see `GET /api/v1/sessions/{id}/shadow/ws`).
    Desktop {
        whole: bool,
        data: String,
    },
    /// First message of a recording's replay in the browser player.
    Replay {
        recording: String,
        actor: String,
        target: String,
        protocol: String,
        /// When the session started (RFC 3339), when known.
        started_at: String,
        /// The recording's length, `HH:MM:SS`.
        duration: String,
        /// `1x`, `4x`, ...
        speed: String,
    },
    /// Where the replay is in the recording, `HH:MM:SS`.
    Position {
        at: String,
    },
    /// Last line: the session ended, or the stream was closed.
    End {
        reason: String,
    },
}

/// What a recording's seal says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordingSummary {
    /// `complete` or `truncated`.
    pub status: String,
    pub chunks: u64,
    pub events: u64,
    pub raw_bytes: u64,
    pub final_sha256: String,
}

/// One recording, as `GET /api/v1/recordings/{id}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recording {
    pub id: String,
    pub session: Option<Session>,
    /// `None` while the session is live or when the recording was never closed.
    pub seal: Option<serde_json::Value>,
    /// Verification with this gateway's key: `ok`, or each problem in words.
    pub verified: Option<bool>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordingList {
    pub recordings: Vec<Recording>,
    /// Recordings matching after this page (0: this is all).
    #[serde(default)]
    pub more: u64,
    /// Pass as `cursor` for the next page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKey {
    /// Hex of the gateway's Ed25519 recording public key.
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionList {
    pub sessions: Vec<Session>,
    /// Sessions matching after this page (0: this is all).
    #[serde(default)]
    pub more: u64,
    /// Pass as `cursor` for the next page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/sessions/{id}/terminate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TerminateRequest {
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/sessions/terminate` (bulk). At least one selector is required.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkTerminateRequest {
    pub reason: Option<String>,
    pub actor: Option<String>,
    /// `key=value` tag of the target.
    pub target_tag: Option<String>,
    pub target: Option<String>,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TerminateResult {
    pub terminated: Vec<Session>,
}

/// One entry of the append-only audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub id: String,
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub actor: Option<String>,
    pub session_id: Option<String>,
    pub detail: serde_json::Value,
    /// sha256 of the previous event's `hash` (hex), `""` for the first event.
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    pub events: Vec<AuditEvent>,
    /// Whether the hash chain of the whole log, and its signed checkpoints, verified when this
    /// list was served.
    pub chain_ok: bool,
    /// What verification said: the first bad event and what happened to it, or how far the log
    /// is signed.
    #[serde(default)]
    pub chain_message: Option<String>,
    /// Older events matching (before the first one listed).
    #[serde(default)]
    pub older: u64,
    /// Pass as `before` for the previous page.
    #[serde(default)]
    pub next_before: Option<i64>,
}

/// Every error body: one line a human can act on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub gateway: String,
    pub version: String,
    pub active_sessions: usize,
}
