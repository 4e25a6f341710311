//! The statements of the session and audit tables in PostgreSQL, shared by the store's calls
//! and its queued writes.

use super::db::Db;
use anyhow::{Context, Result};
use tokio_postgres::types::ToSql;
use wardengate_api::{Protocol, SessionState};

use crate::store::audit::{audit_from_row, AUDIT_COLS};
use crate::store::sessions::{session_from_row, SESSION_COLS};
use crate::store::{AuditEntry, AuditQuery, AuditRow, SessionQuery, SessionRecord};

pub(super) const KEY_COLS: &str =
    r#"id, "user", name, credential_id, aaguid, key, counter, created_ms, last_used_ms"#;

/// The filters of [`SessionQuery`] over $1 .. $9 ($10 is a list's limit).
const SESSION_WHERE: &str =
    "($1::text IS NULL OR actor=$1) AND ($2::text IS NULL OR target=$2) AND \
    ($3::text IS NULL OR protocol=$3) AND ($4::text IS NULL OR state=$4) AND \
    (NOT $5::bool OR state NOT IN ('closed','denied','failed','terminated')) AND \
    ($6::text[] IS NULL OR target = ANY($6)) AND \
    ($7::bigint IS NULL OR started_ms < $7 OR (started_ms = $7 AND id < $8::text)) AND \
    ($9::text IS NULL OR policy=$9)";

pub(super) fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

pub(super) fn oi(v: Option<u64>) -> Option<i64> {
    v.map(i)
}

pub(super) async fn session_upsert(c: &Db, s: &SessionRecord) -> Result<()> {
    let s = s.inert();
    let cols: Vec<&str> = SESSION_COLS.split(',').map(str::trim).collect();
    let values: Vec<String> = (1..=cols.len()).map(|n| format!("${n}")).collect();
    let update: Vec<String> = cols[1..]
        .iter()
        .map(|c| format!("{c}=EXCLUDED.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO sessions ({SESSION_COLS}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}",
        values.join(","),
        update.join(",")
    );
    c.execute(
        &sql,
        &[
            &s.id,
            &s.state.as_str(),
            &s.protocol.as_str(),
            &s.actor,
            &s.client_addr,
            &s.client_version,
            &s.target,
            &s.target_addr,
            &s.account,
            &s.account_ref,
            &s.policy,
            &s.pty_term,
            &(s.pty_cols as i64),
            &(s.pty_rows as i64),
            &s.gateway,
            &i(s.started_ms),
            &oi(s.ended_ms),
            &oi(s.last_input_ms),
            &i(s.bytes_in),
            &i(s.bytes_out),
            &s.end_reason,
            &s.end_detail,
            &s.terminated_by,
            &s.decision,
            &s.linked_session,
            &s.previous_owners,
            &s.client_crypto,
            &s.target_crypto,
            &s.client_location,
            &s.tcp_json(),
        ],
    )
    .await
    .context("cannot record session")?;
    Ok(())
}

pub(super) async fn session_update(c: &Db, s: &SessionRecord) -> Result<()> {
    let s = s.inert();
    c.execute(
        "UPDATE sessions SET state=$2, client_version=$3, policy=$4, pty_term=$5, pty_cols=$6,
         pty_rows=$7, ended_ms=$8, last_input_ms=$9, bytes_in=$10, bytes_out=$11,
         end_reason=$12, end_detail=$13, terminated_by=$14, actor=$15, previous_owners=$16,
         decision=$17, client_crypto=$18, target_crypto=$19, tcp=$20 WHERE id=$1",
        &[
            &s.id,
            &s.state.as_str(),
            &s.client_version,
            &s.policy,
            &s.pty_term,
            &(s.pty_cols as i64),
            &(s.pty_rows as i64),
            &oi(s.ended_ms),
            &oi(s.last_input_ms),
            &i(s.bytes_in),
            &i(s.bytes_out),
            &s.end_reason,
            &s.end_detail,
            &s.terminated_by,
            &s.actor,
            &s.previous_owners,
            &s.decision,
            &s.client_crypto,
            &s.target_crypto,
            &s.tcp_json(),
        ],
    )
    .await
    .context("cannot update session")?;
    Ok(())
}

/// `select` from the sessions matching `q`'s filters; with `tail` (order, and the limit as $10),
/// a page of them.
async fn sessions_query(
    c: &Db,
    q: &SessionQuery,
    select: &str,
    tail: Option<&str>,
) -> Result<Vec<tokio_postgres::Row>> {
    let (ms, id) = match &q.before {
        Some((ms, id)) => (Some(i(*ms)), Some(id.clone())),
        None => (None, None),
    };
    let (protocol, state) = (
        q.protocol.map(Protocol::as_str),
        q.state.map(SessionState::as_str),
    );
    let limit = q.limit.max(1) as i64;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &q.actor,
        &q.target,
        &protocol,
        &state,
        &q.live,
        &q.targets_in,
        &ms,
        &id,
        &q.policy,
    ];
    if tail.is_some() {
        params.push(&limit);
    }
    let sql = format!(
        "SELECT {select} FROM sessions WHERE {SESSION_WHERE} {}",
        tail.unwrap_or("")
    );
    Ok(c.query(&sql, &params).await?)
}

