//! The cluster store: PostgreSQL, shared by every gateway of a cluster.
//!
//! One task owns the connection and runs the jobs callers queue, in order, as the SQLite
//! thread does (a read sees every write queued before it, `*_later` writes included). The
//! queued writes (`*_later`: session updates, audit events, lease releases) survive an outage:
//! while PostgreSQL cannot be reached they wait in a backlog, retried every second and written
//! first once it answers again, so a restart of the database loses nothing the gateway saw.
//! Calls that wait for an answer fail at once instead, with a message that names the store:
//! admission then fails closed, and live sessions (which only queue) keep running.

mod access;
mod cluster;
mod db;
mod sql;
mod tables;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use db::Db;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Later = Box<dyn Fn(Arc<Db>) -> BoxFuture<Result<()>> + Send + Sync>;
/// A call's job: given the connection (or why there is none), it answers its caller.
type Answer = Box<dyn FnOnce(Result<Arc<Db>, String>) -> BoxFuture<()> + Send>;

enum Job {
    /// Answered through its own channel: a connection, or why there is none.
    Call(Answer),
    /// Written in order, retried while the database is away.
    Later(&'static str, Later),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<Result<()>>),
}

/// How long a caller waits for an answer before it gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most queued writes kept while the database is away (about 1 KiB each); beyond, new ones are
/// dropped with an error in the log.
const BACKLOG: usize = 200_000;
/// The advisory lock that makes gateways starting at once run the migrations one at a time.
const MIGRATION_LOCK: i64 = 0x5761_7264_656e_0001;

/// The handle to the store task.
pub struct Postgres {
    jobs: mpsc::UnboundedSender<Job>,
    /// The URL without its password, for messages.
    shown: Arc<str>,
}

/// `postgres://user:secret@host/db` without the secret.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A connection attempt whose connection task is boxed (plain and TLS connections differ in
/// type), logged when it ends.
async fn spawn<S, T>(
    attempt: impl std::future::Future<
        Output = std::result::Result<
            std::result::Result<(Client, tokio_postgres::Connection<S, T>), tokio_postgres::Error>,
            tokio::time::error::Elapsed,
        >,
    >,
) -> std::result::Result<
    std::result::Result<
        (
            Client,
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ),
        tokio_postgres::Error,
    >,
    tokio::time::error::Elapsed,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    attempt.await.map(|r| {
        r.map(|(client, connection)| {
            let task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                Box::pin(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!("store: the PostgreSQL connection ended: {e}");
                    }
                });
            (client, task)
        })
    })
}

/// How the store's connections are made: plain TCP, or TLS verified against `[store] ca_file`.
#[derive(Clone)]
enum Tls {
    Plain,
    Verified(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    fn new(roots: Option<tokio_rustls::rustls::RootCertStore>) -> Result<Tls> {
        let Some(roots) = roots else {
            return Ok(Tls::Plain);
        };
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS to the store")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Tls::Verified(
            tokio_postgres_rustls::MakeRustlsConnect::new(config),
        ))
    }
}

async fn connect(url: &str, shown: &str, tls: &Tls) -> Result<Client> {
    // TLS is required, not preferred, when a CA is given: a server without it is refused.
    let (client, connection) = match tls {
        Tls::Plain => {
            spawn(tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_postgres::connect(url, NoTls),
            ))
            .await
        }
        Tls::Verified(make) => {
            let mut config: tokio_postgres::Config = url
                .parse()
                .with_context(|| format!("the store URL ({shown}) does not parse"))?;
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            spawn(tokio::time::timeout(
                CONNECT_TIMEOUT,
                config.connect(make.clone()),
            ))
            .await
        }
    }
    .map_err(|_| {
        anyhow!("the store (PostgreSQL at {shown}) did not answer within {CONNECT_TIMEOUT:?}")
    })?
    .with_context(|| format!("the store (PostgreSQL at {shown}) is unreachable"))?;
    tokio::spawn(connection);
    // Notices ("already exists, skipping" from the migrations) are not worth a log line.
    client
        .batch_execute("SET client_min_messages = warning")
        .await
        .with_context(|| format!("the store (PostgreSQL at {shown}) refused a setting"))?;
    Ok(client)
}

impl Postgres {
    /// Connect to `url`, bring the schema up to date (one gateway at a time), and start the
    /// store task.
    pub async fn open(
        url: &str,
        ca: Option<tokio_rustls::rustls::RootCertStore>,
    ) -> Result<Postgres> {
        let shown: Arc<str> = without_password(url).into();
        let tls = Tls::new(ca)?;
        let mut client = connect(url, &shown, &tls).await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .context("cannot take the migration lock")?;
        let migrated = crate::store::embedded::migrations::runner()
            .run_async(&mut client)
            .await
            .with_context(|| format!("cannot migrate the store (PostgreSQL at {shown})"));
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        migrated?;
        let (jobs, queue) = mpsc::unbounded_channel();
        let conn = Conn {
            url: url.to_string(),
            shown: shown.clone(),
            tls,
            client: Some(Arc::new(Db::new(client))),
            failed: None,
        };
        tokio::spawn(worker(conn, queue));
        Ok(Postgres { jobs, shown })
    }

