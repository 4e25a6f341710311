//! The store's connection with a cache of prepared statements: each SQL text is prepared once
//! per connection (one round trip saved on every later call; tokio-postgres otherwise prepares
//! an unnamed statement each time). The cache belongs to the connection: a reconnect starts an
//! empty one. It holds at most [`CACHED`] texts; others are prepared each time.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement};

/// The most statements kept (the store has a few dozen; filtered lists vary their text).
const CACHED: usize = 256;

pub struct Db {
    client: Client,
    cache: Mutex<HashMap<String, Statement>>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Db {
    pub fn new(client: Client) -> Db {
        Db {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn statement(&self, sql: &str) -> Result<Statement, Error> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(sql).cloned()) {
            return Ok(s);
        }
        let s = self.client.prepare(sql).await?;
        if let Ok(mut c) = self.cache.lock() {
            if c.len() < CACHED {
                c.insert(sql.to_string(), s.clone());
            }
        }
        Ok(s)
    }

    /// Run `f` with the statement for `sql`; when the server no longer knows it, or its plan
    /// changed shape under it (a schema change by another gateway's upgrade), prepare it
    /// afresh and run once more.
    async fn run<T, F, Fut>(&self, sql: &str, f: F) -> Result<T, Error>
    where
        F: Fn(Statement) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let s = self.statement(sql).await?;
        match f(s).await {
            Err(e) if stale(&e) => {
                if let Ok(mut c) = self.cache.lock() {
                    c.remove(sql);
                }
                f(self.statement(sql).await?).await
            }
            r => r,
        }
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.run(sql, |s| async move { self.client.query(&s, params).await })
            .await
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        self.run(
            sql,
            |s| async move { self.client.query_one(&s, params).await },
        )
        .await
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        self.run(
            sql,
            |s| async move { self.client.query_opt(&s, params).await },
        )
        .await
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.run(
            sql,
            |s| async move { self.client.execute(&s, params).await },
        )
        .await
    }

    /// Statements without parameters, not prepared (`BEGIN`, `COMMIT`, settings).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).await
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// The server lost the prepared statement (26000) or refuses its cached plan (0A000, "cached
/// plan must not change result type").
fn stale(e: &Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_SQL_STATEMENT_NAME || *c == SqlState::FEATURE_NOT_SUPPORTED
    })
}
