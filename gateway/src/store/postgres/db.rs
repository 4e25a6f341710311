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

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let s = self.statement(sql).await?;
        self.client.query(&s, params).await
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let s = self.statement(sql).await?;
        self.client.query_one(&s, params).await
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        let s = self.statement(sql).await?;
        self.client.query_opt(&s, params).await
    }

    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let s = self.statement(sql).await?;
        self.client.execute(&s, params).await
    }

    /// Statements without parameters, not prepared (`BEGIN`, `COMMIT`, settings).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).await
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}
