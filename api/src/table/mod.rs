//! Sessions, approvals, keys, the audit and recordings as people read them: wgctl prints this
//! text, and the console shows the same (a session's detail panel is `wgctl session show`).

use std::fmt::Write;
use std::time::SystemTime;

use crate as api;
use serde_json::Value;

use crate::time::human_secs as short;

mod access;
mod tcp;
pub use access::{access_session, access_sessions, rules_in_place};
pub use tcp::{authorization, proxy, states};

/// How long the session has run (or ran): a session of 250 ms shows as `250ms`, not `0ms`.
fn age(s: &api::Session) -> String {
    let start = humantime::parse_rfc3339_weak(&s.started_at).ok();
    let end = s
        .ended_at
        .as_deref()
        .and_then(|e| humantime::parse_rfc3339_weak(e).ok())
        .unwrap_or_else(SystemTime::now);
    let d = start
        .and_then(|st| end.duration_since(st).ok())
        .unwrap_or_default();
    crate::time::human(d)
}

/// Widest column a table prints (a longer value is cut with `…`); the last column gets more.
pub const MAX_COLUMN: usize = 48;
const MAX_LAST_COLUMN: usize = 400;

/// A table: every cell made inert (escapes for control characters) and cut to its column's
/// maximum, columns padded by hand (no format width, so no width is ever out of range).
pub fn render(rows: &[Vec<String>]) -> String {
    use api::text::{fit, inert, width};
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, v)| {
                    let max = if i + 1 == cols {
                        MAX_LAST_COLUMN
                    } else {
                        MAX_COLUMN
                    };
                    fit(&inert(v, api::text::MAX_TEXT), max).into_owned()
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .map(|r| r.get(c).map_or(0, |v| width(v)))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (i, v) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(v);
            if i + 1 < cols {
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(width(v));
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

pub fn sessions(list: &[api::Session], with_state: bool) -> String {
    if list.is_empty() {
        return "no sessions\n".into();
    }
    // Live lists show the state when it says something (paused, closing).
    let with_state = with_state || list.iter().any(|s| s.state != api::SessionState::Active);
    let mut header: Vec<String> = ["SESSION", "ACTOR", "TARGET", "PROTO", "GW", "AGE", "IDLE"]
        .map(String::from)
        .to_vec();
    if with_state {
        header.push("STATE".into());
    }
    let mut rows = vec![header];
    for s in list {
        let mut r = vec![
            s.id.clone(),
            s.actor.clone(),
            s.target.clone(),
            s.protocol.to_string(),
            s.gateway.clone(),
            age(s),
            if s.state.is_terminal() {
                "-".into()
            } else {
                short(s.idle_secs)
            },
        ];
        if with_state {
            r.push(s.state.as_str().into());
        }
        rows.push(r);
    }
    render(&rows)
}

pub fn session(s: &api::Session) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("session", s.id.clone()),
        ("state", s.state.as_str().into()),
        ("protocol", s.protocol.to_string()),
        ("actor", s.actor.clone()),
        (
            "client",
            match &s.client_location {
                Some(l) => format!("{} ({l}) {}", s.client_addr, s.client_version),
                None => format!("{} ({})", s.client_addr, s.client_version),
            },
        ),
        ("target", format!("{} ({})", s.target, s.target_addr)),
        (
            "account",
            match &s.tcp {
                // The client brings its own credentials.
                Some(_) => "none (no secret injected)".into(),
                None => format!("{} (vault ref {})", s.account, s.account_ref),
            },
        ),
        ("policy", policy_line(s)),
        ("mfa", mfa_line(s)),
        (
            "pty",
            s.pty
                .as_ref()
                .map(|p| format!("{} {}x{}", p.term, p.cols, p.rows))
                .unwrap_or_else(|| "-".into()),
        ),
        ("gateway", s.gateway.clone()),
        ("started", s.started_at.clone()),
        ("age", age(s)),
        (
            "last input",
            s.last_input_at.clone().unwrap_or_else(|| "-".into()),
        ),
        ("idle", short(s.idle_secs)),
        ("bytes", format!("in {} / out {}", s.bytes_in, s.bytes_out)),
        ("channels", s.channels.to_string()),
    ];
    if let Some(a) = &s.activity {
        rows.push(("activity", a.clone()));
    }
    if let Some(t) = &s.tcp {
        rows.push(("host", format!("{} ({})", t.host_id, s.target_addr)));
        let limit = match t.connection_limit {
            -1 => "unlimited".to_string(),
            n => n.to_string(),
        };
        rows.push((
            "connections",
            format!("{} of {limit} ({} open)", t.connections, t.open),
        ));
        rows.push(("expiration", t.expiration.clone()));
    }
    if s.client_crypto.is_some() || s.target_crypto.is_some() {
        let leg = |c: &Option<String>| c.clone().unwrap_or_else(|| "-".into());
        rows.push((
            "ciphers",
            format!(
                "client {} / target {}",
                leg(&s.client_crypto),
                leg(&s.target_crypto)
            ),
        ));
    }
    if let Some(l) = &s.relay_latency {
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        rows.push((
            "relay latency",
            format!(
                "p50 {}, p99 {}, max {} ({} reads from the target)",
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.max_us),
                l.samples
            ),
        ));
    }
    if let Some(e) = &s.ended_at {
        rows.push(("ended", e.clone()));
    }
    if let Some(r) = &s.end_reason {
        rows.push(("end reason", r.clone()));
    }
    if let Some(d) = &s.end_detail {
        rows.push(("detail", d.clone()));
    }
    if let Some(b) = &s.terminated_by {
        rows.push(("terminated by", b.clone()));
    }
    if let Some(l) = &s.linked_session {
        rows.push(("continues", l.clone()));
    }
    if !s.previous_owners.is_empty() {
        rows.push(("handed from", s.previous_owners.join(" -> ")));
    }
    for o in &s.observers {
        rows.push((
            "observer",
            format!("{} (banner={}, since {})", o.name, o.banner, o.since),
        ));
    }
    if let Some(h) = &s.handoff {
        rows.push((
            "handoff",
            format!(
                "offered to {} by {} until {}: {}",
                h.to, h.by, h.expires_at, h.reason
            ),
        ));
    }
    if let Some(d) = &s.decision {
        if let Some(settings) = d.get("settings") {
            rows.push(("settings", settings_line(settings)));
        }
        if let Some(limit) = d.get("limit") {
            rows.push(("denied by limit", limit.to_string()));
        }
    }
    let mut out = String::new();
    for (k, v) in rows {
        // At least one space after the longest names ("relay latency:", "terminated by:").
        let _ = writeln!(out, "{:<13} {v}", format!("{k}:"));
    }
    if let Some(t) = &s.tcp {
        out.push_str(&states(&t.states));
    }
    out
}

