//! `wgctl console-session`: the operator console's sign-in sessions (Kibana's model), listed
//! and invalidated by an administrator (`user.admin`).

use anyhow::{bail, Result};
use clap::Subcommand;
use wardengate_api as api;

use crate::client::Client;
use crate::output::report;
use crate::table;

#[derive(Subcommand)]
pub enum ConsoleSessionCmd {
    /// Console sessions that have not expired, oldest first.
    List,
    /// Sign people out of the console: everyone (`--all`) or one person (`--user NAME`).
    Invalidate {
        #[arg(long, conflicts_with = "user")]
        all: bool,
        #[arg(long)]
        user: Option<String>,
        /// Why (audited).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run(cmd: ConsoleSessionCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        ConsoleSessionCmd::List => {
            let list: api::ConsoleSessionList = c.get("/api/v1/console-sessions", &[])?;
            report(&list, json, |l| table::console_sessions(&l.sessions))
        }
        ConsoleSessionCmd::Invalidate { all, user, reason } => {
            let body = match (all, user) {
                (true, _) => api::ConsoleInvalidateRequest {
                    match_: "all".into(),
                    query: None,
                    reason,
                },
                (false, Some(u)) => api::ConsoleInvalidateRequest {
                    match_: "query".into(),
                    query: Some(api::ConsoleSessionQuery { username: Some(u) }),
                    reason,
                },
                (false, None) => bail!("say whose console sessions: --user NAME, or --all"),
            };
            let r: api::ConsoleInvalidated =
                c.post("/api/v1/console-sessions/_invalidate", &body)?;
            report(&r, json, |r| {
                format!("invalidated {} console session(s)\n", r.total)
            })
        }
    }
}
