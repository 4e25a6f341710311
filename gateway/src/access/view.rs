//! Access sessions as they are shown: one, or a list, with each rule's holders now.

use std::net::IpAddr;

use wardengate_api as api;

use super::book::Key;
use crate::broker::Gateway;
use crate::store::AccessQuery;

impl Gateway {
    /// `s` as shown: each rule with how many live sessions hold it now (this gateway's).
    pub(super) fn access_view(&self, mut s: api::AccessSession) -> api::AccessSession {
        if s.gateway == self.name {
            if let Ok(ip) = s.address.parse::<IpAddr>() {
                for r in &mut s.rules {
                    r.holders = self.access.book.holders(&Key::new(&r.resource, ip));
                }
            }
        }
        s
    }

    /// One session: this gateway's live copy, else the store's.
    pub async fn access_get(&self, id: &str) -> anyhow::Result<Option<api::AccessSession>> {
        if let Some(s) = self.access.live().get(id).cloned() {
            return Ok(Some(self.access_view(s)));
        }
        let Some(row) = self.store.access_get(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.access_view(serde_json::from_str(&row.body)?)))
    }

    /// Sessions, newest first (live ones as this gateway sees them now).
    pub async fn access_list(&self, q: AccessQuery) -> anyhow::Result<Vec<api::AccessSession>> {
        let rows = self.store.access_list(q).await?;
        let live = self.access.live().clone();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let s = match live.get(&row.id) {
                Some(s) => s.clone(),
                None => match serde_json::from_str(&row.body) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(access = %row.id, "unreadable access session: {e}");
                        continue;
                    }
                },
            };
            out.push(self.access_view(s));
        }
        Ok(out)
    }
}
