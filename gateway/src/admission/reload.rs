//! Reloading the configuration, and explaining which policy would admit a login.

use serde_json::{json, Value};
use wardengate_policy::Subject;
use wardengate_protocols::ssh::Login;

use super::resolve::resolve;
use crate::broker::Gateway;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub policies: Vec<String>,
    pub users: usize,
    pub targets: usize,
    /// Settings that changed in the file but only take effect at the next start.
    pub needs_restart: Vec<String>,
}

impl Gateway {
    /// Re-read the configuration and its policy files. New sessions use the result; live sessions
    /// keep the policy that admitted them. A configuration that does not load changes nothing.
    pub fn reload(&self, trigger: &str) -> anyhow::Result<Reloaded> {
        let cur = self.cfg();
        let new = match crate::config::load(&cur.path) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(
                    trigger,
                    "reload failed, the previous policies stay in force: {e:#}"
                );
                self.audit(
                    "policy.reload_failed",
                    None,
                    None,
                    json!({"trigger": trigger, "error": format!("{e:#}")}),
                );
                return Err(e);
            }
        };
        let (a, b) = (&cur.config, &new.config);
        let mut needs_restart = Vec::new();
        for (name, changed) in [
            ("gateway.name", a.gateway.name != b.gateway.name),
            ("gateway.data_dir", cur.data_dir != new.data_dir),
            ("ssh.listen", a.ssh.listen != b.ssh.listen),
            (
                "ssh.host_key_file",
                a.ssh.host_key_file != b.ssh.host_key_file,
            ),
            ("ssh.ciphers", a.ssh.ciphers != b.ssh.ciphers),
            ("api.listen", a.api.listen != b.api.listen),
            (
                "recording",
                format!("{:?}", a.recording) != format!("{:?}", b.recording),
            ),
        ] {
            if changed {
                needs_restart.push(name.to_string());
            }
        }
        let report = Reloaded {
            policies: new.policies.iter().map(|e| e.policy.name.clone()).collect(),
            users: new.users.len(),
            targets: new.targets.len(),
            needs_restart,
        };
        self.set_cfg(new);
        tracing::info!(
            trigger,
            policies = report.policies.len(),
            "configuration reloaded"
        );
        self.audit(
            "policy.reloaded",
            None,
            None,
            json!({"trigger": trigger, "policies": report.policies, "users": report.users,
                   "targets": report.targets, "needs_restart": report.needs_restart}),
        );
        Ok(report)
    }

    /// `wgctl policy explain`: which policy would admit `actor` to `target` and why, the others'
    /// verdicts, and the concurrency limits and counts that would apply.
    pub fn explain(
        &self,
        actor: &str,
        target: &str,
        protocol: &str,
        account: Option<&str>,
    ) -> Result<Value, String> {
        if protocol == wardengate_policy::NETWORK {
            return self.explain_network(actor, target);
        }
        let cfg = self.cfg();
        let login = Login {
            user: actor.to_string(),
            target: target.to_string(),
            account: account.map(str::to_string),
            waiting: None,
        };
        let Some(protocol) = wardengate_api::Protocol::parse(protocol) else {
            return Err(format!(
                "'{protocol}' is not a protocol (use {})",
                wardengate_policy::PROTOCOLS.join(", ")
            ));
        };
        let r = resolve(&cfg, &login, protocol)
            .map_err(|(_, m)| m.trim_start_matches("wardengate: ").to_string())?;
        let req = r.request(protocol);
        let ex = wardengate_policy::explain(&cfg.policies, &req);
        let admitted = wardengate_policy::decide(&cfg.policies, &req).ok();
        let (limits, counts) = match &admitted {
            Some(a) => {
                let l = cfg.limits(r.user, r.target, a.settings());
                let c = self.ledger.counts(Subject {
                    actor: &r.user.name,
                    target: &r.target.name,
                    policy: a.policy(),
                    pool: &self.name,
                });
                (json!(l), json!(c))
            }
            None => (Value::Null, Value::Null),
        };
        Ok(json!({
            "actor": r.user.name, "groups": r.user.groups, "target": r.target.name,
            "target_tags": r.target.tags, "protocol": protocol, "account": r.account.name,
            "admitted_by": ex.admitted_by,
            "settings": admitted.as_ref().map(|a| serde_json::to_value(a.settings()).unwrap_or(Value::Null)),
            "verdicts": ex.verdicts,
            "limits": limits,
            "current": counts,
            "default_deny": ex.verdicts.is_empty(),
        }))
    }
}
