//! The embedded store: a thread that owns the SQLite connection and runs the jobs callers queue,
//! in order, off the async runtime.

use std::path::Path;
use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use wardengate_recorder::audit::Checkpoint;

use super::{
    AuditEntry, AuditQuery, AuditRow, ConsoleSessionRow, Db, HostKey, SavedQuery, SecurityKeyRow,
    SessionQuery, SessionRecord, Store, VaultEntry,
};

type Job = Box<dyn FnOnce(&Db) + Send>;

/// How many jobs may wait for the store thread. The queue is bounded so that a flood of audited
/// events (failed logins from many sources) cannot grow memory without bound when the disk is
/// slow: a full queue makes the next caller wait, as every call did before the store had a
/// thread of its own.
const QUEUE: usize = 8192;

/// The handle to the store thread. The thread ends, after the jobs queued before, when the last
/// handle is dropped.
pub struct Sqlite {
    jobs: mpsc::SyncSender<Job>,
}

impl Sqlite {
    /// Open (or create and upgrade) the database at `path`, and start its thread.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let db = Db::open(path)?;
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("wardengate-store".into())
            .spawn(move || {
                for job in queue {
                    job(&db);
                }
            })
            .context("cannot start the store thread")?;
        Ok(Sqlite { jobs })
    }

    /// Run `f` on the store thread and wait for its answer.
    pub(super) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |db| {
                let _ = tx.send(f(db));
            }))
            .map_err(|_| anyhow!("the store thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the store thread stopped during a call"))?
    }

    /// Queue `f` and return at once; a failure is logged with `what`.
    fn later(&self, what: &'static str, f: impl FnOnce(&Db) -> Result<()> + Send + 'static) {
        let sent = self.jobs.send(Box::new(move |db| {
            if let Err(e) = f(db) {
                tracing::error!("store: cannot {what}: {e:#}");
            }
        }));
        if sent.is_err() {
            tracing::error!("store: cannot {what}: the store thread has stopped");
        }
    }
}

#[async_trait]
impl Store for Sqlite {
    async fn session_insert(&self, s: &SessionRecord) -> Result<()> {
        let s = s.clone();
        self.call(move |db| db.session_insert(&s)).await
    }

    fn session_insert_later(&self, s: SessionRecord) {
        self.later("record a session", move |db| db.session_insert(&s))
    }

    async fn session_update(&self, s: &SessionRecord) -> Result<()> {
        let s = s.clone();
        self.call(move |db| db.session_update(&s)).await
    }

    fn session_update_later(&self, s: SessionRecord) {
        self.later("update a session", move |db| db.session_update(&s))
    }

    async fn session_get(&self, id: &str) -> Result<Option<SessionRecord>> {
        let id = id.to_owned();
        self.call(move |db| db.session_get(&id)).await
    }

