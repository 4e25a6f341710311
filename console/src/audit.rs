//! `wgctl audit verify --file`: an export checked offline, with only the gateway's public key.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use wardengate_recorder::audit::{verify, AuditReport, ExportLine};

/// The key from `--pubkey`: hex, or a file holding it.
fn key(arg: &str) -> Result<wardengate_recorder::VerifyingKey> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read {arg}"))?
    } else {
        arg.to_string()
    };
    wardengate_recorder::parse_public_key(&text).map_err(|e| anyhow!("--pubkey: {e}"))
}

/// Verify an export (`wgctl audit export --file F`).
pub fn verify_file(file: &Path, pubkey: Option<&str>) -> Result<AuditReport> {
    let Some(pubkey) = pubkey else {
        bail!(
            "verifying a file needs the gateway's public key: --pubkey KEY (from `wgctl recording \
             pubkey`, kept apart from the log)"
        );
    };
    let key = key(pubkey)?;
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
