//! The audit log: every event goes through [`Gateway::audit`], which caps and escapes what came
//! from outside and appends it to the hash chain; and the chain head is signed with the
//! gateway's Ed25519 key (a [`Checkpoint`]) every `audit.checkpoint_every` events, every
//! `audit.checkpoint_interval` while events arrive, and at shutdown. Checkpoints are kept in the
//! store and, one JSON line each, in `audit-checkpoints.jsonl` beside the recordings (which may
//! live on other storage), so deleting the newest rows or rewriting the chain is detected by
//! `wgctl audit verify` (see `wardengate_recorder::audit`).

pub mod checkpoints;

use serde_json::json;
use wardengate_api::text::{inert, inert_json, MAX_NAME, MAX_TEXT};
use wardengate_recorder::audit::{AuditReport, Checkpoint};

use checkpoints::merged;

use crate::broker::Gateway;

impl Gateway {
    /// Every checkpoint, from the store and from the file.
    pub async fn checkpoints_all(&self) -> anyhow::Result<Vec<Checkpoint>> {
        Ok(merged(
            self.store.checkpoints().await?,
            self.checkpoints.in_file(),
        ))
    }

    /// The whole audit log checked: the chain, and every checkpoint with the gateway's key
    /// (the hashing runs on a blocking thread).
    pub async fn audit_report(&self) -> anyhow::Result<AuditReport> {
        let events = self.store.audit_all().await?;
        let checkpoints = self.checkpoints_all().await?;
        let key = self.recordings.public_key();
        Ok(tokio::task::spawn_blocking(move || {
            wardengate_recorder::audit::verify(&events, &checkpoints, Some(&key))
        })
        .await?)
    }

    /// Append to the audit log (queued: it returns at once, and whatever reads the log after
    /// sees the event). An audit failure is logged loudly but never crashes a session.
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
        self.store.audit_append_later(crate::store::AuditEntry {
            kind: kind.into(),
            actor: actor.map(|a| inert(a, MAX_NAME).into_owned()),
            session: session.map(Into::into),
            detail: detail.to_string(),
        });
        if self.checkpoints.counted() {
            // The signing task (server.rs) signs the head, after this event is written.
            self.checkpoints.due.notify_one();
        }
    }

    /// Sign the chain head, unless it is signed already.
    pub async fn checkpoint(&self) {
        let head = match self.store.audit_head().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot read the audit chain head: {e:#}");
                return;
            }
        };
        if !self.checkpoints.claim(head.seq) {
            return;
        }
        let c = Checkpoint::sign(
            self.recordings.key(),
            &self.name,
            head.seq,
            &head.hash,
            wardengate_protocols::session::now_ms(),
        );
        if let Err(e) = self.store.checkpoint_add(&c).await {
            tracing::error!("cannot store an audit checkpoint: {e:#}");
        }
        self.checkpoints.append(&c);
    }

    /// Summarise cancel-request floods (one warning and one audit event per source and sweep).
    pub fn audit_cancels(&self) {
        for f in self.cancels.sweep() {
            tracing::warn!(source = %f.source, dropped = f.dropped, unknown = f.unknown, "PostgreSQL cancel requests beyond the rate limit or with unknown keys (key guessing?)");
            self.audit(
                "postgres.cancel_flood",
                None,
                None,
                json!({"source": f.source.to_string(), "dropped": f.dropped, "unknown": f.unknown}),
            );
        }
    }

    /// Audit the bursts of failed logins (`on`: `login` or `api`) the throttle reports.
    pub fn audit_throttle(&self, on: &str, events: Vec<crate::guard::ThrottleEvent>) {
        for e in events {
            tracing::warn!(kind = e.kind, on, scope = e.scope, user = ?e.user, source = ?e.source, failures = e.failures, refused = e.refused, "failed logins");
            self.audit(
                e.kind,
                e.user.as_deref(),
                None,
                json!({"on": on, "scope": e.scope, "user": e.user, "source": e.source.map(|s| s.to_string()), "failures": e.failures, "refused": e.refused, "wait_s": e.wait_s}),
            );
        }
    }
}
