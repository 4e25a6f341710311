//! The tables every store has, in PostgreSQL: the same rows and the same answers as the SQLite
//! store (`store/*.rs`), in PostgreSQL's dialect.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use wardengate_policy::{LimitDenial, Limits};
use wardengate_recorder::audit::Checkpoint;

use super::sql::{self, audit_append, i, oi, session_update, session_upsert, KEY_COLS};
use super::Postgres;
use crate::store::audit::{audit_from_row, checkpoint_from_row, AUDIT_COLS};
use crate::store::console::{console_from_row, query_from_row, CONSOLE_COLS};
use crate::store::keys::key_from_row;
use crate::store::sessions::{session_from_row, SESSION_COLS};
use crate::store::{
    AuditEntry, AuditQuery, AuditRow, ConsoleSessionRow, GatewayRow, HostKey, LeaseRow, Lost,
    SavedQuery, SecurityKeyRow, SessionQuery, SessionRecord, Store, VaultEntry,
};

#[async_trait]
impl Store for Postgres {
    async fn session_insert(&self, s: &SessionRecord) -> Result<()> {
        let s = s.clone();
        self.call(move |c| async move { session_upsert(&c, &s).await })
            .await
    }

    fn session_insert_later(&self, s: SessionRecord) {
        let s = Arc::new(s);
        self.later("record a session", move |c| {
            let s = s.clone();
            async move { session_upsert(&c, &s).await }
        })
    }

    async fn session_update(&self, s: &SessionRecord) -> Result<()> {
        let s = s.clone();
        self.call(move |c| async move { session_update(&c, &s).await })
            .await
    }

    fn session_update_later(&self, s: SessionRecord) {
        let s = Arc::new(s);
        self.later("update a session", move |c| {
            let s = s.clone();
            async move { session_update(&c, &s).await }
        })
    }

