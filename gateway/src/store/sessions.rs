//! Session rows: insert, update, one by id, and filtered pages newest first.

use anyhow::{Context, Result};
use rusqlite::{params, OptionalExtension};

use super::cols::Cols;

use super::Db;
use wardengate_api::{Protocol, SessionState};

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub state: SessionState,
    pub protocol: Protocol,
    pub actor: String,
    pub client_addr: String,
    pub client_version: String,
    pub target: String,
    pub target_addr: String,
    pub account: String,
    pub account_ref: String,
    pub policy: Option<String>,
    pub pty_term: Option<String>,
    pub pty_cols: u32,
    pub pty_rows: u32,
    pub gateway: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub last_input_ms: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub end_reason: Option<String>,
    pub end_detail: Option<String>,
    pub terminated_by: Option<String>,
    /// The admission decision as JSON: the admitting policy and its settings, or the denial.
    pub decision: Option<String>,
    /// The earlier session this one continues (reconnect after a drop).
    pub linked_session: Option<String>,
    /// Open channels right now (live sessions only; not persisted).
    pub channels: u32,
    /// What a live database session is doing (`idle in transaction`); not persisted.
    pub activity: Option<String>,
    /// Earlier owners of a handed-off session, oldest first, comma-separated.
    pub previous_owners: Option<String>,
    /// Who watches the live session now (not persisted).
    pub observers: Vec<wardengate_protocols::shadow::ObserverInfo>,
    /// A pending handoff (not persisted).
    pub handoff: Option<wardengate_api::Handoff>,
    /// Where the client address is (`[geoip]`), when known.
    pub client_location: Option<String>,
    /// The cipher (and MAC) the client leg and the target leg negotiated (SSH).
    pub client_crypto: Option<String>,
    pub target_crypto: Option<String>,
    /// The relay's added latency so far (live sessions that measure it; not persisted).
    pub relay_latency: Option<wardengate_api::RelayLatency>,
    /// A TCP session's host, limit, expiration and state history (stored as JSON).
    pub tcp: Option<wardengate_api::TcpDetail>,
}

impl SessionRecord {
    /// A new session as admission first records it: `requested`, started now, on `gateway`.
    pub fn requested(id: String, protocol: Protocol, gateway: &str) -> SessionRecord {
        SessionRecord {
            id,
            state: SessionState::Requested,
            protocol,
            actor: String::new(),
            client_addr: String::new(),
            client_version: String::new(),
            target: String::new(),
            target_addr: String::new(),
            account: String::new(),
            account_ref: String::new(),
            policy: None,
            pty_term: None,
            pty_cols: 0,
            pty_rows: 0,
            gateway: gateway.to_string(),
            started_ms: wardengate_protocols::session::now_ms(),
            ended_ms: None,
            last_input_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            end_reason: None,
            end_detail: None,
            terminated_by: None,
            decision: None,
            linked_session: None,
            channels: 0,
            activity: None,
            previous_owners: None,
            observers: Vec::new(),
            handoff: None,
            client_location: None,
            client_crypto: None,
            target_crypto: None,
            relay_latency: None,
            tcp: None,
        }
    }

    /// The TCP detail as stored.
    pub(super) fn tcp_json(&self) -> Option<String> {
        self.tcp
            .as_ref()
            .and_then(|t| serde_json::to_string(t).ok())
    }

    /// The record with every text that came from a client or an operator capped and made inert
    /// (escapes for control characters), as it may be stored and served.
    pub fn inert(&self) -> SessionRecord {
        use wardengate_api::text::{inert, MAX_NAME, MAX_TEXT};
        let name = |s: &str| inert(s, MAX_NAME).into_owned();
        let text = |s: &str| inert(s, MAX_TEXT).into_owned();
        SessionRecord {
            actor: name(&self.actor),
            client_version: name(&self.client_version),
            client_location: self.client_location.as_deref().map(name),
            target: name(&self.target),
            account: name(&self.account),
            pty_term: self.pty_term.as_deref().map(name),
            end_detail: self.end_detail.as_deref().map(text),
            terminated_by: self.terminated_by.as_deref().map(name),
            previous_owners: self.previous_owners.as_deref().map(text),
            activity: self.activity.as_deref().map(name),
            ..self.clone()
        }
    }
}

