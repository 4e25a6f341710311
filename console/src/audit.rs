//! `wgctl audit verify --file`: an export checked offline, with only the gateway's public key.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use wardengate_api as api;
use wardengate_recorder::audit::{verify, AuditReport, ExportLine};

use crate::client::Client;
use crate::output::{out, out_raw, print_json};
use crate::table;

/// Verify an export (`wgctl audit export --file F`).
pub fn verify_file(file: &Path, pubkey: Option<&str>) -> Result<AuditReport> {
    let Some(pubkey) = pubkey else {
        bail!(
            "verifying a file needs the gateway's public key: --pubkey KEY (from `wgctl recording \
             pubkey`, kept apart from the log)"
        );
    };
    let key = crate::recording::pubkey(Some(pubkey), None)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (mut events, mut checkpoints) = (Vec::new(), Vec::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<ExportLine>(line).with_context(|| {
            format!(
                "{} line {}: not an audit export line",
                file.display(),
                i + 1
            )
        })? {
            ExportLine::Event(e) => events.push(e),
            ExportLine::Checkpoint(c) => checkpoints.push(c),
        }
    }
    Ok(verify(&events, &checkpoints, Some(&key)))
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only events older than this sequence number (the page before; printed when cut).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Export the whole audit log with its signed checkpoints (JSON lines), for safekeeping and
    /// offline verification.
    Export {
        /// Write to this file instead of stdout.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Verify the audit log: every hash and every signed checkpoint. With --file, an export
    /// offline (with --pubkey, the key from `wgctl recording pubkey`); without, the gateway's
    /// log through the API. Names the first bad event: edited, deleted, inserted, reordered,
    /// re-chained or truncated. Exits 1 when it does not verify.
    Verify {
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The gateway's public key (hex), or a file holding it.
        #[arg(long)]
        pubkey: Option<String>,
    },
}

/// `wgctl audit ...`; `verify --file` works offline, without a gateway or a token.
pub fn run(cmd: AuditCmd, c: Result<Client>, json: bool) -> Result<()> {
    match cmd {
        AuditCmd::List {
            kind,
            session,
            limit,
            before,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(b) = before {
                q.push(("before", b.to_string()));
            }
            if let Some(k) = kind {
                q.push(("kind", k));
            }
            if let Some(s) = session {
                q.push(("session", s));
            }
            let list: api::AuditList = c?.get("/api/v1/audit", &q)?;
            if json {
                print_json(&list)
            } else {
                let mut text = table::audit(&list);
                let before = list.next_before.map(|b| b.to_string());
                text.push_str(&table::more(
                    list.older,
                    "older event",
                    before.as_deref(),
                    "--before",
                ));
                out(&text)
            }
        }
        AuditCmd::Export { file } => {
            let text = c?.get_text("/api/v1/audit/export")?;
            match file {
                Some(p) => {
                    std::fs::write(&p, &text)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
                    out(&format!(
                        "wrote {} lines to {}\n",
                        text.lines().count(),
                        p.display()
                    ))
                }
                None => out_raw(&text),
            }
        }
        AuditCmd::Verify { file, pubkey } => {
            let report = match file {
                Some(f) => verify_file(&f, pubkey.as_deref())?,
                None => {
                    c?.get::<wardengate_recorder::audit::AuditReport>("/api/v1/audit/verify", &[])?
                }
            };
            if json {
                print_json(&report)?;
            } else {
                out(&format!("{}\n", report.message))?;
            }
            if !report.ok() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
