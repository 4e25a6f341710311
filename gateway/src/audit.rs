//! The audit log: every event goes through [`Gateway::audit`], which caps and escapes what came
//! from outside and appends it to the hash chain; and the chain head is signed with the
//! gateway's Ed25519 key (a [`Checkpoint`]) every `audit.checkpoint_every` events, every
//! `audit.checkpoint_interval` while events arrive, and at shutdown. Checkpoints are kept in the
//! store and, one JSON line each, in `audit-checkpoints.jsonl` beside the recordings (which may
//! live on other storage), so deleting the newest rows or rewriting the chain is detected by
//! `wgctl audit verify` (see `wardengate_recorder::audit`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use wardengate_api::text::{inert, inert_json, MAX_NAME, MAX_TEXT};
use wardengate_recorder::audit::{AuditReport, Checkpoint};

use crate::broker::Gateway;

/// When to sign the chain head, and where the checkpoints go besides the store.
pub struct Checkpoints {
    every: u64,
    since: AtomicU64,
    /// The newest signed event.
    signed: AtomicI64,
    file: PathBuf,
}

/// The checkpoints written to `file` (one JSON line each); lines that do not parse are skipped.
pub fn read_file(file: &std::path::Path) -> Vec<Checkpoint> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Checkpoints from the store and from the file beside the recordings, each once: deleting
/// the newest events and their checkpoint rows from the store does not hide them, since the
/// file (on other storage, ideally append-only) still holds the checkpoint that covered them.
pub fn merged(store: Vec<Checkpoint>, file: Vec<Checkpoint>) -> Vec<Checkpoint> {
    let mut all = store;
    for c in file {
        if !all.contains(&c) {
            all.push(c);
        }
    }
    all.sort_by_key(|c| c.seq);
    all
}

impl Checkpoints {
    /// `signed`: the newest event an existing checkpoint covers.
    pub fn new(every: u64, file: PathBuf, signed: i64) -> Checkpoints {
        Checkpoints {
            every: every.max(1),
            since: AtomicU64::new(0),
            signed: AtomicI64::new(signed),
            file,
        }
    }
}

impl Gateway {
    /// Every checkpoint, from the store and from the file.
    pub fn checkpoints_all(&self) -> anyhow::Result<Vec<Checkpoint>> {
        Ok(merged(
            self.store.checkpoints()?,
            read_file(&self.checkpoints.file),
        ))
    }

    /// The whole audit log checked: the chain, and every checkpoint with the gateway's key.
    /// Reads everything: call it off the async runtime's threads.
    pub fn audit_report(&self) -> anyhow::Result<AuditReport> {
        let events = self.store.audit_all()?;
        let checkpoints = self.checkpoints_all()?;
        Ok(wardengate_recorder::audit::verify(
            &events,
            &checkpoints,
            Some(&self.recordings.public_key()),
        ))
    }

    /// Append to the audit log. An audit failure is logged loudly but never crashes a session.
    pub fn audit(
        &self,
        kind: &str,
        actor: Option<&str>,
        session: Option<&str>,
        detail: serde_json::Value,
    ) {
        // Names and texts from clients and operators are capped and made inert before they are
        // stored: an audit row can then be printed anywhere.
        let mut detail = detail;
        inert_json(&mut detail, MAX_TEXT);
        let actor = actor.map(|a| inert(a, MAX_NAME));
        match self
            .store
            .audit_append(kind, actor.as_deref(), session, &detail.to_string())
        {
            Ok(_) => {
                let n = self.checkpoints.since.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.checkpoints.every {
                    self.checkpoint();
                }
            }
            Err(e) => tracing::error!(kind, "cannot append audit event: {e:#}"),
        }
    }

    /// Sign the chain head, unless it is signed already.
    pub fn checkpoint(&self) {
        let head = match self.store.audit_head() {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot read the audit chain head: {e:#}");
                return;
            }
        };
        let cp = &self.checkpoints;
        if cp.signed.fetch_max(head.seq, Ordering::Relaxed) >= head.seq {
            return;
        }
        cp.since.store(0, Ordering::Relaxed);
        let c = Checkpoint::sign(
            self.recordings.key(),
            &self.name,
            head.seq,
            &head.hash,
            wardengate_protocols::session::now_ms(),
        );
        if let Err(e) = self.store.checkpoint_add(&c) {
            tracing::error!("cannot store an audit checkpoint: {e:#}");
        }
        let line = serde_json::to_string(&c).unwrap_or_default();
        if let Some(dir) = cp.file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cp.file)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            tracing::error!(file = %cp.file.display(), "cannot write an audit checkpoint: {e}");
        }
    }
}
