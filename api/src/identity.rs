//! Wire types of the identity layer: security keys, approval requests, `wgctl login`.

use serde::{Deserialize, Serialize};

use crate::Protocol;

/// `POST /api/v1/mfa/enroll`: a link to enrol a security key or passkey.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaEnrollRequest {
    /// What to call the key (`YubiKey 5C`); default `security key`.
    #[serde(default)]
    pub name: Option<String>,
    /// Whose key (operators and the admin token); default the caller.
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /api/v1/mfa/prove`: a link to prove presence ahead of a PostgreSQL or RDP connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaProveRequest {
    /// The target the proof is for (its policy); default: any policy.
    #[serde(default)]
    pub target: Option<String>,
    /// Whose proof (operators and the admin token); default the caller.
    #[serde(default)]
    pub user: Option<String>,
}

/// A one-time link to the gateway's security-key page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaLink {
    /// Open it in a browser on the machine with the key; the ticket in its fragment is spent by
    /// the page.
    pub url: String,
    pub expires_in_secs: u64,
    /// Whose key.
    pub user: String,
    /// `enroll` or `prove`.
    pub purpose: String,
    /// `prove` for one target: the policy the proof admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// An enrolled security key or passkey.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecurityKey {
    /// `key_…`
    pub id: String,
    pub user: String,
    pub name: String,
    /// The WebAuthn credential id (base64url).
    pub credential_id: String,
    /// The authenticator model, when it tells it.
    pub aaguid: Option<String>,
    /// The signature counter after the last use.
    pub counter: u32,
    /// RFC 3339.
    pub created: String,
    pub last_used: Option<String>,
}

/// `POST /api/v1/users/{name}/mfa-reset`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaResetRequest {
    /// Why (audited), required.
    #[serde(default)]
    pub reason: String,
}

/// Keys removed from a person.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaRemoved {
    pub user: String,
    pub removed: Vec<String>,
}

/// The page's calls: `POST /api/v1/mfa/ceremony/start` (ticket) and `/finish` (ticket and the
/// browser's credential as `PublicKeyCredential.toJSON()` gives it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CeremonyRequest {
    pub ticket: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub credential: Option<serde_json::Value>,
}

/// What the page shows when the ceremony is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CeremonyDone {
    pub message: String,
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Withdrawn,
    /// Approved, and a session was admitted on it.
    Used,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Withdrawn => "withdrawn",
            ApprovalState::Used => "used",
        }
    }
}

/// One approver's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalDecision {
    pub by: String,
    pub approved: bool,
    pub reason: String,
    pub at_ms: u64,
}

/// A session waiting for approval (`req_…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalRequest {
    pub id: String,
    pub actor: String,
    pub target: String,
    pub account: String,
    pub policy: String,
    pub protocol: Protocol,
    pub state: ApprovalState,
    /// Users, or `group:NAME`.
    pub approvers: Vec<String>,
    /// How many different approvers must approve.
    pub required: u32,
    pub decisions: Vec<ApprovalDecision>,
    pub created_ms: u64,
    /// When a pending request is denied (`approval_timeout`).
    pub expires_ms: u64,
    /// Why it was denied or withdrawn.
    pub reason: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve` and `/deny`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecisionRequest {
    /// Why (audited), required.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/login/device`: a sign-in for wgctl, waiting for its person.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginStarted {
    /// wgctl's secret for polling; never shown.
    pub device_code: String,
    /// What the person compares on the page (`ABCD-2345`).
    pub user_code: String,
    /// The sign-in page, with the code in its fragment.
    pub url: String,
    pub expires_in_secs: u64,
    /// How often to poll.
    pub interval_secs: u64,
}

/// `POST /api/v1/login/poll`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginPollRequest {
    pub device_code: String,
}

/// The answer to a poll: `pending`, or `ok` with the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginPoll {
    pub status: String,
    pub user: Option<String>,
    pub token: Option<String>,
    pub expires_ms: Option<u64>,
}

/// `POST /api/v1/login/password`: the page's first step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginPasswordRequest {
    pub code: String,
    pub user: String,
    pub password: String,
}

/// The security-key step's ticket (for `/mfa#ticket=…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginTicket {
    pub ticket: String,
}
