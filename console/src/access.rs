//! `wgctl access`: network access sessions (EntryGuard style). `start` asks the gateway to
//! allow this machine's address (as the gateway sees it) on every network resource your
//! policies grant, for a while; `list`, `show` and `stop` follow them.

use anyhow::{bail, Result};
use clap::Subcommand;
use wardengate_api as api;

use crate::client::{self, Client};
use crate::output::{note, report};
use crate::table;

#[derive(Subcommand)]
pub enum AccessCmd {
    /// Allow your address on the resources your policies grant, for --duration.
    ///
    /// Where a granting policy asks for a security key or an approval, nothing is applied: the
    /// refusal gives the link to touch your key, or the approval request to wait on; start
    /// again once you have it.
    Start {
        /// How long: one of the durations the gateway offers (1h, 2h, 4h, 8h, 12h, 16h, 24h
        /// unless configured otherwise); default the gateway's default.
        #[arg(long)]
        duration: Option<String>,
        /// Connect to the gateway from this local address (on a machine with several, the one
        /// the resources will see you come from).
        #[arg(long, value_name = "ADDR")]
        from: Option<std::net::IpAddr>,
    },
    /// Access sessions, newest first: yours, or everyone's with --all (session.read).
    List {
        #[arg(long, conflicts_with = "user")]
        all: bool,
        /// One person's (session.read for anyone but you).
        #[arg(long)]
        user: Option<String>,
        /// Only those that hold rules now.
        #[arg(long)]
        live: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One access session and each of its rules.
    Show { id: String },
    /// End a live access session now; its rules are removed (or kept for another session
    /// from the same address that still holds them).
    Stop {
        id: String,
        /// Why (recorded in the audit log and the session).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(cmd: AccessCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        AccessCmd::Start { duration, from } => {
            let c = match from {
                Some(ip) => c.connecting_from(ip)?,
                None => c,
            };
            let s: api::AccessSession = c.post(
                "/api/v1/access-sessions",
                &api::AccessStartRequest { duration },
            )?;
            report(&s, json, table::access_session)?;
            match s.state {
                api::AccessState::Failed => {
                    bail!("no rule could be applied: access session {} FAILED", s.id)
                }
                api::AccessState::Partial => note(&format!(
                    "wgctl: access session {} is PARTIAL: {} of its rules are in place (see the errors above)",
                    s.id,
                    table::rules_in_place(&s)
                )),
                _ => {}
            }
            Ok(())
        }
        AccessCmd::List {
            all,
            user,
            live,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if all {
                q.push(("all", "true".into()));
            }
            if live {
                q.push(("live", "true".into()));
            }
            if let Some(u) = user {
                q.push(("user", u));
            }
            let l: api::AccessList = c.get("/api/v1/access-sessions", &q)?;
            report(&l, json, |l| table::access_sessions(&l.sessions))
        }
        AccessCmd::Show { id } => {
            let s: api::AccessSession = c.get(
                &format!("/api/v1/access-sessions/{}", client::path_segment(&id)),
                &[],
            )?;
            report(&s, json, table::access_session)
        }
        AccessCmd::Stop { id, reason } => {
            let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                bail!("--reason is required: say why the access session is stopped");
            };
            let s: api::AccessSession = c.post(
                &format!("/api/v1/access-sessions/{}/stop", client::path_segment(&id)),
                &api::TerminateRequest {
                    reason: Some(reason),
                },
            )?;
            report(&s, json, table::access_session)
        }
    }
}