    async fn session_get(&self, id: &str) -> Result<Option<SessionRecord>> {
        let id = id.to_owned();
        self.call(move |c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {SESSION_COLS} FROM sessions WHERE id=$1"),
                    &[&id],
                )
                .await?;
            row.as_ref().map(session_from_row).transpose()
        })
        .await
    }

    async fn session_list(&self, q: &SessionQuery) -> Result<Vec<SessionRecord>> {
        let q = q.clone();
        self.call(move |c| async move { sql::sessions_page(&c, &q).await })
            .await
    }

    async fn session_count(&self, q: &SessionQuery) -> Result<u64> {
        let q = q.clone();
        self.call(move |c| async move { sql::sessions_count(&c, &q).await })
            .await
    }

    async fn sessions_open_on(&self, gateway: &str) -> Result<Vec<SessionRecord>> {
        let gateway = gateway.to_owned();
        self.call(move |c| async move {
            let rows = c
                .query(
                    &format!("SELECT {SESSION_COLS} FROM sessions WHERE gateway=$1 AND state NOT IN ('closed','denied','failed','terminated')"),
                    &[&gateway],
                )
                .await?;
            rows.iter().map(session_from_row).collect()
        })
        .await
    }

    fn audit_append_later(&self, e: AuditEntry) {
        let e = Arc::new(e);
        self.later("append an audit event", move |c| {
            let e = e.clone();
            async move { audit_append(&c, &e).await }
        })
    }

    async fn audit_list(&self, q: AuditQuery) -> Result<(Vec<AuditRow>, u64)> {
        self.call(move |c| async move { sql::audit_page(&c, &q).await })
            .await
    }

    async fn audit_all(&self) -> Result<Vec<AuditRow>> {
        self.call(|c| async move {
            let rows = c
                .query(&format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq"), &[])
                .await?;
            rows.iter().map(audit_from_row).collect()
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>> {
        self.call(|c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1"),
                    &[],
                )
                .await?;
            row.as_ref().map(audit_from_row).transpose()
        })
        .await
    }

    async fn checkpoint_add(&self, cp: &Checkpoint) -> Result<()> {
        let cp = cp.clone();
        self.call(move |c| async move {
            c.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at_ms, gateway, public_key, signature)
                 VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (seq) DO UPDATE SET hash=EXCLUDED.hash,
                 at_ms=EXCLUDED.at_ms, gateway=EXCLUDED.gateway, public_key=EXCLUDED.public_key,
                 signature=EXCLUDED.signature",
                &[
                    &cp.seq,
                    &cp.hash,
                    &i(cp.at_ms),
                    &cp.gateway,
                    &cp.public_key,
                    &cp.signature,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.call(|c| async move {
            let rows = c
                .query(
                    "SELECT seq, hash, at_ms, gateway, public_key, signature FROM audit_checkpoints ORDER BY seq",
                    &[],
                )
                .await?;
            rows.iter().map(checkpoint_from_row).collect()
        })
        .await
    }

    async fn hostkey_get(&self, target: &str, address: &str) -> Result<Option<(String, String)>> {
        let (target, address) = (target.to_owned(), address.to_owned());
        self.call(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT fingerprint, key FROM host_keys WHERE target=$1 AND address=$2",
                    &[&target, &address],
                )
                .await?;
            Ok(match row {
                Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
                None => None,
            })
        })
        .await
    }

    async fn hostkey_pin(&self, k: HostKey) -> Result<()> {
        self.call(move |c| async move {
            c.execute(
                "INSERT INTO host_keys (target, address, fingerprint, key, first_seen_ms)
                 VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING",
                &[
                    &k.target,
                    &k.address,
                    &k.fingerprint,
                    &k.key,
                    &i(wardengate_protocols::session::now_ms()),
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn hostkey_forget(&self, target: &str) -> Result<usize> {
        let target = target.to_owned();
        self.call(move |c| async move {
            Ok(
                c.execute("DELETE FROM host_keys WHERE target=$1", &[&target])
                    .await? as usize,
            )
        })
        .await
    }

    async fn vault_put(&self, reference: &str, e: VaultEntry) -> Result<()> {
        let reference = reference.to_owned();
        self.call(move |c| async move {
            c.execute(
                "INSERT INTO vault (ref, kind, nonce, ciphertext, updated_ms) VALUES ($1,$2,$3,$4,$5)
                 ON CONFLICT (ref) DO UPDATE SET kind=$2, nonce=$3, ciphertext=$4, updated_ms=$5",
                &[&reference, &e.kind, &e.nonce, &e.ciphertext, &i(wardengate_protocols::session::now_ms())],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn vault_get(&self, reference: &str) -> Result<Option<VaultEntry>> {
        let reference = reference.to_owned();
        self.call(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT kind, nonce, ciphertext FROM vault WHERE ref=$1",
                    &[&reference],
                )
                .await?;
            Ok(match row {
                Some(r) => Some(VaultEntry {
                    kind: r.try_get(0)?,
                    nonce: r.try_get(1)?,
                    ciphertext: r.try_get(2)?,
                }),
                None => None,
            })
        })
        .await
    }

    async fn vault_list(&self) -> Result<Vec<(String, String, u64)>> {
        self.call(|c| async move {
            let rows = c
                .query("SELECT ref, kind, updated_ms FROM vault ORDER BY ref", &[])
                .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get::<_, i64>(2)?.max(0) as u64,
                    ))
                })
                .collect()
        })
        .await
    }

    async fn key_put(&self, k: SecurityKeyRow) -> Result<()> {
        self.call(move |c| async move {
            c.execute(
                &format!(
                    "INSERT INTO security_keys ({KEY_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
                     ON CONFLICT (id) DO UPDATE SET name=$3, key=$6, counter=$7, last_used_ms=$9"
                ),
                &[
                    &k.id,
                    &k.user,
                    &k.name,
                    &k.credential_id,
                    &k.aaguid,
                    &k.key,
                    &(k.counter as i64),
                    &i(k.created_ms),
                    &oi(k.last_used_ms),
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn key_list(&self, user: Option<&str>) -> Result<Vec<SecurityKeyRow>> {
        let user = user.map(str::to_owned);
        self.call(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        r#"SELECT {KEY_COLS} FROM security_keys WHERE $1::text IS NULL OR "user" = $1
                           ORDER BY created_ms, id"#
                    ),
                    &[&user],
                )
                .await?;
            rows.iter().map(key_from_row).collect()
        })
        .await
    }

    async fn key_remove(&self, user: &str, id: Option<&str>) -> Result<usize> {
        let (user, id) = (user.to_owned(), id.map(str::to_owned));
        self.call(move |c| async move {
            Ok(c.execute(
                r#"DELETE FROM security_keys WHERE "user" = $1 AND ($2::text IS NULL OR id = $2)"#,
                &[&user, &id],
            )
            .await? as usize)
        })
        .await
    }

    async fn console_put(&self, s: ConsoleSessionRow) -> Result<()> {
        self.call(move |c| async move {
            c.execute(
                &format!(
                    "INSERT INTO console_sessions ({CONSOLE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
                     ON CONFLICT (id) DO UPDATE SET sid_hash=$2, username=$3, provider=$4, csrf=$5,
                     created_ms=$6, idle_expires_ms=$7, lifespan_expires_ms=$8, source=$9, user_agent=$10"
                ),
                &[
                    &s.id,
                    &s.sid_hash,
                    &s.username,
                    &s.provider,
                    &s.csrf,
                    &i(s.created_ms),
                    &oi(s.idle_expires_ms),
                    &oi(s.lifespan_expires_ms),
                    &s.source,
                    &s.user_agent,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn console_get(&self, sid_hash: &str) -> Result<Option<ConsoleSessionRow>> {
        let h = sid_hash.to_owned();
        self.call(move |c| async move {
            let row = c
                .query_opt(
                    &format!("SELECT {CONSOLE_COLS} FROM console_sessions WHERE sid_hash = $1"),
                    &[&h],
                )
                .await?;
            row.as_ref().map(console_from_row).transpose()
        })
        .await
    }

    async fn console_list(&self, username: Option<&str>) -> Result<Vec<ConsoleSessionRow>> {
        let u = username.map(str::to_owned);
        self.call(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {CONSOLE_COLS} FROM console_sessions WHERE $1::text IS NULL OR username = $1
                         ORDER BY created_ms, id"
                    ),
                    &[&u],
                )
                .await?;
            rows.iter().map(console_from_row).collect()
        })
        .await
    }

    async fn console_remove(&self, ids: Vec<String>) -> Result<usize> {
        self.call(move |c| async move {
            Ok(
                c.execute("DELETE FROM console_sessions WHERE id = ANY($1)", &[&ids])
                    .await? as usize,
            )
        })
        .await
    }

    fn approval_put_later(&self, id: String, body: String) {
        self.later("keep an approval request", move |c| {
            let (id, body) = (id.clone(), body.clone());
            async move {
                c.execute(
                    "INSERT INTO approval_requests (id, body) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET body = $2",
                    &[&id, &body],
                )
                .await?;
                Ok(())
            }
        });
    }

    async fn approval_all(&self) -> Result<Vec<String>> {
        self.call(|c| async move {
            let rows = c.query("SELECT body FROM approval_requests", &[]).await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    fn approval_remove_later(&self, ids: Vec<String>) {
        self.later("forget approval requests", move |c| {
            let ids = ids.clone();
            async move {
                c.execute("DELETE FROM approval_requests WHERE id = ANY($1)", &[&ids])
                    .await?;
                Ok(())
            }
        });
    }

    async fn token_put(&self, hash: &str, user: &str, expires_ms: u64) -> Result<()> {
        let (h, u) = (hash.to_owned(), user.to_owned());
        self.call(move |c| async move {
            c.execute(
                r#"INSERT INTO operator_tokens (hash, "user", expires_ms) VALUES ($1,$2,$3)
                   ON CONFLICT (hash) DO UPDATE SET "user"=$2, expires_ms=$3"#,
                &[&h, &u, &i(expires_ms)],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn token_user(&self, hash: &str, now: u64) -> Result<Option<String>> {
        let h = hash.to_owned();
        self.call(move |c| async move {
            let row = c
                .query_opt(
                    r#"SELECT "user" FROM operator_tokens WHERE hash = $1 AND expires_ms > $2"#,
                    &[&h, &i(now)],
                )
                .await?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
        .await
    }

    async fn token_remove(&self, hash: &str, now: u64) -> Result<Option<String>> {
        let h = hash.to_owned();
        self.call(move |c| async move {
            let row = c
                .query_opt(
                    r#"DELETE FROM operator_tokens WHERE hash = $1 RETURNING "user", expires_ms"#,
                    &[&h],
                )
                .await?;
            Ok(match row {
                Some(r) if r.try_get::<_, i64>(1)? > i(now) => Some(r.try_get(0)?),
                _ => None,
            })
        })
        .await
    }

    async fn token_purge(&self, now: u64) -> Result<usize> {
        self.call(move |c| async move {
            Ok(c.execute(
                "DELETE FROM operator_tokens WHERE expires_ms <= $1",
                &[&i(now)],
            )
            .await? as usize)
        })
        .await
    }

    async fn query_put(&self, q: SavedQuery) -> Result<()> {
        self.call(move |c| async move {
            c.execute(
                "INSERT INTO console_queries (owner, name, query, pinned, created_ms) VALUES ($1,$2,$3,$4,$5)
                 ON CONFLICT (owner, name) DO UPDATE SET query=$3, pinned=$4",
                &[&q.owner, &q.name, &q.query, &i64::from(q.pinned), &i(q.created_ms)],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn query_list(&self, owner: &str) -> Result<Vec<SavedQuery>> {
        let owner = owner.to_owned();
        self.call(move |c| async move {
            let rows = c
                .query(
                    "SELECT owner, name, query, pinned, created_ms FROM console_queries WHERE owner = $1
                     ORDER BY pinned DESC, name",
                    &[&owner],
                )
                .await?;
            rows.iter().map(query_from_row).collect()
        })
        .await
    }

    async fn query_remove(&self, owner: &str, name: &str) -> Result<bool> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        self.call(move |c| async move {
            Ok(c.execute(
                "DELETE FROM console_queries WHERE owner = $1 AND name = $2",
                &[&owner, &name],
            )
            .await?
                > 0)
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        self.flush_queue().await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn gateway_join(&self, name: &str, api_url: &str) -> Result<()> {
        let (name, url) = (name.to_owned(), api_url.to_owned());
        self.call(move |c| async move { super::cluster::join(&c, &name, &url).await })
            .await
    }

    async fn gateway_heartbeat(&self, name: &str, ttl: Duration) -> Result<bool> {
        let name = name.to_owned();
        self.call(move |c| async move { super::cluster::heartbeat(&c, &name, ttl).await })
            .await
    }

    async fn gateways(&self) -> Result<Vec<GatewayRow>> {
        self.call(|c| async move { super::cluster::gateways(&c).await })
            .await
    }

    async fn lease_acquire(
        &self,
        lease: &LeaseRow,
        limits: &Limits,
        pool: &str,
        freed: Option<&str>,
        ttl: Duration,
    ) -> Result<std::result::Result<(), LimitDenial>> {
        let (lease, limits, pool) = (lease.clone(), *limits, pool.to_owned());
        let freed = freed.map(str::to_owned);
        self.call(move |c| async move {
            super::cluster::acquire(&c, &lease, &limits, &pool, freed.as_deref(), ttl).await
        })
        .await
    }

    fn lease_release_later(&self, session_id: String) {
        self.later("give back a session's slot", move |c| {
            let id = session_id.clone();
            async move {
                c.execute("DELETE FROM leases WHERE session_id = $1", &[&id])
                    .await?;
                Ok(())
            }
        });
    }

    async fn session_times(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, u64>> {
        let ids = ids.to_vec();
        self.call(move |c| async move { super::sql::session_times(&c, &ids).await })
            .await
    }

    async fn lease_oldest(&self, actor: &str) -> Result<Option<String>> {
        let actor = actor.to_owned();
        self.call(move |c| async move { super::cluster::oldest(&c, &actor).await })
            .await
    }

    async fn reap_lost(&self, me: &str, ttl: Duration) -> Result<Vec<Lost>> {
        let me = me.to_owned();
        self.call(move |c| async move { super::cluster::reap(&c, &me, ttl).await })
            .await
    }
}