/// `webauthn (YubiKey 5C, 00:00:42 before start)`, or `-` when the policy asked for none.
fn mfa_line(s: &api::Session) -> String {
    let Some(m) = s
        .decision
        .as_ref()
        .map(|d| &d["mfa"])
        .filter(|m| m.is_object())
    else {
        return "-".into();
    };
    let before = m["before_start_ms"].as_u64().unwrap_or(0);
    format!(
        "{} ({}, {} before start)",
        m["method"].as_str().unwrap_or("?"),
        m["key"].as_str().unwrap_or("?"),
        crate::time::clock(std::time::Duration::from_millis(before), false)
    )
}

pub fn approvals(list: &[api::ApprovalRequest]) -> String {
    if list.is_empty() {
        return "no approval requests\n".into();
    }
    let mut rows = vec![vec![
        "REQUEST".to_string(),
        "STATE".into(),
        "ACTOR".into(),
        "TARGET".into(),
        "POLICY".into(),
        "APPROVALS".into(),
        "APPROVERS".into(),
        "AGE".into(),
    ]];
    for r in list {
        let yes = r.decisions.iter().filter(|d| d.approved).count();
        rows.push(vec![
            r.id.clone(),
            r.state.as_str().into(),
            r.actor.clone(),
            match r.protocol {
                // An access session's request: its resources and the address to let in.
                api::Protocol::Network => format!("{} from {}", r.target, r.account),
                _ => format!("{}:{}", r.target, r.account),
            },
            r.policy.clone(),
            format!("{yes}/{}", r.required),
            r.approvers.join(","),
            since(r.created_ms),
        ]);
    }
    render(&rows)
}

