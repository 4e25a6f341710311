//! Who may open what: admission decisions with their explanation.
//!
//! Pure logic, no I/O: the gateway hands in the actor (user and groups), the requested target (name and
//! tags), the protocol and the account, plus the policies it loaded; this crate answers with an
//! [`Admitted`] proof or a [`Denial`] that says why. An [`Admitted`] value can only be built here, so
//! code that opens a target leg and takes `&Admitted` cannot be reached without a decision
//! (the "proof type" idea from Warpgate's `TargetAuthorization`).
//!
//! Default deny: with no matching policy, nothing is admitted. Later issues add policy files,
//! concurrency accounting, idle/lifespan parameters and reconnect modes to the same decision.
#![forbid(unsafe_code)]

use serde::Deserialize;

/// One policy: whom it matches and what it allows. Empty match lists mean "any".
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Target names; `*` matches any.
    #[serde(default)]
    pub targets: Vec<String>,
    /// `key=value` tags; a target matches when it carries every listed tag.
    #[serde(default)]
    pub target_tags: Vec<String>,
    #[serde(default)]
    pub protocols: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Whether `ssh -L` (direct-tcpip) is allowed through sessions this policy admits.
    #[serde(default)]
    pub allow_port_forwarding: bool,
    /// `required` (default): the session is recorded, or refused / ended when it cannot be.
    /// `off`: nothing is recorded.
    #[serde(default)]
    pub recording: RecordingMode,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    #[default]
    Required,
    Off,
}

/// What is asked for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub target: &'a str,
    pub target_tags: &'a [(String, String)],
    pub protocol: &'a str,
    pub account: &'a str,
}

/// Proof that a request was admitted by a named policy. Only [`decide`] builds one.
#[derive(Debug, Clone)]
pub struct Admitted {
    policy: String,
    allow_port_forwarding: bool,
    recording: RecordingMode,
}

impl Admitted {
    pub fn policy(&self) -> &str {
        &self.policy
    }
    pub fn allow_port_forwarding(&self) -> bool {
        self.allow_port_forwarding
    }
    pub fn recording(&self) -> RecordingMode {
        self.recording
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{user} may not open {protocol} sessions to {target} as {account}: {why}")]
pub struct Denial {
    pub user: String,
    pub target: String,
    pub protocol: String,
    pub account: String,
    pub why: String,
}

fn matches_any(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == "*" || v == value)
}

/// Why `policy` does not match `req`, or `None` when it does.
pub fn mismatch(policy: &Policy, req: &Request<'_>) -> Option<String> {
    let actor_listed = policy.users.is_empty() && policy.groups.is_empty();
    let user_ok = policy.users.iter().any(|u| u == "*" || u == req.user);
    let group_ok = policy.groups.iter().any(|g| req.groups.contains(g));
    if !(actor_listed || user_ok || group_ok) {
        return Some(format!("actor {} is not among its users/groups", req.user));
    }
    if !matches_any(&policy.targets, req.target) {
        return Some(format!("target {} is not among its targets", req.target));
    }
    for tag in &policy.target_tags {
        let (k, v) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
        if !req.target_tags.iter().any(|(tk, tv)| tk == k && tv == v) {
            return Some(format!("target {} lacks tag {tag}", req.target));
        }
    }
    if !matches_any(&policy.protocols, req.protocol) {
        return Some(format!(
            "protocol {} is not among its protocols",
            req.protocol
        ));
    }
    if !matches_any(&policy.accounts, req.account) {
        return Some(format!("account {} is not among its accounts", req.account));
    }
    None
}

/// Admit `req` by the first matching policy, or deny it, saying why each policy did not match.
pub fn decide(policies: &[Policy], req: &Request<'_>) -> Result<Admitted, Denial> {
    let mut reasons = Vec::new();
    for p in policies {
        match mismatch(p, req) {
            None => {
                return Ok(Admitted {
                    policy: p.name.clone(),
                    allow_port_forwarding: p.allow_port_forwarding,
                    recording: p.recording,
                })
            }
            Some(why) => reasons.push(format!("policy {}: {why}", p.name)),
        }
    }
    let why = if reasons.is_empty() {
        "no policy is configured (default deny)".to_string()
    } else {
        format!("no policy admits it ({})", reasons.join("; "))
    };
    Err(Denial {
        user: req.user.to_string(),
        target: req.target.to_string(),
        protocol: req.protocol.to_string(),
        account: req.account.to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> Policy {
        Policy {
            name: name.into(),
            users: vec![],
            groups: vec![],
            targets: vec![],
            target_tags: vec![],
            protocols: vec![],
            accounts: vec![],
            allow_port_forwarding: false,
            recording: RecordingMode::Required,
        }
    }

    fn req<'a>(groups: &'a [String], tags: &'a [(String, String)]) -> Request<'a> {
        Request {
            user: "alice",
            groups,
            target: "web-01.prod",
            target_tags: tags,
            protocol: "ssh",
            account: "deploy",
        }
    }

    #[test]
    fn default_deny() {
        let d = decide(&[], &req(&[], &[])).unwrap_err();
        assert!(d.why.contains("default deny"), "{d}");
    }

    #[test]
    fn group_and_tag_match() {
        let mut p = policy("sre-prod");
        p.groups = vec!["sre".into()];
        p.target_tags = vec!["env=prod".into()];
        let groups = vec!["sre".to_string()];
        let tags = vec![("env".to_string(), "prod".to_string())];
        let a = decide(std::slice::from_ref(&p), &req(&groups, &tags)).expect("admitted");
        assert_eq!(a.policy(), "sre-prod");
        let d = decide(&[p], &req(&groups, &[])).unwrap_err();
        assert!(d.why.contains("lacks tag env=prod"), "{d}");
    }

    #[test]
    fn user_not_listed_is_explained() {
        let mut p = policy("bob-only");
        p.users = vec!["bob".into()];
        let d = decide(&[p], &req(&[], &[])).unwrap_err();
        assert!(d.why.contains("policy bob-only: actor alice"), "{d}");
    }

    #[test]
    fn account_and_protocol_filters() {
        let mut p = policy("ro");
        p.accounts = vec!["readonly".into()];
        let d = decide(std::slice::from_ref(&p), &req(&[], &[])).unwrap_err();
        assert!(d.why.contains("account deploy"), "{d}");
        p.accounts = vec![];
        p.protocols = vec!["postgres".into()];
        let d = decide(&[p], &req(&[], &[])).unwrap_err();
        assert!(d.why.contains("protocol ssh"), "{d}");
    }
}
