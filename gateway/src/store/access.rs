//! Network access sessions in the store: one row each, the session as JSON, with the columns
//! lists are filtered by (its person, its gateway, whether it is live, whether it may still hold
//! rules).

use anyhow::Result;
use async_trait::async_trait;
use rusqlite::params;

use super::{Db, Sqlite};

/// One access session as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    pub id: String,
    pub user: String,
    pub gateway: String,
    /// Pending, active, partial or expiring: it counts against its person's limit.
    pub live: bool,
    /// It may still hold rules: live, or ended with a removal that failed (tried again).
    pub holds: bool,
    pub created_ms: u64,
    /// `wardengate_api::AccessSession` as JSON.
    pub body: String,
}

/// Which access sessions to list: newest first, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct AccessQuery {
    pub user: Option<String>,
    pub gateway: Option<String>,
    pub live_only: bool,
    pub holding_only: bool,
    pub limit: u32,
}

/// The access-session part of every store.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Keep a session (insert or replace); answers once written.
    async fn access_put(&self, row: AccessRow) -> Result<()>;
    /// Insert a new session unless its person already has `max` live ones, in one step (across
    /// the cluster on PostgreSQL): `Err(current)` when full.
    async fn access_insert_limited(
        &self,
        row: AccessRow,
        max: Option<u32>,
    ) -> Result<std::result::Result<(), u32>>;
    async fn access_get(&self, id: &str) -> Result<Option<AccessRow>>;
    async fn access_list(&self, q: AccessQuery) -> Result<Vec<AccessRow>>;
}

const COLS: &str = r#"id, "user", gateway, live, holds, created_ms, body"#;

impl Db {
    pub fn access_put(&self, r: &AccessRow) -> Result<()> {
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO access_sessions ({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"
            ),
            params![
                r.id,
                r.user,
                r.gateway,
                i64::from(r.live),
                i64::from(r.holds),
                r.created_ms as i64,
                r.body
            ],
        )?;
        Ok(())
    }

    /// Count and insert at once (the store's one thread runs nothing in between).
    pub fn access_insert_limited(
        &self,
        r: &AccessRow,
        max: Option<u32>,
    ) -> Result<std::result::Result<(), u32>> {
        if let Some(max) = max {
            let current: i64 = self.conn.query_row(
                r#"SELECT count(*) FROM access_sessions WHERE "user" = ?1 AND live = 1"#,
                [&r.user],
                |row| row.get(0),
            )?;
            let current = current.clamp(0, i64::from(u32::MAX)) as u32;
            if current >= max {
                return Ok(Err(current));
            }
        }
        self.access_put(r)?;
        Ok(Ok(()))
    }

    pub fn access_list(&self, q: &AccessQuery, id: Option<&str>) -> Result<Vec<AccessRow>> {
        let sql = format!(
            r#"SELECT {COLS} FROM access_sessions
               WHERE (?1 IS NULL OR "user" = ?1) AND (?2 IS NULL OR gateway = ?2)
                 AND (?3 = 0 OR live = 1) AND (?4 = 0 OR holds = 1) AND (?5 IS NULL OR id = ?5)
               ORDER BY created_ms DESC, id DESC LIMIT ?6"#
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![
                q.user,
                q.gateway,
                i64::from(q.live_only),
                i64::from(q.holding_only),
                id,
                i64::from(q.limit.max(1))
            ],
            |r| {
                Ok(AccessRow {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    gateway: r.get(2)?,
                    live: r.get::<_, i64>(3)? != 0,
                    holds: r.get::<_, i64>(4)? != 0,
                    created_ms: r.get::<_, i64>(5)?.max(0) as u64,
                    body: r.get(6)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[async_trait]
impl AccessStore for Sqlite {
    async fn access_put(&self, row: AccessRow) -> Result<()> {
        self.call(move |db| db.access_put(&row)).await
    }

    async fn access_insert_limited(
        &self,
        row: AccessRow,
        max: Option<u32>,
    ) -> Result<std::result::Result<(), u32>> {
        self.call(move |db| db.access_insert_limited(&row, max))
            .await
    }

    async fn access_get(&self, id: &str) -> Result<Option<AccessRow>> {
        let id = id.to_owned();
        let q = AccessQuery {
            limit: 1,
            ..Default::default()
        };
        self.call(move |db| Ok(db.access_list(&q, Some(&id))?.pop()))
            .await
    }

    async fn access_list(&self, q: AccessQuery) -> Result<Vec<AccessRow>> {
        self.call(move |db| db.access_list(&q, None)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rows_are_kept_replaced_filtered_and_limited() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(&dir.path().join("s.db")).expect("open");
        let row = |id: &str, user: &str, live: bool, at: u64| AccessRow {
            id: id.into(),
            user: user.into(),
            gateway: "gw".into(),
            live,
            holds: live,
            created_ms: at,
            body: format!("{{\"id\":\"{id}\"}}"),
        };
        db.access_put(&row("a1", "alice", true, 1)).expect("put");
        db.access_put(&row("a2", "alice", true, 2)).expect("put");
        db.access_put(&row("b1", "bob", true, 3)).expect("put");
        db.access_put(&row("a1", "alice", false, 1))
            .expect("replace");
        // Ended, but a removal failed: not live, still holding.
        let stuck = AccessRow {
            holds: true,
            ..row("a0", "alice", false, 0)
        };
        db.access_put(&stuck).expect("put");
        let q = |user: Option<&str>, live_only, holding_only| AccessQuery {
            user: user.map(str::to_string),
            gateway: Some("gw".into()),
            live_only,
            holding_only,
            limit: 10,
        };
        let ids = |v: Vec<AccessRow>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let list = |q: AccessQuery| ids(db.access_list(&q, None).expect("list"));
        assert_eq!(list(q(Some("alice"), false, false)), ["a2", "a1", "a0"]);
        assert_eq!(list(q(Some("alice"), true, false)), ["a2"]);
        assert_eq!(list(q(None, true, false)), ["b1", "a2"]);
        assert_eq!(list(q(None, false, true)), ["b1", "a2", "a0"]);
        let one = db
            .access_list(&q(None, false, false), Some("a1"))
            .expect("get");
        assert_eq!(one, vec![row("a1", "alice", false, 1)]);
        // alice holds one live session: a limit of 1 refuses the next, 2 lets it in.
        assert_eq!(
            db.access_insert_limited(&row("a3", "alice", true, 4), Some(1))
                .expect("insert"),
            Err(1)
        );
        assert_eq!(
            db.access_insert_limited(&row("a3", "alice", true, 4), Some(2))
                .expect("insert"),
            Ok(())
        );
        assert_eq!(list(q(Some("alice"), true, false)), ["a3", "a2"]);
    }
}
