//! `wg-access-bench`: the measuring side of `scripts/bench access`, on the test harness's real
//! kernel firewall (a network namespace with nftables sets, `wardengate_tests::netns`) and a real
//! gateway. Prints one Markdown table.
//!
//! - start → ACTIVE (the API's answer comes once every rule is applied) for 1 and for 100
//!   resources, against the baseline of what the backend must do at least: `nft` run by hand
//!   (`ip netns exec NS nft -f -`) adding the same elements, one call per resource;
//! - expiry → rule gone: from a session's `expires_at` to `nft` no longer listing its element,
//!   for 1 and 100 resources (the gateway's timer, nobody calling the API);
//! - 100 users starting at once (from 10 addresses, through a trusted proxy's X-Forwarded-For) on
//!   5 resources, then stopping at once: wall time, and the checks that no rule was lost or
//!   doubled (10 elements per set, each rule held by 10 sessions, the audit's counts exact).

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wardengate_tests::netns::Lab;
use wardengate_tests::*;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How many times `ip` is listed in the namespace's wardengate table.
fn listed(ns: &str, ip: &str) -> usize {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "inet",
            "wardengate",
        ])
        .output()
        .expect("nft list");
    String::from_utf8_lossy(&out.stdout).matches(ip).count()
}

fn post(
    gw: &GatewayProc,
    path: &str,
    token: &str,
    body: &str,
    xff: Option<&str>,
) -> serde_json::Value {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}{path}", gw.api))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    let r = req.send().expect("post");
    let status = r.status();
    let v: serde_json::Value = r.json().expect("json");
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

