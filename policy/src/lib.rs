//! Who may open what, for how long, how many at once: admission decisions with their explanation.
//!
//! Pure logic, no I/O: the gateway hands in the actor (user and groups), the requested target (name
//! and tags), the protocol and the account, plus the policies it loaded; this crate answers with an
//! [`Admitted`] proof or a [`Denial`] that says why, and [`explain`] shows every policy's verdict.
//! An [`Admitted`] value can only be built here, so code that opens a target leg and takes
//! `&Admitted` cannot be reached without a decision (the "proof type" idea from Warpgate's
//! `TargetAuthorization`).
//!
//! Default deny. Among the policies that match, the highest `priority` wins, then the most specific
//! (user named > group > anyone; target named > tag > any; account named; protocol named), then the
//! one loaded first. The winner's settings (recording, idle, lifespan, reconnect, concurrency) apply
//! to the session for its whole life: a reload changes new sessions only.
#![forbid(unsafe_code)]

pub mod concurrency;
pub mod duration;
pub mod file;
pub mod forward;
mod schema;

use std::sync::Arc;

use serde::Serialize;

pub use concurrency::{
    first_full, Counts, Granted, Lease, Ledger, LimitDenial, Limits, OnLimit, Scope, Subject,
};
pub use duration::Dur;
pub use file::{check_set, parse_file, Entry, PolicyError, Source};
pub use schema::*;

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

/// Proof that a request was admitted by a policy. Only [`decide`] builds one.
#[derive(Debug, Clone)]
pub struct Admitted {
    policy: Arc<Policy>,
    source: Source,
}

impl Admitted {
    /// The admitting policy's name.
    pub fn policy(&self) -> &str {
        &self.policy.name
    }
    /// The admitting policy, whose settings govern the session.
    pub fn settings(&self) -> &Policy {
        &self.policy
    }
    pub fn source(&self) -> &Source {
        &self.source
    }
    pub fn allow_port_forwarding(&self) -> bool {
        self.policy.allow_port_forwarding
    }
    /// May the session forward to `host:port` (on a target whose address names `target_host`)?
    /// `Err` says why not.
    pub fn forward(&self, host: &str, port: u32, target_host: &str) -> Result<(), String> {
        if !self.policy.allow_port_forwarding {
            return Err(format!(
                "port forwarding is not allowed by policy '{}'",
                self.policy.name
            ));
        }
        forward::check(&self.policy.forward_to, host, port, target_host)
            .map_err(|e| format!("{e} (policy '{}')", self.policy.name))
    }
    pub fn recording(&self) -> RecordingMode {
        self.policy.recording
    }

