//! Gateways, heartbeats and leases in PostgreSQL. Times are the database's clock
//! (`clock_timestamp()`), so gateways whose clocks disagree still agree on what has lapsed.

use std::future::Future;
use std::time::Duration;

use super::db::Db;
use anyhow::Result;
use wardengate_policy::{Counts, LimitDenial, Limits, Subject};

use crate::store::sessions::{session_from_row, SESSION_COLS};
use crate::store::{GatewayRow, LeaseRow, Lost};

const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
/// Every lease decision of the cluster takes this lock, one at a time.
const LEASE_LOCK: i64 = 0x5761_7264_656e_0003;
/// Declaring a gateway lost takes this one, so two peers never both end its sessions.
const REAP_LOCK: i64 = 0x5761_7264_656e_0004;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Run `body` in a transaction: committed when it succeeds, rolled back when it fails.
pub(super) async fn in_tx<R>(c: &Db, body: impl Future<Output = Result<R>>) -> Result<R> {
    in_tx_keep(c, async { body.await.map(|r| (r, true)) }).await
}

/// [`in_tx`], where `body` also says whether to keep what it did (`false`: rolled back, its
/// answer still returned — a refusal that must leave no trace).
async fn in_tx_keep<R>(c: &Db, body: impl Future<Output = Result<(R, bool)>>) -> Result<R> {
    c.batch_execute("BEGIN").await?;
    match body.await {
        Ok((r, true)) => {
            c.batch_execute("COMMIT").await?;
            Ok(r)
        }
        Ok((r, false)) => {
            c.batch_execute("ROLLBACK").await?;
            Ok(r)
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

pub(super) async fn join(c: &Db, name: &str, url: &str) -> Result<()> {
    in_tx(c, async {
        c.execute(
            &format!(
                "INSERT INTO gateways (name, api_url, state, started_ms, heartbeat_ms)
                 VALUES ($1, $2, 'up', {NOW_MS}, {NOW_MS})
                 ON CONFLICT (name) DO UPDATE SET api_url=$2, state='up',
                 started_ms={NOW_MS}, heartbeat_ms={NOW_MS}"
            ),
            &[&name, &url],
        )
        .await?;
        // A gateway that starts holds no session yet: slots it left behind are free.
        c.execute("DELETE FROM leases WHERE gateway = $1", &[&name])
            .await?;
        Ok(())
    })
    .await
}

pub(super) async fn heartbeat(c: &Db, name: &str, ttl: Duration) -> Result<bool> {
    let n = c
        .execute(
            &format!(
                "UPDATE gateways SET heartbeat_ms = {NOW_MS} WHERE name = $1 AND state = 'up'"
            ),
            &[&name],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    c.execute(
        &format!("UPDATE leases SET expires_ms = {NOW_MS} + $2 WHERE gateway = $1"),
        &[&name, &ms(ttl)],
    )
    .await?;
    Ok(true)
}

pub(super) async fn gateways(c: &Db) -> Result<Vec<GatewayRow>> {
    let rows = c
        .query(
            "SELECT name, api_url, state, started_ms, heartbeat_ms FROM gateways ORDER BY name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(GatewayRow {
                name: r.try_get(0)?,
                api_url: r.try_get(1)?,
                state: r.try_get(2)?,
                started_ms: r.try_get::<_, i64>(3)?.max(0) as u64,
                heartbeat_ms: r.try_get::<_, i64>(4)?.max(0) as u64,
            })
        })
        .collect()
}

/// Count `lease` against the cluster's limits and hold it, or say which level is full. A
/// refusal changes nothing (the `freed` session keeps its lease).
pub(super) async fn acquire(
    c: &Db,
    lease: &LeaseRow,
    limits: &Limits,
    pool: &str,
    freed: Option<&str>,
    ttl: Duration,
) -> Result<Result<(), LimitDenial>> {
    in_tx_keep(c, async {
        c.execute("SELECT pg_advisory_xact_lock($1)", &[&LEASE_LOCK])
            .await?;
        c.execute(
            &format!("DELETE FROM leases WHERE expires_ms < {NOW_MS} OR session_id = $1"),
            &[&freed],
        )
        .await?;
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE actor = $1), count(*) FILTER (WHERE target = $2),
                        count(*) FILTER (WHERE policy = $3), count(*) FROM leases",
                &[&lease.actor, &lease.target, &lease.policy],
            )
            .await?;
        let n = |i: usize| -> Result<u32> { Ok(row.try_get::<_, i64>(i)?.max(0) as u32) };
        let counts = Counts {
            actor: n(0)?,
            target: n(1)?,
            policy: n(2)?,
            pool: n(3)?,
        };
        let subject = Subject {
            actor: &lease.actor,
            target: &lease.target,
            policy: &lease.policy,
            pool,
        };
        if let Some(d) = wardengate_policy::first_full(&counts, &subject, limits) {
            return Ok((Err(d), false));
        }
        c.execute(
            &format!(
                "INSERT INTO leases (session_id, gateway, actor, target, policy, expires_ms)
                 VALUES ($1, $2, $3, $4, $5, {NOW_MS} + $6)
                 ON CONFLICT (session_id) DO UPDATE SET gateway=$2, actor=$3, target=$4,
                 policy=$5, expires_ms={NOW_MS} + $6"
            ),
            &[
                &lease.session_id,
                &lease.gateway,
                &lease.actor,
                &lease.target,
                &lease.policy,
                &ms(ttl),
            ],
        )
        .await?;
        Ok((Ok(()), true))
    })
    .await
}