/// Filters of `GET /api/v1/sessions` that the store can apply.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub protocol: Option<Protocol>,
    pub state: Option<SessionState>,
    /// Only sessions admitted (or refused) under this policy.
    pub policy: Option<String>,
    /// Only sessions that have not ended.
    pub live: bool,
    /// Only these targets (a tag's targets).
    pub targets_in: Option<Vec<String>>,
    /// Only sessions older than this one, in list order: (started_ms, id) of the last row of
    /// the previous page.
    pub before: Option<(u64, String)>,
    pub limit: u32,
}

impl SessionQuery {
    /// The parameters of [`SESSION_WHERE`] beyond the plain fields: the targets as a JSON
    /// array, and the cursor's time and id.
    fn bound(&self) -> (Option<String>, Option<i64>, Option<String>) {
        let targets = self
            .targets_in
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_default());
        match &self.before {
            Some((ms, id)) => (targets, Some(*ms as i64), Some(id.clone())),
            None => (targets, None, None),
        }
    }
}

/// The WHERE clause of [`SessionQuery`], over parameters ?1 .. ?8.
const SESSION_WHERE: &str = "(?1 IS NULL OR actor=?1) AND (?2 IS NULL OR target=?2) AND \
    (?3 IS NULL OR protocol=?3) AND (?4 IS NULL OR state=?4) AND \
    (?5 = 0 OR state NOT IN ('closed','denied','failed','terminated')) AND \
    (?6 IS NULL OR target IN (SELECT value FROM json_each(?6))) AND \
    (?7 IS NULL OR started_ms < ?7 OR (started_ms = ?7 AND id < ?8)) AND \
    (?10 IS NULL OR policy=?10)";

pub(super) const SESSION_COLS: &str =
    "id, state, protocol, actor, client_addr, client_version, target, \
    target_addr, account, account_ref, policy, pty_term, pty_cols, pty_rows, gateway, started_ms, \
    ended_ms, last_input_ms, bytes_in, bytes_out, end_reason, end_detail, terminated_by, decision, \
    linked_session, previous_owners, client_crypto, target_crypto, client_location, tcp";

/// Columns added after the first release: (name, type), added to older stores at open.
pub(super) const ADDED_SESSION_COLUMNS: &[(&str, &str)] = &[
    ("decision", "TEXT"),
    ("linked_session", "TEXT"),
    ("previous_owners", "TEXT"),
    ("client_crypto", "TEXT"),
    ("target_crypto", "TEXT"),
    ("client_location", "TEXT"),
];

/// A session from its row ([`SESSION_COLS`], in order).
pub(super) fn session_from_row<R: Cols>(r: &R) -> Result<SessionRecord, R::Err> {
    Ok(SessionRecord {
        id: r.text(0)?,
        state: {
            let v = r.text(1)?;
            SessionState::parse(&v).ok_or_else(|| r.unknown(1, "session state", v))?
        },
        protocol: {
            let v = r.text(2)?;
            Protocol::parse(&v).ok_or_else(|| r.unknown(2, "protocol", v))?
        },
        actor: r.text(3)?,
        client_addr: r.text(4)?,
        client_version: r.text(5)?,
        target: r.text(6)?,
        target_addr: r.text(7)?,
        account: r.text(8)?,
        account_ref: r.text(9)?,
        policy: r.opt_text(10)?,
        pty_term: r.opt_text(11)?,
        pty_cols: r.uint(12)? as u32,
        pty_rows: r.uint(13)? as u32,
        gateway: r.text(14)?,
        started_ms: r.uint(15)?,
        ended_ms: r.opt_uint(16)?,
        last_input_ms: r.opt_uint(17)?,
        bytes_in: r.uint(18)?,
        bytes_out: r.uint(19)?,
        end_reason: r.opt_text(20)?,
        end_detail: r.opt_text(21)?,
        terminated_by: r.opt_text(22)?,
        decision: r.opt_text(23)?,
        linked_session: r.opt_text(24)?,
        previous_owners: r.opt_text(25)?,
        client_crypto: r.opt_text(26)?,
        target_crypto: r.opt_text(27)?,
        client_location: r.opt_text(28)?,
        tcp: r.opt_text(29)?.and_then(|t| serde_json::from_str(&t).ok()),
        channels: 0,
        activity: None,
        observers: Vec::new(),
        handoff: None,
        relay_latency: None,
    })
}

