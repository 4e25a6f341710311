//! Limits across gateways, a gateway lost to `kill -9`, and the store going away and coming back.

use std::io::Read;
use std::process::Child;
use std::time::Duration;

use wardengate_tests::*;

use crate::{cluster, cluster_with};
use wardengate_tests::cluster::cluster_opts;
use wardengate_tests::pg;

fn output(mut child: Child) -> (bool, String, String) {
    let status = wait_timeout(&mut child, Duration::from_secs(120)).expect("ssh ends");
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status.success(), out, err)
}

#[test]
fn a_target_limit_of_five_admits_exactly_five_of_a_hundred_attempts_over_three_gateways() {
    let c = cluster(3, "15s", "[limits]\nmax_sessions_per_target = 5\n");
    // All at once, spread over the three gateways.
    let attempts: Vec<Child> = (0..100)
        .map(|i| c.ssh(i % 3, "echo admitted; sleep 8"))
        .collect();
    let results: Vec<_> = attempts.into_iter().map(output).collect();
    let admitted = results
        .iter()
        .filter(|(_, out, _)| out.contains("admitted"))
        .count();
    let at_capacity = results
        .iter()
        .filter(|(_, _, err)| err.contains("target at capacity: web.test"))
        .count();
    assert_eq!(
        admitted, 5,
        "exactly the limit, across the cluster: {results:?}"
    );
    assert_eq!(
        at_capacity, 95,
        "every other attempt met the limit: {results:?}"
    );
    // The slots came back as the sessions ended: one more is admitted.
    let (ok, out, err) = output(c.ssh(1, "echo again"));
    assert!(ok && out.contains("again"), "{err}");
}

#[test]
fn a_gateway_killed_with_sigkill_is_declared_lost_and_its_slots_come_back() {
    // A TCP target too (its session may stay pending: the host is never dialled).
    let tcp = "[tcp]\nlisten = \"127.0.0.1:0\"\n\n[[targets]]\nname = \"cache.test\"\n\
               protocol = \"tcp\"\naddress = \"127.0.0.1:9\"\ntags = { env = \"test\" }\n\n\
               [limits]\nmax_sessions_per_target = 1\n";
    let mut c = cluster_with(2, "2s", tcp, |b, _| b.user_token("alice-own"));
    let tcp_session = wardengate_tests::tcp::authorized(&c.gws[0], "alice-own", "cache.test", &[]);
    let tcp_id = tcp_session["session_id"].as_str().expect("id").to_string();
    let mut held = c.ssh(0, "echo started; sleep 120");
    let live = c.active(1, 1);
    let id = live[0]["id"].as_str().expect("id").to_string();
    assert_eq!(live[0]["gateway"], "gw-1");
    // The one slot is held on gw-1: gw-2 refuses.
    let (ok, _, err) = output(c.ssh(1, "echo second"));
    assert!(
        !ok && err.contains("target at capacity: web.test 1/1"),
        "{err}"
    );

    c.gws[0].kill9();
    // Its client loses the connection with the gateway.
    assert!(
        wait_timeout(&mut held, Duration::from_secs(10)).is_some(),
        "alice's ssh ends with gw-1"
    );
    // A peer notices within the TTL (plus its renewal tick) and ends the session.
    let s = poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || c.gws[1].get_json(&format!("/api/v1/sessions/{id}")),
        |s| s["state"] == "failed",
    );
    assert_eq!(
        s["state"], "failed",
        "gw-2 marks gw-1's session failed: {s}"
    );
    assert_eq!(s["end_reason"], "gateway_lost", "{s}");
    // Its TCP session ends Boundary's way, its states closed.
    let t = c.gws[1].get_json(&format!("/api/v1/sessions/{tcp_id}"));
    assert_eq!(t["state"], "terminated", "{t}");
    let states = t["tcp"]["states"].as_array().cloned().unwrap_or_default();
    let last = states.last().cloned().unwrap_or_default();
    assert_eq!(
        (&last["state"], &last["reason"]),
        (&"terminated".into(), &"gateway_lost".into()),
        "{t}"
    );
    assert!(states[states.len() - 2]["end_time"].is_string(), "{t}");
    let lost = c.gws[1].wait_audit("gateway.lost", Duration::from_secs(10));
    assert!(lost["detail"].to_string().contains("gw-1"), "{lost}");
    let out = run(
        c.gws[1].wgctl().args(["session", "show", &id]),
        Duration::from_secs(30),
    );
    assert_stdout_has(&out, "gateway_lost");

    // Its slot is free again.
    let (ok, out, err) = output(c.ssh(1, "echo after-loss"));
    assert!(ok && out.contains("after-loss"), "{err}");
}