/// Declare lost every peer (not `me`) whose heartbeat is older than `ttl`: its leases go, its
/// open sessions end `failed` with reason `gateway_lost`.
pub(super) async fn reap(c: &Db, me: &str, ttl: Duration) -> Result<Vec<Lost>> {
    in_tx(c, async {
        c.execute("SELECT pg_advisory_xact_lock($1)", &[&REAP_LOCK])
            .await?;
        let rows = c
            .query(
                &format!(
                    "SELECT name FROM gateways WHERE state = 'up' AND name <> $1
                     AND heartbeat_ms < {NOW_MS} - $2"
                ),
                &[&me, &ms(ttl)],
            )
            .await?;
        let mut lost = Vec::new();
        for r in rows {
            let gateway: String = r.try_get(0)?;
            c.execute(
                "UPDATE gateways SET state = 'lost' WHERE name = $1",
                &[&gateway],
            )
            .await?;
            c.execute("DELETE FROM leases WHERE gateway = $1", &[&gateway])
                .await?;
            let detail =
                format!("gateway {gateway} stopped renewing its heartbeat (noticed by {me})");
            let ended = c
                .query(
                    &format!(
                        "UPDATE sessions SET state = 'failed', end_reason = 'gateway_lost',
                         end_detail = $2, ended_ms = {NOW_MS}
                         WHERE gateway = $1 AND state NOT IN ('closed','denied','failed','terminated')
                         RETURNING {SESSION_COLS}"
                    ),
                    &[&gateway, &detail],
                )
                .await?;
            let sessions = ended
                .iter()
                .map(session_from_row)
                .collect::<Result<Vec<_>>>()?;
            // Sessions that had ended there lately: their recordings may still have been
            // waiting in its spool, unsealed in the bucket.
            let recent = c
                .query(
                    &format!(
                        "SELECT id FROM sessions WHERE gateway = $1 AND state IN ('closed','failed')
                         AND end_reason IS DISTINCT FROM 'gateway_lost'
                         AND ended_ms > {NOW_MS} - 86400000 ORDER BY ended_ms DESC LIMIT 1000"
                    ),
                    &[&gateway],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<Vec<String>, _>>()?;
            lost.push(Lost {
                gateway,
                sessions,
                recent,
            });
        }
        Ok(lost)
    })
    .await
}

/// The oldest session `actor` holds an unexpired lease for, anywhere in the cluster.
pub(super) async fn oldest(c: &Db, actor: &str) -> Result<Option<String>> {
    let row = c
        .query_opt(
            &format!(
                "SELECT l.session_id FROM leases l JOIN sessions s ON s.id = l.session_id
                 WHERE l.actor = $1 AND l.expires_ms >= {NOW_MS}
                 ORDER BY s.started_ms, l.session_id LIMIT 1"
            ),
            &[&actor],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}
