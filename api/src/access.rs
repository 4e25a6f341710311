//! Network access sessions, EntryGuard style: a time-bound allow rule for the caller's address on
//! every network resource their policies grant (`[[resources]]`, `protocols = ["network"]`).

use serde::{Deserialize, Serialize};

/// The durations `wgctl access start --duration` and the console offer when the deployment
/// does not list its own (`[access] durations`).
pub const DURATIONS: &[&str] = &["1h", "2h", "4h", "8h", "12h", "16h", "24h"];

/// Where an access session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessState {
    /// Its rules are being applied.
    Pending,
    /// Every rule is in place.
    Active,
    /// Some rules are in place, some failed (each rule says why).
    Partial,
    /// No rule could be applied: the session ended at once.
    Failed,
    /// Its time is up (or it was stopped): its rules are being removed.
    Expiring,
    Expired,
    /// Stopped before its time (`wgctl access stop`), with a reason.
    Cancelled,
}

impl AccessState {
    /// The session holds (or is putting in place) rules.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            AccessState::Pending
                | AccessState::Active
                | AccessState::Partial
                | AccessState::Expiring
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            AccessState::Pending => "PENDING",
            AccessState::Active => "ACTIVE",
            AccessState::Partial => "PARTIAL",
            AccessState::Failed => "FAILED",
            AccessState::Expiring => "EXPIRING",
            AccessState::Expired => "EXPIRED",
            AccessState::Cancelled => "CANCELLED",
        }
    }
}

impl std::fmt::Display for AccessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule of a session: its resource's allow rule for the session's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    /// Not applied yet.
    Pending,
    /// This session put the rule in place.
    Applied,
    /// The rule was in place already for another session from the same address: counted.
    Shared,
    /// The backend refused it (`error` says why).
    Failed,
    /// Being removed.
    Revoking,
    /// Removed from the resource.
    Revoked,
    /// This session no longer holds it; another live session still does, so it stays.
    Released,
    /// The backend failed to remove it (`error` says why); the gateway tries again.
    RevokeFailed,
}

impl RuleState {
    /// The session counts towards the rule (it holds it).
    pub fn held(self) -> bool {
        matches!(self, RuleState::Applied | RuleState::Shared)
    }
    pub fn name(self) -> &'static str {
        match self {
            RuleState::Pending => "pending",
            RuleState::Applied => "applied",
            RuleState::Shared => "shared",
            RuleState::Failed => "failed",
            RuleState::Revoking => "revoking",
            RuleState::Revoked => "revoked",
            RuleState::Released => "released",
            RuleState::RevokeFailed => "revoke_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessRule {
    pub resource: String,
    /// `nftables` or `command`.
    pub backend: String,
    pub address: String,
    pub state: RuleState,
    /// The backend's error (its stderr, capped), for `failed` and `revoke_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many live sessions hold this rule now (this one included while it does).
    #[serde(default)]
    pub holders: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The policy that grants the resource.
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessSession {
    pub id: String,
    pub user: String,
    /// The address the rules allow: the caller's, as the gateway saw it.
    pub address: String,
    pub state: AccessState,
    /// As asked for (`2h`).
    pub duration: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Why it ended: `expired`, `cancelled by NAME: REASON`, `no rule could be applied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who stopped it (`CANCELLED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// The gateway that applies and removes its rules.
    pub gateway: String,
    pub rules: Vec<AccessRule>,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The second factor a granting policy asked for: `webauthn (KEY NAME)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<String>,
    /// The approvals a granting policy asked for: `req_… (approved by NAME, …)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// `POST /api/v1/access-sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessStartRequest {
    /// One of the offered durations (`1h`, `2h`, ... `24h` unless `[access] durations` says
    /// otherwise); absent: `[access] default_duration`.
    #[serde(default)]
    pub duration: Option<String>,
}

/// `GET /api/v1/access-sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessList {
    pub sessions: Vec<AccessSession>,
    /// The durations the caller may start a session for (within the deployment's cap and every
    /// cap of the policies that grant them resources), shortest first.
    #[serde(default)]
    pub durations: Vec<String>,
    /// What the console preselects: the default duration if the caller may have it, else the
    /// shortest offered; empty when nothing is.
    #[serde(default)]
    pub default_duration: String,
}
