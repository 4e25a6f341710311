//! `wgctl session`: list, show, shadow, hand off, accept, decline and terminate sessions.

use anyhow::{bail, Result};
use clap::Subcommand;
use wardengate_api as api;

use crate::client::{self, Client, ListFilter};
use crate::output::{out, print_json, report};
use crate::{recording, shadow, table};

#[derive(Subcommand)]
pub enum SessionCmd {
    /// List live sessions (all sessions with --all).
    List {
        #[command(flatten)]
        filter: ListFilter,
        /// Only sessions in this state (implies --all).
        #[arg(long)]
        state: Option<String>,
        /// Only sessions idle longer than this (90s, 5m, 2h).
        #[arg(long)]
        idle_gt: Option<String>,
        /// Only sessions to targets with this tag (key=value).
        #[arg(long)]
        target_tag: Option<String>,
        /// Include ended sessions (closed, denied, failed).
        #[arg(long)]
        all: bool,
        /// Only sessions someone is shadowing now.
        #[arg(long)]
        shadowed: bool,
    },
    /// Show one session.
    Show { id: String },
    /// Watch a live session read-only (Ctrl-] q detaches). A PostgreSQL session shows its
    /// query log as statements complete; a desktop (RDP) session is watched in a browser.
    Shadow {
        id: String,
        /// Watch a desktop (RDP) session in a browser: prints a one-time link (valid 60 s) to
        /// open.
        #[arg(long)]
        browser: bool,
    },
    /// Offer your session (or, as an operator, anyone's) to another user; they take it over
    /// with `wgctl session accept ID`, then `ssh USER:ID@gateway`.
    Handoff {
        id: String,
        /// The user who takes the session over.
        #[arg(long)]
        to: String,
        /// Why (shown to the owner, recorded in the audit log and the recording).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Accept a session handed off to you (then connect: ssh YOU:ID@gateway).
    Accept { id: String },
    /// Decline a handoff offered to you (or withdraw your own offer).
    Decline {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cancel a session: your own, or (with the terminate permission) anyone's. A TCP session
    /// goes canceling, then terminated (reason canceled).
    Cancel {
        id: String,
        /// Why (recorded in the audit log and the session's end detail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Terminate one session by id, or every live session matching selectors.
    Terminate {
        id: Option<String>,
        /// Why (shown to the user and recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        target_tag: Option<String>,
        #[arg(long)]
        protocol: Option<String>,
    },
}

pub fn run(cmd: SessionCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        SessionCmd::List {
            filter,
            state,
            idle_gt,
            target_tag,
            all,
            shadowed,
        } => {
            if let Some(d) = &idle_gt {
                recording::duration("--idle-gt", d)?;
            }
            let all = all || state.is_some();
            let flag = |on: bool| on.then(|| "true".to_string());
            let q = filter.query(vec![
                ("state", state),
                ("idle_gt", idle_gt),
                ("target_tag", target_tag),
                ("shadowed", flag(shadowed)),
                ("live", flag(!all)),
            ]);
            let list: api::SessionList = c.get("/api/v1/sessions", &q)?;
            if json {
                print_json(&list)
            } else {
                let mut text = table::sessions(&list.sessions, all);
                let next = list.next_cursor.as_deref();
                text.push_str(&table::more(list.more, "session", next, "--cursor"));
                out(&text)
            }
        }
        SessionCmd::Show { id } => {
            let s: api::Session = c.get(
                &format!("/api/v1/sessions/{}", client::path_segment(&id)),
                &[],
            )?;
            report(&s, json, table::session)
        }
        SessionCmd::Shadow { id, browser: true } => shadow::browser(&c, &id, json),
        SessionCmd::Shadow { id, browser: false } => shadow::run(&c, &id),
        SessionCmd::Handoff { id, to, reason } => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                bail!("--reason is required: say why the session changes hands (it is recorded)");
            };
            let h: api::Handoff = c.post(
                &format!("/api/v1/sessions/{}/handoff", client::path_segment(&id)),
                &api::HandoffRequest {
                    to,
                    reason: Some(reason),
                },
            )?;
            if json {
                print_json(&h)
            } else {
                out(&format!(
                    "offered {id} to {}; it changes hands when {} runs `wgctl session accept {id}` (before {})\n",
                    h.to, h.to, h.expires_at
                ))
            }
        }
        SessionCmd::Accept { id } => {
            let s: api::Session = c.post(
                &format!("/api/v1/sessions/{}/accept", client::path_segment(&id)),
                &serde_json::json!({}),
            )?;
            if json {
                print_json(&s)
            } else {
                out(&format!(
                    "{} is yours now (policy {}); take it over with: ssh {}:{}@GATEWAY (the SSH \
                     address of gateway {}, which runs it)\n",
                    s.id,
                    s.policy.as_deref().unwrap_or("-"),
                    s.actor,
                    s.id,
                    s.gateway
                ))
            }
        }
        SessionCmd::Decline { id, reason } => {
            let h: api::Handoff = c.post(
                &format!("/api/v1/sessions/{}/decline", client::path_segment(&id)),
                &api::TerminateRequest { reason },
            )?;
            if json {
                print_json(&h)
            } else {
                out(&format!(
                    "declined the handoff of {id} to {}; nothing changed\n",
                    h.to
                ))
            }
        }
        SessionCmd::Cancel { id, reason } => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                bail!("--reason is required: say why the session is canceled");
            };
            let s: api::Session = c.post(
                &format!("/api/v1/sessions/{}/cancel", client::path_segment(&id)),
                &api::TerminateRequest {
                    reason: Some(reason),
                },
            )?;
            if json {
                print_json(&s)
            } else {
                out(&format!(
                    "canceled {} ({} on {}): {}\n{}",
                    s.id,
                    s.actor,
                    s.target,
                    s.state.as_str(),
                    sealed_line(&s)
                ))
            }
        }
        SessionCmd::Terminate {
            id,
            reason,
            actor,
            target,
            target_tag,
            protocol,
        } => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                bail!("--reason is required: say why the session is terminated (the user sees it)");
            };
            let selectors =
                actor.is_some() || target.is_some() || target_tag.is_some() || protocol.is_some();
            match (id, selectors) {
                (Some(id), false) => {
                    let s: api::Session = c.post(
                        &format!("/api/v1/sessions/{}/terminate", client::path_segment(&id)),
                        &api::TerminateRequest { reason: Some(reason) },
                    )?;
                    if json {
                        print_json(&s)
                    } else {
                        out(&format!("terminated {} ({} on {}): {}\n{}", s.id, s.actor, s.target, s.state.as_str(), sealed_line(&s)))
                    }
                }
                (None, true) => {
                    let r: api::TerminateResult = c.post(
                        "/api/v1/sessions/terminate",
                        &api::BulkTerminateRequest { reason: Some(reason), actor, target, target_tag, protocol },
                    )?;
                    if json {
                        print_json(&r)
                    } else {
                        let mut text = String::new();
                        for s in &r.terminated {
                            text.push_str(&format!("terminated {} ({} on {})\n", s.id, s.actor, s.target));
                        }
                        text.push_str(&format!("{} session(s) terminated\n", r.terminated.len()));
                        out(&text)
                    }
                }
                (Some(_), true) => bail!("give either a session id or selectors (--actor, --target, --target-tag, --protocol), not both"),
                (None, false) => bail!("give a session id, or selectors (--actor, --target, --target-tag, --protocol) for a bulk terminate"),
            }
        }
    }
}

/// `recording sealed (chunks=7, bytes=918644, sha256=3f0b...)`, when the session was recorded.
fn sealed_line(s: &api::Session) -> String {
    s.recording
        .as_ref()
        .map(|r| {
            format!(
                "recording sealed (chunks={}, bytes={}, sha256={})\n",
                r.chunks,
                r.raw_bytes,
                recording::short_hash(&r.final_sha256)
            )
        })
        .unwrap_or_default()
}
