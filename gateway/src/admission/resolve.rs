//! A login resolved against the configuration: the user, the target and the account, or a refusal
//! that names only what the user may reach.

use wardengate_api::Protocol;
use wardengate_policy::{Request, Subject};
use wardengate_protocols::ssh::Login;

use crate::config::{Account, Identity, Loaded, Target};

/// Why a request was refused before a session record exists: (reason, message).
pub(crate) type Refusal = (&'static str, String);

/// A login resolved against the configuration.
pub(crate) struct Resolved<'a> {
    pub(crate) user: &'a Identity,
    pub(crate) target: &'a Target,
    pub(crate) account: &'a Account,
    pub(crate) tags: Vec<(String, String)>,
}

impl Resolved<'_> {
    pub(crate) fn request(&self, protocol: Protocol) -> Request<'_> {
        Request {
            user: &self.user.name,
            groups: &self.user.groups,
            target: &self.target.name,
            target_tags: &self.tags,
            protocol: protocol.as_str(),
            account: &self.account.name,
        }
    }

    /// What the ledger counts a session of this login under, admitted by `policy` in `pool`.
    pub(crate) fn subject<'s>(&'s self, policy: &'s str, pool: &'s str) -> Subject<'s> {
        Subject {
            actor: &self.user.name,
            target: &self.target.name,
            policy,
            pool,
        }
    }
}

/// What `user` may reach with `protocol`: each target (sorted) with the accounts a policy grants.
/// Denials name these only, never the rest of the inventory.
fn reachable<'a>(
    cfg: &'a Loaded,
    user: &'a Identity,
    protocol: Protocol,
) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = cfg
        .targets
        .values()
        .filter(|t| t.protocol == protocol)
        .filter_map(|t| {
            let tags: Vec<(String, String)> =
                t.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let accounts: Vec<&str> = t
                .accounts
                .iter()
                .filter(|a| {
                    let req = Request {
                        user: &user.name,
                        groups: &user.groups,
                        target: &t.name,
                        target_tags: &tags,
                        protocol: protocol.as_str(),
                        account: &a.name,
                    };
                    wardengate_policy::decide(&cfg.policies, &req).is_ok()
                })
                .map(|a| a.name.as_str())
                .collect();
            (!accounts.is_empty()).then_some((t.name.as_str(), accounts))
        })
        .collect();
    out.sort_unstable_by_key(|(t, _)| *t);
    out
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Resolve a login for `protocol`. A refusal names only what the user may reach with it.
pub(crate) fn resolve<'a>(
    cfg: &'a Loaded,
    login: &Login,
    protocol: Protocol,
) -> Result<Resolved<'a>, Refusal> {
    let user = cfg.users.get(&login.user).ok_or_else(|| {
        (
            "unknown_user",
            format!("wardengate: unknown user '{}'", login.user),
        )
    })?;
    let Some(target) = cfg.targets.get(&login.target) else {
        let names: Vec<&str> = reachable(cfg, user, protocol)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        return Err((
            "unknown_target",
            format!(
                "wardengate: unknown target '{}' (targets you may reach with {protocol}: {})",
                login.target,
                listed(&names)
            ),
        ));
    };
    let names = || -> String {
        let granted: Vec<&str> = reachable(cfg, user, target.protocol)
            .into_iter()
            .find(|(t, _)| *t == target.name)
            .map(|(_, a)| a)
            .unwrap_or_default();
        listed(&granted)
    };
    let account = match &login.account {
        Some(name) => target
            .accounts
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| {
                (
                    "unknown_account",
                    format!(
                        "wardengate: target {} has no account '{name}' (accounts you may use: {})",
                        target.name,
                        names()
                    ),
                )
            })?,
        None if target.accounts.len() == 1 => &target.accounts[0],
        None => {
            return Err((
                "account_required",
                format!(
                    "wardengate: target {} has several accounts (you may use: {}); connect as {}:{}:ACCOUNT",
                    target.name,
                    names(),
                    login.user,
                    target.name
                ),
            ))
        }
    };
    let tags = target
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Resolved {
        user,
        target,
        account,
        tags,
    })
}