impl Db {
    pub fn session_insert(&self, s: &SessionRecord) -> Result<()> {
        let s = &s.inert();
        self.conn.execute(
            &format!("INSERT OR REPLACE INTO sessions ({SESSION_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28,?29,?30)"),
            params![
                s.id, s.state.as_str(), s.protocol.as_str(), s.actor, s.client_addr, s.client_version, s.target,
                s.target_addr, s.account, s.account_ref, s.policy, s.pty_term, s.pty_cols,
                s.pty_rows, s.gateway, s.started_ms as i64, s.ended_ms.map(|v| v as i64),
                s.last_input_ms.map(|v| v as i64), s.bytes_in as i64, s.bytes_out as i64,
                s.end_reason, s.end_detail, s.terminated_by, s.decision, s.linked_session,
                s.previous_owners, s.client_crypto, s.target_crypto, s.client_location,
                s.tcp_json()
            ],
        ).context("cannot record session")?;
        Ok(())
    }

    /// Persist the mutable part of a session (state, live counters, end).
    pub fn session_update(&self, s: &SessionRecord) -> Result<()> {
        let s = &s.inert();
        self.conn.execute(
            "UPDATE sessions SET state=?2, client_version=?3, policy=?4, pty_term=?5, pty_cols=?6,
             pty_rows=?7, ended_ms=?8, last_input_ms=?9, bytes_in=?10, bytes_out=?11,
             end_reason=?12, end_detail=?13, terminated_by=?14, actor=?15, previous_owners=?16,
             decision=?17, client_crypto=?18, target_crypto=?19, tcp=?20 WHERE id=?1",
            params![
                s.id, s.state.as_str(), s.client_version, s.policy, s.pty_term, s.pty_cols, s.pty_rows,
                s.ended_ms.map(|v| v as i64), s.last_input_ms.map(|v| v as i64),
                s.bytes_in as i64, s.bytes_out as i64, s.end_reason, s.end_detail, s.terminated_by,
                s.actor, s.previous_owners, s.decision, s.client_crypto, s.target_crypto,
                s.tcp_json()
            ],
        ).context("cannot update session")?;
        Ok(())
    }

    pub fn session_get(&self, id: &str) -> Result<Option<SessionRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {SESSION_COLS} FROM sessions WHERE id=?1"),
                [id],
                |r| session_from_row(r),
            )
            .optional()?)
    }

    pub fn session_list(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>> {
        let conn = &self.conn;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE {SESSION_WHERE}
             ORDER BY started_ms DESC, id DESC LIMIT ?9"
        ))?;
        let (targets, before_ms, before_id) = q.bound();
        let rows = stmt.query_map(
            params![
                q.actor,
                q.target,
                q.protocol.map(Protocol::as_str),
                q.state.map(SessionState::as_str),
                q.live,
                targets,
                before_ms,
                before_id,
                q.limit.max(1),
                q.policy
            ],
            |r| session_from_row(r),
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many sessions match `q` (its cursor included, its limit not).
    pub fn session_count(&self, q: &SessionQuery) -> Result<u64> {
        let (targets, before_ms, before_id) = q.bound();
        let n: i64 = self.conn.query_row(
            &format!("SELECT count(*) FROM sessions WHERE {SESSION_WHERE}"),
            params![
                q.actor,
                q.target,
                q.protocol.map(Protocol::as_str),
                q.state.map(SessionState::as_str),
                q.live,
                targets,
                before_ms,
                before_id,
                // ?9 is the list's limit, unused by a count.
                Option::<i64>::None,
                q.policy
            ],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Sessions this gateway left open when it stopped without a clean shutdown.
    pub fn sessions_open_on(&self, gateway: &str) -> Result<Vec<SessionRecord>> {
        let conn = &self.conn;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE gateway=?1 AND state NOT IN ('closed','denied','failed','terminated')"
        ))?;
        let rows = stmt.query_map([gateway], |r| session_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
