//! The policy schema: what a policy matches and the session settings it sets.

use serde::{Deserialize, Serialize};

use crate::duration::Dur;

/// One policy. Empty match lists mean "any"; `*` in a list also means any.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Among matching policies the highest priority wins; then the most specific one.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Target names.
    #[serde(default)]
    pub targets: Vec<String>,
    /// `key=value` tags; a target matches when it carries every listed tag.
    #[serde(default)]
    pub target_tags: Vec<String>,
    /// `ssh`, `postgres`, `rdp`, `tcp`, `network`. A policy grants network resources only when
    /// it names `network` (an empty list or `*` does not).
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Network resources (`[[resources]]`) by name, for `protocols = ["network"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// `key=value` tags; a resource matches when it carries every listed tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_tags: Vec<String>,
    /// Network access sessions: the longest this policy grants; `0` or absent: no cap beyond
    /// `[access] max_duration`.
    #[serde(default, skip_serializing_if = "zero")]
    pub max_session_duration: Dur,
    #[serde(default)]
    pub accounts: Vec<String>,
    /// A second factor before admission: `webauthn` asks for a security key (step-up).
    #[serde(default)]
    pub mfa: MfaMode,
    /// How old a security-key proof may be and still admit a session of this policy; `0` (the
    /// default) asks for one per session.
    #[serde(default)]
    pub mfa_max_age: Dur,
    /// People who must approve each session first (`awaiting_approval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(default)]
    pub recording: RecordingMode,
    #[serde(default)]
    pub shadow: ShadowMode,
    /// Whether `ssh -L` / `-W` (direct-tcpip) is allowed.
    #[serde(default)]
    pub allow_port_forwarding: bool,
    /// Where forwarding may go (`DEST[:PORTS]`, see `forward.rs`); empty: the target host only.
    /// Loopback and link-local destinations need an entry that names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_to: Vec<String>,
    /// Time without meaningful input before the idle warning.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// After the warning, how long the user has to type something before the session closes.
    #[serde(default = "default_idle_grace")]
    pub idle_grace: Dur,
    /// Absolute maximum session length; `0` or absent means none.
    #[serde(default)]
    pub max_lifespan: Dur,
    /// How long before `max_lifespan` the user is warned.
    #[serde(default = "default_lifespan_warning")]
    pub lifespan_warning: Dur,
    #[serde(default)]
    pub reconnect: Reconnect,
    #[serde(default)]
    pub concurrency: PolicyConcurrency,
}

fn zero(d: &Dur) -> bool {
    d.is_zero()
}

pub fn default_idle_timeout() -> Dur {
    Dur::secs(15 * 60)
}
pub fn default_idle_grace() -> Dur {
    Dur::secs(60)
}
pub fn default_lifespan_warning() -> Dur {
    Dur::secs(5 * 60)
}
pub fn default_reconnect_grace() -> Dur {
    Dur::secs(120)
}

impl Policy {
    /// A policy with every setting at its default (tests, examples).
    pub fn named(name: &str) -> Policy {
        Policy {
            name: name.into(),
            description: String::new(),
            priority: 0,
            users: vec![],
            groups: vec![],
            targets: vec![],
            target_tags: vec![],
            protocols: vec![],
            resources: vec![],
            resource_tags: vec![],
            max_session_duration: Dur::default(),
            accounts: vec![],
            mfa: MfaMode::default(),
            mfa_max_age: Dur::default(),
            approval: None,
            recording: RecordingMode::default(),
            shadow: ShadowMode::default(),
            allow_port_forwarding: false,
            forward_to: vec![],
            idle_timeout: default_idle_timeout(),
            idle_grace: default_idle_grace(),
            max_lifespan: Dur::default(),
            lifespan_warning: default_lifespan_warning(),
            reconnect: Reconnect::default(),
            concurrency: PolicyConcurrency::default(),
        }
    }
}

/// `approval = { approvers = ["group:sre-leads", "carol"], required = 1, timeout = "15m",
/// valid_for = "15m" }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Users by name, or `group:NAME`: who may approve. Nobody approves their own request.
    pub approvers: Vec<String>,
    /// How many different approvers must say yes.
    #[serde(default = "one")]
    pub required: u32,
    /// How long a request waits for them before it is denied (`approval_timeout`).
    #[serde(default = "default_approval_window")]
    pub timeout: Dur,
    /// After approval, how long the requester has to connect (PostgreSQL, RDP), once.
    #[serde(default = "default_approval_window")]
    pub valid_for: Dur,
}

fn one() -> u32 {
    1
}
fn default_approval_window() -> Dur {
    Dur::secs(15 * 60)
}

