//! Network access sessions in PostgreSQL: the same rows and answers as `store/access.rs`; the
//! limited insert holds an advisory lock on the person, so gateways count one at a time.

use anyhow::Result;
use async_trait::async_trait;

use super::cluster::in_tx;
use super::db::Db;
use super::sql::i;
use super::Postgres;
use crate::store::access::{AccessQuery, AccessRow, AccessStore};

const COLS: &str = r#"id, "user", gateway, live, holds, created_ms, body"#;

fn row(r: &tokio_postgres::Row) -> Result<AccessRow> {
    Ok(AccessRow {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        gateway: r.try_get(2)?,
        live: r.try_get::<_, i64>(3)? != 0,
        holds: r.try_get::<_, i64>(4)? != 0,
        created_ms: r.try_get::<_, i64>(5)?.max(0) as u64,
        body: r.try_get(6)?,
    })
}

async fn put(c: &Db, r: &AccessRow) -> Result<()> {
    c.execute(
        &format!(
            "INSERT INTO access_sessions ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)
             ON CONFLICT (id) DO UPDATE SET live = $4, holds = $5, body = $7"
        ),
        &[
            &r.id,
            &r.user,
            &r.gateway,
            &i64::from(r.live),
            &i64::from(r.holds),
            &i(r.created_ms),
            &r.body,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl AccessStore for Postgres {
    async fn access_put(&self, r: AccessRow) -> Result<()> {
        self.call(move |c| async move { put(&c, &r).await }).await
    }

    async fn access_insert_limited(
        &self,
        r: AccessRow,
        max: Option<u32>,
    ) -> Result<std::result::Result<(), u32>> {
        self.call(move |c| async move {
            in_tx(&c, async {
                if let Some(max) = max {
                    // One count at a time per person, across every gateway of the cluster.
                    c.execute("SELECT pg_advisory_xact_lock(hashtext('access:' || $1))", &[&r.user])
                        .await?;
                    let n: i64 = c
                        .query_one(
                            r#"SELECT count(*) FROM access_sessions WHERE "user" = $1 AND live = 1"#,
                            &[&r.user],
                        )
                        .await?
                        .try_get(0)?;
                    let current = n.clamp(0, i64::from(u32::MAX)) as u32;
                    if current >= max {
                        return Ok(Err(current));
                    }
                }
                put(&c, &r).await?;
                Ok(Ok(()))
            })
            .await
        })
        .await
    }

    async fn access_get(&self, id: &str) -> Result<Option<AccessRow>> {
        let id = id.to_owned();
        self.call(move |c| async move {
            let r = c
                .query_opt(
                    &format!("SELECT {COLS} FROM access_sessions WHERE id = $1"),
                    &[&id],
                )
                .await?;
            r.as_ref().map(row).transpose()
        })
        .await
    }

    async fn access_list(&self, q: AccessQuery) -> Result<Vec<AccessRow>> {
        self.call(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        r#"SELECT {COLS} FROM access_sessions
                           WHERE ($1::TEXT IS NULL OR "user" = $1) AND ($2::TEXT IS NULL OR gateway = $2)
                             AND ($3::BIGINT = 0 OR live = 1) AND ($4::BIGINT = 0 OR holds = 1)
                           ORDER BY created_ms DESC, id DESC LIMIT $5"#
                    ),
                    &[
                        &q.user,
                        &q.gateway,
                        &i64::from(q.live_only),
                        &i64::from(q.holding_only),
                        &i64::from(q.limit.max(1)),
                    ],
                )
                .await?;
            rows.iter().map(row).collect()
        })
        .await
    }
}
