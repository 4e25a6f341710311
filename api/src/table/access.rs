//! What `wgctl access list|show` prints (and the console's access panel shows).

use std::fmt::Write;

use super::render;
use crate as api;

/// How many of a session's rules are in place now, over how many it asked for.
pub fn rules_in_place(s: &api::AccessSession) -> String {
    let held = s.rules.iter().filter(|r| r.state.held()).count();
    format!("{held}/{}", s.rules.len())
}

/// `wgctl access list`.
pub fn access_sessions(list: &[api::AccessSession]) -> String {
    if list.is_empty() {
        return "no access sessions\n".into();
    }
    let mut rows = vec![[
        "ACCESS", "USER", "ADDRESS", "STATE", "RULES", "DURATION", "EXPIRES",
    ]
    .map(String::from)
    .to_vec()];
    for s in list {
        rows.push(vec![
            s.id.clone(),
            s.user.clone(),
            s.address.clone(),
            s.state.to_string(),
            rules_in_place(s),
            s.duration.clone(),
            s.ended_at
                .as_ref()
                .map(|e| format!("ended {e}"))
                .unwrap_or_else(|| s.expires_at.clone()),
        ]);
    }
    render(&rows)
}

/// `wgctl access show ID`: the session, then each rule with its state.
pub fn access_session(s: &api::AccessSession) -> String {
    let mut out = String::new();
    let mut rows: Vec<(&str, String)> = vec![
        ("access session", s.id.clone()),
        ("state", s.state.to_string()),
        ("user", s.user.clone()),
        ("address", s.address.clone()),
        ("duration", s.duration.clone()),
        ("created", s.created_at.clone()),
        ("expires", s.expires_at.clone()),
    ];
    if let Some(e) = &s.ended_at {
        rows.push(("ended", e.clone()));
    }
    if let Some(r) = &s.reason {
        rows.push(("reason", r.clone()));
    }
    if let Some(m) = &s.mfa {
        rows.push(("mfa", m.clone()));
    }
    if let Some(a) = &s.approval {
        rows.push(("approval", a.clone()));
    }
    rows.push(("gateway", s.gateway.clone()));
    rows.push(("rules in place", rules_in_place(s)));
    for (k, v) in rows {
        let v = api::text::inert(&v, api::text::MAX_TEXT);
        let _ = writeln!(out, "{:<16}{v}", format!("{k}:"));
    }
    out.push('\n');
    let mut table = vec![[
        "RESOURCE", "BACKEND", "ADDRESS", "RULE", "HOLDERS", "POLICY", "ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for r in &s.rules {
        table.push(vec![
            r.resource.clone(),
            r.backend.clone(),
            r.address.clone(),
            r.state.name().into(),
            r.holders.to_string(),
            r.policy.clone(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&render(&table));
    out
}
