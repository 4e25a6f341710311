//! The audit log: hash-chained rows, and the signed checkpoints over them.

use anyhow::Result;
use rusqlite::{params, OptionalExtension};

use super::cols::Cols;
use wardengate_recorder::audit::Checkpoint;

use super::{AuditEntry, Db};
use crate::util;

/// An audit row: the recorder's audit event (chain and checkpoints live there, shared with
/// `wgctl audit verify`).
pub type AuditRow = wardengate_recorder::audit::AuditEvent;

pub use wardengate_recorder::audit::event_hash as audit_hash;

/// Which audit events to list: of `kind`, of `session`, older than event `before`; the newest
/// `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub session: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// An audit event from its row ([`AUDIT_COLS`], in order).
pub(super) fn audit_from_row<R: Cols>(r: &R) -> Result<AuditRow, R::Err> {
    Ok(AuditRow {
        seq: r.int(0)?,
        id: r.text(1)?,
        at_ms: r.uint(2)?,
        kind: r.text(3)?,
        actor: r.opt_text(4)?,
        session_id: r.opt_text(5)?,
        detail: r.text(6)?,
        prev_hash: r.text(7)?,
        hash: r.text(8)?,
    })
}

pub(super) const AUDIT_COLS: &str =
    "seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash";

/// A signed checkpoint from its row (seq, hash, at_ms, gateway, public_key, signature).
pub(super) fn checkpoint_from_row<R: Cols>(r: &R) -> Result<Checkpoint, R::Err> {
    Ok(Checkpoint {
        seq: r.int(0)?,
        hash: r.text(1)?,
        at_ms: r.uint(2)?,
        gateway: r.text(3)?,
        public_key: r.text(4)?,
        signature: r.text(5)?,
    })
}

impl AuditEntry {
    /// The event as the chain's next row after `head` (its seq and hash; `None`: the first
    /// event): its sequence number, id, time and hash given here, the same for both stores.
    pub(super) fn chained(&self, head: Option<(i64, String)>) -> AuditRow {
        let (seq, prev_hash) = head.map_or((1, String::new()), |(s, h)| (s + 1, h));
        let mut row = AuditRow {
            seq,
            id: util::new_id("evt_"),
            at_ms: wardengate_protocols::session::now_ms(),
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            session_id: self.session.clone(),
            detail: self.detail.clone(),
            prev_hash,
            hash: String::new(),
        };
        row.hash = audit_hash(&row.prev_hash, &row);
        row
    }
}

impl Db {
    /// Append an audit event, chained to the previous one. Returns the stored row.
    pub fn audit_append(
        &self,
        kind: &str,
        actor: Option<&str>,
        session: Option<&str>,
        detail: &str,
    ) -> Result<AuditRow> {
        let conn = &self.conn;
        let tx = conn.unchecked_transaction()?;
        let head: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| -> rusqlite::Result<(i64, String)> { Ok((r.get(0)?, r.get(1)?)) },
            )
            .optional()?;
        let row = AuditEntry {
            kind: kind.into(),
            actor: actor.map(Into::into),
            session: session.map(Into::into),
            detail: detail.into(),
        }
        .chained(head);
        tx.execute(
            "INSERT INTO audit (seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![
                row.seq,
                row.id,
                row.at_ms as i64,
                row.kind,
                row.actor,
                row.session_id,
                row.detail,
                row.prev_hash,
                row.hash
            ],
        )?;
        tx.commit()?;
        Ok(row)
    }

    /// The newest events matching `q`, oldest first, and how many older ones match too.
    pub fn audit_list(&self, q: &AuditQuery) -> Result<(Vec<AuditRow>, u64)> {
        let (kind, session, before) = (q.kind.as_deref(), q.session.as_deref(), q.before);
        let conn = &self.conn;
        let filter = "(?1 IS NULL OR kind=?1) AND (?2 IS NULL OR session_id=?2) AND (?3 IS NULL OR seq < ?3)";
        let mut stmt = conn.prepare(&format!(
            "SELECT seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash FROM audit
             WHERE {filter} ORDER BY seq DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(params![kind, session, before, q.limit.max(1)], |r| {
            audit_from_row(r)
        })?;
        let mut v = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        v.reverse();
        let older = match v.first() {
            Some(first) => {
                let n: i64 = conn.query_row(
                    &format!("SELECT count(*) FROM audit WHERE {filter}"),
                    params![kind, session, first.seq],
                    |r| r.get(0),
                )?;
                n.max(0) as u64
            }
            None => 0,
        };
        Ok((v, older))
    }

    /// Every event in order, for export and verification.
    pub fn audit_all(&self) -> Result<Vec<AuditRow>> {
        let conn = &self.conn;
        let mut stmt = conn.prepare(
            "SELECT seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash FROM audit ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| audit_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The newest event (the chain head).
    pub fn audit_head(&self) -> Result<Option<AuditRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, id, at_ms, kind, actor, session_id, detail, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| audit_from_row(r),
            )
            .optional()?)
    }

    pub fn checkpoint_add(&self, c: &Checkpoint) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, at_ms, gateway, public_key, signature) VALUES (?1,?2,?3,?4,?5,?6)",
            params![c.seq, c.hash, c.at_ms as i64, c.gateway, c.public_key, c.signature],
        )?;
        Ok(())
    }

    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let conn = &self.conn;
        let mut stmt = conn.prepare(
            "SELECT seq, hash, at_ms, gateway, public_key, signature FROM audit_checkpoints ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| checkpoint_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Recompute the whole chain and check every checkpoint (with `key`).
    #[cfg(test)]
    pub fn audit_verify(
        &self,
        key: Option<&wardengate_recorder::VerifyingKey>,
    ) -> Result<wardengate_recorder::audit::AuditReport> {
        let events = self.audit_all()?;
        let checkpoints = self.checkpoints()?;
        Ok(wardengate_recorder::audit::verify(
            &events,
            &checkpoints,
            key,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_chain_detects_edits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Db::open(&dir.path().join("db.sqlite")).expect("store");
        store
            .audit_append("session.requested", Some("alice"), Some("sess_1"), "{}")
            .expect("a");
        let second = store
            .audit_append("session.start", Some("alice"), Some("sess_1"), "{}")
            .expect("b");
        let r = store.audit_verify(None).expect("verify");
        assert!(r.ok() && r.events == 2, "{r:?}");
        assert_eq!(second.prev_hash.len(), 64);
        store
            .conn
            .execute("UPDATE audit SET actor='mallory' WHERE seq=1", [])
            .expect("tamper");
        let r = store.audit_verify(None).expect("verify");
        assert_eq!(r.at_seq, Some(1), "{r:?}");
    }
}
