//! `wgctl policy`: check policy files offline, list the gateway's policies, explain a decision,
//! reload.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use crate::client::Client;
use crate::output::{out, print_json};
use crate::table;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate policy files offline (syntax, keys, values, duplicate names across the files).
    Check {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// The policies the gateway has loaded, in load order.
    List,
    /// Which policy admits a request and why, what every other policy said, and the limits.
    Explain {
        #[arg(long)]
        actor: String,
        #[arg(long)]
        target: String,
        /// ssh, postgres, rdp, tcp, or network (then --target names a network resource).
        #[arg(long, default_value = "ssh")]
        protocol: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// Re-read the gateway's configuration and policy files (as SIGHUP does).
    Reload,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn limit_cell(limits: &Value, current: &Value, k: &str) -> String {
    let cur = current.get(k).and_then(Value::as_u64).unwrap_or(0);
    match limits.get(k).and_then(Value::as_u64) {
        Some(l) => format!("{cur}/{l}"),
        None => format!("{cur}/unlimited"),
    }
}

pub fn run(cmd: PolicyCmd, c: Result<Client>, json: bool) -> Result<()> {
    match cmd {
        PolicyCmd::Check { files } => {
            let mut all = Vec::new();
            let mut text = String::new();
            for f in &files {
                let body = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                let entries = wardengate_policy::parse_file(&body, &f.display().to_string())?;
                let names: Vec<&str> = entries.iter().map(|e| e.policy.name.as_str()).collect();
                text.push_str(&format!(
                    "{}: ok ({} {}: {})\n",
                    f.display(),
                    entries.len(),
                    if entries.len() == 1 {
                        "policy"
                    } else {
                        "policies"
                    },
                    names.join(", ")
                ));
                all.extend(entries);
            }
            wardengate_policy::check_set(&all)?;
            if json {
                let v: Vec<Value> = all
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(&*e.policy).unwrap_or(Value::Null);
                        if let Some(o) = v.as_object_mut() {
                            o.insert("source".into(), e.source.to_string().into());
                        }
                        v
                    })
                    .collect();
                print_json(&serde_json::json!({ "ok": true, "policies": v }))
            } else {
                out(&text)
            }
        }
        PolicyCmd::List => {
            let v: Value = c?.get("/api/v1/policies", &[])?;
            if json {
                return print_json(&v);
            }
            let mut text = String::new();
            for p in v["policies"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "{}  ({})\n  {}\n",
                    s(p, "name"),
                    s(p, "source"),
                    table::settings_line(p)
                ));
            }
            if text.is_empty() {
                text.push_str("no policies loaded: every session is denied (default deny)\n");
            }
            out(&text)
        }
        PolicyCmd::Reload => {
            let v: Value = c?.post("/api/v1/policies/reload", &serde_json::json!({}))?;
            if json {
                return print_json(&v);
            }
            let names = strings(&v["policies"]);
            let mut text = format!(
                "reloaded: {} policies ({})\n",
                names.len(),
                names.join(", ")
            );
            for k in v["needs_restart"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "note: {} changed; it takes effect at the next restart\n",
                    k.as_str().unwrap_or("?")
                ));
            }
            out(&text)
        }
        PolicyCmd::Explain {
            actor,
            target,
            protocol,
            account,
        } => {
            let mut q = vec![("actor", actor), ("target", target), ("protocol", protocol)];
            if let Some(a) = account {
                q.push(("account", a));
            }
            let v: Value = c?.get("/api/v1/policies/explain", &q)?;
            if json {
                return print_json(&v);
            }
            out(&explain_text(&v))
        }
    }
}

/// The strings of a JSON array (none when it is not one).
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn explain_text(v: &Value) -> String {
    let groups = strings(&v["groups"]);
    let tags: Vec<String> = v["target_tags"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, t)| format!("{k}={}", t.as_str().unwrap_or("")))
        .collect();
    let mut text = format!(
        "{} (groups: {}) -> {} [{}] as {} over {}\n",
        s(v, "actor"),
        if groups.is_empty() {
            "none".into()
        } else {
            groups.join(", ")
        },
        s(v, "target"),
        tags.join(", "),
        s(v, "account"),
        s(v, "protocol"),
    );
    match v["admitted_by"].as_str() {
        Some(p) => {
            let src = v["verdicts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| s(x, "policy") == p)
                .map(|x| s(x, "source"))
                .unwrap_or("-");
            text.push_str(&format!("ADMITTED by policy {p} ({src})\n"));
            // An access session has no recording, idle or reconnect settings: its caps.
            if s(v, "protocol") == "network" {
                let ac = &v["access"];
                text.push_str(&format!(
                    "  access sessions: policy max_session_duration {}; [access] max_duration {}; \
                     durations offered {}; max_sessions_per_user {}; security key {}\n",
                    v["settings"]["max_session_duration"]
                        .as_str()
                        .unwrap_or("none"),
                    s(ac, "max_duration"),
                    strings(&ac["durations"]).join(", "),
                    ac["max_sessions_per_user"]
                        .as_u64()
                        .map_or("none".into(), |n| n.to_string()),
                    v["settings"]["mfa"].as_str().unwrap_or("off"),
                ));
                return text + &verdicts_table(v);
            }
            text.push_str(&format!(
                "  settings: {}\n",
                table::settings_line(&v["settings"])
            ));
            let (l, c) = (&v["limits"], &v["current"]);
            text.push_str(&format!(
                "  sessions now (current/limit): user {}, target {}, policy {}, gateway pool {}; on user limit: {}\n",
                limit_cell(l, c, "actor"),
                limit_cell(l, c, "target"),
                limit_cell(l, c, "policy"),
                limit_cell(l, c, "pool"),
                s(l, "on_limit"),
            ));
        }
        None if v["default_deny"].as_bool() == Some(true) => {
            text.push_str("DENIED: no policy is loaded (default deny)\n")
        }
        None => text.push_str("DENIED: no policy matches (default deny)\n"),
    }
    text + &verdicts_table(v)
}

/// Every policy's verdict as a table (after a blank line), or nothing.
fn verdicts_table(v: &Value) -> String {
    let mut rows: Vec<Vec<String>> = vec![["POLICY", "SOURCE", "PRIO", "VERDICT"]
        .map(String::from)
        .to_vec()];
    rows.extend(v["verdicts"].as_array().into_iter().flatten().map(|x| {
        vec![
            s(x, "policy").to_string(),
            // Cut from the left: the file name and line are what a reader looks for.
            wardengate_api::text::fit_tail(s(x, "source"), table::MAX_COLUMN).into_owned(),
            x["priority"].to_string(),
            s(x, "why").to_string(),
        ]
    }));
    match rows.len() > 1 {
        true => format!("\n{}", table::render(&rows)),
        false => String::new(),
    }
}