    async fn session_list(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>> {
        let q = q.clone();
        self.call(move |db| db.session_list(&q)).await
    }

    async fn session_count(&self, q: &SessionQuery) -> Result<u64> {
        let q = q.clone();
        self.call(move |db| db.session_count(&q)).await
    }

    async fn sessions_open_on(&self, gateway: &str) -> Result<Vec<SessionRecord>> {
        let gateway = gateway.to_owned();
        self.call(move |db| db.sessions_open_on(&gateway)).await
    }

    fn audit_append_later(&self, e: AuditEntry) {
        self.later("append an audit event", move |db| {
            db.audit_append(&e.kind, e.actor.as_deref(), e.session.as_deref(), &e.detail)
                .map(drop)
        })
    }

    async fn audit_list(&self, q: AuditQuery) -> Result<(Vec<AuditRow>, u64)> {
        self.call(move |db| db.audit_list(&q)).await
    }

    async fn audit_all(&self) -> Result<Vec<AuditRow>> {
        self.call(|db| db.audit_all()).await
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>> {
        self.call(|db| db.audit_head()).await
    }

    async fn checkpoint_add(&self, c: &Checkpoint) -> Result<()> {
        let c = c.clone();
        self.call(move |db| db.checkpoint_add(&c)).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.call(|db| db.checkpoints()).await
    }

    async fn hostkey_get(&self, target: &str, address: &str) -> Result<Option<(String, String)>> {
        let (target, address) = (target.to_owned(), address.to_owned());
        self.call(move |db| db.hostkey_get(&target, &address)).await
    }

    async fn hostkey_pin(&self, k: HostKey) -> Result<()> {
        self.call(move |db| db.hostkey_pin(&k)).await
    }

    async fn hostkey_forget(&self, target: &str) -> Result<usize> {
        let target = target.to_owned();
        self.call(move |db| db.hostkey_forget(&target)).await
    }

    async fn vault_put(&self, reference: &str, e: VaultEntry) -> Result<()> {
        let reference = reference.to_owned();
        self.call(move |db| db.vault_put(&reference, &e)).await
    }

    async fn vault_get(&self, reference: &str) -> Result<Option<VaultEntry>> {
        let reference = reference.to_owned();
        self.call(move |db| db.vault_get(&reference)).await
    }

    async fn vault_list(&self) -> Result<Vec<(String, String, u64)>> {
        self.call(|db| db.vault_list()).await
    }

    async fn key_put(&self, k: SecurityKeyRow) -> Result<()> {
        self.call(move |db| db.key_put(&k)).await
    }

    async fn key_list(&self, user: Option<&str>) -> Result<Vec<SecurityKeyRow>> {
        let user = user.map(str::to_owned);
        self.call(move |db| db.key_list(user.as_deref())).await
    }

    async fn key_remove(&self, user: &str, id: Option<&str>) -> Result<usize> {
        let (user, id) = (user.to_owned(), id.map(str::to_owned));
        self.call(move |db| db.key_remove(&user, id.as_deref()))
            .await
    }

    async fn console_put(&self, s: ConsoleSessionRow) -> Result<()> {
        self.call(move |db| db.console_put(&s)).await
    }

    async fn console_get(&self, sid_hash: &str) -> Result<Option<ConsoleSessionRow>> {
        let h = sid_hash.to_owned();
        self.call(move |db| db.console_get(&h)).await
    }

    async fn console_list(&self, username: Option<&str>) -> Result<Vec<ConsoleSessionRow>> {
        let u = username.map(str::to_owned);
        self.call(move |db| db.console_list(u.as_deref())).await
    }

    async fn console_remove(&self, ids: Vec<String>) -> Result<usize> {
        self.call(move |db| db.console_remove(&ids)).await
    }

    fn approval_put_later(&self, id: String, body: String) {
        self.later("keep an approval request", move |db| {
            db.approval_put(&id, &body)
        });
    }

    async fn approval_all(&self) -> Result<Vec<String>> {
        self.call(|db| db.approval_all()).await
    }

    fn approval_remove_later(&self, ids: Vec<String>) {
        self.later("forget approval requests", move |db| {
            db.approval_remove(&ids)
        });
    }

    async fn token_put(&self, hash: &str, user: &str, expires_ms: u64) -> Result<()> {
        let (h, u) = (hash.to_owned(), user.to_owned());
        self.call(move |db| db.token_put(&h, &u, expires_ms)).await
    }

    async fn token_user(&self, hash: &str, now: u64) -> Result<Option<String>> {
        let h = hash.to_owned();
        self.call(move |db| db.token_user(&h, now)).await
    }

    async fn token_remove(&self, hash: &str, now: u64) -> Result<Option<String>> {
        let h = hash.to_owned();
        self.call(move |db| db.token_remove(&h, now)).await
    }

    async fn token_purge(&self, now: u64) -> Result<usize> {
        self.call(move |db| db.token_purge(now)).await
    }

    async fn query_put(&self, q: SavedQuery) -> Result<()> {
        self.call(move |db| db.query_put(&q)).await
    }

    async fn query_list(&self, owner: &str) -> Result<Vec<SavedQuery>> {
        let o = owner.to_owned();
        self.call(move |db| db.query_list(&o)).await
    }

    async fn query_remove(&self, owner: &str, name: &str) -> Result<bool> {
        let (o, n) = (owner.to_owned(), name.to_owned());
        self.call(move |db| db.query_remove(&o, &n)).await
    }

    async fn flush(&self) -> Result<()> {
        self.call(|_| Ok(())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs run in the order they were queued: a read sees the writes queued before it, those
    /// queued with `_later` included, and the calls never run on the caller's thread.
    #[tokio::test]
    async fn reads_see_the_writes_queued_before_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Sqlite::open(&dir.path().join("db.sqlite")).expect("store");
        for i in 0..50 {
            store.audit_append_later(AuditEntry {
                kind: format!("test.{i}"),
                actor: Some("alice".into()),
                session: None,
                detail: "{}".into(),
            });
        }
        let head = store.audit_head().await.expect("head").expect("an event");
        assert_eq!((head.seq, head.kind.as_str()), (50, "test.49"));
        let all = store.audit_all().await.expect("all");
        let r = wardengate_recorder::audit::verify(&all, &[], None);
        assert!(r.ok() && r.events == 50, "{r:?}");
        let main = std::thread::current().id();
        let on = store
            .call(|_| Ok(std::thread::current().id()))
            .await
            .expect("call");
        assert_ne!(on, main, "SQLite ran on the caller's thread");
    }
}