impl Approval {
    /// Does `user` (member of `groups`) match an approver entry?
    pub fn may_approve(&self, user: &str, groups: &[String]) -> bool {
        self.approvers
            .iter()
            .any(|a| match a.strip_prefix("group:") {
                Some(g) => groups.iter().any(|x| x == g),
                None => a == user,
            })
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MfaMode {
    #[default]
    Off,
    /// A security key or passkey (WebAuthn), proved in the gateway's page. `required`, the
    /// name from before MFA was enforced, means the same.
    #[serde(alias = "required")]
    Webauthn,
}

/// `required` (default): the session is recorded, or refused / ended when it cannot be.
/// `metadata`: a recording of what happened without the data: connections, requests, sizes,
/// times, markers (for TCP sessions: each connection, its bytes each way, its times), sealed
/// like any recording. `off`: nothing is recorded.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    #[default]
    Required,
    Metadata,
    Off,
}

impl RecordingMode {
    /// Whether the session writes a recording at all.
    pub fn records(self) -> bool {
        self != RecordingMode::Off
    }
}

/// How operators may watch a live session.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShadowMode {
    /// Allowed; the user sees a banner naming the observer.
    #[default]
    Visible,
    /// Allowed without a banner (audited).
    Covert,
    Blocked,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectMode {
    /// A dropped client connection ends the session.
    #[default]
    Strict,
    /// A dropped connection ends the session; reconnecting within the grace opens a new session
    /// linked to the ended one (fresh authentication).
    Reauth,
    /// The target leg and its terminal stay up for the grace period (`paused`); the same actor
    /// reconnecting to the same target re-attaches the same session.
    Resume,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    #[serde(default)]
    pub mode: ReconnectMode,
    #[serde(default = "default_reconnect_grace")]
    pub grace: Dur,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            mode: ReconnectMode::Strict,
            grace: default_reconnect_grace(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConcurrency {
    /// Most sessions this policy admits at once, across all actors and targets.
    pub max: Option<u32>,
}

pub const PROTOCOLS: &[&str] = &["ssh", "postgres", "rdp", "tcp", "network"];

/// The protocol of network access sessions (`[[resources]]`).
pub const NETWORK: &str = "network";

/// A semantic problem in one policy: the key at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

impl Policy {
    /// Check what serde cannot: formats, ranges and combinations.
    pub fn validate(&self) -> Result<(), Problem> {
        let fail = |key, message: String| Err(Problem { key, message });
        if self.name.trim().is_empty() {
            return fail("name", "must not be empty".into());
        }
        for (key, tags) in [
            ("target_tags", &self.target_tags),
            ("resource_tags", &self.resource_tags),
        ] {
            for tag in tags {
                match tag.split_once('=') {
                    Some((k, _)) if !k.is_empty() => {}
                    _ => return fail(key, format!("entry '{tag}' must be key=value")),
                }
            }
        }
        let network = self.protocols.iter().any(|p| p == NETWORK);
        let network_keys = [
            ("resources", !self.resources.is_empty()),
            ("resource_tags", !self.resource_tags.is_empty()),
            ("max_session_duration", !self.max_session_duration.is_zero()),
        ];
        if let Some((key, _)) = network_keys.iter().find(|(_, set)| *set && !network) {
            return fail(
                key,
                "applies to network access sessions: add \"network\" to protocols".into(),
            );
        }
        if network && self.resources.is_empty() && self.resource_tags.is_empty() {
            return fail(
                "resources",
                "a policy for the network protocol names its resources: resources = [...] or \
                 resource_tags = [...] (resources = [\"*\"] for every one)"
                    .into(),
            );
        }
        for p in &self.protocols {
            if p != "*" && !PROTOCOLS.contains(&p.as_str()) {
                return fail(
                    "protocols",
                    format!("'{p}' is not a protocol (use {})", PROTOCOLS.join(", ")),
                );
            }
        }
        for f in &self.forward_to {
            if let Err(e) = crate::forward::Rule::parse(f) {
                return fail("forward_to", e);
            }
        }
        if self.idle_timeout.is_zero() {
            return fail("idle_timeout", "must be longer than 0 (e.g. 15m)".into());
        }
        if self.idle_grace.is_zero() {
            return fail(
                "idle_grace",
                "must be longer than 0, so the user has time to read the warning".into(),
            );
        }
        if !self.max_lifespan.is_zero() && self.lifespan_warning >= self.max_lifespan {
            return fail(
                "lifespan_warning",
                format!(
                    "({}) must be shorter than max_lifespan ({})",
                    self.lifespan_warning, self.max_lifespan
                ),
            );
        }
        if self.reconnect.mode != ReconnectMode::Strict && self.reconnect.grace.is_zero() {
            return fail(
                "reconnect",
                "grace must be longer than 0 for resume and reauth".into(),
            );
        }
        if let Some(a) = &self.approval {
            if a.approvers
                .iter()
                .all(|x| x.trim().is_empty() || x == "group:")
            {
                return fail(
                    "approval",
                    "approvers must name a user or group:NAME".into(),
                );
            }
            if a.required == 0 {
                return fail("approval", "required must be at least 1".into());
            }
            if a.timeout.is_zero() || a.valid_for.is_zero() {
                return fail(
                    "approval",
                    "timeout and valid_for must be longer than 0".into(),
                );
            }
        }
        if self.concurrency.max == Some(0) {
            return fail(
                "concurrency",
                "max = 0 would admit nothing; remove the policy instead".into(),
            );
        }
        Ok(())
    }
}
