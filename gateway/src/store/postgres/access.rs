//! Network access sessions in PostgreSQL: the same rows and answers as `store/access.rs`.

use anyhow::Result;
use async_trait::async_trait;

use super::sql::i;
use super::Postgres;
use crate::store::access::{AccessQuery, AccessRow, AccessStore};

fn row(r: &tokio_postgres::Row) -> Result<AccessRow> {
    Ok(AccessRow {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        gateway: r.try_get(2)?,
        live: r.try_get::<_, i64>(3)? != 0,
        created_ms: r.try_get::<_, i64>(4)?.max(0) as u64,
        body: r.try_get(5)?,
    })
}

#[async_trait]
impl AccessStore for Postgres {
    async fn access_put(&self, r: AccessRow) -> Result<()> {
        self.call(move |c| async move {
            c.execute(
                r#"INSERT INTO access_sessions (id, "user", gateway, live, created_ms, body)
                   VALUES ($1,$2,$3,$4,$5,$6)
                   ON CONFLICT (id) DO UPDATE SET live = $4, body = $6"#,
                &[
                    &r.id,
                    &r.user,
                    &r.gateway,
                    &i64::from(r.live),
                    &i(r.created_ms),
                    &r.body,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn access_get(&self, id: &str) -> Result<Option<AccessRow>> {
        let id = id.to_owned();
        self.call(move |c| async move {
            let r = c
                .query_opt(
                    r#"SELECT id, "user", gateway, live, created_ms, body FROM access_sessions
                       WHERE id = $1"#,
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
                    r#"SELECT id, "user", gateway, live, created_ms, body FROM access_sessions
                       WHERE ($1::TEXT IS NULL OR "user" = $1) AND ($2::TEXT IS NULL OR gateway = $2)
                         AND ($3::BIGINT = 0 OR live = 1)
                       ORDER BY created_ms DESC, id DESC LIMIT $4"#,
                    &[&q.user, &q.gateway, &i64::from(q.live_only), &i64::from(q.limit.max(1))],
                )
                .await?;
            rows.iter().map(row).collect()
        })
        .await
    }
}