/// `wgctl console-session list`.
pub fn console_sessions(list: &[api::ConsoleSession]) -> String {
    if list.is_empty() {
        return "no console sessions\n".into();
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = |t: Option<u64>| match t {
        Some(t) => short(t.saturating_sub(now) / 1000),
        None => "off".into(),
    };
    let mut rows = vec![vec![
        "ID".to_string(),
        "USER".into(),
        "PROVIDER".into(),
        "SOURCE".into(),
        "AGE".into(),
        "IDLE LEFT".into(),
        "LIFESPAN LEFT".into(),
    ]];
    for s in list {
        rows.push(vec![
            s.id.clone(),
            s.username.clone(),
            s.provider.clone(),
            s.source.clone(),
            since(s.created_ms),
            left(s.idle_expires_ms),
            left(s.lifespan_expires_ms),
        ]);
    }
    render(&rows)
}

pub fn security_keys(keys: &[api::SecurityKey]) -> String {
    if keys.is_empty() {
        return "no security keys enrolled (wgctl mfa enroll)\n".into();
    }
    let mut rows = vec![vec![
        "ID".to_string(),
        "USER".into(),
        "NAME".into(),
        "CREATED".into(),
        "LAST USED".into(),
        "COUNTER".into(),
    ]];
    for k in keys {
        rows.push(vec![
            k.id.clone(),
            k.user.clone(),
            k.name.clone(),
            k.created.clone(),
            k.last_used.clone().unwrap_or_else(|| "never".into()),
            k.counter.to_string(),
        ]);
    }
    render(&rows)
}

pub fn audit(list: &api::AuditList) -> String {
    let mut rows = vec![["SEQ", "AT", "KIND", "ACTOR", "SESSION", "DETAIL"]
        .map(String::from)
        .to_vec()];
    for e in &list.events {
        rows.push(vec![
            e.seq.to_string(),
            e.at.clone(),
            e.kind.clone(),
            e.actor.clone().unwrap_or_else(|| "-".into()),
            e.session_id.clone().unwrap_or_else(|| "-".into()),
            e.detail.to_string(),
        ]);
    }
    let mut out = render(&rows);
    let _ = match (&list.chain_message, list.chain_ok) {
        (Some(m), true) => writeln!(out, "hash chain: {m}"),
        (Some(m), false) => writeln!(out, "hash chain: BROKEN: {m}"),
        (None, ok) => writeln!(out, "hash chain: {}", if ok { "ok" } else { "BROKEN" }),
    };
    out
}

/// The line under a list that was cut: how many more, and how to see them.
pub fn more(n: u64, what: &str, cursor: Option<&str>, flag: &str) -> String {
    match (n, cursor) {
        (0, _) | (_, None) => String::new(),
        (n, Some(c)) => format!(
            "… {n} more {what}{}; use --limit to see more at once, or {flag} {c} for the next page\n",
            if n == 1 { "" } else { "s" }
        ),
    }
}

pub fn recordings(list: &api::RecordingList) -> String {
    if list.recordings.is_empty() {
        return "no recordings\n".into();
    }
    let mut rows = vec![[
        "RECORDING",
        "STARTED",
        "ACTOR",
        "TARGET",
        "STATUS",
        "CHUNKS",
        "BYTES",
    ]
    .map(String::from)
    .to_vec()];
    for r in &list.recordings {
        let seal = r.seal.as_ref();
        let started = seal
            .and_then(|s| s["started_at_ms"].as_u64())
            .map(|ms| {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                humantime::format_rfc3339_seconds(t)
                    .to_string()
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string()
            })
            .or_else(|| r.session.as_ref().map(|s| s.started_at.clone()))
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            r.id.clone(),
            started,
            r.session
                .as_ref()
                .map(|s| s.actor.clone())
                .unwrap_or_else(|| "-".into()),
            r.session
                .as_ref()
                .map(|s| s.target.clone())
                .unwrap_or_else(|| "-".into()),
            seal.and_then(|s| s["status"].as_str())
                .unwrap_or("open")
                .to_string(),
            seal.map(|s| s["chunks"].to_string())
                .unwrap_or_else(|| "-".into()),
            seal.map(|s| s["raw_bytes"].to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    render(&rows)
}

pub fn recording(r: &api::Recording) -> String {
    let mut out = format!("{:<14}{}\n", "recording:", r.id);
    if let Some(s) = &r.seal {
        for k in [
            "status",
            "chunks",
            "events",
            "raw_bytes",
            "final_sha256",
            "public_key",
        ] {
            let _ = writeln!(
                out,
                "{:<14}{}",
                format!("{k}:"),
                s[k].as_str()
                    .map(String::from)
                    .unwrap_or_else(|| s[k].to_string())
            );
        }
    } else {
        let _ = writeln!(out, "{:<14}not sealed yet", "seal:");
    }
    match r.verified {
        Some(true) => out.push_str("verified:     OK\n"),
        Some(false) => {
            out.push_str("verified:     FAILED\n");
            for p in &r.problems {
                let _ = writeln!(out, "  - {p}");
            }
        }
        None => {}
    }
    out
}

/// `sre-prod (fixtures/policies/sre.toml:12): matches group sre, tag env=prod`
fn policy_line(s: &api::Session) -> String {
    let Some(p) = &s.policy else {
        return "-".into();
    };
    let d = s.decision.as_ref();
    let source = d.and_then(|d| d.get("source")).and_then(|v| v.as_str());
    let why = d.and_then(|d| d.get("why")).and_then(|v| v.as_str());
    // `prod-ssh-write (approved by carol, 00:14:08 ago)` when an approval admitted it.
    let approved = d
        .map(|d| &d["approval"])
        .filter(|a| a.is_object())
        .map(|a| {
            let by: Vec<&str> = a["approved_by"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            let ago = a["approved_ms"].as_u64().map(since).unwrap_or_default();
            format!(" (approved by {}, {ago} ago)", by.join(" and "))
        });
    let p = format!("{p}{}", approved.unwrap_or_default());
    match (source, why) {
        (Some(src), Some(why)) => format!("{p} ({src}): {why}"),
        (Some(src), None) => format!("{p} ({src})"),
        _ => p,
    }
}

/// `HH:MM:SS` since the Unix time `ms`.
fn since(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(ms);
    crate::time::clock(
        std::time::Duration::from_millis(now.saturating_sub(ms)),
        false,
    )
}

/// `recording=required idle=15m/1m lifespan=8h reconnect=resume(2m) ...`
pub fn settings_line(v: &Value) -> String {
    let get = |k: &str| match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    };
    let lifespan = match get("max_lifespan").as_str() {
        "0" => "none".to_string(),
        l => format!("{l} (warn {})", get("lifespan_warning")),
    };
    let reconnect = v.get("reconnect").map(|r| {
        let mode = r.get("mode").and_then(Value::as_str).unwrap_or("-");
        if mode == "strict" {
            mode.to_string()
        } else {
            format!(
                "{mode} ({})",
                r.get("grace").and_then(Value::as_str).unwrap_or("-")
            )
        }
    });
    let max = v
        .get("concurrency")
        .and_then(|c| c.get("max"))
        .filter(|m| !m.is_null())
        .map(|m| m.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "recording={} idle={} grace={} lifespan={lifespan} reconnect={} concurrency.max={max} shadow={} mfa={} port_forwarding={}",
        get("recording"),
        get("idle_timeout"),
        get("idle_grace"),
        reconnect.unwrap_or_else(|| "strict".into()),
        get("shadow"),
        get("mfa"),
        get("allow_port_forwarding"),
    )
}

#[cfg(test)]
mod tests {
    use super::{age, api, short};

    #[test]
    fn short_durations() {
        assert_eq!(short(5), "5s");
        assert_eq!(short(3600 * 3 + 60 * 12), "3h 12m");
    }

    #[test]
    fn a_short_session_shows_its_milliseconds() {
        let s: api::Session = serde_json::from_value(serde_json::json!({
            "id": "sess_1", "state": "closed", "protocol": "ssh", "actor": "alice",
            "client_addr": "127.0.0.1:1", "client_version": "", "target": "web", "target_addr": "",
            "account": "root", "account_ref": "", "gateway": "gw", "idle_secs": 0, "bytes_in": 0,
            "bytes_out": 0, "channels": 0, "observers": [],
            "started_at": "2026-12-03T19:20:38.773Z", "ended_at": "2026-12-03T19:20:39.023Z",
        }))
        .expect("a session");
        assert_eq!(age(&s), "250ms");
    }
}