/// A page of the sessions matching `q`, newest first.
pub(super) async fn sessions_page(c: &Db, q: &SessionQuery) -> Result<Vec<SessionRecord>> {
    let tail = "ORDER BY started_ms DESC, id DESC LIMIT $10";
    let rows = sessions_query(c, q, SESSION_COLS, Some(tail)).await?;
    rows.iter().map(session_from_row).collect()
}

/// Append one event to the cluster's chain. The chain is one sequence for every gateway: the
/// append takes a transaction-scoped advisory lock, so concurrent writers (on any gateway) take
/// turns, each reading the head that the one before it committed. Order is commit order.
pub(super) async fn audit_append(c: &Db, e: &AuditEntry) -> Result<()> {
    super::cluster::in_tx(c, async {
        c.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await?;
        let head = c
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
            .await?;
        let head = match head {
            Some(r) => Some((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?)),
            None => None,
        };
        let row = e.chained(head);
        c.execute(
            &format!("INSERT INTO audit ({AUDIT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"),
            &[
                &row.seq,
                &row.id,
                &i(row.at_ms),
                &row.kind,
                &row.actor,
                &row.session_id,
                &row.detail,
                &row.prev_hash,
                &row.hash,
            ],
        )
        .await?;
        Ok(())
    })
    .await
}

/// The advisory lock every audit append takes.
const AUDIT_LOCK: i64 = 0x5761_7264_656e_0002;

/// How many sessions match `q` (its cursor included, its limit not).
pub(super) async fn sessions_count(c: &Db, q: &SessionQuery) -> Result<u64> {
    let rows = sessions_query(c, q, "count(*)", None).await?;
    let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
    Ok(n.max(0) as u64)
}

/// The newest events matching `q`, oldest first, and how many older ones match too.
pub(super) async fn audit_page(c: &Db, q: &AuditQuery) -> Result<(Vec<AuditRow>, u64)> {
    let filter = "($1::text IS NULL OR kind=$1) AND ($2::text IS NULL OR session_id=$2) AND ($3::bigint IS NULL OR seq < $3)";
    let rows = c
        .query(
            &format!("SELECT {AUDIT_COLS} FROM audit WHERE {filter} ORDER BY seq DESC LIMIT $4"),
            &[&q.kind, &q.session, &q.before, &(q.limit.max(1) as i64)],
        )
        .await?;
    let mut v = rows
        .iter()
        .map(audit_from_row)
        .collect::<Result<Vec<_>>>()?;
    v.reverse();
    let older = match v.first() {
        Some(first) => {
            let r = c
                .query_one(
                    &format!("SELECT count(*) FROM audit WHERE {filter}"),
                    &[&q.kind, &q.session, &Some(first.seq)],
                )
                .await?;
            r.try_get::<_, i64>(0)?.max(0) as u64
        }
        None => 0,
    };
    Ok((v, older))
}

/// When each of `ids` ended (or started, while it runs).
pub(super) async fn session_times(
    c: &Db,
    ids: &[String],
) -> Result<std::collections::HashMap<String, u64>> {
    let rows = c
        .query(
            "SELECT id, COALESCE(ended_ms, started_ms) FROM sessions WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)?.max(0) as u64)))
        .collect()
}
