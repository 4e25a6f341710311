//! `wgctl mfa`: enrol, list and remove security keys, prove presence ahead of a connection; and
//! `wgctl user mfa-reset` for an administrator.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use wardengate_api as api;

use crate::client::{path_segment, Client};
use crate::output::report;
use crate::table;

#[derive(Subcommand)]
pub enum MfaCmd {
    /// A one-time link to enrol a security key or passkey on the gateway's page.
    Enroll {
        /// What to call the key.
        #[arg(long)]
        name: Option<String>,
        /// Whose key (operators and the admin token); default: you.
        #[arg(long)]
        user: Option<String>,
    },
    /// Your enrolled keys (operators: `--user NAME`, or `--user '*'` for everyone's).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Remove one of your keys.
    Remove { id: String },
    /// A one-time link to prove presence with your key before connecting (PostgreSQL, RDP).
    Prove {
        /// The target you are about to connect to (the proof is for its policy); default: any.
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ApprovalCmd {
    /// Requests you made or may decide (operators: all), newest first.
    List {
        /// Only your own requests.
        #[arg(long)]
        mine: bool,
        /// pending, approved, denied, withdrawn, used.
        #[arg(long)]
        state: Option<String>,
    },
    /// Approve a request (you must be one of its approvers, and not its requester).
    Approve {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Deny a request; the waiting session is refused with your reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Withdraw your own waiting request.
    Withdraw { id: String },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Remove every security key of a person (a lost key); they enrol again.
    MfaReset {
        name: String,
        #[arg(long)]
        reason: String,
    },
}

fn link_text(l: &api::MfaLink) -> String {
    let what = match (l.purpose.as_str(), &l.policy) {
        ("enroll", _) => format!("enrol a security key for {}", l.user),
        (_, Some(p)) => format!("prove {}'s presence for policy {p}", l.user),
        _ => format!("prove {}'s presence for the next session", l.user),
    };
    format!(
        "Open this link in a browser on the machine with the key, within {}, to {what}:\n\n  {}\n\nIt works once.\n",
        wardengate_recorder::time::human_secs(l.expires_in_secs),
        l.url
    )
}

pub fn run(cmd: MfaCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        MfaCmd::Enroll { name, user } => {
            let l: api::MfaLink =
                c.post("/api/v1/mfa/enroll", &json!({"name": name, "user": user}))?;
            report(&l, json, link_text)
        }
        MfaCmd::Prove { target, user } => {
            let l: api::MfaLink = c.post(
                "/api/v1/mfa/prove",
                &json!({"target": target, "user": user}),
            )?;
            report(&l, json, link_text)
        }
        MfaCmd::List { user } => {
            let q: Vec<(&str, String)> = user.into_iter().map(|u| ("user", u)).collect();
            let keys: Vec<api::SecurityKey> = c.get("/api/v1/mfa/keys", &q)?;
            report(&keys, json, |keys| table::security_keys(keys))
        }
        MfaCmd::Remove { id } => {
            let r: api::MfaRemoved =
                c.delete(&format!("/api/v1/mfa/keys/{}", path_segment(&id)))?;
            report(&r, json, |r| {
                format!(
                    "removed security key {} of {}\n",
                    r.removed.join(", "),
                    r.user
                )
            })
        }
    }
}

fn decided(r: &api::ApprovalRequest) -> String {
    let yes = r.decisions.iter().filter(|d| d.approved).count();
    format!(
        "{} is {} ({yes}/{} approvals; {} to {}:{} under {})\n",
        r.id,
        r.state.as_str(),
        r.required,
        r.actor,
        r.target,
        r.account,
        r.policy
    )
}

pub fn run_approval(cmd: ApprovalCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        ApprovalCmd::List { mine, state } => {
            let mut q: Vec<(&str, String)> = state.into_iter().map(|s| ("state", s)).collect();
            if mine {
                q.push(("mine", "true".into()));
            }
            let list: Vec<api::ApprovalRequest> = c.get("/api/v1/approvals", &q)?;
            report(&list, json, |l| table::approvals(l))
        }
        ApprovalCmd::Approve { id, reason } | ApprovalCmd::Deny { id, reason }
            if reason.trim().is_empty() =>
        {
            anyhow::bail!("a reason is required for {id}: --reason \"...\"")
        }
        ApprovalCmd::Approve { id, reason } => {
            let r: api::ApprovalRequest = c.post(
                &format!("/api/v1/approvals/{}/approve", path_segment(&id)),
                &json!({ "reason": reason }),
            )?;
            report(&r, json, decided)
        }
        ApprovalCmd::Deny { id, reason } => {
            let r: api::ApprovalRequest = c.post(
                &format!("/api/v1/approvals/{}/deny", path_segment(&id)),
                &json!({ "reason": reason }),
            )?;
            report(&r, json, decided)
        }
        ApprovalCmd::Withdraw { id } => {
            let r: api::ApprovalRequest = c.post(
                &format!("/api/v1/approvals/{}/withdraw", path_segment(&id)),
                &json!({}),
            )?;
            report(&r, json, decided)
        }
    }
}

pub fn run_user(cmd: UserCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        UserCmd::MfaReset { name, reason } => {
            let r: api::MfaRemoved = c.post(
                &format!("/api/v1/users/{}/mfa-reset", path_segment(&name)),
                &json!({ "reason": reason }),
            )?;
            report(&r, json, |r| {
                format!(
                    "removed {} security key(s) of {}{}\n",
                    r.removed.len(),
                    r.user,
                    if r.removed.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.removed.join(", "))
                    }
                )
            })
        }
    }
}