fn main() {
    let resources: Vec<String> = (0..100).map(|i| format!("r{i:03}")).collect();
    let names: Vec<&str> = resources.iter().map(String::as_str).collect();
    let lab = Lab::new(&names);
    let env = TestEnv::new();
    let users = 100;
    let mut more = String::from("[access]\ndurations = [\"1s\", \"1h\"]\n\n");
    // Every user needs a way to sign in; the bench uses their API tokens.
    let hash = wardengate_gateway::passwords::hash("bench password").expect("hash");
    for who in ["solo", "wide"] {
        more.push_str(&format!(
            "[[users]]\nname = \"{who}\"\npassword_hash = \"{hash}\"\napi_token_sha256 = \"{}\"\n\n",
            sha256_hex(format!("tok-{who}").as_bytes())
        ));
    }
    for u in 0..users {
        more.push_str(&format!(
            "[[users]]\nname = \"user{u:03}\"\ngroups = [\"bench\"]\npassword_hash = \"{hash}\"\napi_token_sha256 = \"{}\"\n\n",
            sha256_hex(format!("tok-{u:03}").as_bytes())
        ));
    }
    for (i, r) in resources.iter().enumerate() {
        // r000: the one-resource case (tag one); r000–r004: the 100-user case (tag five); all:
        // the hundred-resource case.
        let tags = format!(
            "all = \"y\"{}{}",
            if i == 0 { ", one = \"y\"" } else { "" },
            if i < 5 { ", five = \"y\"" } else { "" }
        );
        more.push_str(&lab.resource_toml(r, &tags));
    }
    // solo on one resource, wide on all 100, the hundred users on five.
    let policies = "[[policies]]\nname = \"one\"\nusers = [\"solo\"]\nprotocols = [\"network\"]\nresource_tags = [\"one=y\"]\n\n\
        [[policies]]\nname = \"all\"\nusers = [\"wide\"]\nprotocols = [\"network\"]\nresource_tags = [\"all=y\"]\n\n\
        [[policies]]\nname = \"five\"\ngroups = [\"bench\"]\nprotocols = [\"network\"]\nresource_tags = [\"five=y\"]\n";
    let gw = env
        .gateway()
        .extra(&more)
        .api_lines("trusted_proxies = [\"127.0.0.1\"]")
        // A hundred callers at once through the proxy (whose connections the per-source cap
        // does not count), ten per forwarded address: the listener's cap and the token guard's
        // parallel attempts per address are raised.
        .security_lines("max_unauthenticated = 500\nfailures_before_backoff = 200\n")
        .policies(policies)
        .start();
    let samples_one = env_n("BENCH_ACCESS_SAMPLES", 20);
    let samples_all = env_n("BENCH_ACCESS_SAMPLES_100", 5);
    let mut rows: Vec<String> = Vec::new();

    // Baseline: nft by hand, one call per element, as the backend runs it (the same batch);
    // (time to add n, time to delete them).
    let nft = |script: String| {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args(["netns", "exec", &lab.ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        assert!(c.wait().expect("wait").success(), "nft by hand failed");
    };
    let raw = |n: usize, ip: &str| -> (f64, f64) {
        let t = Instant::now();
        for r in resources.iter().take(n) {
            nft(format!("add table inet wardengate\nadd set inet wardengate allow_{r} {{ type ipv4_addr; }}\nadd element inet wardengate allow_{r} {{ {ip} }}\n"));
        }
        let add = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        for r in resources.iter().take(n) {
            nft(format!("add table inet wardengate\nadd set inet wardengate allow_{r} {{ type ipv4_addr; }}\nadd element inet wardengate allow_{r} {{ {ip} }}\ndelete element inet wardengate allow_{r} {{ {ip} }}\n"));
        }
        (add, t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut deletes: Vec<Vec<f64>> = Vec::new();
    let start_stop = |token: &str, ip: &str, duration: &str| -> (f64, serde_json::Value) {
        let t = Instant::now();
        let s = post(
            &gw,
            "/api/v1/access-sessions",
            token,
            &format!("{{\"duration\":\"{duration}\"}}"),
            Some(ip),
        );
        (t.elapsed().as_secs_f64() * 1000.0, s)
    };
    let stop = |token: &str, id: &str| {
        post(
            &gw,
            &format!("/api/v1/access-sessions/{id}/stop"),
            token,
            "{\"reason\":\"bench\"}",
            None,
        );
    };
    for (label, n, token, samples) in [
        ("1 resource", 1usize, "tok-solo", samples_one),
        ("100 resources", 100, "tok-wide", samples_all),
    ] {
        let (mut base, del): (Vec<f64>, Vec<f64>) =
            (0..samples).map(|_| raw(n, "198.51.100.7")).unzip();
        deletes.push(del);
        let mut gwt = Vec::new();
        for _ in 0..samples {
            let (ms, s) = start_stop(token, "198.51.100.8", "1h");
            assert_eq!(s["state"], "ACTIVE", "{s}");
            gwt.push(ms);
            stop(token, s["id"].as_str().expect("id"));
        }
        let (b50, g50, g90) = (pct(&mut base, 0.5), pct(&mut gwt, 0.5), pct(&mut gwt, 0.9));
        rows.push(format!(
            "| start → ACTIVE, {label} | nft by hand, {n} call(s): p50 {b50:.1} ms | p50 {g50:.1} ms, p90 {g90:.1} ms | {:.2} |",
            g50 / b50
        ));
    }
    // Expiry: from expires_at to the session EXPIRED (its last rule removed), as the gateway's
    // timer does it; then nft must list none of its elements.
    for ((label, token, samples, ip), mut del) in [
        (
            "1 resource",
            "tok-solo",
            samples_one.min(10),
            "198.51.100.9",
        ),
        (
            "100 resources",
            "tok-wide",
            samples_all.min(3),
            "198.51.100.10",
        ),
    ]
    .into_iter()
    .zip(deletes)
    {
        let mut lag = Vec::new();
        for _ in 0..samples {
            let (_, s) = start_stop(token, ip, "1s");
            let expires = s["expires_ms"].as_f64().expect("expires_ms");
            let id = s["id"].as_str().expect("id");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let (_, body) =
                    gw.request("GET", &format!("/api/v1/access-sessions/{id}"), token, "");
                if body.contains("\"state\":\"EXPIRED\"") {
                    break;
                }
                assert!(Instant::now() < deadline, "the session never expired");
                std::thread::sleep(Duration::from_millis(3));
            }
            lag.push(now_ms() - expires);
            assert_eq!(listed(&lab.ns, ip), 0, "EXPIRED with an element left");
        }
        let (l50, lmax, d50) = (pct(&mut lag, 0.5), pct(&mut lag, 1.0), pct(&mut del, 0.5));
        rows.push(format!(
            "| expiry → rules gone, {label} | nft by hand, deleting: p50 {d50:.1} ms | p50 {l50:.0} ms, max {lmax:.0} ms after expires_at | {:.2} |",
            l50 / d50
        ));
    }
    // 100 users at once, 10 per address, on five resources.
    let t = Instant::now();
    let started: Vec<serde_json::Value> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..users)
            .map(|u| {
                let gw = &gw;
                s.spawn(move || {
                    post(
                        gw,
                        "/api/v1/access-sessions",
                        &format!("tok-{u:03}"),
                        "{\"duration\":\"1h\"}",
                        Some(&format!("198.18.0.{}", u % 10)),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let start_all = t.elapsed().as_secs_f64() * 1000.0;
    let mut applied = 0;
    for s in &started {
        assert_eq!(s["state"], "ACTIVE", "{s}");
        for r in s["rules"].as_array().expect("rules") {
            if r["state"] == "applied" {
                applied += 1;
            }
        }
    }
    // Each address in each of the five sets exactly once.
    let per_address: Vec<usize> = (0..10)
        .map(|a| listed(&lab.ns, &format!("198.18.0.{a}")))
        .collect();
    let ids: Vec<(String, String)> = started
        .iter()
        .enumerate()
        .map(|(u, s)| {
            (
                format!("tok-{u:03}"),
                s["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    let mut holders_ok = true;
    for (token, id) in &ids {
        let (_, body) = gw.request("GET", &format!("/api/v1/access-sessions/{id}"), token, "");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let rules = v["rules"].as_array().cloned().unwrap_or_default();
        holders_ok &= rules.len() == 5 && rules.iter().all(|r| r["holders"].as_u64() == Some(10));
    }
    let t = Instant::now();
    std::thread::scope(|s| {
        for (token, id) in &ids {
            let gw = &gw;
            s.spawn(move || stop_with(gw, token, id));
        }
    });
    let stop_all = t.elapsed().as_secs_f64() * 1000.0;
    let left: usize = (0..10)
        .map(|a| listed(&lab.ns, &format!("198.18.0.{a}")))
        .sum();
    let count = |kind: &str| gw.audit(kind).len();
    let exact = holders_ok && left == 0 && applied == 50 && per_address.iter().all(|n| *n == 5);
    rows.push(format!(
        "| 100 users at once, 10 per address, 5 resources | — | start all {start_all:.0} ms, stop all {stop_all:.0} ms | — |"
    ));
    println!("| measure | baseline | Wardengate | ratio |\n|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!(
        "\n100 users at once: rules applied by a start {applied} (expected 50; the other 450 shared), \
         sets holding each address {per_address:?} (expected 5 each), every rule held by 10 sessions: \
         {holders_ok}, elements left after all stopped: {left}; audit (whole run): applied {}, shared {}, \
         released {}, revoked {} — {}",
        count("access.rule.applied"),
        count("access.rule.shared"),
        count("access.rule.released"),
        count("access.rule.revoked"),
        if exact { "counts exact" } else { "COUNTS WRONG" }
    );
    if !exact {
        std::process::exit(1);
    }
}

fn stop_with(gw: &GatewayProc, token: &str, id: &str) {
    post(
        gw,
        &format!("/api/v1/access-sessions/{id}/stop"),
        token,
        "{\"reason\":\"bench\"}",
        None,
    );
}