#[test]
fn a_store_restart_keeps_live_sessions_and_admission_fails_closed_meanwhile() {
    let mut c = cluster(1, "15s", "");
    // A session that prints for a while, across the outage.
    let ticking = c.ssh(0, "for i in $(seq 1 16); do echo tick-$i; sleep 0.5; done");
    let id = c.active(0, 1)[0]["id"].as_str().expect("id").to_string();
    c.store.stop();
    let (ok, _, err) = output(c.ssh(0, "echo while-down"));
    assert!(!ok, "no new session while the store is away");
    assert!(
        err.contains("cannot reach its session store"),
        "a clear reason: {err}"
    );
    std::thread::sleep(Duration::from_secs(2));
    c.store.restart().expect("restart the store");
    let (ok, out, err) = output(ticking);
    assert!(
        ok && out.contains("tick-16"),
        "the live session ran through: {out} {err}"
    );
    let (ok, out, err) = output(c.ssh(0, "echo after-restart"));
    assert!(
        ok && out.contains("after-restart"),
        "admission works again: {err}"
    );
    // What the gateway saw while the store was away was written once it came back.
    let s = poll(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || c.gws[0].get_json(&format!("/api/v1/sessions/{id}")),
        |s| s["state"] == "closed",
    );
    assert_eq!(
        s["state"], "closed",
        "the session's end reached the store: {s}"
    );
    assert!(s["bytes_out"].as_u64().unwrap_or(0) > 0, "{s}");
    let denied = c.gws[0].audit("session.denied");
    assert!(
        denied
            .iter()
            .any(|e| e["detail"].to_string().contains("store_unavailable")),
        "the refusal is audited: {denied:?}"
    );
    let out = run(
        c.gws[0].wgctl().args(["audit", "verify"]),
        Duration::from_secs(30),
    );
    assert_success(&out, "the chain still verifies");
}

#[test]
fn the_store_is_reached_over_tls_verified_against_its_ca() {
    let c = cluster_opts(1, "15s", "", Some(pg::ca_and_server()), |b, _| b);
    let (ok, out, err) = output(c.ssh(0, "echo through-a-tls-store"));
    assert!(ok && out.contains("through-a-tls-store"), "{err}");
    // Every connection of the gateway to its store is TLS.
    let sql = "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
               FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'wardengate'";
    let counts = c.store.psql("postgres", sql).expect("psql");
    let (tls, plain) = counts.trim().split_once('|').expect("two counts");
    assert!(
        tls.parse::<u32>().unwrap_or(0) >= 1 && plain == "0",
        "{counts}"
    );
    // A gateway that trusts another CA does not talk to that server: it says why.
    let dir = c.env.path("other");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("store-ca.pem"), pg::ca_and_server().ca).expect("ca");
    let cfg = dir.join("wardengate.toml");
    write_private(
        &cfg,
        &format!(
            "[gateway]\nname = \"stranger\"\ndata_dir = \"{}\"\n\n[store]\nurl = \"postgres://wardengate:{}@localhost:{}/wardengate\"\nca_file = \"store-ca.pem\"\n",
            dir.display(),
            wardengate_tests::cluster::STORE_PASSWORD,
            c.store.port
        ),
    );
    let out = run(
        std::process::Command::new(bin("wardengate"))
            .args(["cluster", "--config"])
            .arg(&cfg)
            .arg("status"),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert_stderr_has(&out, "is unreachable");
    assert_stderr_has(&out, "certificate");
}

#[test]
fn evict_oldest_ends_the_users_oldest_session_wherever_it_runs() {
    let c = cluster(
        2,
        "15s",
        "[limits]\nmax_sessions_per_user = 2\non_limit = \"evict_oldest\"\n",
    );
    let ended = |child: Child, id: &str| {
        let (_, _, err) = output(child);
        assert!(
            err.contains("opened a newer session and may hold at most 2"),
            "{err}"
        );
        let s = poll(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || c.gws[1].get_json(&format!("/api/v1/sessions/{id}")),
            |s| s["state"] == "closed",
        );
        assert_eq!(s["end_reason"], "concurrency", "{s}");
    };
    // alice: s1 on gw-1, then s2 on gw-2 (her two).
    let s1 = c.ssh(0, "echo one; sleep 60");
    let id1 = c.active(1, 1)[0]["id"].as_str().expect("id").to_string();
    let s2 = c.ssh(1, "echo two; sleep 60");
    let live = c.active(1, 2);
    let id2 = live
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|id| *id != id1)
        .expect("s2")
        .to_string();
    // s3 on gw-1: gw-1 holds one of hers (room by its own count), the cluster holds two. Her
    // oldest, s1, runs on gw-1 itself: gw-1 ends it.
    let s3 = c.ssh(0, "echo three; sleep 60");
    ended(s1, &id1);
    // s4 on gw-1 again: her oldest is now s2, on gw-2: gw-2 ends it.
    let s4 = c.ssh(0, "echo four; sleep 60");
    ended(s2, &id2);
    // Exactly two run, both on gw-1, and each eviction is in the audit.
    let live = c.active(1, 2);
    assert!(live.iter().all(|s| s["gateway"] == "gw-1"), "{live:?}");
    let evicted: Vec<String> = c.gws[0]
        .audit("session.evicted")
        .iter()
        .filter_map(|e| e["session_id"].as_str().map(str::to_string))
        .collect();
    assert!(
        evicted.contains(&id1) && evicted.contains(&id2),
        "{evicted:?}"
    );
    for mut child in [s3, s4] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