    /// A session that changes hands runs under the stricter of the two admissions: the shorter
    /// idle timeout, grace and lifespan, recording if either records, the stricter shadow mode
    /// (`blocked` over `visible` over `covert`) and reconnect mode (`strict` over `reauth` over
    /// `resume`), MFA if either needs it, port forwarding only if both allow it. The name joins
    /// both policies' (`oncall+contractors`).
    pub fn stricter(&self, other: &Admitted) -> Admitted {
        let (a, b) = (&*self.policy, &*other.policy);
        let mut p = a.clone();
        if a.name != b.name {
            p.name = format!("{}+{}", a.name, b.name);
        }
        if b.mfa == MfaMode::Webauthn {
            p.mfa = MfaMode::Webauthn;
            p.mfa_max_age = if a.mfa == MfaMode::Webauthn {
                a.mfa_max_age.min(b.mfa_max_age)
            } else {
                b.mfa_max_age
            };
        }
        if p.approval.is_none() {
            p.approval = b.approval.clone();
        }
        let rank = |m: RecordingMode| match m {
            RecordingMode::Off => 0,
            RecordingMode::Metadata => 1,
            RecordingMode::Required => 2,
        };
        if rank(b.recording) > rank(p.recording) {
            p.recording = b.recording;
        }
        let shadow_rank = |m: ShadowMode| match m {
            ShadowMode::Covert => 0,
            ShadowMode::Visible => 1,
            ShadowMode::Blocked => 2,
        };
        if shadow_rank(b.shadow) > shadow_rank(a.shadow) {
            p.shadow = b.shadow;
        }
        p.allow_port_forwarding = a.allow_port_forwarding && b.allow_port_forwarding;
        if a.forward_to != b.forward_to {
            // Only destinations both allow; none in common: no forwarding.
            p.forward_to = a
                .forward_to
                .iter()
                .filter(|f| b.forward_to.contains(f))
                .cloned()
                .collect();
            if p.forward_to.is_empty() {
                p.allow_port_forwarding = false;
            }
        }
        p.idle_timeout = a.idle_timeout.min(b.idle_timeout);
        p.idle_grace = a.idle_grace.min(b.idle_grace);
        p.max_lifespan = match (a.max_lifespan.is_zero(), b.max_lifespan.is_zero()) {
            (true, _) => b.max_lifespan,
            (_, true) => a.max_lifespan,
            _ => a.max_lifespan.min(b.max_lifespan),
        };
        p.lifespan_warning = a.lifespan_warning.max(b.lifespan_warning);
        let mode_rank = |m: ReconnectMode| match m {
            ReconnectMode::Resume => 0,
            ReconnectMode::Reauth => 1,
            ReconnectMode::Strict => 2,
        };
        if mode_rank(b.reconnect.mode) > mode_rank(a.reconnect.mode) {
            p.reconnect.mode = b.reconnect.mode;
        }
        p.reconnect.grace = a.reconnect.grace.min(b.reconnect.grace);
        Admitted {
            policy: Arc::new(p),
            source: other.source.clone(),
        }
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

/// How specifically a matching policy names the request; compared field by field, actor first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Specificity {
    /// 2: the user by name, 1: one of their groups, 0: anyone.
    pub actor: u8,
    /// 2: the target by name, 1: by tag, 0: any target.
    pub target: u8,
    /// 1: the account by name.
    pub account: u8,
    /// 1: the protocol by name.
    pub protocol: u8,
}

/// One policy's verdict on a request.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub policy: String,
    pub source: Source,
    pub priority: i32,
    pub matched: bool,
    /// Why it matches (what it names) or why not (the first thing that does not fit).
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specificity: Option<Specificity>,
}

/// Every policy's verdict, and the winner's index in `verdicts`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub admitted_by: Option<String>,
    pub verdicts: Vec<Verdict>,
}

fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}
fn any(list: &[String]) -> bool {
    list.is_empty() || listed(list, "*")
}

