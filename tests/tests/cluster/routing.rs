//! One view of the cluster from every gateway: the list, terminate (single and bulk) and the
//! audit chain; the internal endpoint refuses what no peer signed.

use std::io::Read;
use std::time::Duration;

use wardengate_tests::*;

use crate::cluster;

/// Watch session `id` through `gw`'s shadow stream until its output shows a tick; the stream
/// (still attached) is returned.
fn shadow_through(gw: &GatewayProc, id: &str) -> impl Iterator {
    use std::io::BufRead;
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
        .get(format!("{}/api/v1/sessions/{id}/shadow", gw.api))
        .bearer_auth(&gw.token)
        .send()
        .expect("shadow");
    assert_eq!(resp.status().as_u16(), 200);
    let mut lines = std::io::BufReader::new(resp).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a first line").expect("read")).expect("json");
    assert_eq!(first["type"], "attached", "{first}");
    assert_eq!(first["session"], id, "{first}");
    let mut seen = String::new();
    for line in lines.by_ref().take(200) {
        let ev: serde_json::Value = serde_json::from_str(&line.expect("read")).expect("json");
        if let Some(data) = ev["data"].as_str() {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64");
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        if seen.contains("tick-") {
            return lines;
        }
    }
    panic!("the relayed stream never showed the session's output: {seen}");
}

#[test]
fn sessions_terminate_and_the_audit_span_the_cluster() {
    let c = cluster(3, "15s", "");
    let mut on1 = c.ssh_tty(0, "for i in $(seq 1 300); do echo tick-$i; sleep 0.2; done");
    let mut on2 = c.ssh(1, "echo started; sleep 60");
    let live = c.active(2, 2);
    let owners: Vec<&str> = live.iter().filter_map(|s| s["gateway"].as_str()).collect();
    assert!(
        owners.contains(&"gw-1") && owners.contains(&"gw-2"),
        "gw-3 lists both: {live:?}"
    );

    // wgctl on the third gateway shows both, with the gateway that runs each.
    let out = run(
        c.gws[2].wgctl().args(["session", "list"]),
        Duration::from_secs(30),
    );
    assert_success(&out, "wgctl session list on gw-3");
    assert_has_all(&text(&out.stdout), &["GW", "gw-1", "gw-2", "web.test"]);

    let id1 = live
        .iter()
        .find(|s| s["gateway"] == "gw-1")
        .and_then(|s| s["id"].as_str())
        .expect("gw-1's session")
        .to_string();

    // Shadow on gw-3 of the session gw-1 runs: gw-1 attaches the observer, gw-3 relays.
    let watching = shadow_through(&c.gws[2], &id1);
    let attach = c.gws[1].wait_audit("session.shadow.attach", Duration::from_secs(10));
    assert_eq!(attach["session_id"], id1.as_str(), "{attach}");
    assert_eq!(attach["detail"]["observer"], "admin", "{attach}");
    // `show` on another gateway has the live details only the running gateway knows.
    let s = c.gws[1].get_json(&format!("/api/v1/sessions/{id1}"));
    assert_eq!(s["observers"][0]["name"], "admin", "{s}");
    assert!(s["channels"].as_u64().unwrap_or(0) >= 1, "{s}");
    let out = run(
        c.gws[2].wgctl().args(["session", "show", &id1]),
        Duration::from_secs(30),
    );
    assert_has_all(&text(&out.stdout), &[&id1, "gw-1", "admin"]);
    drop(watching);
    c.gws[2].wait_audit("session.shadow.detach", Duration::from_secs(10));

    // Nobody but a peer holding the cluster key reaches the internal endpoint.
    let (status, body) = c.gws[0].request(
        "POST",
        &format!("/internal/v1/sessions/{id1}/terminate"),
        "",
        r#"{"by":"mallory","reason":"unsigned"}"#,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not a signed request"), "{body}");
    c.gws[0].wait_audit("cluster.peer_refused", Duration::from_secs(10));
    assert_eq!(
        c.gws[2].get_json(&format!("/api/v1/sessions/{id1}"))["state"],
        "active"
    );

    // Terminate from gw-2 reaches gw-1, which runs the session: alice's client is told why.
    let out = c.gws[1].terminate(&id1, "cluster-drill-7");
    assert_success(&out, "terminate on gw-2 a session gw-1 runs");
    let status = wait_timeout(&mut on1, Duration::from_secs(10)).expect("alice's ssh on gw-1 ends");
    assert!(!status.success());
    let mut err = String::new();
    on1.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(
        err.contains("cluster-drill-7"),
        "alice sees the reason: {err}"
    );
    let s = c.gws[2].get_json(&format!("/api/v1/sessions/{id1}"));
    assert_eq!(s["state"], "closed", "{s}");
    assert_eq!(s["end_reason"], "terminated", "{s}");
    // Terminating it again from anywhere: it is over.
    let (status, _) = c.gws[2].post(
        &format!("/api/v1/sessions/{id1}/terminate"),
        r#"{"reason":"again"}"#,
    );
    assert_eq!(status, 409);

    // Bulk terminate from gw-3 ends gw-2's session.
    let (status, body) = c.gws[2].post(
        "/api/v1/sessions/terminate",
        r#"{"actor":"alice","reason":"cluster-bulk-3"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let done: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        done["terminated"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_eq!(done["terminated"][0]["gateway"], "gw-2", "{body}");
    wait_timeout(&mut on2, Duration::from_secs(10)).expect("alice's ssh on gw-2 ends");

    // One chain for the cluster: every gateway's events, in one order, verifying.
    let starts = c.gws[0].audit("gateway.start");
    assert!(starts.len() >= 3, "three gateways started: {starts:?}");
    for gw in &c.gws {
        let out = run(
            gw.wgctl().args(["audit", "verify"]),
            Duration::from_secs(30),
        );
        assert_success(&out, "wgctl audit verify");
    }
}

#[test]
fn forged_peer_requests_get_one_answer_and_a_bounded_audit() {
    let c = cluster(1, "15s", "");
    let mut held = c.ssh(0, "sleep 60");
    let id = c.active(0, 1)[0]["id"].as_str().expect("id").to_string();
    let path = format!("/internal/v1/sessions/{id}/terminate");
    let url = format!("{}{path}", c.gws[0].api);
    let http = reqwest::blocking::Client::new();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis()
            .to_string()
    };
    let mut answers = std::collections::BTreeSet::new();
    for i in 0..30 {
        // Well-formed peer headers with a signature made without the key, a reused nonce, a
        // sender name of 4,000 characters; and one body over the limit.
        let body = if i == 29 {
            "x".repeat(1 << 20)
        } else {
            r#"{"by":"mallory","reason":"forged"}"#.into()
        };
        let r = http
            .post(&url)
            .header("x-wardengate-peer", "g".repeat(4000))
            .header("x-wardengate-time", now())
            .header("x-wardengate-nonce", "n-1")
            .header("x-wardengate-signature", "00".repeat(32))
            .header("content-type", "application/json")
            .body(body)
            .send();
        match r {
            Ok(r) => {
                answers.insert((r.status().as_u16(), r.text().unwrap_or_default()));
            }
            // The oversized body: the gateway may answer and close before the client has
            // written it all (it never reads past its limit).
            Err(e) if i == 29 => assert!(e.is_request(), "{e}"),
            Err(e) => panic!("request {i}: {e}"),
        }
    }
    assert_eq!(
        answers.len(),
        1,
        "one answer whatever the reason: {answers:?}"
    );
    let (status, text) = answers.into_iter().next().expect("an answer");
    assert_eq!(status, 403);
    assert!(text.contains("not a signed request"), "{text}");
    // The same answer from the endpoints that cancel a TCP session and stop an access session.
    for path in [
        format!("/internal/v1/sessions/{id}/cancel"),
        "/internal/v1/access-sessions/acc_00000000000000000000/stop".to_string(),
    ] {
        let r = http
            .post(format!("{}{path}", c.gws[0].api))
            .header("x-wardengate-peer", "gw-9")
            .header("x-wardengate-time", now())
            .header("x-wardengate-nonce", "n-2")
            .header("x-wardengate-signature", "00".repeat(32))
            .body(r#"{"by":"mallory","reason":"forged"}"#)
            .send()
            .expect("a forged request");
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.text().unwrap_or_default(), text, "{path}");
    }
    // The source is throttled like a token guesser: a few reasons are audited, not thirty.
    let audited: u32 = c
        .store
        .psql(
            "wardengate",
            "SELECT count(*) FROM audit WHERE kind = 'cluster.peer_refused'",
        )
        .expect("count")
        .trim()
        .parse()
        .expect("a number");
    assert!((1..=6).contains(&audited), "{audited} refusals audited");
    let detail = c
        .store
        .psql(
            "wardengate",
            "SELECT detail FROM audit WHERE kind = 'cluster.peer_refused' LIMIT 1",
        )
        .expect("detail");
    assert!(
        detail.len() < 1000,
        "the sender's name is capped before it is stored: {} bytes",
        detail.len()
    );
    // Nothing happened to the session.
    let state = c
        .store
        .psql(
            "wardengate",
            &format!("SELECT state FROM sessions WHERE id = '{id}'"),
        )
        .expect("state");
    assert_eq!(state.trim(), "active");
    let _ = held.kill();
    let _ = held.wait();
}

/// A TCP session canceled through another gateway than the one that runs it: that one cancels
/// it (its States end `terminated`, `canceled`) and its answer comes back; an owner that is gone
/// is named.
#[test]
fn a_tcp_session_is_canceled_through_another_gateway() {
    const ALICE: &str = "alice-own";
    let tcp = "[tcp]\nlisten = \"127.0.0.1:0\"\n\n[[targets]]\nname = \"cache.test\"\n\
               protocol = \"tcp\"\naddress = \"127.0.0.1:9\"\ntags = { env = \"test\" }\n";
    let mut c = crate::cluster_with(2, "15s", tcp, |b, _| b.user_token(ALICE));
    let cancel = |c: &wardengate_tests::cluster::Cluster, gw: usize, id: &str| {
        c.gws[gw].request(
            "POST",
            &format!("/api/v1/sessions/{id}/cancel"),
            ALICE,
            "{\"reason\":\"wrong host\"}",
        )
    };
    let a = wardengate_tests::tcp::authorized(&c.gws[0], ALICE, "cache.test", &[]);
    let id = a["session_id"].as_str().expect("id").to_string();
    let (code, body) = cancel(&c, 1, &id);
    assert_eq!(code, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(s["state"], "terminated", "{s:#}");
    assert_eq!(s["end_reason"], "canceled", "{s:#}");
    assert_eq!(s["end_detail"], "canceled by alice: wrong host", "{s:#}");
    let canceled = c.gws[0].wait_audit("session.canceled", Duration::from_secs(10));
    assert_eq!(canceled["session_id"], id.as_str(), "{canceled}");
    // The gateway that runs a second one is gone: the cancel through gw-2 says so.
    let b = wardengate_tests::tcp::authorized(&c.gws[0], ALICE, "cache.test", &[]);
    let second = b["session_id"].as_str().expect("id").to_string();
    c.gws[0].kill9();
    let (code, body) = cancel(&c, 1, &second);
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("gw-1"), "{body}");
}
