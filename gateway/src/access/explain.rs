//! `wgctl policy explain --protocol network --target RESOURCE`: which policy grants a person a
//! network resource and why, every policy's verdict, and the caps a session would meet.

use serde_json::{json, Value};

use crate::broker::Gateway;

impl Gateway {
    /// The verdicts on `actor` opening network resource `resource`.
    pub fn explain_network(&self, actor: &str, resource: &str) -> Result<Value, String> {
        let cfg = self.cfg();
        let Some(user) = cfg.users.get(actor) else {
            return Err(format!("unknown user '{actor}'"));
        };
        let Some(r) = cfg.resources.get(resource) else {
            let known: Vec<&str> = cfg.resources.keys().map(String::as_str).collect();
            return Err(format!(
                "'{resource}' is not a network resource (this gateway has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let tags = r.tag_pairs();
        let req = wardengate_policy::Request {
            user: actor,
            groups: &user.groups,
            target: &r.name,
            target_tags: &tags,
            protocol: wardengate_policy::NETWORK,
            account: "-",
        };
        let ex = wardengate_policy::explain(&cfg.policies, &req);
        let admitted = wardengate_policy::decide(&cfg.policies, &req).ok();
        let a = &cfg.config.access;
        let (offered, default) = self.access_offer(actor);
        Ok(json!({
            "actor": actor, "groups": user.groups, "target": r.name, "target_tags": r.tags,
            "protocol": wardengate_policy::NETWORK, "account": "-",
            "backend": r.backend.name(),
            "admitted_by": ex.admitted_by,
            "settings": admitted.as_ref().map(|x| serde_json::to_value(x.settings()).unwrap_or(Value::Null)),
            "verdicts": ex.verdicts,
            "access": {
                "max_duration": crate::config::shown(a.max_duration),
                "max_sessions_per_user": a.max_sessions_per_user,
                "durations": offered.into_iter().map(crate::config::shown).collect::<Vec<_>>(),
                "default_duration": default.map(crate::config::shown),
            },
            "default_deny": ex.verdicts.is_empty(),
        }))
    }
}