/// How `policy` matches `req` (its specificity and a description), or why it does not.
pub fn evaluate(policy: &Policy, req: &Request<'_>) -> Result<(Specificity, String), String> {
    let mut said = Vec::new();
    let actor = if listed(&policy.users, req.user) {
        said.push(format!("user {}", req.user));
        2
    } else if let Some(g) = policy.groups.iter().find(|g| req.groups.contains(g)) {
        said.push(format!("group {g}"));
        1
    } else if any(&policy.users) && policy.groups.is_empty() {
        said.push("any user".to_string());
        0
    } else {
        let groups = if req.groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups {}", req.groups.join(", "))
        };
        return Err(format!(
            "actor {} ({groups}) is not among its users/groups",
            req.user
        ));
    };
    // A network resource is matched by `resources`/`resource_tags`, and only by a policy that
    // names the network protocol: a policy for "any protocol" opens no firewall.
    let network = req.protocol == schema::NETWORK;
    if network && !listed(&policy.protocols, schema::NETWORK) {
        return Err(format!(
            "it does not grant network resources (protocols = [\"{}\"] does)",
            schema::NETWORK
        ));
    }
    let (kind, names, tags) = match network {
        true => ("resource", &policy.resources, &policy.resource_tags),
        false => ("target", &policy.targets, &policy.target_tags),
    };
    let named = listed(names, req.target);
    if !named && !any(names) {
        return Err(format!("{kind} {} is not among its {kind}s", req.target));
    }
    for tag in tags {
        let (k, v) = tag.split_once('=').unwrap_or((tag.as_str(), ""));
        if !req.target_tags.iter().any(|(tk, tv)| tk == k && tv == v) {
            return Err(format!("{kind} {} lacks tag {tag}", req.target));
        }
    }
    let target = if named {
        said.push(format!("{kind} {}", req.target));
        2
    } else if !tags.is_empty() {
        said.push(format!("tag {}", tags.join(", ")));
        1
    } else {
        said.push(format!("any {kind}"));
        0
    };
    if !any(&policy.protocols) && !listed(&policy.protocols, req.protocol) {
        return Err(format!(
            "protocol {} is not among its protocols ({})",
            req.protocol,
            policy.protocols.join(", ")
        ));
    }
    if !network && !any(&policy.accounts) && !listed(&policy.accounts, req.account) {
        return Err(format!(
            "account {} is not among its accounts ({})",
            req.account,
            policy.accounts.join(", ")
        ));
    }
    let account = u8::from(listed(&policy.accounts, req.account));
    let protocol = u8::from(listed(&policy.protocols, req.protocol));
    // A network resource has no accounts: nothing to say of them.
    if !network {
        said.push(if account == 1 {
            format!("account {}", req.account)
        } else {
            "any account".to_string()
        });
    }
    let spec = Specificity {
        actor,
        target,
        account,
        protocol,
    };
    Ok((spec, format!("matches {}", said.join(", "))))
}

/// Why `policy` does not match `req`, or `None` when it does.
pub fn mismatch(policy: &Policy, req: &Request<'_>) -> Option<String> {
    evaluate(policy, req).err()
}

/// Every policy's verdict on `req`, and which one admits it.
pub fn explain(policies: &[Entry], req: &Request<'_>) -> Explanation {
    let mut verdicts: Vec<Verdict> = policies
        .iter()
        .map(|e| {
            let (matched, why, specificity) = match evaluate(&e.policy, req) {
                Ok((s, why)) => (true, why, Some(s)),
                Err(why) => (false, why, None),
            };
            Verdict {
                policy: e.policy.name.clone(),
                source: e.source.clone(),
                priority: e.policy.priority,
                matched,
                why,
                specificity,
            }
        })
        .collect();
    // Best first: priority, specificity, then load order (the sort is stable).
    let winner = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.matched)
        .max_by(|(ia, a), (ib, b)| {
            (a.priority, a.specificity)
                .cmp(&(b.priority, b.specificity))
                .then(ib.cmp(ia))
        })
        .map(|(i, _)| i);
    if let Some(w) = winner {
        let name = verdicts[w].policy.clone();
        for (i, v) in verdicts.iter_mut().enumerate() {
            if i == w {
                v.why = format!("admits: {}", v.why);
            } else if v.matched {
                v.why = format!(
                    "{}, but policy {name} takes precedence (higher priority, more specific, or loaded first)",
                    v.why
                );
            }
        }
    }
    Explanation {
        admitted_by: winner.map(|w| verdicts[w].policy.clone()),
        verdicts,
    }
}

/// Admit `req` by the policy that takes precedence, or deny it, saying why each policy did not
/// match.
pub fn decide(policies: &[Entry], req: &Request<'_>) -> Result<Admitted, Denial> {
    let ex = explain(policies, req);
    if let Some(name) = &ex.admitted_by {
        if let Some(e) = policies.iter().find(|e| &e.policy.name == name) {
            return Ok(Admitted {
                policy: e.policy.clone(),
                source: e.source.clone(),
            });
        }
    }
    let why = if ex.verdicts.is_empty() {
        "no policy is configured (default deny)".to_string()
    } else {
        let reasons: Vec<String> = ex
            .verdicts
            .iter()
            .map(|v| format!("policy {}: {}", v.policy, v.why))
            .collect();
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
mod tests;