    /// Run `f` with the connection and wait for its answer.
    async fn call<R, F, Fut>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(Arc<Db>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Call(Box::new(move |c| {
            Box::pin(async move {
                let r = match c {
                    Ok(c) => f(c).await,
                    Err(e) => Err(anyhow!(e)),
                };
                let _ = tx.send(r);
            })
        }));
        self.jobs
            .send(job)
            .map_err(|_| anyhow!("the store task has stopped"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(anyhow!("the store task stopped during a call")),
            Err(_) => Err(anyhow!(
                "the store (PostgreSQL at {}) did not answer within {CALL_TIMEOUT:?}",
                self.shown
            )),
        }
    }

    /// Queue a write; `f` may run more than once (it is retried while the database is away).
    fn later<F, Fut>(&self, what: &'static str, f: F)
    where
        F: Fn(Arc<Db>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let job = Job::Later(what, Box::new(move |c| Box::pin(f(c))));
        if self.jobs.send(job).is_err() {
            tracing::error!("store: cannot {what}: the store task has stopped");
        }
    }

    async fn flush_queue(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Flush(tx))
            .map_err(|_| anyhow!("the store task has stopped"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(anyhow!("the store task stopped during a flush")),
            Err(_) => Err(anyhow!(
                "the store (PostgreSQL at {}) did not take the queued writes within {CALL_TIMEOUT:?}",
                self.shown
            )),
        }
    }
}

/// The connection as the task holds it: up, or down since a failed attempt (retried at most
/// once a second, so that calls during an outage fail at once).
struct Conn {
    url: String,
    shown: Arc<str>,
    tls: Tls,
    client: Option<Arc<Db>>,
    failed: Option<(Instant, String)>,
}

impl Conn {
    async fn get(&mut self) -> Result<Arc<Db>, String> {
        if let Some(c) = &self.client {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            self.client = None;
        }
        if let Some((at, why)) = &self.failed {
            if at.elapsed() < Duration::from_secs(1) {
                return Err(why.clone());
            }
        }
        match connect(&self.url, &self.shown, &self.tls).await {
            Ok(c) => {
                if self.failed.take().is_some() {
                    tracing::info!("store: PostgreSQL at {} answers again", self.shown);
                }
                let c = Arc::new(Db::new(c));
                self.client = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let why = format!("{e:#}");
                if self.failed.is_none() {
                    tracing::error!("store: {why}; queued writes wait until it answers");
                }
                self.failed = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }
}

/// Write the backlog, oldest first; `false` when the connection went away before the end.
async fn drain(conn: &mut Conn, backlog: &mut VecDeque<(&'static str, Later)>) -> bool {
    while let Some((what, f)) = backlog.front() {
        let Ok(c) = conn.get().await else {
            return false;
        };
        match f(c.clone()).await {
            Ok(()) => {}
            Err(_) if c.is_closed() => return false,
            Err(e) => tracing::error!("store: cannot {what}: {e:#}"),
        }
        backlog.pop_front();
    }
    true
}

async fn worker(mut conn: Conn, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut backlog: VecDeque<(&'static str, Later)> = VecDeque::new();
    let mut dropped = 0u64;
    loop {
        let job = if backlog.is_empty() {
            match queue.recv().await {
                Some(j) => Some(j),
                None => break,
            }
        } else {
            tokio::select! {
                j = queue.recv() => match j {
                    Some(j) => Some(j),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => None,
            }
        };
        let written = backlog.is_empty() || drain(&mut conn, &mut backlog).await;
        match job {
            None => {}
            Some(Job::Call(f)) => {
                let c = if written {
                    conn.get().await
                } else {
                    Err(conn
                        .failed
                        .as_ref()
                        .map(|(_, w)| w.clone())
                        .unwrap_or_else(|| {
                            format!("the store (PostgreSQL at {}) is unreachable", conn.shown)
                        }))
                };
                f(c).await;
            }
            Some(Job::Later(what, f)) => {
                if written {
                    if let Ok(c) = conn.get().await {
                        match f(c.clone()).await {
                            Ok(()) => continue,
                            Err(e) if !c.is_closed() => {
                                tracing::error!("store: cannot {what}: {e:#}");
                                continue;
                            }
                            Err(_) => {}
                        }
                    }
                }
                if backlog.len() < BACKLOG {
                    backlog.push_back((what, f));
                } else {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::error!("store: cannot {what}: PostgreSQL is away and {BACKLOG} writes already wait; {dropped} dropped so far");
                    }
                }
            }
            Some(Job::Flush(tx)) => {
                let r = if written {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "{} queued writes wait for the store (PostgreSQL at {})",
                        backlog.len(),
                        conn.shown
                    ))
                };
                let _ = tx.send(r);
            }
        }
    }
    // Every handle is gone: a last attempt at what is still queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backlog.is_empty() && Instant::now() < deadline {
        if !drain(&mut conn, &mut backlog).await {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if !backlog.is_empty() {
        tracing::error!(
            "store: {} queued writes could not be written to PostgreSQL at {} before the gateway stopped",
            backlog.len(),
            conn.shown
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(
            super::without_password("postgres://wg:s3cret@db:5432/wardengate"),
            "postgres://wg:***@db:5432/wardengate"
        );
        assert_eq!(
            super::without_password("postgres://wg@db/wardengate"),
            "postgres://wg@db/wardengate"
        );
        assert_eq!(
            super::without_password("host=/tmp user=wg"),
            "host=/tmp user=wg"
        );
    }
}
